"""A request's emails as one thread, as a real SMTP server received them: the receipt, a new
code and each staff reply carry a Reply-To that reads back to the request, and name the
request's earlier emails (In-Reply-To, References), whose Message-IDs the intake can tell."""

from __future__ import annotations

from contacts.core import mailtokens
from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.intake import conversation
from contacts.intake import service as intake_service
from contacts.intake.verification import resend_code
from contacts.jobs import message_renderer
from tests.conftest import read_strictly

ASKER = "asker@example.org"


def _ids(message) -> list[str]:
    return str(message["References"] or "").split()


def _saying(messages: list, words: str):
    (found,) = [message for message in messages
                if words in message.get_body(("plain",)).get_content()]
    return found


def test_receipt_code_and_staff_replies_carry_the_request_thread(desk, desk_client,
                                                                 make_staff):
    reference = desk.submit(desk_client, email=ASKER, message="Our shop is gone").get_json()[
        "reference"]
    request = desk.request(reference)
    render = message_renderer(desk.app)
    with session_scope(desk.engine) as session:
        resend_code(session=session, intake=desk.intake, reference=reference, render=render,
                    now=utcnow())
    staff = Actor("staff", make_staff("support").id)
    for body in ("We are restoring it.", "It is back: please check."):
        with desk.app.app_context(), session_scope(desk.engine) as session:
            conversation.reply_as_staff(session=session, intake=desk.intake, actor=staff,
                                        request_id=request.id, body=body, render=render,
                                        now=utcnow())
    assert desk.deliver().sent == 4
    # (The pool's sessions send in parallel: each email is found by what it says.)
    raw = [read_strictly(message.as_bytes()) for message in desk.mail_to(ASKER)]
    receipt, code, first_reply, second_reply = (
        _saying(raw, words) for words in ("We have your support request", "Here is a new code",
                                          "We are restoring it.", "please check"))

    mail = desk.intake.mail
    for message in raw:
        assert mail.read_reply_address(str(message["Reply-To"])) == ("request", request.id)
        assert mailtokens.read_reply_address(str(message["Reply-To"]).upper(),
                                             mail.reply_to, mail.secret) == ("request",
                                                                             request.id)
    assert receipt["References"] is None and receipt["In-Reply-To"] is None
    assert _ids(code) == [receipt["Message-ID"]] == [str(code["In-Reply-To"])]
    assert _ids(first_reply) == [receipt["Message-ID"]]
    assert str(first_reply["In-Reply-To"]) == receipt["Message-ID"]
    assert _ids(second_reply) == [receipt["Message-ID"], first_reply["Message-ID"]]
    assert str(second_reply["In-Reply-To"]) == first_reply["Message-ID"]

    # What the router asks: every Message-ID Lifeline made for this request's emails.
    with session_scope(desk.engine) as session:
        made = intake_service.request_message_ids(session=session, intake=desk.intake,
                                                  request_id=request.id)
    assert made == {str(message["Message-ID"]) for message in raw}


def test_another_requests_token_names_only_its_own_request(desk, desk_client):
    first = desk.submit(desk_client, email="one@example.org", message="a").get_json()
    second = desk.submit(desk_client, email="two@example.org", message="b").get_json()
    desk.deliver()
    (mail_one,) = desk.mail_to("one@example.org")
    (mail_two,) = desk.mail_to("two@example.org")
    read = desk.intake.mail.read_reply_address
    assert read(str(mail_one["Reply-To"])) == ("request", desk.request(first["reference"]).id)
    assert read(str(mail_two["Reply-To"])) == ("request", desk.request(second["reference"]).id)
    assert mail_one["Reply-To"] != mail_two["Reply-To"]
