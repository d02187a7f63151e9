"""An item's emails to its requester contact as one thread, as a real SMTP server received
them: each reply and the resolution notice carry a Reply-To that reads back to the item, and
name the item's earlier emails, whose Message-IDs the escalations can tell."""

from __future__ import annotations

from contacts.core.db import session_scope, utcnow
from contacts.escalations import items, service
from tests.conftest import read_strictly


def _saying(messages: list, words: str):
    (found,) = [message for message in messages
                if words in message.get_body(("plain",)).get_content()]
    return found


def test_item_replies_and_the_resolution_carry_the_item_thread(work, accounts, actor):
    account_id, contacts = accounts["A-1"]
    item = work.create(actor, account_id=account_id, requester_contact_id=contacts["C-1"])
    other = work.create(actor, account_id=account_id, requester_contact_id=contacts["C-1"])
    for body in ("We are on it.", "Restoring from last night's backup."):
        work.run(service.reply, actor=actor, item_id=item.id, body=body, now=utcnow())
    work.run(service.reply, actor=actor, item_id=other.id, body="Another matter.", now=utcnow())
    work.run(service.change_status, actor=actor, item_id=item.id, status="in_progress",
             now=utcnow())
    with work.app.app_context(), session_scope(work.engine) as session:
        items.resolve_with_note(session=session, desk=work.desk, actor=actor,
                                item=service.get_item(session=session, item_id=item.id),
                                note="Restored.", now=utcnow())
    assert work.deliver().sent == 4
    # (The pool's sessions send in parallel: each email is found by what it says.)
    received = [read_strictly(raw) for raw in work.sink.received]
    first, second, elsewhere, resolution = (
        _saying(received, words) for words in ("We are on it.", "last night's backup",
                                                "Another matter.", "answer this message"))
    read = work.desk.mail.read_reply_address
    for message in (first, second, resolution):
        assert read(str(message["Reply-To"])) == ("item", item.id)
    assert read(str(elsewhere["Reply-To"])) == ("item", other.id)
    assert elsewhere["References"] is None  # another item's thread starts on its own

    assert first["References"] is None and first["In-Reply-To"] is None
    assert str(second["References"]).split() == [first["Message-ID"]]
    assert str(second["In-Reply-To"]) == first["Message-ID"]
    assert str(resolution["References"]).split() == [first["Message-ID"],
                                                     second["Message-ID"]]
    assert str(resolution["In-Reply-To"]) == second["Message-ID"]

    with session_scope(work.engine) as session:
        made = service.item_message_ids(session=session, desk=work.desk,
                                        item=service.get_item(session=session,
                                                              item_id=item.id))
    assert made == {first["Message-ID"], second["Message-ID"], resolution["Message-ID"]}
