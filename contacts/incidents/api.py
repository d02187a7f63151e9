"""The product reports restore progress: POST /api/v1/incidents/<id>/progress
(`progress:write`)."""

from __future__ import annotations

from flask import Blueprint, g
from pydantic import BaseModel, Field

from contacts.api import API_PREFIX, operation
from contacts.db import request_session, utcnow
from contacts.incidents import service
from contacts.incidents.web import desk

bp = Blueprint("incidents_api", __name__, url_prefix=API_PREFIX)


class SiteStageIn(BaseModel):
    site: str = Field(max_length=128, description="A site ID (site_...) or the product's "
                                                  "external ID of the site.")
    stage: str = Field(max_length=32)


class ProgressReport(BaseModel):
    sites: list[SiteStageIn] = Field(min_length=1, max_length=5000)


class ProgressOut(BaseModel):
    changed: int = Field(description="Sites whose stage changed.")
    sites: int
    restored: int
    restore_percentage: float
    by_stage: dict[str, int]


@bp.post("/incidents/<incident_id>/progress")
@operation(scope="progress:write", response=ProgressOut, body=ProgressReport,
           tags=("incidents",))
def report_progress(incident_id: str, json: ProgressReport):
    """Move the incident's sites to stages. A site not in the incident or an unknown stage
    refuses the whole report (422 naming each problem); nothing is half-written."""
    session = request_session()
    changed = service.set_stages(session=session, desk=desk(), actor=g.actor,
                                 incident_id=incident_id,
                                 stages=[(item.site, item.stage) for item in json.sites],
                                 now=utcnow())
    now = service.progress(session=session, desk=desk(), incident_id=incident_id)
    return ProgressOut(changed=changed, sites=now.sites, restored=now.restored,
                       restore_percentage=now.percentage, by_stage=now.by_stage)
