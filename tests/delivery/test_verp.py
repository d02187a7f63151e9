"""VERP: every email's envelope sender is a return path naming its own outbox row, which a
real SMTP server (aiosmtpd) sees in MAIL FROM, pipelined or one command at a time, for an
ASCII recipient and for one that needs SMTPUTF8; the header From stays the sender."""

from __future__ import annotations

import dataclasses
import email
import email.policy

import pytest
from sqlmodel import select

from contacts.core import mailtokens
from contacts.core.db import session_scope, utcnow
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.delivery import outbox
from contacts.delivery.models import OutboxMessage
from contacts.delivery.smtp_lane import PoolSettings, SmtpPool
from tests.conftest import read_strictly
from tests.helpers import smtp_server_with

RECIPIENTS = ["ada@acme.example", "jöe@acme.example", "bob@acme.example",
              "nobody@refused.example"]
REFUSED = "nobody@refused.example"


class Envelopes:
    """Each transaction's MAIL FROM, its options, the recipient and the message."""

    def __init__(self, pipelining: bool):
        self.pipelining = pipelining
        self.seen: list[tuple[str, list[str], str, bytes]] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
        if address == REFUSED:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.seen.append((envelope.mail_from, list(envelope.mail_options),
                          envelope.rcpt_tos[0], envelope.content))
        return "250 OK"


@pytest.fixture
def app(make_app):
    return make_app(mail_sender="Lifeline status <status@lifeline.example>",
                    mail_return_path="bounces@lifeline.example")


def _queue(app) -> dict[str, int]:
    """One email per recipient; their outbox row IDs by recipient."""
    built = services(app)
    with session_scope(built.engine) as session:
        for number, to in enumerate(RECIPIENTS):
            outbox.enqueue_email(session=session, cipher=built.crypto.cipher,
                                 key=f"verp:{number}", purpose="test", now=utcnow(),
                                 topic=outbox.Topic("request", f"LL-{number:04d}", "requester"),
                                 email=outbox.Email(to=to, subject="Update", text="Restored"))
    with session_scope(built.engine) as session:
        rows = {row.key: row.id for row in session.exec(select(OutboxMessage))}
    return {to: rows[f"verp:{number}"] for number, to in enumerate(RECIPIENTS)}


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
def test_every_envelope_sender_is_the_return_path_of_its_own_outbox_row(app, pipelining):
    built = services(app)
    ids = _queue(app)
    relay = Envelopes(pipelining)
    with smtp_server_with(relay) as port:
        mailer = dataclasses.replace(Mailer.from_settings(built.settings),
                                     host="127.0.0.1", port=port, timeout=5)
        with SmtpPool(mailer, PoolSettings(connections=1)) as pool:
            report = outbox.drain(engine=built.engine, cipher=built.crypto.cipher,
                                  mailer=mailer, now=utcnow(), pool=pool)
    assert (report.sent, report.failed) == (3, 1)
    assert sorted(to for _, _, to, _ in relay.seen) == sorted(set(RECIPIENTS) - {REFUSED})
    secret = built.settings.secrets.secret_key
    for mail_from, options, to, raw in relay.seen:
        assert mail_from.startswith("bounces+m") and mail_from.endswith("@lifeline.example")
        assert mailtokens.read_return_path(mail_from, "bounces@lifeline.example",
                                           secret) == ids[to]
        # SMTPUTF8 only where the recipient needs it: the return path is ASCII.
        assert ("SMTPUTF8" in options) == (not to.isascii())
        # (Python's strict policy takes a UTF-8 local part for a defect: read that one as
        # mail clients with RFC 6532 do, policy.default.)
        message = (read_strictly(raw) if to.isascii()
                   else email.message_from_bytes(raw, policy=email.policy.default))
        assert str(message["From"]) == "Lifeline status <status@lifeline.example>"
    # The synchronous 5xx at RCPT still bounces the message, as before.
    with session_scope(built.engine) as session:
        refused = session.get(OutboxMessage, ids[REFUSED])
        assert (refused.state, refused.failure) == ("failed", "bounced")


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
def test_the_smtplib_path_sends_from_the_return_path_it_is_given(pipelining):
    relay = Envelopes(pipelining)
    secret = "k" * 40
    with smtp_server_with(relay) as port:
        mailer = Mailer(host="127.0.0.1", port=port, sender="Lifeline <status@l.example>",
                        return_path="bounces@l.example", secret=secret)
        with mailer.connection() as connection:
            for outbox_id, to in ((7, "ada@acme.example"), (8, "jöe@acme.example")):
                connection.send(to=to, subject="s", text="t",
                                envelope_sender=mailer.envelope_sender(outbox_id))
        mailer.send(to="bob@acme.example", subject="s", text="t")  # no row: the sender
    assert [(mail_from, to) for mail_from, _, to, _ in relay.seen] == [
        (mailtokens.return_path("bounces@l.example", secret, 7), "ada@acme.example"),
        (mailtokens.return_path("bounces@l.example", secret, 8), "jöe@acme.example"),
        ("status@l.example", "bob@acme.example")]
    assert [("SMTPUTF8" in options) for _, options, _, _ in relay.seen] == [False, True, False]
    assert "secret" not in repr(mailer) and secret not in repr(mailer)
