"""A cadence survives the process: the scheduler (a real `flask worker` process) sends the
scheduled update; killed with SIGKILL, the promised time passes and the public page says the
update is late; restarted, it sends the update again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from sqlmodel import func, select

from contacts.app import create_app
from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.services import services
from contacts.core.settings import load_secrets
from contacts.incidents import cadence, progress, records
from contacts.incidents.desk import CommsDesk
from contacts.incidents.models import IncidentUpdate
from contacts.vault import service as vault_service
from contacts.vault import sync as vault_sync
from tests.incidents.conftest import complete_draft, publish_queued
from tests.vault.fixtures import make_document

ROOT = Path(__file__).resolve().parents[2]
CADENCE_HOURS = 4 / 3600  # every 4 seconds: the "every 2 minutes" of production, shortened


def _worker(database_url: str, keys_dir: Path, workdir: Path) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LIFELINE_")},
           "DATABASE_URL": database_url, "LIFELINE_SECRETS_KEYS_DIR": str(keys_dir),
           "LIFELINE_INCIDENTS_CADENCE_CHECK_SECONDS": "1",
           "LIFELINE_BACKUP_INTERVAL_HOURS": "0", "LIFELINE_BACKUP_DRILL_INTERVAL_HOURS": "0",
           "LIFELINE_INTAKE_SPOOL_DIR": str(workdir / "spool"), "LIFELINE_MAIL_PORT": "9"}
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _updates(engine, incident_id: str) -> int:
    with session_scope(engine) as session:
        return session.exec(select(func.count()).select_from(IncidentUpdate).where(
            IncidentUpdate.incident_id == incident_id)).one()


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_a_cadence_fires_after_a_restart_and_a_miss_is_shown_late(database_url, tmp_path):
    keys_dir = tmp_path / "keys"
    app = create_app({"database_url": database_url, "intake_spool_dir": str(tmp_path / "sp"),
                      "secrets": load_secrets(keys_dir, {}, generate=True)})
    engine = services(app).engine
    crypto = services(app).crypto
    desk = CommsDesk.from_settings(services(app).settings, crypto,
                                   Path(app.template_folder))
    vault = vault_service.Vault.from_settings(services(app).settings, crypto)
    document = make_document(accounts=2, contacts_per_account=2)
    from contacts.vault.schemas import SyncDocument
    entries = [vault_sync.AccountEntry.from_document(account, index) for index, account
               in enumerate(SyncDocument.model_validate(document).accounts)]
    actor = Actor.system("test")
    with session_scope(engine) as session:
        vault_sync.sync(session=session, vault=vault, actor=actor, entries=entries,
                        source="sync")
        incident = records.create_incident(session=session, actor=actor, title="Deletion",
                                           severity="critical", started_at=utcnow(),
                                           now=utcnow())
        progress.add_sites(session=session, desk=desk, actor=actor, incident_id=incident.id,
                           refs=[a["sites"][0]["external_id"] for a in document["accounts"]],
                           now=utcnow())
        publish_queued(session=session, desk=desk, vault=vault, actor=actor,
                           incident_id=incident.id, now=utcnow(), draft=complete_draft(
                               next_update_at=utcnow() + timedelta(seconds=3)))
        cadence.set_cadence(session=session, actor=actor, incident_id=incident.id,
                            hours=CADENCE_HOURS)
        incident_id = incident.id
    client = app.test_client()

    worker = _worker(database_url, keys_dir, tmp_path)
    try:
        assert _wait_for(lambda: _updates(engine, incident_id) >= 2, 30), "no scheduled update"
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        sent_before_restart = _updates(engine, incident_id)
        assert _wait_for(lambda: "is late" in client.get(f"/status/{incident_id}")
                         .get_data(as_text=True), 15), "a missed update is not shown late"
        assert _updates(engine, incident_id) == sent_before_restart  # nobody sent it
        worker = _worker(database_url, keys_dir, tmp_path)
        assert _wait_for(lambda: _updates(engine, incident_id) > sent_before_restart, 30), \
            "the cadence did not fire after the restart"
        page = client.get(f"/status/{incident_id}").get_data(as_text=True)
        assert "is late" not in page and "Next update by" in page
    finally:
        worker.kill()
        worker.wait(timeout=10)
        engine.dispose()
