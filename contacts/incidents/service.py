"""The incidents' published interface: what the app, the scheduled jobs and other areas
call. The code lives in the modules by responsibility (records, progress, publishing,
cadence, proof, subscriptions); this module names the part others may use."""

from __future__ import annotations

from contacts.incidents.cadence import publish_due, warn_late
from contacts.incidents.desk import CommsDesk
from contacts.incidents.fanout import run_pending as queue_update_audiences
from contacts.incidents.proof import Unreached, follow_up_bounces, updates_to_account
from contacts.incidents.records import (
    get_incident,
    incident_of_update,
    incident_titles,
    resolved_incidents,
)
from contacts.incidents.subscriptions import stop_after_complaint, subscriber_of

__all__ = ["CommsDesk", "Unreached", "follow_up_bounces", "get_incident", "incident_of_update",
           "incident_titles", "publish_due", "queue_update_audiences", "resolved_incidents",
           "stop_after_complaint", "subscriber_of", "updates_to_account", "warn_late"]
