"""Restore progress: the sites an incident affects (from the vault), the stage each has
reached (with its history), and the restore percentage of the incident and of each account."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, func, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.db import bulk_insert, in_chunks
from contacts.core.errors import Invalid
from contacts.incidents.desk import CommsDesk
from contacts.incidents.models import AffectedSite, StageChange
from contacts.incidents.records import get_incident
from contacts.vault import service as vault_service


def add_sites(*, session: Session, desk: CommsDesk, actor: Actor, incident_id: str,
              refs: list[str], now: datetime) -> int:
    """Add sites (site IDs or the product's external IDs) at the first stage. Every
    reference must be a live site, or nothing is added; returns how many were new."""
    incident = get_incident(session=session, incident_id=incident_id)
    refs = list(dict.fromkeys(ref.strip() for ref in refs if ref.strip()))
    if not refs:
        raise Invalid("list at least one site")
    found = vault_service.live_sites(session=session, refs=refs)
    unknown = [ref for ref in refs if ref not in found]
    if unknown:
        raise Invalid(f"{len(unknown)} sites are not in the vault: {', '.join(unknown[:10])}",
                      details={"unknown": unknown})
    already = {site_id for chunk in in_chunks(site.id for site in found.values())
               for site_id in session.exec(select(AffectedSite.site_id).where(
                   AffectedSite.incident_id == incident.id,
                   col(AffectedSite.site_id).in_(chunk)))}
    new = {site.id: site for site in found.values() if site.id not in already}
    first = desk.stages[0]
    bulk_insert(session.connection(), AffectedSite.__table__, [
        {"incident_id": incident.id, "site_id": site.id, "account_id": site.account_id,
         "stage": first, "stage_at": now} for site in new.values()])
    bulk_insert(session.connection(), StageChange.__table__, [
        {"incident_id": incident.id, "site_id": site_id, "stage": first, "at": now,
         "source": f"{actor.kind} {actor.id}"} for site_id in new])
    incident.updated_at = now
    session.add(incident)
    audit.record(session, actor, "incident.sites_added", target_kind="incident",
                 target_id=incident.id, added=len(new))
    return len(new)


def set_stages(*, session: Session, desk: CommsDesk, actor: Actor, incident_id: str,
               stages: list[tuple[str, str]], now: datetime) -> int:
    """Move sites (by site ID or external ID) to stages. Everything is checked first: a site
    not in the incident, or a stage that does not exist, refuses the whole report."""
    incident = get_incident(session=session, incident_id=incident_id)
    problems = [f"{stage!r} is not a stage (stages: {', '.join(desk.stages)})"
                for _, stage in stages if stage not in desk.stages]
    found = vault_service.live_sites(session=session, refs=[ref for ref, _ in stages])
    affected = {row.site_id: row for chunk in in_chunks(site.id for site in found.values())
                for row in session.exec(select(AffectedSite).where(
                    AffectedSite.incident_id == incident.id,
                    col(AffectedSite.site_id).in_(chunk)))}
    problems += [f"site {ref!r} is not in this incident" for ref, _ in stages
                 if ref not in found or found[ref].id not in affected]
    if problems:
        raise Invalid("; ".join(dict.fromkeys(problems)), details={"problems": problems})
    changes = []
    for ref, stage in stages:
        row = affected[found[ref].id]
        if row.stage != stage:
            row.stage, row.stage_at = stage, now
            session.add(row)
            changes.append({"incident_id": incident.id, "site_id": row.site_id, "stage": stage,
                            "at": now, "source": f"{actor.kind} {actor.id}"})
    bulk_insert(session.connection(), StageChange.__table__, changes)
    if changes:
        incident.updated_at = now
        session.add(incident)
    return len(changes)


@dataclass(frozen=True)
class Progress:
    sites: int
    restored: int
    by_stage: dict[str, int]

    @property
    def percentage(self) -> float:
        return round(100 * self.restored / self.sites, 1) if self.sites else 0.0


def progress(*, session: Session, desk: CommsDesk, incident_id: str,
             account_id: str | None = None) -> Progress:
    query = (select(AffectedSite.stage, func.count()).where(
        AffectedSite.incident_id == incident_id).group_by(AffectedSite.stage))
    if account_id is not None:
        query = query.where(AffectedSite.account_id == account_id)
    counts = dict(session.exec(query).all())
    by_stage = {stage: counts.get(stage, 0) for stage in desk.stages}
    return Progress(sites=sum(by_stage.values()),
                    restored=sum(n for stage, n in by_stage.items() if desk.restored(stage)),
                    by_stage=by_stage)


def progress_history(*, session: Session, desk: CommsDesk,
                     incident_id: str) -> list[tuple[datetime, float]]:
    """(time, restore percentage) after each change: the restore curve."""
    current: dict[str, str] = {}
    points = []
    for change in session.exec(select(StageChange).where(StageChange.incident_id == incident_id)
                               .order_by(StageChange.at, StageChange.id)):
        current[change.site_id] = change.stage
        restored = sum(1 for stage in current.values() if desk.restored(stage))
        point = (change.at, round(100 * restored / len(current), 1))
        if points and points[-1][0] == change.at:
            points[-1] = point
        else:
            points.append(point)
    return points


@dataclass(frozen=True)
class SiteStage:
    site_id: str
    name: str
    account_id: str
    account_name: str
    stage: str
    stage_at: datetime


def affected_sites(*, session: Session, incident_id: str, account_id: str | None = None,
                   account_ids: list[str] | None = None) -> list[SiteStage]:
    """The incident's sites with their names and stages; one account's, or some accounts',
    if given."""
    query = select(AffectedSite).where(AffectedSite.incident_id == incident_id)
    if account_id is not None:
        query = query.where(AffectedSite.account_id == account_id)
    if account_ids is not None:
        query = query.where(col(AffectedSite.account_id).in_(account_ids))
    rows = session.execute(query.with_only_columns(
        AffectedSite.site_id, AffectedSite.account_id, AffectedSite.stage,
        AffectedSite.stage_at)).all()
    sites = vault_service.site_names(session=session, ids=[row.site_id for row in rows])
    accounts = vault_service.account_names(session=session,
                                           ids={row.account_id for row in rows})
    found = [SiteStage(row.site_id, sites.get(row.site_id, row.site_id), row.account_id,
                       accounts.get(row.account_id, row.account_id), row.stage, row.stage_at)
             for row in rows]
    return sorted(found, key=lambda site: (site.account_name, site.name))


@dataclass(frozen=True)
class AccountsPage:
    """One page of an incident's affected accounts, by name."""

    account_ids: list[str]
    page: int
    pages: int
    accounts: int


def affected_accounts_page(*, session: Session, incident_id: str, page: int,
                           per_page: int = 50) -> AccountsPage:
    """The accounts of one page, by name (an incident may affect 100,000: its page shows a
    few)."""
    accounts = session.exec(select(func.count(func.distinct(AffectedSite.account_id)))
                            .where(AffectedSite.incident_id == incident_id)).one()
    pages = max(1, -(-accounts // per_page))
    page = min(max(page, 1), pages)
    ids = vault_service.account_ids_by_name(
        session=session, among=select(AffectedSite.account_id).where(
            AffectedSite.incident_id == incident_id),
        offset=(page - 1) * per_page, limit=per_page)
    return AccountsPage(ids, page, pages, accounts)


def computed_scope(*, session: Session, incident_id: str) -> tuple[int, int, str]:
    accounts, sites = session.exec(
        select(func.count(func.distinct(AffectedSite.account_id)), func.count())
        .where(AffectedSite.incident_id == incident_id)).one()
    return accounts, sites, (f"{sites} sites of {accounts} customer accounts are affected; "
                             "no other customer is.")
