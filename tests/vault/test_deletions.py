"""Guarded bulk deletes: the declared kind is checked, the cap holds, a confirmed delete is
soft, restorable, and purged only after the retention period."""

from datetime import timedelta

import pytest
from sqlmodel import select

from contacts.core.audit import Actor, AuditEntry
from contacts.core.db import session_scope, utcnow
from contacts.core.errors import Forbidden, WrongKind
from contacts.vault import deletions, purge, service
from contacts.vault.models import Account, App, Contact, ContactVersion, Site
from tests.vault.fixtures import make_document


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def ids_of(engine, model, **where) -> list[str]:
    with session_scope(engine) as session:
        query = select(model.id)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return list(session.exec(query.order_by(model.id)))


@pytest.fixture
def populated(sync_document):
    sync_document(make_document(accounts=60, contacts_per_account=1))


def test_sites_given_contact_ids_are_refused_naming_both_kinds(client, make_token, engine,
                                                                populated):
    contact = ids_of(engine, Contact)[0]
    sites = ids_of(engine, Site)[:2]
    response = client.post("/api/v1/deletions", json={"kind": "site", "ids": [*sites, contact]},
                           headers=bearer(make_token("contacts:write")))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "wrong_kind"
    assert error["message"] == ("ids[2]: expected a site ID (site_...), got a contact ID "
                                "(ctc_...)")
    with session_scope(engine) as session:
        assert session.exec(select(Site).where(Site.deleted_at.is_not(None))).first() is None


def test_contacts_given_site_ids_are_refused(engine, populated):
    with session_scope(engine) as session, pytest.raises(WrongKind, match="got a site ID"):
        deletions.plan(session=session, actor=Actor.system("t"), kind="contact",
                       ids=ids_of(engine, Site)[:1], limits=deletions.Limits())


def test_a_delete_over_the_cap_is_refused_unless_an_admin_gives_a_reason(client, make_token,
                                                                         engine, populated):
    sites = ids_of(engine, Site)
    assert len(sites) > 50
    response = client.post("/api/v1/deletions", json={"kind": "site", "ids": sites,
                                                      "reason": "tokens are not admins"},
                           headers=bearer(make_token("contacts:write")))
    assert response.status_code == 403
    assert "over the cap of 50" in response.get_json()["error"]["message"]
    with session_scope(engine) as session:
        with pytest.raises(Forbidden):
            deletions.plan(session=session, actor=Actor.system("t"), kind="site", ids=sites,
                           limits=deletions.Limits(), is_admin=True)
        planned = deletions.plan(session=session, actor=Actor.system("t"), kind="site",
                                 ids=sites, limits=deletions.Limits(), is_admin=True,
                                 reason="decommissioning the test region")
    assert planned.count == len(sites)


def test_a_confirmed_delete_is_soft_restorable_and_purged_only_after_retention(
        client, make_token, engine, vault, populated):
    headers = bearer(make_token("contacts:write"))
    accounts = ids_of(engine, Account)[:3]
    dry_run = client.post("/api/v1/deletions", json={"kind": "account", "ids": accounts},
                          headers=headers).get_json()
    assert dry_run["count"] == 3 and len(dry_run["sample"]) == 3
    assert ids_of(engine, Account, deleted_at=None)[:3] == accounts  # a dry run deletes nothing

    tampered = client.post("/api/v1/deletions/confirm", headers=headers, json={
        "kind": "account", "ids": accounts[:2], "token": dry_run["token"]})
    assert tampered.status_code == 403
    assert "differ from the dry run" in tampered.get_json()["error"]["message"]

    done = client.post("/api/v1/deletions/confirm", headers=headers, json={
        "kind": "account", "ids": list(reversed(accounts)), "token": dry_run["token"]})
    assert done.status_code == 200 and done.get_json()["deleted"] == 3
    again = client.post("/api/v1/deletions/confirm", headers=headers, json={
        "kind": "account", "ids": accounts, "token": dry_run["token"]})
    assert again.status_code == 409

    with session_scope(engine) as session:
        gone = session.exec(select(Contact).where(Contact.account_id.in_(accounts))).all()
        assert len(gone) == 3 and all(contact.deleted_at for contact in gone)
        assert service.list_contacts(session=session, vault=vault, account_id=accounts[0]) == []

    undone = client.post(f"/api/v1/deletions/{dry_run['deletion_id']}/undo", headers=headers)
    assert undone.status_code == 200 and undone.get_json()["restored"] == 3
    with session_scope(engine) as session:
        assert session.exec(select(Contact).where(Contact.account_id.in_(accounts),
                                                  Contact.deleted_at.is_(None))).all()

    # Delete again, then travel in time: nothing is purged before the retention period.
    with session_scope(engine) as session:
        planned = deletions.plan(session=session, actor=Actor.system("t"), kind="account",
                                 ids=accounts, limits=deletions.Limits())
    with session_scope(engine) as session:
        deletions.confirm(session=session, vault=vault, actor=Actor.system("t"),
                          kind="account", ids=accounts, token=planned.token,
                          limits=deletions.Limits())
    with session_scope(engine) as session:
        early = purge.purge_expired(session=session, now=utcnow() + timedelta(days=29),
                                    retention_days=30)
    assert early.total == 0
    with session_scope(engine) as session:
        late = purge.purge_expired(session=session, now=utcnow() + timedelta(days=31),
                                   retention_days=30)
    assert (late.accounts, late.contacts) == (3, 3) and late.sites >= 3
    with session_scope(engine) as session:
        assert session.exec(select(Account).where(Account.id.in_(accounts))).all() == []
        assert session.exec(select(ContactVersion).where(
            ContactVersion.account_id.in_(accounts))).all() == []
        purged = session.exec(select(AuditEntry).where(AuditEntry.action == "account.purged")
                              ).all()
    assert sorted(entry.target_id for entry in purged) == accounts


def test_an_expired_token_is_refused(engine, vault, populated):
    sites = ids_of(engine, Site)[:1]
    with session_scope(engine) as session:
        planned = deletions.plan(session=session, actor=Actor.system("t"), kind="site",
                                 ids=sites, limits=deletions.Limits(token_minutes=0))
    with session_scope(engine) as session, pytest.raises(Forbidden, match="expired"):
        deletions.confirm(session=session, vault=vault, actor=Actor.system("t"), kind="site",
                          ids=sites, token=planned.token, limits=deletions.Limits())


def test_the_cli_delete_asks_for_the_count_before_acting(app, engine, populated):
    sites = ids_of(engine, Site)[:2]
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["contacts", "delete", "site", *sites], input="3\n")
    assert refused.exit_code == 2 and "not confirmed; nothing deleted" in refused.output
    done = runner.invoke(args=["contacts", "delete", "site", *sites], input="2\n")
    assert done.exit_code == 0, done.output
    assert "deleted 2 site(s)" in done.output
    assert len(ids_of(engine, Site)) - len(ids_of(engine, Site, deleted_at=None)) == 2


def test_the_seed_mistake_site_ids_given_for_an_app_delete_deletes_nothing(
        client, make_token, engine, sync_document):
    document = make_document(accounts=3, contacts_per_account=1)
    for number, account in enumerate(document["accounts"]):
        account["sites"][0]["apps"] = [{"external_id": f"INSIGHT-{number}", "name": "Insight"}]
    sync_document(document)
    sites = ids_of(engine, Site)
    response = client.post("/api/v1/deletions", json={"kind": "app", "ids": sites},
                           headers=bearer(make_token("contacts:write")))
    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == (
        "ids[0]: expected an app ID (app_...), got a site ID (site_...)")
    assert len(ids_of(engine, Site, deleted_at=None)) == len(sites)
    apps = ids_of(engine, App)
    dry_run = client.post("/api/v1/deletions", json={"kind": "app", "ids": apps},
                          headers=bearer(make_token("contacts:write"))).get_json()
    assert dry_run["count"] == 3
    assert {item["label"] for item in dry_run["sample"]} == {"Insight"}
