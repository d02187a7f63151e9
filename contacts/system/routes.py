"""Health for load balancers and operators, and the admin's audit log page."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from urllib.parse import urlencode

from flask import Blueprint, jsonify, render_template, request, url_for

from contacts.core import audit
from contacts.core.access import public, staff
from contacts.core.db import request_session
from contacts.core.services import services
from contacts.system import service

bp = Blueprint("system", __name__)

AUDIT_PAGE_SIZE = 50


@bp.get("/healthz")
@public
def healthz():
    settings = services().settings
    runner = services().scheduler
    health = service.check_health(
        engine=services().engine,
        scheduler_state=runner.state if runner else "not running in this process",
        heartbeat_seconds=settings.scheduler_heartbeat_seconds,
        probes=services().health_probes)
    return jsonify(health.report), 200 if health.ok else 503


AUDIT_FILTERS = ("actor", "action", "target", "since", "until")


def _day(value: str | None, *, end: bool = False) -> datetime | None:
    """A YYYY-MM-DD filter as a UTC instant; None when empty or not a date."""
    if not value:
        return None
    try:
        moment = datetime.combine(datetime.strptime(value, "%Y-%m-%d").date(), time.min,
                                  tzinfo=UTC)
        return moment + timedelta(days=1) if end else moment
    except (ValueError, OverflowError):
        return None


@bp.get("/console/audit")
@staff("admin")
def audit_log():
    args = request.args
    filters = audit.AuditFilter(
        actor_id=args.get("actor", "").strip() or None,
        action=args.get("action", "").strip() or None,
        target_id=args.get("target", "").strip() or None,
        since=_day(args.get("since")),
        until=_day(args.get("until"), end=True),
    )
    before = args.get("before", type=int)
    if before is not None and not 0 < before <= audit.LARGEST_ID:
        before = None
    session = request_session()
    entries = audit.list_entries(session, filters, limit=AUDIT_PAGE_SIZE + 1, before_id=before)
    older_url = None
    if len(entries) > AUDIT_PAGE_SIZE:
        entries = entries[:AUDIT_PAGE_SIZE]
        kept = {name: args[name] for name in AUDIT_FILTERS if args.get(name)}
        older_url = f"{url_for('system.audit_log')}?{urlencode({**kept, 'before': entries[-1].id})}"
    return render_template("system/audit.html", entries=entries, older_url=older_url, args=args,
                           actions=audit.distinct_actions(session))
