"""The email lane's pool of SMTP sessions against real servers (aiosmtpd, and raw sockets for
broken peers): pipelined or not, recycled, deferring a 4xx, bouncing a 5xx at RCPT, a
dropped session sending again only what was on the wire, the fallback relay taking over
from one that refuses or never answers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlmodel import select

from contacts.core.db import session_scope, utcnow
from contacts.core.errors import ConfigError
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.core.settings import load_settings
from contacts.delivery import ledger, outbox, smtp_lane
from contacts.delivery.models import OutboxMessage
from contacts.delivery.smtp_lane import PoolSettings, SmtpPool
from tests.helpers import smtp_server_with


class Relay:
    """A real SMTP server's handler: what it received, with PIPELINING offered or not;
    `refuse` maps a recipient to the reply its RCPT gets; `drop_at` names the recipient
    whose message is received and then answered by a dropped connection (once)."""

    def __init__(self, *, pipelining: bool = True, refuse: dict[str, str] | None = None,
                 drop_at: str | None = None):
        self.pipelining, self.refuse, self.drop_at = pipelining, refuse or {}, drop_at
        self.received: list[tuple[str, str]] = []  # (recipient, Message-ID)
        self.sessions = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        self.sessions += 1
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        message_id = next(line.split(":", 1)[1].strip() for line in
                          envelope.content.decode("utf-8", "replace").splitlines()
                          if line.lower().startswith("message-id:"))
        self.received.append((envelope.rcpt_tos[0], message_id))
        if envelope.rcpt_tos[0] == self.drop_at:
            self.drop_at = None
            server.transport.abort()  # received, and the sender never hears of it
        return "250 OK"


def _queue(app, recipients: list[str]) -> None:
    now = utcnow()
    with session_scope(services(app).engine) as session:
        for number, to in enumerate(recipients):
            outbox.enqueue_email(session=session, cipher=services(app).crypto.cipher,
                                 key=f"lane:{to}", purpose="test", now=now,
                                 topic=outbox.Topic("request", f"LL-{number:04d}", "requester"),
                                 email=outbox.Email(to=to, subject="Update", text="Restored"))


def _drain(app, port: int, fallback: int | None = None, connections: int = 4,
           per_connection: int = 100, timeout: float = 2) -> outbox.DrainReport:
    mailer = Mailer(host="127.0.0.1", port=port, sender="status@lifeline.test",
                    timeout=timeout)
    relay_b = (Mailer(host="127.0.0.1", port=fallback, sender="status@lifeline.test",
                      timeout=timeout) if fallback else None)
    settings = PoolSettings(connections=connections, messages_per_connection=per_connection)
    with SmtpPool(mailer, settings, relay_b) as pool:
        return outbox.drain(engine=services(app).engine, cipher=services(app).crypto.cipher,
                            mailer=mailer, now=utcnow(), pool=pool)


def _rows(app) -> dict[str, OutboxMessage]:
    with session_scope(services(app).engine) as session:
        rows = list(session.exec(select(OutboxMessage)))
        session.expunge_all()
    return {row.key.removeprefix("lane:"): row for row in rows}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


RECIPIENTS = [f"r{n:02d}@example.org" for n in range(30)]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "lockstep"])
def test_every_message_arrives_once_with_its_message_id(app, pipelining):
    relay = Relay(pipelining=pipelining)
    _queue(app, RECIPIENTS)
    with smtp_server_with(relay) as port:
        report = _drain(app, port, connections=3)
    assert (report.sent, report.retried, report.failed) == (30, 0, 0)
    assert sorted(relay.received) == sorted(
        (to, outbox.message_id_for(f"lane:{to}")) for to in RECIPIENTS)
    assert relay.sessions == 3  # many messages a session
    assert {row.state for row in _rows(app).values()} == {"sent"}


def test_a_session_is_recycled_after_its_messages(app):
    relay = Relay()
    _queue(app, RECIPIENTS[:10])
    with smtp_server_with(relay) as port:
        assert _drain(app, port, connections=1, per_connection=3).sent == 10
    assert relay.sessions == 4  # 3 + 3 + 3 + 1
    assert len(relay.received) == 10


def test_a_4xx_defers_and_a_5xx_at_rcpt_bounces(app):
    relay = Relay(refuse={"busy@example.org": "451 4.3.0 try later",
                          "gone@example.org": "550 5.1.1 no such mailbox"})
    _queue(app, ["busy@example.org", "gone@example.org", *RECIPIENTS[:6]])
    with smtp_server_with(relay) as port:
        report = _drain(app, port, connections=2)
    assert (report.sent, report.retried, report.failed) == (6, 1, 1)
    rows = _rows(app)
    busy, gone = rows["busy@example.org"], rows["gone@example.org"]
    assert busy.state == "queued" and "451" in busy.last_error and busy.failure == "deferred"
    assert busy.next_attempt_at > utcnow() + timedelta(seconds=20)  # backing off
    assert gone.state == "failed" and gone.last_error.startswith(outbox.BOUNCED)
    assert gone.failure == "bounced"
    assert "550" in gone.last_error
    with session_scope(services(app).engine) as session:
        bounced = ledger.bounced_since(session=session, since=utcnow() - timedelta(hours=1))
    assert [bounce.about_id for bounce in bounced] == ["LL-0001"]  # gone@, second queued


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "lockstep"])
def test_a_dropped_session_sends_again_only_the_message_whose_outcome_was_unknown(
        app, pipelining):
    dropped = RECIPIENTS[4]
    relay = Relay(pipelining=pipelining, drop_at=dropped)
    _queue(app, RECIPIENTS[:12])
    with smtp_server_with(relay) as port:
        report = _drain(app, port, connections=1)
    assert report.sent == 12
    copies = Counter(to for to, _ in relay.received)
    # The message on the wire when the connection dropped arrived twice, as the same
    # message; every other one once: those already answered were not sent again, and the
    # next one, whose envelope only was sent, was not lost.
    assert copies[dropped] == 2 and all(copies[to] == 1 for to in RECIPIENTS[:12]
                                        if to != dropped)
    assert len({message_id for to, message_id in relay.received if to == dropped}) == 1
    assert relay.sessions == 2


def test_an_address_with_a_line_break_is_refused_and_never_written_to_the_relay(app):
    relay = Relay()
    smuggled = "victim@example.org>\r\nRCPT TO:<other@example.net"
    _queue(app, [smuggled, RECIPIENTS[0]])
    with smtp_server_with(relay) as port:
        report = _drain(app, port, connections=1)
    assert (report.sent, report.failed) == (1, 1)
    assert [to for to, _ in relay.received] == [RECIPIENTS[0]]
    assert _rows(app)[smuggled].last_error.startswith(outbox.BOUNCED)


@contextlib.contextmanager
def _silent_server():
    """A port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("primary", ["refusing", "silent"])
def test_the_fallback_relay_takes_over_from_one_that_refuses_or_never_answers(app, primary):
    relay = Relay()
    _queue(app, RECIPIENTS[:8])
    with contextlib.ExitStack() as stack:
        port = (_free_port() if primary == "refusing"
                else stack.enter_context(_silent_server()))
        fallback = stack.enter_context(smtp_server_with(relay))
        report = _drain(app, port, fallback=fallback, connections=2, timeout=1)
    assert report.sent == 8 and len(relay.received) == 8


def test_with_every_relay_down_one_message_is_retried_and_the_rest_handed_back(app):
    _queue(app, RECIPIENTS[:5])
    report = _drain(app, _free_port(), fallback=_free_port(), connections=3)
    assert (report.sent, report.retried, report.failed) == (0, 1, 0)
    rows = sorted(_rows(app).values(), key=lambda row: row.attempts)
    assert [row.attempts for row in rows] == [0, 0, 0, 0, 1]
    assert "ConnectionRefusedError" in rows[-1].last_error
    assert {row.state for row in rows} == {"queued"} and all(
        row.lease_until is None for row in rows)


@contextlib.contextmanager
def _babbling_server(reply: bytes):
    """A raw server that greets, then answers anything with `reply` and keeps the line."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                peer, _ = listener.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(OSError):
                peer.sendall(b"220 hello\r\n")
                peer.recv(4096)
                peer.sendall(reply)
            threading.Thread(target=lambda peer=peer: (stop.wait(), peer.close()),
                             daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.mark.parametrize("reply", [b"x" * 200_000, b"hello there\r\n", b"250-" * 50_000],
                         ids=["endless-line", "no-smtp", "endless-reply"])
def test_a_relay_that_babbles_costs_one_attempt_and_loses_nothing(app, reply):
    _queue(app, RECIPIENTS[:3])
    with _babbling_server(reply) as port:
        report = _drain(app, port, connections=2, timeout=1)
    assert (report.sent, report.retried) == (0, 1)
    assert {row.state for row in _rows(app).values()} == {"queued"}


def test_a_rate_cap_spaces_the_messages_to_one_relay(monkeypatch):
    clock, slept = [100.0], []
    monkeypatch.setattr(smtp_lane.time, "monotonic", lambda: clock[0])

    async def sleep(seconds):
        slept.append(round(seconds, 6))

    monkeypatch.setattr(smtp_lane.asyncio, "sleep", sleep)
    relay = smtp_lane.Relay(Mailer(host="127.0.0.1", port=25, sender="s@l.test"), rate=4)
    for _ in range(4):
        asyncio.run(relay.slot())
    assert slept == [0.25, 0.5, 0.75]  # the first at once, then one every quarter second
    unlimited = smtp_lane.Relay(Mailer(host="127.0.0.1", port=25, sender="s@l.test"), rate=0)
    asyncio.run(unlimited.slot())
    assert len(slept) == 3


@pytest.mark.parametrize("variable, value", [
    ("LIFELINE_DELIVERY_SMTP_CONNECTIONS", "0"),
    ("LIFELINE_DELIVERY_SMTP_CONNECTIONS", "10000"),
    ("LIFELINE_DELIVERY_SMTP_MESSAGES_PER_CONNECTION", "0"),
    ("LIFELINE_DELIVERY_SMTP_RATE_PER_SECOND", "-1"),
    ("LIFELINE_DELIVERY_SMTP_RATE_PER_SECOND", "nan"),
    ("LIFELINE_MAIL_FALLBACK_SECURITY", "ssl"),
    ("LIFELINE_MAIL_FALLBACK_PORT", "70000"),
    ("LIFELINE_MAIL_FALLBACK_HOST", "relay.example.net/x"),
])
def test_pool_and_fallback_settings_are_checked(variable, value, service_secrets):
    with pytest.raises(ConfigError):
        load_settings({"secrets": service_secrets}, environ={variable: value})


def test_the_pool_reads_its_settings_and_the_fallback_relay(service_secrets):
    settings = load_settings({"secrets": service_secrets}, environ={
        "LIFELINE_DELIVERY_SMTP_CONNECTIONS": "7",
        "LIFELINE_DELIVERY_SMTP_RATE_PER_SECOND": "50",
        "LIFELINE_MAIL_FALLBACK_HOST": "127.0.0.2", "LIFELINE_MAIL_FALLBACK_PORT": "2525"})
    pool = SmtpPool.from_settings(settings)
    assert pool.settings == PoolSettings(connections=7, messages_per_connection=100,
                                         rate_per_second=50.0)
    assert [(relay.mailer.host, relay.mailer.port) for relay in pool.relays] == [
        ("127.0.0.1", 1025), ("127.0.0.2", 2525)]
