"""The email lane's SMTP side: a pool of `delivery.smtp_connections` sessions per worker
process, on one asyncio loop in a thread of its own, sharing one batch of messages.

Each session carries several messages (pipelined when the relay offers it: one round trip a
message) and is recycled after `delivery.smtp_messages_per_connection`, or closed on an
error. Messages to one relay can be held to `delivery.smtp_rate_per_second`. A relay that
refuses connections or times out rests for `RELAY_REST` seconds while the `[mail]
fallback_*` relay, if any, takes the sessions. A dropped session hands its unsent messages
back to the batch and sends again (same Message-ID) only those whose outcome is unknown.
Idle sessions are kept open between batches for `IDLE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass

from contacts.core.mail import Mailer, MailFailed
from contacts.delivery.smtp_client import (
    Dropped,
    Letter,
    Outcome,
    RelayUnavailable,
    SmtpSession,
)

RELAY_REST = 30.0
IDLE_SECONDS = 30.0
# A message whose session dropped goes back to the batch this many times, then waits for
# the outbox's backoff.
RESENDS = 2


@dataclass(frozen=True)
class PoolSettings:
    connections: int = 20
    messages_per_connection: int = 100
    rate_per_second: float = 0.0  # per relay; 0: no cap

    @classmethod
    def from_settings(cls, settings) -> PoolSettings:
        return cls(connections=settings.delivery_smtp_connections,
                   messages_per_connection=settings.delivery_smtp_messages_per_connection,
                   rate_per_second=settings.delivery_smtp_rate_per_second)


def outcome_backlog(connections: int) -> int:
    """Outcomes a pool may have waiting for the writer: enough that a commit never holds
    the sessions up, few enough to bound what a killed worker sends twice."""
    return connections + 8


def in_flight_per_worker(connections: int) -> int:
    """Messages a killed worker may have had accepted by the relay and not yet recorded:
    one on the wire per session, and the outcome writer's backlog (those being written
    included). Each is sent again with the same Message-ID."""
    return connections + outcome_backlog(connections)


class Relay:
    """A relay and what the lane knows of it: resting after a failure, its rate cap."""

    def __init__(self, mailer: Mailer, rate: float):
        self.mailer, self.rate = mailer, rate
        self.resting_until = 0.0
        self._next_slot = 0.0

    @property
    def where(self) -> str:
        return f"{self.mailer.host}:{self.mailer.port}"

    async def slot(self) -> None:
        """Wait for this relay's next sending slot, when it has a rate cap."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        at = max(now, self._next_slot)
        self._next_slot = at + 1.0 / self.rate
        if at > now:
            await asyncio.sleep(at - now)


@dataclass
class _Idle:
    session: SmtpSession
    relay: Relay
    since: float


class SmtpPool:
    """Use as a context manager, or `close()` it: its sessions and its thread end there."""

    def __init__(self, primary: Mailer, settings: PoolSettings | None = None,
                 fallback: Mailer | None = None):
        self.primary, self.settings = primary, settings or PoolSettings()
        self.relays = [Relay(mailer, self.settings.rate_per_second)
                       for mailer in (primary, fallback) if mailer is not None]
        self._idle: list[_Idle] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> SmtpPool:
        fallback = None
        if settings.mail_fallback_host:
            fallback = Mailer(host=settings.mail_fallback_host, port=settings.mail_fallback_port,
                              sender=settings.mail_sender,
                              security=settings.mail_fallback_security,
                              username=settings.mail_fallback_username,
                              password=settings.secrets.mail_fallback_password,
                              timeout=settings.mail_timeout_seconds)
        return cls(Mailer.from_settings(settings), PoolSettings.from_settings(settings),
                   fallback)

    @property
    def connections(self) -> int:
        return self.settings.connections

    def __enter__(self) -> SmtpPool:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def deliver(self, letters: list[Letter], outcome: Outcome) -> list[Letter]:
        """Send every letter, each outcome handed to `outcome` (in the pool's thread) as it
        is known. When no relay can be reached, the first letter left is given the reason
        as its failure and the others are returned untried."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever,
                                                name="smtp-lane", daemon=True)
                self._thread.start()
        return asyncio.run_coroutine_threadsafe(self._deliver(letters, outcome),
                                                self._loop).result()

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._close_idle(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)
        loop.close()

    async def _close_idle(self, older_than: float | None = None) -> None:
        now = time.monotonic()
        leaving = [idle for idle in self._idle
                   if older_than is None or now - idle.since > older_than]
        self._idle = [idle for idle in self._idle if idle not in leaving]
        await asyncio.gather(*(idle.session.quit() for idle in leaving))

    async def _deliver(self, letters: list[Letter], outcome: Outcome) -> list[Letter]:
        await self._close_idle(older_than=IDLE_SECONDS)
        batch = _Batch(deque(letters), outcome)
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.settings.connections, len(letters))):
                    group.create_task(self._work(batch))
        except BaseExceptionGroup as failed:  # an outcome could not be recorded
            raise failed.exceptions[0] from None
        if not batch.queue:
            return []
        first = batch.queue.popleft()
        outcome(first, MailFailed(batch.unreachable or "no relay could be reached",
                                  server_down=True))
        return list(batch.queue)

    async def _work(self, batch: _Batch) -> None:
        """One session's worth of the batch at a time, until the batch is empty or no relay
        takes a session."""
        while batch.queue:
            try:
                session, relay = await self._session()
            except RelayUnavailable as exc:
                batch.unreachable = exc.args[0]
                return
            ended: Dropped | None = None
            try:
                ended = await session.send(lambda relay=relay: batch.take(relay), batch.outcome,
                                           self.settings.messages_per_connection)
            except BaseException:
                session.abort()  # cancelled with the batch: mid-transaction, so no QUIT
                raise
            if ended is None:
                if session.carried >= self.settings.messages_per_connection:
                    await session.quit()
                else:
                    self._idle.append(_Idle(session, relay, time.monotonic()))
                continue
            session.abort()
            batch.lost(ended, session.where)
            if ended.reason.startswith("sender refused"):
                batch.unreachable = f"sending through {session.where} failed: {ended.reason}"
                return

    async def _session(self) -> tuple[SmtpSession, Relay]:
        """An idle session, else a new one to the first relay not resting."""
        if self._idle:
            idle = self._idle.pop()
            return idle.session, idle.relay
        reasons = []
        now = time.monotonic()
        candidates = [relay for relay in self.relays if relay.resting_until <= now]
        for relay in candidates or self.relays[:1]:
            try:
                return await SmtpSession.open(relay.mailer), relay
            except RelayUnavailable as exc:
                relay.resting_until = time.monotonic() + RELAY_REST
                reasons.append(f"sending through {relay.where} failed: {exc.args[0]}")
        raise RelayUnavailable("; ".join(reasons))


class _Batch:
    """The letters of one `deliver` not yet taken by a session, shared by the sessions."""

    def __init__(self, queue: deque[Letter], outcome: Outcome):
        self.queue, self.outcome = queue, outcome
        self.unreachable: str | None = None
        self._drops: dict[int, int] = {}

    async def take(self, relay: Relay) -> Letter | None:
        if not self.queue:
            return None
        await relay.slot()
        return self.queue.popleft() if self.queue else None

    def lost(self, dropped: Dropped, where: str) -> None:
        """Letters of a dropped session: back to the batch (unsent ones at once; those on
        the wire, whose outcome is unknown, too, as the same message), up to RESENDS times
        each; then left to the outbox's backoff."""
        for letter in [*dropped.unknown, *dropped.unsent]:
            drops = self._drops[id(letter)] = self._drops.get(id(letter), 0) + 1
            if drops <= RESENDS:
                self.queue.appendleft(letter)
            else:
                self.outcome(letter, MailFailed(
                    f"sending through {where} failed: connection {dropped.reason}",
                    server_down=True))
