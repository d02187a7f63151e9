"""Every scheduled job, listed in one place. Each job is a module-level function with no
arguments (the job store keeps it by reference); it reaches the app through
`scheduler.current_app()` and calls the same service functions as the web and the CLI.
"""

from __future__ import annotations

import logging

from contacts.db import session_scope, utcnow
from contacts.scheduler import ScheduledJob, current_app, record_heartbeat
from contacts.vault import purge

log = logging.getLogger(__name__)

HOUR = 3600


def purge_deleted_records() -> None:
    app = current_app()
    settings = app.extensions["lifeline.settings"]
    with session_scope(app.extensions["lifeline.engine"]) as session:
        purged = purge.purge_expired(session=session, now=utcnow(),
                                     retention_days=settings.vault_retention_days)
    if purged.total:
        log.info("purged %d records deleted more than %d days ago", purged.total,
                 settings.vault_retention_days)


def scheduled_jobs(settings) -> list[ScheduledJob]:
    return [
        ScheduledJob("scheduler-heartbeat", record_heartbeat, settings.scheduler_heartbeat_seconds),
        ScheduledJob("vault-purge", purge_deleted_records, HOUR),
    ]
