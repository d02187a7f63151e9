"""A slow webhook endpoint delays no email: webhooks go in a lane of their own, and each call
ends at its deadline (connect, send and answer together), then is retried later. The
endpoints are real sockets on 127.0.0.1 that trickle a byte a second for 30 s or never
answer; the code email goes to a real SMTP server while they hold the webhook."""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import pytest
from sqlmodel import select

from contacts.core.db import session_scope, utcnow
from contacts.core.mail import Mailer
from contacts.core.scheduler import SchedulerRunner
from contacts.core.services import services
from contacts.delivery import outbox, webhook_lane
from contacts.delivery.models import OutboxMessage
from contacts.delivery.webhook import UNREACHABLE, WebhookPolicy
from tests.helpers import smtp_server_with

TRICKLE = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"." * 40


class StallingEndpoint:
    """Reads a request, then answers one byte a second for 30 s (`trickle`) or never
    (`silent`); once `prompt` is set, answers 204 at once. `stalled` is set while it holds a
    call; `released` once the caller has given that call up."""

    def __init__(self, mode: str):
        self.mode, self.prompt, self.caller_hung_up = mode, False, False
        self.calls: list[bytes] = []
        self.stalled, self.released = threading.Event(), threading.Event()
        self._stop = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.host_port = f"127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(4096)
            head, _, body = request.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += connection.recv(4096)
            self.calls.append(head)
            if self.prompt:
                connection.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                return
            self.stalled.set()
            self.caller_hung_up = self._hold(connection)
            self.released.set()

    def _hold(self, connection: socket.socket) -> bool:
        """Until the caller hangs up (True), or 30 s pass or the test ends (False)."""
        connection.settimeout(1)
        for second in range(30):
            try:
                if self.mode == "trickle":
                    connection.sendall(TRICKLE[second:second + 1])
                if connection.recv(1) == b"":
                    return True  # the caller closed its end
            except TimeoutError:
                pass
            except OSError:
                return True
            if self._stop.is_set():
                return False
        return False

    def close(self) -> None:
        self._stop.set()
        self.server.close()


class NotifyingSink:
    """A real SMTP server's handler that notes, as each email arrives, whether the webhook
    was being held at that moment."""

    def __init__(self, endpoint: StallingEndpoint):
        self.endpoint = endpoint
        self.arrived = threading.Event()
        self.webhook_held_on_arrival: bool | None = None
        self.recipients: list[str] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.webhook_held_on_arrival = (self.endpoint.stalled.is_set()
                                        and not self.endpoint.released.is_set())
        self.recipients += envelope.rcpt_tos
        self.arrived.set()
        return "250 OK"


@pytest.fixture(params=["trickle", "silent"])
def endpoint(request):
    made = StallingEndpoint(request.param)
    yield made
    made.close()


@pytest.fixture
def mail(endpoint):
    sink = NotifyingSink(endpoint)
    with smtp_server_with(sink) as port:
        yield port, sink


def _queue_webhook(app) -> None:
    endpoint_url = f"http://{services(app).settings.webhooks_allow_private_hosts[0]}"
    with session_scope(services(app).engine) as session:
        outbox.enqueue_rows(session=session, rows=[outbox.webhook_row(
            cipher=services(app).crypto.cipher, key="update:upd_1:acc_1:webhook",
            purpose="incident_update", now=utcnow(),
            topic=outbox.Topic("update", "upd_1", "webhook", "acc_1", "acc_1"),
            webhook=outbox.SignedWebhook(
                url=f"{endpoint_url}/hooks", body='{"type": "incident.update"}',
                signature="sha256=00"))])


def _webhook_row(app) -> OutboxMessage:
    with session_scope(services(app).engine) as session:
        row = session.exec(select(OutboxMessage).where(
            OutboxMessage.channel == "webhook")).one()
        session.expunge(row)
        return row


def _ask_for_a_code(client) -> None:
    answer = client.post("/api/v1/requests", json={"email": "waiting@customer.example",
                                                   "message": "Our shop is gone"})
    assert answer.status_code == 202, answer.get_data(as_text=True)


def _attempt_recorded(app) -> None:
    """Until the sender has committed the outcome of its first attempt."""
    for _ in range(300):
        if _webhook_row(app).lease_until is None:
            return
        time.sleep(0.1)
    raise AssertionError("the webhook attempt was never recorded")


def _retried_later(app, endpoint: StallingEndpoint) -> None:
    """The failed attempt was put back for later, and later it goes through."""
    _attempt_recorded(app)
    row = _webhook_row(app)
    assert (row.state, row.attempts, row.last_error) == ("queued", 1, UNREACHABLE)
    assert row.lease_until is None and row.next_attempt_at > row.created_at
    endpoint.prompt = True
    report = webhook_lane.drain_webhooks(engine=services(app).engine,
                                         cipher=services(app).crypto.cipher,
                                         policy=WebhookPolicy.from_settings(
                                             services(app).settings),
                                         now=row.next_attempt_at + timedelta(seconds=1))
    assert report.sent == 1 and len(endpoint.calls) == 2


def _app(make_app, endpoint, mail):
    return make_app(mail_port=mail[0], delivery_drain_seconds=1,
                    webhooks_allow_private_hosts=[endpoint.host_port])


def test_the_scheduled_lanes_send_a_code_email_while_a_webhook_is_held(make_app, endpoint,
                                                                         mail):
    """SQLite's senders (and the leader's on PostgreSQL): the scheduler's two drain jobs."""
    app = _app(make_app, endpoint, mail)
    _queue_webhook(app)
    jobs = [job for job in services(app).jobs if job.id.startswith("delivery-")]
    runner = SchedulerRunner(services(app).engine, jobs, app=app)
    runner.start()
    try:
        assert endpoint.stalled.wait(30)  # the webhook lane is held by the endpoint...
        _ask_for_a_code(app.test_client())  # ...when a code email is queued
        assert mail[1].arrived.wait(30)
        assert mail[1].webhook_held_on_arrival is True
        assert mail[1].recipients == ["waiting@customer.example"]
        assert endpoint.released.wait(40) and endpoint.caller_hung_up  # the deadline
    finally:
        runner.shutdown()
    _retried_later(app, endpoint)


def test_the_delivery_loops_send_a_code_email_while_a_webhook_is_held(make_app, endpoint,
                                                                        mail):
    """What every worker runs on PostgreSQL: one loop per lane."""
    app = _app(make_app, endpoint, mail)
    settings = services(app).settings
    engine, cipher = services(app).engine, services(app).crypto.cipher
    loops = [outbox.DeliveryLoop(engine=engine, cipher=cipher, idle_seconds=0.2,
                                 mailer=Mailer.from_settings(settings)),
             webhook_lane.WebhookLoop(engine=engine, cipher=cipher, idle_seconds=0.2,
                                      policy=WebhookPolicy.from_settings(settings))]
    _queue_webhook(app)
    for loop in loops:
        loop.start()
    try:
        assert endpoint.stalled.wait(30)
        _ask_for_a_code(app.test_client())
        assert mail[1].arrived.wait(30)
        assert mail[1].webhook_held_on_arrival is True
        assert endpoint.released.wait(40) and endpoint.caller_hung_up
    finally:
        for loop in loops:
            loop.stop()
    _retried_later(app, endpoint)


def test_a_webhook_call_ends_at_its_deadline_whatever_the_endpoint_does(endpoint):
    """One call on its own, given up at its deadline: the endpoint sees the caller hang up
    while it still had 28 s of bytes to trickle (or of silence to keep)."""
    policy = WebhookPolicy(deadline_seconds=2, allow_private=frozenset({endpoint.host_port}))
    url = f"http://{endpoint.host_port}/hooks"
    failed = threading.Event()

    def call() -> None:
        from contacts.delivery import webhook, webhook_client

        try:
            webhook_client.post(url=url, body=b"{}", headers={}, policy=policy)
        except webhook.WebhookFailed as exc:
            assert exc.message == UNREACHABLE
            failed.set()

    caller = threading.Thread(target=call)
    caller.start()
    assert endpoint.stalled.wait(10)
    assert endpoint.released.wait(40) and endpoint.caller_hung_up
    caller.join(10)
    assert failed.is_set()
