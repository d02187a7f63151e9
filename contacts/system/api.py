"""JSON API of the system area: the audit log, for a SIEM or an export."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint
from pydantic import BaseModel, Field

from contacts.core import audit
from contacts.core.api import API_PREFIX, Moment, operation
from contacts.core.db import request_session

bp = Blueprint("system_api", __name__, url_prefix=API_PREFIX)


class AuditQuery(BaseModel):
    actor: str | None = Field(default=None, max_length=64, description="Actor ID (stf_, tok_).")
    action: str | None = Field(default=None, max_length=64, description="Action, or its prefix.")
    target: str | None = Field(default=None, max_length=64, description="Target object ID.")
    since: Moment | None = Field(default=None, description="With a time zone.")
    until: Moment | None = Field(default=None, description="With a time zone.")
    before_id: int | None = Field(default=None, ge=1, le=audit.LARGEST_ID,
                                  description="Page back from this entry.")
    limit: int = Field(default=100, ge=1, le=1000)


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor_kind: str
    actor_id: str | None
    action: str
    target_kind: str | None
    target_id: str | None
    ip: str | None
    detail: dict[str, Any]


class AuditPage(BaseModel):
    entries: list[AuditEntryOut]
    next_before_id: int | None = Field(description="Pass as before_id for the next page.")


@bp.get("/audit")
@operation(scope="audit:read", response=AuditPage, query=AuditQuery, tags=("audit",))
def list_audit(query: AuditQuery):
    """Audit entries, newest first."""
    filters = audit.AuditFilter(actor_id=query.actor, action=query.action,
                                target_id=query.target, since=query.since, until=query.until)
    entries = audit.list_entries(request_session(), filters, limit=query.limit + 1,
                                 before_id=query.before_id)
    page = entries[: query.limit]
    return AuditPage(
        entries=[AuditEntryOut.model_validate(entry, from_attributes=True) for entry in page],
        next_before_id=page[-1].id if len(entries) > query.limit else None,
    )
