"""Console pages of backups (admins): the snapshots and drills, and buttons to take a snapshot
or drill the latest one."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, flash, g, redirect, render_template, url_for
from flask_wtf import FlaskForm

from contacts.backup import drills, snapshot
from contacts.core import audit, schema
from contacts.core.access import staff
from contacts.core.db import request_session
from contacts.core.services import services

bp = Blueprint("backup", __name__)


def _settings():
    return services().settings


def _backup_dir() -> Path:
    return Path(_settings().backup_dir)


@bp.get("/console/backups")
@staff("admin")
def backups():
    directory = _backup_dir()
    snapshots = sorted(directory.glob(f"lifeline-*{snapshot.SUFFIX}"), reverse=True)[:30]
    recent = drills.recent_drills(session=request_session(), limit=20)
    return render_template("backup/backups.html", snapshots=snapshots, drills=recent,
                           directory=directory, action_form=FlaskForm())


@bp.post("/console/backups/drill")
@staff("admin")
def run_drill():
    result = drills.drill_latest(directory=_backup_dir(),
                                 backup_key=_settings().secrets.backup_key,
                                 load_field_keys=services().field_keys_source,
                                 engine=services().engine)
    flash(f"Drill of {result.snapshot} {'passed' if result.ok else 'FAILED'}: {result.detail}")
    return redirect(url_for("backup.backups"))


@bp.post("/console/backups/create")
@staff("admin")
def create_snapshot():
    engine = services().engine
    path, manifest = snapshot.create_snapshot(engine=engine,
                                              backup_key=_settings().secrets.backup_key,
                                              directory=_backup_dir(),
                                              revision=schema.database_revision(engine))
    audit.record(request_session(), g.actor, "backup.created", snapshot=path.name,
                 rows=manifest.rows)
    flash(f"Snapshot {path.name} written ({manifest.rows} rows).")
    return redirect(url_for("backup.backups"))
