"""An update's audience, queued after it is published, a batch at a time, by a job: the
affected accounts' contacts (a keyset over the accounts, every contact of an account in the
same batch, so that an address twice in one account is told once and each account and
language is rendered once), then their webhooks, then the public subscribers (a keyset
over their IDs).

Each batch's outbox rows and the fan-out's cursor commit in one transaction: a job that
dies mid-batch leaves the cursor where the last commit put it, and the next run queues that
batch again, so no recipient is queued twice (the message keys are unique as well) and none
is skipped. Emails of the first batches leave while later ones are being expanded.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.db import session_scope
from contacts.delivery import outbox
from contacts.incidents import messages, publishing
from contacts.incidents.desk import CommsDesk
from contacts.incidents.models import (
    AffectedSite,
    Incident,
    IncidentUpdate,
    Subscriber,
    UpdateFanout,
)
from contacts.vault import service as vault_service

log = logging.getLogger(__name__)

ACCOUNTS_PER_BATCH = 500
# A run's first batch is small, so that the first emails leave at once; each next one
# doubles, up to ACCOUNTS_PER_BATCH.
FIRST_BATCH_ACCOUNTS = 25
SUBSCRIBERS_PER_BATCH = 5000
LEASE = timedelta(minutes=2)


@dataclass(frozen=True)
class Progress:
    """How far an update's fan-out has come, for the incident page."""

    queued: int
    audience: int | None
    done: bool


def progress_by_update(*, session: Session, incident_id: str) -> dict[int, Progress]:
    rows = session.exec(select(IncidentUpdate.number, UpdateFanout)
                        .join(UpdateFanout, col(UpdateFanout.update_id) == IncidentUpdate.id)
                        .where(UpdateFanout.incident_id == incident_id))
    return {number: Progress(fanout.queued, fanout.audience,
                             fanout.finished_at is not None) for number, fanout in rows}


def audience_size(*, session: Session, incident_id: str) -> int:
    """Contacts of the affected accounts, their endpoints and the confirmed subscribers:
    what the fan-out will queue, counted before it starts (addresses repeated within an
    account are told once, so the count may be a little above)."""
    accounts = select(AffectedSite.account_id).where(AffectedSite.incident_id == incident_id)
    contacts = vault_service.count_live_contacts(session=session, account_ids=accounts)
    subscribers = session.exec(select(func.count()).select_from(Subscriber).where(
        col(Subscriber.confirmed_at).is_not(None),
        col(Subscriber.unsubscribed_at).is_(None))).one()
    webhooks = len(publishing.webhook_accounts(session=session, incident_id=incident_id))
    return contacts + subscribers + webhooks


@dataclass(frozen=True)
class Cursor:
    phase: str
    after: str | None


@dataclass
class Batch:
    rows: list[dict]
    then: Cursor  # where the fan-out stands once these rows are queued
    # The saved templates' failures so far, as the update records them.
    failures: list[dict] | None = None


class Expansion:
    """One job run's work on one update's fan-out: the update and its templates, read
    once, and the saved templates' failures over every batch of the run."""

    def __init__(self, *, session: Session, desk: CommsDesk, vault: vault_service.Vault,
                 update_id: str):
        self.desk, self.vault = desk, vault
        self.update = session.get(IncidentUpdate, update_id)
        self.incident = session.get(Incident, self.update.incident_id)
        self.sources = {language: publishing.template_sources(session=session, desk=desk,
                                                              locale=language)
                        for language in messages.LOCALES}
        self.failures = messages.TemplateFailures(
            defaults=messages.default_sources(desk.templates_dir))
        self.accounts_per_batch = FIRST_BATCH_ACCOUNTS
        self.earlier = publishing.earlier_updates_of(session, self.incident.id, self.update)
        for failure in self.update.template_failures or ():
            self.failures.failures[(failure["kind"], failure["locale"])] = dict(failure)

    def prepare(self, session: Session, at: Cursor, now: datetime) -> Batch:
        """The next batch's rows and where the cursor goes after it (reads only)."""
        batch = {"contacts": self._contacts, "webhooks": self._webhooks,
                 "subscribers": self._subscribers}[at.phase](session, at, now)
        batch.failures = self.failures.summary() or None
        return batch

    def commit(self, session: Session, fanout: UpdateFanout, batch: Batch,
               now: datetime) -> None:
        """Queue a batch and move the cursor, in the session's transaction."""
        update_row = session.get(IncidentUpdate, self.update.id)
        if fanout.audience is None:
            fanout.audience = audience_size(session=session, incident_id=self.incident.id)
        outbox.enqueue_rows(session=session, rows=batch.rows)
        fanout.phase, fanout.after = batch.then.phase, batch.then.after
        fanout.queued += len(batch.rows)
        fanout.batches += 1
        update_row.recipients = fanout.queued
        update_row.template_failures = batch.failures
        if fanout.phase == "done":
            fanout.finished_at = now
            self._finished(session, update_row)
        session.add_all([fanout, update_row])

    def _contacts(self, session: Session, at: Cursor, now: datetime) -> Batch:
        account_ids = list(session.exec(
            select(AffectedSite.account_id).distinct()
            .where(AffectedSite.incident_id == self.incident.id,
                   col(AffectedSite.account_id) > (at.after or ""))
            .order_by(AffectedSite.account_id)
            .limit(min(self.accounts_per_batch, ACCOUNTS_PER_BATCH))).all())
        self.accounts_per_batch *= 2
        if not account_ids:
            return Batch([], Cursor("webhooks", None))
        views = publishing.account_views(session, self.desk, self.incident, account_ids)
        contacts = vault_service.recipients_of_accounts(session=session, vault=self.vault,
                                                        account_ids=account_ids)
        return Batch(publishing.contact_rows(self.desk, self.incident, self.update, views,
                                             contacts, self.sources, self.failures, now,
                                             self.earlier),
                     Cursor("contacts", account_ids[-1]))

    def _webhooks(self, session: Session, at: Cursor, now: datetime) -> Batch:
        accounts = publishing.webhook_accounts(session=session, incident_id=self.incident.id)
        views = publishing.account_views(session, self.desk, self.incident,
                                         accounts) if accounts else {}
        return Batch(publishing.webhook_rows(session, self.desk, self.incident, self.update,
                                             views, now) if accounts else [],
                     Cursor("subscribers", None))

    def _subscribers(self, session: Session, at: Cursor, now: datetime) -> Batch:
        rows = publishing.subscriber_rows(
            session, self.desk, self.incident, self.update, self.sources, self.failures, now,
            self.earlier, after=int(at.after or 0), limit=SUBSCRIBERS_PER_BATCH)
        if len(rows) < SUBSCRIBERS_PER_BATCH:
            return Batch(rows, Cursor("done", None))
        return Batch(rows, Cursor("subscribers", rows[-1]["recipient_id"]))

    def _finished(self, session: Session, update_row: IncidentUpdate) -> None:
        actor = Actor.system("fanout")
        for failure in update_row.template_failures or ():
            audit.record(session, actor, "incident.template_failed", target_kind="incident",
                         target_id=self.incident.id, update=update_row.id, **failure)
        audit.record(session, actor, "incident.update_queued", target_kind="incident",
                     target_id=self.incident.id, update=update_row.id,
                     recipients=update_row.recipients)


def expand(*, session: Session, desk: CommsDesk, vault: vault_service.Vault, update_id: str,
           now: datetime) -> int:
    """Queue an update's whole audience in the caller's session (for the CLI and tests,
    and a small audience); returns how many messages were queued."""
    fanout = session.get(UpdateFanout, update_id)
    expansion = Expansion(session=session, desk=desk, vault=vault, update_id=update_id)
    while fanout.finished_at is None:
        batch = expansion.prepare(session, Cursor(fanout.phase, fanout.after), now)
        expansion.commit(session, fanout, batch, now)
    session.flush()
    return fanout.queued


def _claim(engine: Engine, now: datetime, lease: timedelta) -> str | None:
    """An unfinished fan-out that nobody holds, held for `lease`."""
    with session_scope(engine) as session:
        query = (select(UpdateFanout.update_id)
                 .where(col(UpdateFanout.finished_at).is_(None),
                        or_(col(UpdateFanout.lease_until).is_(None),
                            col(UpdateFanout.lease_until) <= now))
                 .order_by(UpdateFanout.created_at).limit(1))
        if engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        update_id = session.exec(query).first()
        if update_id is not None:
            session.execute(update(UpdateFanout).where(UpdateFanout.update_id == update_id)
                            .values(lease_until=now + lease))
    return update_id


@contextmanager
def _batch_writer(engine: Engine, expansion: Expansion, update_id: str,
                  clock: Callable[[], datetime], lease: timedelta,
                  first_committed: Callable[[], None] | None = None
                  ) -> Iterator[Callable[[Batch], None]]:
    """Commits each batch (its rows, the cursor, a renewed lease) in a thread while the
    next batch is rendered, so the database's work and the renderer's overlap. One batch
    waits at most; the batches commit in order, so a job that dies leaves the cursor at
    the last batch committed. `first_committed` is called once the first batch is in."""
    pending: queue.Queue = queue.Queue(maxsize=1)
    failures: list[BaseException] = []
    committed: list[Batch] = []

    def write() -> None:
        while (batch := pending.get()) is not None:
            if failures:
                continue  # drain: the caller stops at its next batch
            try:
                with session_scope(engine) as session:
                    fanout = session.get(UpdateFanout, update_id)
                    now = clock()
                    expansion.commit(session, fanout, batch, now)
                    fanout.lease_until = None if fanout.finished_at else now + lease
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                failures.append(exc)
                continue
            if first_committed is not None and not committed:
                committed.append(batch)
                first_committed()

    writer = threading.Thread(target=write, name="fanout-writer", daemon=True)
    writer.start()

    def hand(batch: Batch) -> None:
        if failures:
            raise failures[0]
        pending.put(batch)

    try:
        yield hand
    finally:
        pending.put(None)
        writer.join()
    if failures:
        raise failures[0]


def run_pending(*, engine: Engine, desk: CommsDesk, vault: vault_service.Vault,
                clock: Callable[[], datetime], lease: timedelta = LEASE,
                first_queued: Callable[[], None] | None = None) -> int:
    """Expand every unfinished fan-out, a batch per transaction, each under a lease that
    every batch renews (a job that dies leaves it to the next run once the lease is out).
    `first_queued()` once each update's first batch is committed (the scheduler brings the
    email drain forward: the first emails need not wait for its next turn). Returns how
    many messages were queued."""
    queued = 0
    while (update_id := _claim(engine, clock(), lease)) is not None:
        with session_scope(engine) as session:
            expansion = Expansion(session=session, desk=desk, vault=vault,
                                  update_id=update_id)
            fanout = session.get(UpdateFanout, update_id)
            at, before = Cursor(fanout.phase, fanout.after), fanout.queued
        with _batch_writer(engine, expansion, update_id, clock, lease,
                           first_queued) as write:
            while at.phase != "done":
                with session_scope(engine) as session:
                    batch = expansion.prepare(session, at, clock())
                write(batch)
                at = batch.then
        with session_scope(engine) as session:
            total = session.get(UpdateFanout, update_id).queued
        queued += total - before
        log.info("update %s queued for %d recipients", update_id, total)
    return queued
