"""The outbox as a record: pages and jobs ask it by columns (what a message is about, for
whom, why it failed), never by parsing keys; its payloads (sealed addresses and bodies) go
after the retention or when the vault purges the recipient, and the rows stay as proof."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func
from sqlmodel import select

from contacts.core.db import session_scope, utcnow
from contacts.core.services import services
from contacts.delivery import ledger, outbox
from contacts.delivery.models import OutboxMessage
from contacts.vault import purge


def _queue(app, key: str, topic: outbox.Topic, now, to: str = "someone@example.org") -> None:
    with session_scope(services(app).engine) as session:
        outbox.enqueue_rows(session=session, rows=[outbox.email_row(
            cipher=services(app).crypto.cipher, key=key, purpose="test", topic=topic,
            now=now, email=outbox.Email(to=to, subject="Update", text="Body"))])


def _set(engine, key: str, **values) -> None:
    with session_scope(engine) as session:
        row = session.exec(select(OutboxMessage).where(OutboxMessage.key == key)).one()
        for name, value in values.items():
            setattr(row, name, value)
        session.add(row)


def _row(engine, key: str) -> OutboxMessage:
    with session_scope(engine) as session:
        row = session.exec(select(OutboxMessage).where(OutboxMessage.key == key)).one()
        session.expunge(row)
        return row


def test_counts_per_update_come_from_columns_whatever_the_keys_say(app, engine):
    now = utcnow()
    # Keys that a prefix search would confuse: one update's ID is a prefix of another's, and
    # a key names an update it is not about.
    _queue(app, "update:upd_1:acc_a:ctc_1", outbox.Topic("update", "upd_1", "contact",
                                                         "ctc_1", "acc_a"), now)
    _queue(app, "update:upd_1:acc_b:ctc_2", outbox.Topic("update", "upd_1", "contact",
                                                         "ctc_2", "acc_b"), now)
    _queue(app, "update:upd_10:acc_a:ctc_1", outbox.Topic("update", "upd_10", "contact",
                                                          "ctc_1", "acc_a"), now)
    _queue(app, "update:upd_1:acc_a:ctc_9", outbox.Topic("request", "LL-1", "requester"), now)
    _set(engine, "update:upd_1:acc_b:ctc_2", state="sent")
    with session_scope(engine) as session:
        every = ledger.counts_about(session=session, about_kind="update",
                                    about_ids=["upd_1", "upd_10", "upd_none"])
        one_account = ledger.counts_about(session=session, about_kind="update",
                                          about_ids=["upd_1"], account_id="acc_a")
        rows = ledger.messages_about(session=session, about_kind="update",
                                     about_ids=["upd_1"], account_id="acc_b")
    assert every == {"upd_1": {"queued": 1, "sent": 1, "failed": 0},
                     "upd_10": {"queued": 1, "sent": 0, "failed": 0},
                     "upd_none": {"queued": 0, "sent": 0, "failed": 0}}
    assert one_account == {"upd_1": {"queued": 1, "sent": 0, "failed": 0}}
    assert [row.recipient_id for row in rows] == ["ctc_2"]


def test_bounces_are_found_by_their_failure_kind_and_topic(app, engine):
    now = utcnow()
    topics = {"bounced": outbox.Topic("update", "upd_1", "contact", "ctc_1", "acc_a"),
              "expired": outbox.Topic("update", "upd_1", "contact", "ctc_2", "acc_a"),
              "old": outbox.Topic("update", "upd_1", "contact", "ctc_3", "acc_a"),
              "confirm": outbox.Topic("confirmation", "ctc_4", "contact", "ctc_4", "acc_a")}
    for name, topic in topics.items():
        _queue(app, name, topic, now - timedelta(days=30) if name == "old" else now)
    for name in ("bounced", "old", "confirm"):
        _set(engine, name, state="failed", failure="bounced")
    _set(engine, "expired", state="failed", failure="expired")
    with session_scope(engine) as session:
        updates = ledger.bounced_since(session=session, since=now - timedelta(days=7),
                                       about_kind="update")
        every = ledger.bounced_since(session=session, since=now - timedelta(days=7))
    assert [(b.about_id, b.account_id, b.recipient_id) for b in updates] == [
        ("upd_1", "acc_a", "ctc_1")]
    assert sorted(b.recipient_id for b in every) == ["ctc_1", "ctc_4"]


def test_each_failure_is_recorded_with_its_kind(app, engine):
    """A refused recipient bounces; a server that never answers makes messages deferred,
    then expired when their attempts run out."""
    from contacts.core.mail import MailFailed

    class Refusing:
        domain = "lifeline.test"

        def __init__(self, failure):
            self.failure = failure

        def connection(self):
            return self

        def __enter__(self):
            return self

        def __exit__(self, *_):
            return None

        def send(self, **_):
            raise self.failure

    now = utcnow()
    _queue(app, "k-bounce", outbox.Topic("request", "LL-1", "requester"), now)
    bounce = MailFailed("550 no such user", permanent=True, bounced=True)
    outbox.drain(engine=engine, cipher=services(app).crypto.cipher,
                 mailer=Refusing(bounce), now=now)
    assert (_row(engine, "k-bounce").state, _row(engine, "k-bounce").failure) == (
        "failed", "bounced")

    _queue(app, "k-down", outbox.Topic("request", "LL-2", "requester"), now)
    down = MailFailed("connection refused", server_down=True)
    outbox.drain(engine=engine, cipher=services(app).crypto.cipher, mailer=Refusing(down),
                 now=now)
    assert (_row(engine, "k-down").state, _row(engine, "k-down").failure) == (
        "queued", "deferred")
    later = now
    for _ in range(outbox.MAX_ATTEMPTS):
        later += timedelta(hours=2)
        outbox.drain(engine=engine, cipher=services(app).crypto.cipher,
                     mailer=Refusing(down), now=later)
    assert (_row(engine, "k-down").state, _row(engine, "k-down").failure) == (
        "failed", "expired")


def test_retention_drops_old_payloads_and_keeps_the_rows(app, engine):
    now = utcnow()
    old, recent = now - timedelta(days=31), now - timedelta(days=29)
    for key, state in (("old-sent", "sent"), ("old-failed", "failed"),
                       ("old-queued", "queued"), ("old-leased", "queued")):
        _queue(app, key, outbox.Topic("update", "upd_1", "contact", key, "acc_a"), old)
        _set(engine, key, state=state)
    _set(engine, "old-leased", lease_until=now + timedelta(minutes=1))
    _queue(app, "recent", outbox.Topic("update", "upd_1", "contact", "recent", "acc_a"), recent)

    dropped = ledger.drop_old_payloads(engine=engine, now=now, retention_days=30, batch=2)

    assert dropped == 3  # in two batches; the leased one is on the wire and waits
    for key in ("old-sent", "old-failed", "old-queued"):
        assert _row(engine, key).payload_encrypted is None
    assert (_row(engine, "old-queued").state, _row(engine, "old-queued").failure) == (
        "failed", "expired")  # it can no longer be sent
    assert _row(engine, "old-sent").state == "sent"  # the proof keeps its outcome
    assert _row(engine, "old-leased").payload_encrypted is not None
    assert _row(engine, "recent").payload_encrypted is not None
    assert ledger.drop_old_payloads(engine=engine, now=now + timedelta(minutes=2),
                                    retention_days=30) == 1  # the lease ran out
    with session_scope(engine) as session:
        assert session.exec(select(func.count()).select_from(OutboxMessage)).one() == 5
        assert session.exec(select(func.count()).where(
            OutboxMessage.created_at < now - timedelta(days=30),
            OutboxMessage.payload_encrypted.is_not(None))).one() == 0


def test_a_purged_contact_leaves_no_sealed_address_in_the_outbox(app, engine,
                                                                 sync_document):
    from contacts.vault.models import Contact
    from tests.vault.fixtures import make_document

    sync_document(make_document(accounts=2, contacts_per_account=1))
    now = utcnow()
    with session_scope(engine) as session:
        gone, kept = session.exec(select(Contact).order_by(Contact.id).limit(2)).all()
        gone.deleted_at = now - timedelta(days=40)
        session.add(gone)
        pairs = [(gone.id, gone.account_id), (kept.id, kept.account_id)]
    for contact_id, account_id in pairs:
        _queue(app, f"confirm:{contact_id}", outbox.Topic(
            "confirmation", contact_id, "contact", contact_id, account_id), now)
    with session_scope(engine) as session:
        purged = purge.purge_expired(session=session, now=now, retention_days=30)
    assert purged.contacts == 1
    gone_row = _row(engine, f"confirm:{pairs[0][0]}")
    kept_row = _row(engine, f"confirm:{pairs[1][0]}")
    assert gone_row.payload_encrypted is None
    assert (gone_row.state, gone_row.failure) == ("failed", "expired")  # never sent now
    assert gone_row.recipient_id == pairs[0][0]  # who, by ID, stays for the proof
    assert kept_row.payload_encrypted is not None and kept_row.state == "queued"
