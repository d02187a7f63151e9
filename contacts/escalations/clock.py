"""The SLA clock of a work item: its targets (from its priority's policy, in the account's
business hours), how its running target stands, the time left, the pause while waiting on
the customer; and the watch that marks items at risk or breached and warns by email."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from contacts.core.audit import Actor
from contacts.core.clock import format_utc
from contacts.core.db import in_chunks
from contacts.delivery import outbox
from contacts.escalations import sla
from contacts.escalations.desk import SupportDesk, record_event
from contacts.escalations.models import (
    PAUSED,
    AccountProfile,
    WorkItem,
)
from contacts.escalations.neighbours import Person
from contacts.vault import service as vault_service


def profiles_of(session: Session, account_ids) -> dict[str, AccountProfile]:
    ids = [account_id for account_id in set(account_ids) if account_id]
    found: dict[str, AccountProfile] = {}
    for chunk in in_chunks(ids):
        found |= {profile.account_id: profile for profile in session.exec(
            select(AccountProfile).where(col(AccountProfile.account_id).in_(chunk)))}
    return found


def _clock(desk: SupportDesk, business: bool, profile: AccountProfile | None) -> sla.Clock:
    if not business:
        return sla.Clock(None)
    if profile is not None:
        return sla.Clock(sla.BusinessHours.parse(profile.business_hours, profile.timezone))
    return sla.Clock(sla.BusinessHours.parse(desk.default_hours, desk.default_timezone))


def set_targets(desk: SupportDesk, item: WorkItem, profile: AccountProfile | None,
                now: datetime) -> None:
    """Due times of the item's priority, counted from its creation, the resolution target
    pushed back by the time spent waiting on the customer."""
    policy = desk.policies[item.priority]
    targets = sla.targets(policy, _clock(desk, policy.business_hours, profile),
                          item.created_at, desk.at_risk_fraction,
                          paused_minutes=item.paused_minutes)
    item.sla_business_hours = policy.business_hours
    item.first_response_due = targets.first_response_due
    item.first_response_risk_at = targets.first_response_risk_at
    item.resolution_due = targets.resolution_due
    item.resolution_risk_at = targets.resolution_risk_at
    follow_clock(item, now)


SLA_RANK = {"ok": 0, "at_risk": 1, "breached": 2}


def follow_clock(item: WorkItem, now: datetime, restarted: bool = False) -> None:
    """Point the item at the target running now. Better news is recorded at once; worse news
    is the SLA job's to record, with its event and warnings (`check_sla`). `restarted`: a
    new target runs (the first response was just given), judged on its own."""
    if not item.is_open or item.paused_at is not None:
        item.next_due = item.next_risk_at = PAUSED
    elif item.first_response_at is None:
        item.next_due, item.next_risk_at = item.first_response_due, item.first_response_risk_at
    else:
        item.next_due, item.next_risk_at = item.resolution_due, item.resolution_risk_at
    state = sla_state(item, now)
    if restarted or not item.is_open or SLA_RANK[state] < SLA_RANK[item.sla_state]:
        item.sla_state = state


def sla_state(item: WorkItem, now: datetime) -> str:
    """How the running target stands: "breached" once its due time passed, "at_risk" when
    less than its share is left, else "ok". While the clock is stopped (waiting on the
    customer) the state stands still; a resolved item is judged by when it was resolved."""
    if not item.is_open:
        if item.resolved_at is not None and item.resolved_at > item.resolution_due:
            return "breached"
        return item.sla_state
    if item.paused_at is not None:
        return item.sla_state
    if now >= item.next_due:
        return "breached"
    if now >= item.next_risk_at:
        return "at_risk"
    return "ok"


def time_left(item: WorkItem, now: datetime) -> timedelta | None:
    """Until the running target is due (negative once breached); None while paused."""
    if item.next_due == PAUSED:
        return None
    return item.next_due - now


def resume_clock(session: Session, desk: SupportDesk, item: WorkItem, now: datetime) -> None:
    """The resolution clock restarts: the time spent waiting (in the policy's minutes) is
    added to the resolution target, and stays added whenever the targets are recomputed."""
    profile = profiles_of(session, [item.account_id]).get(item.account_id)
    clock = _clock(desk, item.sla_business_hours, profile)
    item.paused_minutes += clock.minutes_between(item.paused_at, now)
    item.paused_at = None
    set_targets(desk, item, profile, now)


# -- the SLA watch ---------------------------------------------------------------------------


@dataclass
class SlaReport:
    at_risk: list[str] = field(default_factory=list)
    breached: list[str] = field(default_factory=list)


def check_sla(*, session: Session, desk: SupportDesk, now: datetime) -> SlaReport:
    """Mark items whose running target turned at risk or was missed, and warn the owner and
    the region lead by email, once per item, target and state."""
    report = SlaReport()
    due = list(session.exec(select(WorkItem).where(
        col(WorkItem.sla_state).in_(("ok", "at_risk")), col(WorkItem.next_due) <= now)))
    risky = list(session.exec(select(WorkItem).where(
        WorkItem.sla_state == "ok", col(WorkItem.next_risk_at) <= now)))
    changed = {item.id: item for item in risky} | {item.id: item for item in due}
    owners = desk.neighbours.staff_by_id(
        session, [item.owner_id for item in changed.values() if item.owner_id])
    for item in changed.values():
        state = sla_state(item, now)
        if SLA_RANK[state] <= SLA_RANK[item.sla_state] or not item.is_open:
            continue
        item.sla_state = state
        session.add(item)
        target = "first response" if item.first_response_at is None else "resolution"
        record_event(session, desk, item, Actor.system("sla"), "sla", now, f"{target} {state}")
        (report.breached if state == "breached" else report.at_risk).append(item.id)
        _warn(session, desk, item, state, target, owners.get(item.owner_id), now)
    return report


def _warn(session: Session, desk: SupportDesk, item: WorkItem, state: str, target: str,
          owner: Person | None, now: datetime) -> None:
    region = desk.rota.get(item.region or "")
    recipients = []
    if owner is not None and owner.is_active:
        recipients.append(("owner", owner.email))
    if region is not None and region.lead:
        recipients.append(("lead", region.lead))
    if not recipients:
        return
    account = vault_service.accounts_by_id(session=session, ids=[item.account_id]).get(
        item.account_id) if item.account_id else None
    values = {"item_id": item.id, "state": state.replace("_", " "), "target": target,
              "priority": item.priority, "region": item.region,
              "account_name": account.name if account else "no account",
              "due": format_utc(item.first_response_due if target == "first response"
                                      else item.resolution_due),
              "link": f"{desk.base_url}/console/items/{item.id}"}
    subject, text, html = desk.render("sla_warning", "en", values)
    slug = target.replace(" ", "_")
    for who, address in recipients:
        outbox.enqueue_email(session=session, cipher=desk.crypto.cipher,
                             key=f"sla:{item.id}:{slug}:{state}:{who}", purpose="sla_warning",
                             topic=outbox.Topic("item", item.id, "staff", who, item.account_id),
                             now=now, email=outbox.Email(to=address, subject=subject,
                                                         text=text, html=html))
