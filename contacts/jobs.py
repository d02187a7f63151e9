"""Every scheduled job, listed in one place. Each job is a module-level function with no
arguments (the job store keeps it by reference); it reaches the database through
`scheduler.current_engine()` and calls the same service functions as the web and the CLI.
"""

from __future__ import annotations

from contacts.scheduler import ScheduledJob, record_heartbeat


def scheduled_jobs(settings) -> list[ScheduledJob]:
    return [
        ScheduledJob("scheduler-heartbeat", record_heartbeat, settings.scheduler_heartbeat_seconds),
    ]
