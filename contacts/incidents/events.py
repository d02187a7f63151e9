"""What an account's webhook endpoint receives, as models: the document's `webhooks` section
is generated from them, and a test holds every body sent to them (extra fields forbidden)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventIncident(_Strict):
    id: str = Field(description="inc_...")
    title: str
    state: str = Field(description="investigating, identified, monitoring, resolved or "
                                   "post_incident_review")
    severity: str = Field(description="minor, major or critical")
    status_page: str = Field(description="The incident's public status page.")


class EventConfidence(_Strict):
    timeline: str = Field(description="low, medium or high")
    restore: str
    data_loss: str


class EventUpdate(_Strict):
    id: str = Field(description="upd_...")
    number: int = Field(description="1 for the incident's first update, then 2, 3...: an "
                                    "endpoint receives an incident's updates in this order.")
    published_at: datetime
    what_happened: str
    scope: str
    accounts_affected: int
    sites_affected: int
    timeline: str
    next_update_at: datetime | None = Field(description="null once the incident is over.")
    restore_percentage: float
    restore_note: str | None
    data_loss: str
    confidence: EventConfidence
    support: str


class EventSite(_Strict):
    name: str
    stage: str = Field(description="The site's stage as a key of the configured stages "
                                   "(`incidents.stages`), such as `validated_by_us`; never "
                                   "display text.")


class EventAccount(_Strict):
    id: str = Field(description="acc_...")
    name: str
    restore_percentage: float = Field(description="Of this account's sites, the share at or "
                                                  "past the restored stage.")
    sites: list[EventSite]
    private_status_page: str = Field(description="The account's signed status link.")


class IncidentUpdateEvent(_Strict):
    """Sent to every endpoint of each account an update affects, once per update."""

    type: str = Field(description="`incident.update`")
    incident: EventIncident
    update: EventUpdate
    account: EventAccount


class PingEndpoint(_Strict):
    id: str = Field(description="whk_...")
    account_id: str


class PingEvent(_Strict):
    """Sent when a ping is asked for through the API, signed like every event."""

    type: str = Field(description="`webhook.ping`")
    sent_at: datetime
    endpoint: PingEndpoint


SIGNATURE_HELP = (
    "Signed per attempt as the Standard Webhooks specification says "
    "(https://www.standardwebhooks.com): `webhook-id` (the same on every retry of one "
    "message: drop repeats), `webhook-timestamp` (seconds since 1970, when this attempt was "
    "signed: refuse one more than five minutes away) and `webhook-signature` "
    "(`v1,<base64 of HMAC-SHA256 of \"<id>.<timestamp>.<body>\">`, keyed with the bytes the "
    "endpoint's `whsec_<base64>` secret encodes). A retry after a rotation is signed with the "
    "new secret. Answer 2xx within the deadline (10 s); anything else, a redirect included, "
    "is retried with backoff, and an endpoint failing for good is quarantined.")
