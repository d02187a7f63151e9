"""Webhook fan-out benchmark (issue 18): one update's webhooks to 1,000 endpoints on a local
server that answers each after 200 ms, 5% of them never (held until the caller hangs up),
sent by a worker's webhook lane while its email lane sends an email queued at the same time.

Target: every webhook delivered or deadlined (attempted, given the deadline, and put back for
a retry) in <= 15 s, and the email on the SMTP server in <= 2 s. Baseline, in the same run:
the lane as it was before issue 18, 8 webhooks posted at once per batch, each batch waiting
for its slowest call; it is given `--baseline-seconds` and its total is projected from the
rate it kept (at 10 s a hanging call, it would need minutes).

PostgreSQL, where workers run the lanes as loops. The endpoints share one local server (one
address and port; the lane's pool reuses connections across them, which on loopback saves
little: the 200 ms and the deadlines are what the figure measures). The email goes to
aiosmtpd's sink in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from sqlalchemy import text  # noqa: E402

from app import create_app  # noqa: E402
from contacts.core.db import session_scope, utcnow  # noqa: E402
from contacts.core.ids import new_id  # noqa: E402
from contacts.core.mail import Mailer  # noqa: E402
from contacts.core.schema import upgrade_database  # noqa: E402
from contacts.core.services import services  # noqa: E402
from contacts.core.settings import load_secrets  # noqa: E402
from contacts.delivery import outbox, webhook_client, webhook_lane  # noqa: E402
from contacts.delivery.models import WEBHOOK_SECRET, WebhookEndpoint  # noqa: E402
from contacts.delivery.webhook import WebhookPolicy  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
ANSWER_AFTER = 0.2
HANGING_EVERY = 20  # 5%
BODY = json.dumps({"type": "incident.update", "update": {"what_happened": "x" * 1200}})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int) -> None:
    for _ in range(200):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


# -- the endpoints' server, in a process of its own ------------------------------------------


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    """HTTP/1.1 with keep-alive: each request answered 204 after 200 ms, except on the
    hanging endpoints' paths (/e0000, /e0020...), never answered."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            length = next(int(line.split(":", 1)[1]) for line in lines
                          if line.lower().startswith("content-length:"))
            await reader.readexactly(length)
            if HANGING_EVERY and int(path.removeprefix("/e")) % HANGING_EVERY == 0:
                await reader.read()  # until the caller hangs up
                return
            await asyncio.sleep(ANSWER_AFTER)
            writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def serve(port: int) -> int:
    async def main() -> None:
        server = await asyncio.start_server(_serve_connection, "127.0.0.1", port, backlog=2048)
        async with server:
            await server.serve_forever()

    asyncio.run(main())
    return 0


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Figures:
    settled: int  # webhooks delivered or deadlined
    delivered: int
    webhooks_seconds: float | None  # until every webhook was settled; None: not in time
    email_seconds: float | None
    elapsed: float


def make_endpoints(engine, cipher, port: int, count: int) -> list[str]:
    now = utcnow()
    ids = []
    with session_scope(engine) as session:
        for number in range(count):
            endpoint_id = new_id("whk")
            session.add(WebhookEndpoint(
                id=endpoint_id, account_id=new_id("acc"),
                url=f"http://127.0.0.1:{port}/e{number:04d}",
                secret_encrypted=cipher.encrypt(webhook_lane.new_secret(),
                                                context=WEBHOOK_SECRET),
                created_by="bench", created_at=now))
            ids.append(endpoint_id)
    return ids


def enqueue(engine, cipher, run: str, endpoint_ids: list[str], port: int,
            signed_at_enqueue: bool) -> None:
    """The webhooks of one update and, in the same commit, one email."""
    now = utcnow()
    rows = []
    for number, endpoint_id in enumerate(endpoint_ids):
        if signed_at_enqueue:  # as the lane before issue 18 queued them
            webhook = outbox.SignedWebhook(url=f"http://127.0.0.1:{port}/e{number:04d}",
                                           body=BODY, signature="sha256=00")
        else:
            webhook = outbox.Webhook(endpoint=endpoint_id, body=BODY)
        rows.append(outbox.webhook_row(
            cipher=cipher, key=f"{run}:{endpoint_id}", purpose="bench", webhook=webhook,
            now=now, topic=outbox.Topic("update", run, "webhook", endpoint_id)))
    rows.append(outbox.email_row(cipher=cipher, key=f"{run}:email", purpose="bench", now=now,
                                 topic=outbox.Topic("request", run, "requester"),
                                 email=outbox.Email(to="admin@customer.example",
                                                    subject="Your code", text="123456")))
    with session_scope(engine) as session:
        outbox.enqueue_rows(session=session, rows=rows)


def measure(engine, run: str, count: int, limit: float) -> Figures:
    """Polls the outbox: when the email was sent, when every webhook was settled."""
    started = time.perf_counter()
    email_seconds = webhooks_seconds = None
    settled = delivered = 0
    while time.perf_counter() - started < limit:
        with engine.connect() as connection:
            email = connection.execute(text("SELECT state FROM outbox_message WHERE key = :k"),
                                       {"k": f"{run}:email"}).scalar_one()
            delivered, settled = connection.execute(text(
                "SELECT count(*) FILTER (WHERE state = 'sent'), count(*) FILTER (WHERE "
                "state <> 'queued' OR (attempts >= 1 AND lease_until IS NULL)) "
                "FROM outbox_message WHERE channel = 'webhook' AND key LIKE :k"),
                {"k": f"{run}:%"}).one()
        elapsed = time.perf_counter() - started
        if email == "sent" and email_seconds is None:
            email_seconds = elapsed
        if settled == count:
            webhooks_seconds = elapsed
        if email_seconds is not None and webhooks_seconds is not None:
            break
        time.sleep(0.02)
    return Figures(settled, delivered, webhooks_seconds, email_seconds,
                   time.perf_counter() - started)


class OldWebhookLane:
    """The lane before issue 18 (outbox.drain_webhooks then): claim 8, post them at once,
    wait for all 8, commit, again; as a worker's loop ran it."""

    SENDERS = 8

    def __init__(self, engine, cipher, policy: WebhookPolicy):
        self.engine, self.cipher, self.policy = engine, cipher, policy
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def drain(self) -> int:
        from contacts.delivery.outbox import _attempt, _claim, _outcome_writer, _payload, _settle

        lease = outbox.LEASE
        now = utcnow()
        claimed = _claim(self.engine, now, self.SENDERS, lease, channel="webhook")
        if not claimed:
            return 0
        client = webhook_client.client_for(self.policy)
        report = outbox.DrainReport()
        with _outcome_writer(self.engine) as record, ThreadPoolExecutor(len(claimed)) as pool:
            posted = {pool.submit(_attempt, lambda m=message: client.post(
                url=_payload(self.cipher, m)["url"], body=BODY.encode(),
                headers={"X-Lifeline-Signature": "sha256=00"})): message for message in claimed}
            for done in as_completed(posted):
                _settle(posted[done], now, report, record, done.result())
        return len(claimed)

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.drain():
                self.stop.wait(1.0)


def print_figures(label: str, figures: Figures, count: int, limit: float) -> None:
    if figures.webhooks_seconds is not None:
        webhooks = f"all {count:,} settled in {figures.webhooks_seconds:.1f} s"
    else:
        rate = figures.settled / figures.elapsed if figures.elapsed else 0
        projected = f"{count / rate:.0f} s projected" if rate else "none settled"
        webhooks = (f"{figures.settled:,} of {count:,} settled in {limit:.0f} s "
                    f"({rate:.1f}/s: {projected})")
    email = (f"{figures.email_seconds:.2f} s" if figures.email_seconds is not None
             else f"not sent in {figures.elapsed:.0f} s")
    print(f"  {label:<34} webhooks: {webhooks}; {figures.delivered:,} delivered; "
          f"the email left after {email}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=webhook_lane.DEFAULT_CONCURRENCY)
    parser.add_argument("--deadline", type=float, default=10.0,
                        help="webhooks.deadline_seconds (default: the shipped 10 s)")
    parser.add_argument("--limit", type=float, default=60.0,
                        help="seconds the new lane is given at most")
    parser.add_argument("--baseline-seconds", type=float, default=60.0)
    parser.add_argument("--hanging-every", type=int, default=HANGING_EVERY,
                        help="one endpoint in this many never answers (0: none)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        globals()["HANGING_EVERY"] = args.hanging_every
        return serve(args.serve)
    port, smtp_port = free_port(), free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port),
                               "--hanging-every", str(args.hanging_every)])
    sink = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-c",
                             "aiosmtpd.handlers.Sink", "-l", f"127.0.0.1:{smtp_port}"])
    database = f"lifeline_bench_webhooks_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        wait_for_port(port)
        wait_for_port(smtp_port)
        with tempfile.TemporaryDirectory(prefix="lifeline-webhooks-") as work:
            app = create_app({
                "database_url": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
                "secrets": load_secrets(Path(work) / "keys", {}, generate=True),
                "webhooks_allow_private_hosts": [f"127.0.0.1:{port}"],
                "webhooks_deadline_seconds": args.deadline, "mail_port": smtp_port,
                "delivery_webhook_concurrency": args.concurrency})
            engine = services(app).engine
            upgrade_database(engine)
            settings, cipher = services(app).settings, services(app).crypto.cipher
            policy = WebhookPolicy.from_settings(settings)
            hanging = (len(range(0, args.endpoints, args.hanging_every))
                       if args.hanging_every else 0)
            print(f"webhook fan-out: {args.endpoints:,} endpoints answering after "
                  f"{ANSWER_AFTER * 1000:.0f} ms, {hanging} never answering; deadline "
                  f"{args.deadline:g} s; PostgreSQL; one email queued with them")
            endpoint_ids = make_endpoints(engine, cipher, port, args.endpoints)
            email_lane = outbox.DeliveryLoop(engine=engine, cipher=cipher,
                                             mailer=Mailer.from_settings(settings))
            email_lane.start()
            try:
                lane = webhook_lane.WebhookLoop(engine=engine, cipher=cipher, policy=policy,
                                                concurrency=args.concurrency)
                lane.start()
                enqueue(engine, cipher, "new", endpoint_ids, port, signed_at_enqueue=False)
                ours = measure(engine, "new", args.endpoints, args.limit)
                lane.stop()
                old = OldWebhookLane(engine, cipher, policy)
                old.thread.start()
                enqueue(engine, cipher, "old", endpoint_ids, port, signed_at_enqueue=True)
                theirs = measure(engine, "old", args.endpoints, args.baseline_seconds)
                old.stop.set()
                old.thread.join(args.deadline + 5)
            finally:
                email_lane.stop()
            print_figures(f"webhook lane ({args.concurrency} at once)", ours, args.endpoints,
                          args.limit)
            print_figures("baseline: the lane before (8/batch)", theirs, args.endpoints,
                          args.baseline_seconds)
            met = (ours.webhooks_seconds is not None and ours.webhooks_seconds <= 15
                   and ours.email_seconds is not None and ours.email_seconds <= 2)
            print(f"target (all settled <= 15 s, the email <= 2 s): "
                  f"{'met' if met else 'NOT MET'}")
            engine.dispose()
    finally:
        server.kill()
        sink.kill()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return 0 if ours.settled else 1


if __name__ == "__main__":
    sys.exit(main())
