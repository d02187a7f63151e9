"""The purge after a large deletion: more expired rows than one `IN (...)` may hold on
PostgreSQL (65,535 parameters) are all removed, each audited, and nothing live goes."""

from datetime import timedelta

from sqlalchemy import func
from sqlmodel import select

from contacts.core.audit import AuditEntry
from contacts.core.db import bulk_insert, session_scope, utcnow
from contacts.core.ids import new_id
from contacts.vault import purge
from contacts.vault.models import Account, Contact, ContactSite, Site

EXPIRED_UNDER_LIVE = 36_000
UNDER_EXPIRED_ACCOUNT = 36_000


def _account(external_id: str, deleted_at) -> dict:
    now = utcnow()
    return {"id": new_id("acc"), "external_id": external_id, "name": external_id,
            "created_at": now, "updated_at": now, "deleted_at": deleted_at}


def _contacts(account_id: str, count: int, deleted_at, tag: str) -> list[dict]:
    now = utcnow()
    return [{"id": new_id("ctc"), "account_id": account_id, "external_id": f"{tag}{n}",
             "name_encrypted": "k1.x", "email_encrypted": "k1.x", "phone_encrypted": None,
             "email_index": "e", "phone_index": None, "domain_index": "d",
             "content_digest": "c", "role": "other", "locale": "en", "timezone": "UTC",
             "source": "sync", "version": 1, "last_confirmed_at": None,
             "confirmation_requested_at": None, "undeliverable_at": None,
             "created_at": now, "updated_at": now, "deleted_at": deleted_at}
            for n in range(count)]


def test_a_purge_of_more_than_70000_expired_contacts_removes_them_all(engine):
    long_ago = utcnow() - timedelta(days=40)
    live, gone = _account("LIVE", None), _account("GONE", long_ago)
    kept = _contacts(live["id"], 1, None, "kept")
    expired = _contacts(live["id"], EXPIRED_UNDER_LIVE, long_ago, "old")
    cascaded = _contacts(gone["id"], UNDER_EXPIRED_ACCOUNT, None, "under")
    now = utcnow()
    site = {"id": new_id("site"), "account_id": gone["id"], "external_id": "S-GONE",
            "url": None, "hostname": None, "name": None, "created_at": now, "updated_at": now,
            "deleted_at": None}
    with engine.begin() as connection:
        bulk_insert(connection, Account.__table__, [live, gone])
        bulk_insert(connection, Site.__table__, [site])
        bulk_insert(connection, Contact.__table__, kept + expired + cascaded)
        bulk_insert(connection, ContactSite.__table__,
                    [{"contact_id": row["id"], "site_id": site["id"]} for row in cascaded])

    with session_scope(engine) as session:
        purged = purge.purge_expired(session=session, now=utcnow(), retention_days=30)
    assert (purged.accounts, purged.sites, purged.contacts) == (
        1, 1, EXPIRED_UNDER_LIVE + UNDER_EXPIRED_ACCOUNT)

    with session_scope(engine) as session:
        left = session.exec(select(Contact.external_id)).all()
        assert left == ["kept0"]
        assert session.exec(select(Account.external_id)).all() == ["LIVE"]
        assert session.exec(select(func.count()).select_from(ContactSite)).one() == 0
        audited = session.exec(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "contact.purged")).one()
    assert audited == EXPIRED_UNDER_LIVE + UNDER_EXPIRED_ACCOUNT
