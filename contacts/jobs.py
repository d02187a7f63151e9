"""Every scheduled job, listed in one place. Each job is a module-level function with no
arguments (the job store keeps it by reference); it reaches the app through
`scheduler.current_app()` and calls the same service functions as the web and the CLI.
"""

from __future__ import annotations

import functools
import logging
from datetime import timedelta
from pathlib import Path

from contacts import reactions
from contacts.backup import drills, snapshot
from contacts.core import audit, schema
from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.mail import Renderer, render_message
from contacts.core.scheduler import ScheduledJob, current_app, record_heartbeat, run_soon
from contacts.core.services import services
from contacts.delivery import ledger, outbox, quarantine, webhook_lane
from contacts.delivery.smtp_lane import SmtpPool
from contacts.delivery.webhook import WebhookPolicy
from contacts.escalations import service as escalations_service
from contacts.escalations.service import SupportDesk
from contacts.inbound import mailbox as inbound_mailbox
from contacts.inbound.imap import MailboxUnavailable
from contacts.inbound.watch import MailboxWatcher
from contacts.incidents import service as incidents_service
from contacts.incidents.service import CommsDesk
from contacts.intake import service as intake_service
from contacts.intake.service import Intake, RequestWriter
from contacts.mailroom import Mailroom
from contacts.vault import freshness, purge
from contacts.vault.service import Vault

log = logging.getLogger(__name__)

HOUR = 3600


def purge_deleted_records() -> None:
    built = services(current_app())
    settings = built.settings
    with session_scope(built.engine) as session:
        purged = purge.purge_expired(session=session, now=utcnow(),
                                     retention_days=settings.vault_retention_days)
    if purged.total:
        log.info("purged %d records deleted more than %d days ago", purged.total,
                 settings.vault_retention_days)


def drop_old_payloads() -> None:
    """Outbox payloads older than `delivery.retention_days` are dropped; the rows stay."""
    built = services(current_app())
    dropped = ledger.drop_old_payloads(engine=built.engine, now=utcnow(),
                                       retention_days=built.settings.delivery_retention_days)
    if dropped:
        log.info("dropped the payloads of %d outbox messages older than %d days", dropped,
                 built.settings.delivery_retention_days)


def _backup_dir(settings) -> Path:
    return Path(settings.backup_dir)


def snapshot_and_drill() -> None:
    """A new snapshot, old ones pruned, and the new one drilled at once."""
    built = services(current_app())
    settings = built.settings
    engine = built.engine
    directory = _backup_dir(settings)
    path, manifest = snapshot.create_snapshot(engine=engine,
                                              backup_key=settings.secrets.backup_key,
                                              directory=directory,
                                              revision=schema.database_revision(engine))
    snapshot.prune_snapshots(directory, settings.backup_keep)
    with session_scope(engine) as session:
        audit.record(session, Actor.system("scheduler"), "backup.created", snapshot=path.name,
                     rows=manifest.rows)
    drill_latest_snapshot()


def drill_latest_snapshot() -> None:
    built = services(current_app())
    settings = built.settings
    result = drills.drill_latest(directory=_backup_dir(settings),
                                 backup_key=settings.secrets.backup_key,
                                 load_field_keys=built.field_keys_source,
                                 engine=built.engine)
    if not result.ok:
        log.error("backup drill of %s failed: %s", result.snapshot, result.detail)


def ask_contacts_to_confirm() -> None:
    app = current_app()
    built = services(app)
    settings = built.settings
    vault = built.get(Vault)
    with session_scope(built.engine) as session:
        flagged = freshness.flag_bounced_confirmations(session=session, now=utcnow())
        queued = freshness.request_confirmations(
            session=session, vault=vault, render=message_renderer(app),
            secret_key=settings.secrets.secret_key, base_url=settings.app_base_url,
            now=utcnow(), after_days=settings.vault_confirm_after_days,
            link_days=settings.vault_confirm_link_days, limit=settings.vault_confirm_batch)
    if queued or flagged:
        log.info("asked %d contacts to confirm their details (queued in the outbox); %d "
                 "flagged undeliverable", queued, len(flagged))


def send_queued_messages() -> None:
    settings = services(current_app()).settings
    with SmtpPool.from_settings(settings) as pool:
        _drain("outbox", outbox.drain, mailer=pool.primary, pool=pool,
               limit=max(200, 25 * pool.connections))


def send_queued_webhooks() -> None:
    """The webhook lane, a job of its own: a slow endpoint holds this job, never the
    emails' (the scheduler runs jobs in separate threads)."""
    settings = services(current_app()).settings
    _drain("webhooks", webhook_lane.drain_webhooks, policy=WebhookPolicy.from_settings(settings),
           concurrency=settings.delivery_webhook_concurrency)


def _drain(lane: str, drain, **transport) -> None:
    built = services(current_app())
    report = drain(engine=built.engine, cipher=built.crypto.cipher, now=utcnow(),
                   lease=timedelta(seconds=built.settings.delivery_lease_seconds), **transport)
    _log_drain(lane, report)


def _log_drain(lane: str, report: outbox.DrainReport) -> None:
    if report.sent or report.retried or report.failed:
        log.info("%s: %d sent, %d to retry, %d failed", lane, report.sent, report.retried,
                 report.failed)


def message_renderer(app) -> Renderer:
    return lambda kind, locale, values: render_message(app.jinja_env, kind, locale, values)


def process_requests() -> None:
    """Store spooled requests, then match new requests to accounts."""
    built = services(current_app())
    intake = built.get(Intake)
    engine = built.engine
    built.get(RequestWriter).replay_spool(now=utcnow())
    with session_scope(engine) as session:
        matched = intake_service.process_pending(
            session=session, intake=intake,
            vault=built.get(Vault), now=utcnow())
    if matched:
        log.info("matched %d new requests", matched)


def send_scheduled_updates() -> None:
    """Incidents on a cadence get their update; promised updates now late warn the comms
    team (and the public page says so); webhooks that keep failing are quarantined; accounts
    no update email reached fall back to a call by support."""
    built = services(current_app())
    settings = built.settings
    desk = built.get(CommsDesk)
    with session_scope(built.engine) as session:
        published = incidents_service.publish_due(session=session, desk=desk, now=utcnow())
        late = incidents_service.warn_late(session=session, desk=desk,
                                           inbox=settings.incidents_comms_inbox, now=utcnow())
        quarantined = quarantine.quarantine_failing_webhooks(session=session, now=utcnow())
        unreached = incidents_service.follow_up_bounces(session=session, now=utcnow())
        calls = escalations_service.call_unreached(
            session=session, desk=built.get(SupportDesk), unreached=unreached,
            now=utcnow())
    for update in published:
        log.info("scheduled update %d of %s published; its audience is being queued",
                 update.number, update.incident_id)
    for incident in late:
        log.warning("the update of %s promised for %s is late", incident.id,
                    incident.next_update_due)
    for account_id in quarantined:
        log.warning("the webhook of %s keeps failing: quarantined", account_id)
    if unreached:
        log.warning("%d accounts reached by no update email: support asked to call them (%s)",
                    len(unreached), ", ".join(calls))


def queue_update_audiences() -> None:
    """Published updates get their audience queued in the outbox, a batch per
    transaction (emails of the first batches leave while later ones are expanded)."""
    built = services(current_app())
    queued = incidents_service.queue_update_audiences(
        engine=built.engine, desk=built.get(CommsDesk), vault=built.get(Vault), clock=utcnow,
        first_queued=functools.partial(run_soon, "delivery-drain"))
    if queued:
        log.info("queued %d messages of published updates", queued)


def watch_slas() -> None:
    """Items whose running SLA target turned at risk or was missed are marked, and their
    owner and region lead warned by email."""
    built = services(current_app())
    with session_scope(built.engine) as session:
        report = escalations_service.check_sla(session=session,
                                               desk=built.get(SupportDesk),
                                               now=utcnow())
    if report.at_risk or report.breached:
        log.info("SLA: %d items at risk, %d breached", len(report.at_risk), len(report.breached))


def follow_work() -> None:
    """New requests become tickets; items of resolved incidents are resolved; at a shift
    change the idle items are handed to the next region."""
    built = services(current_app())
    desk = built.get(SupportDesk)
    with session_scope(built.engine) as session:
        tickets = reactions.sync_requests(session=session, desk=desk, now=utcnow())
        resolved = reactions.resolve_for_incidents(session=session, desk=desk, now=utcnow())
        handoff = escalations_service.hand_off(session=session, desk=desk, now=utcnow())
    if tickets or resolved:
        log.info("escalations: %d tickets opened or updated from requests, %d items resolved "
                 "with their incident", tickets, resolved)
    if handoff is not None:
        log.info("shift change %s -> %s: %d items handed on", handoff.from_region,
                 handoff.to_region, handoff.items)


def inbound_handler(app) -> inbound_mailbox.Handler:
    """What each inbound message is handed to, in the transaction that stores it (the job,
    the workers' watchers and `flask inbound read` all use this one): the mailroom."""
    return services(app).get(Mailroom).handle


def read_inbound_mailboxes() -> None:
    """One pass over each `[inbound]` mailbox: new mail stored and handled, then moved."""
    built = services(current_app())
    reader = inbound_mailbox.ReaderSettings.from_settings(built.settings)
    handle = built.get(inbound_mailbox.MailHandler).handle
    for mailbox in built.settings.inbound_mailboxes:
        try:
            report = inbound_mailbox.read_mailbox(engine=built.engine, crypto=built.crypto,
                                                  mailbox=mailbox, reader=reader, handle=handle)
        except MailboxUnavailable as exc:
            log.warning("inbound: %s", exc.message)
            continue
        if report.read:
            log.info("inbound mailbox %s: %d read, %d processed, %d known, %d failed in "
                     "%.1f s", mailbox.name, report.read, report.processed,
                     report.duplicates, report.failed, report.seconds)


def _inbound_watchers(app) -> list[MailboxWatcher]:
    built = services(app)
    settings = built.settings
    reader = inbound_mailbox.ReaderSettings.from_settings(settings)
    handle = built.get(inbound_mailbox.MailHandler).handle
    return [MailboxWatcher(engine=built.engine, crypto=built.crypto, mailbox=mailbox,
                           reader=reader, handle=handle,
                           poll_seconds=settings.inbound_poll_seconds)
            for mailbox in settings.inbound_mailboxes]


def background_services(app) -> list:
    """What every `flask worker` process runs besides the (leader-only) scheduler: a watch
    over each inbound mailbox (IDLE, so new mail is read at once; `[inbound] idle`); on
    PostgreSQL, a delivery loop per lane (emails, webhooks), so several workers share the
    outbox and no webhook delays an email."""
    built = services(app)
    settings, engine = built.settings, built.engine
    watchers = _inbound_watchers(app) if settings.inbound_idle else []
    if engine.dialect.name != "postgresql":
        return watchers
    cipher = built.crypto.cipher
    lease = timedelta(seconds=settings.delivery_lease_seconds)
    pool = SmtpPool.from_settings(settings)
    return [outbox.DeliveryLoop(engine=engine, cipher=cipher, lease=lease,
                                mailer=pool.primary, pool=pool),
            webhook_lane.WebhookLoop(engine=engine, cipher=cipher, lease=lease,
                                     policy=WebhookPolicy.from_settings(settings),
                                     concurrency=settings.delivery_webhook_concurrency),
            *watchers]


def scheduled_jobs(settings) -> list[ScheduledJob]:
    jobs = [
        ScheduledJob("scheduler-heartbeat", record_heartbeat, settings.scheduler_heartbeat_seconds),
        ScheduledJob("vault-purge", purge_deleted_records, HOUR),
        ScheduledJob("delivery-retention", drop_old_payloads, HOUR, first_run_after=600),
        ScheduledJob("vault-freshness", ask_contacts_to_confirm, HOUR, first_run_after=300),
        ScheduledJob("delivery-drain", send_queued_messages, settings.delivery_drain_seconds),
        ScheduledJob("delivery-webhooks", send_queued_webhooks, settings.delivery_drain_seconds),
        ScheduledJob("intake-process", process_requests, settings.intake_process_seconds),
        ScheduledJob("incidents-fanout", queue_update_audiences,
                     settings.incidents_fanout_seconds),
        ScheduledJob("incidents-cadence", send_scheduled_updates,
                     settings.incidents_cadence_check_seconds),
        ScheduledJob("escalations-sla", watch_slas, settings.escalations_sla_check_seconds),
        ScheduledJob("escalations-follow", follow_work, settings.escalations_sync_seconds),
    ]
    if settings.inbound_mailboxes:
        jobs.append(ScheduledJob("inbound-mailboxes", read_inbound_mailboxes,
                                 settings.inbound_poll_seconds))
    if settings.backup_interval_hours > 0:
        jobs.append(ScheduledJob("backup-snapshot", snapshot_and_drill,
                                 int(settings.backup_interval_hours * HOUR), first_run_after=60))
    if settings.backup_drill_interval_hours > 0:
        seconds = int(settings.backup_drill_interval_hours * HOUR)
        jobs.append(ScheduledJob("backup-drill", drill_latest_snapshot, seconds,
                                 first_run_after=seconds))
    return jobs
