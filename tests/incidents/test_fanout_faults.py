"""The fan-out under kill -9: a real process expands an update's audience, a batch per
transaction, and is killed with SIGKILL again and again mid-expansion; each new process
takes over once the dead one's lease runs out. In the end every recipient is queued exactly
once: none twice, none skipped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlmodel import func, select

from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.delivery.models import OutboxMessage
from contacts.incidents import progress, publishing, records
from contacts.incidents.models import UpdateFanout
from tests.incidents.conftest import complete_draft
from tests.vault.fixtures import make_document

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS, PER_ACCOUNT = 300, 3
KILLS = 6

# A process that expands every pending fan-out in small batches, under a one-second lease.
EXPANDER = """
import sys
from contacts.app import create_app
from contacts.core.db import utcnow
from contacts.core.services import services
from contacts.core.settings import load_secrets
from contacts.incidents import fanout
from contacts.incidents.desk import CommsDesk
from contacts.vault.service import Vault
from datetime import timedelta
from pathlib import Path

fanout.FIRST_BATCH_ACCOUNTS = fanout.ACCOUNTS_PER_BATCH = 3
app = create_app({"database_url": sys.argv[1],
                  "secrets": load_secrets(Path(sys.argv[2]), {}, generate=False)})
built = services(app)
while True:
    fanout.run_pending(engine=built.engine, desk=built.get(CommsDesk),
                       vault=built.get(Vault), clock=utcnow, lease=timedelta(seconds=1))
"""


def _expander(database_url: str, keys_dir: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFELINE_")}
    return subprocess.Popen([sys.executable, "-c", EXPANDER, database_url, str(keys_dir)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _queued(engine) -> int:
    with session_scope(engine) as session:
        return session.exec(select(func.count()).select_from(OutboxMessage)).one()


def test_an_expansion_killed_again_and_again_queues_everyone_once(
        engine, desk, sync_document, database_url, service_keys_dir):
    document = make_document(accounts=ACCOUNTS, contacts_per_account=PER_ACCOUNT)
    sync_document(document)
    actor = Actor.system("test")
    with session_scope(engine) as session:
        incident = records.create_incident(session=session, actor=actor, title="Deleted",
                                           severity="critical", started_at=utcnow(),
                                           now=utcnow())
        progress.add_sites(session=session, desk=desk, actor=actor, incident_id=incident.id,
                           refs=[account["sites"][0]["external_id"]
                                 for account in document["accounts"]], now=utcnow())
        update = publishing.publish(session=session, desk=desk, actor=actor,
                                    incident_id=incident.id, draft=complete_draft(),
                                    now=utcnow())
    expected = ACCOUNTS * PER_ACCOUNT
    keys_dir = service_keys_dir
    kills, at_kills, process = 0, [], _expander(database_url, keys_dir)
    try:
        target = expected // (KILLS + 2)
        while kills < KILLS:
            deadline = time.monotonic() + 60
            while _queued(engine) < target * (kills + 1) and time.monotonic() < deadline:
                time.sleep(0.02)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            at_kills.append(_queued(engine))
            kills += 1
            process = _expander(database_url, keys_dir)  # waits out the dead one's lease
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with session_scope(engine) as session:
                if session.get(UpdateFanout, update.id).finished_at is not None:
                    break
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    with session_scope(engine) as session:
        keys = list(session.exec(select(OutboxMessage.key)).all())
        state = session.get(UpdateFanout, update.id)
    assert kills == KILLS
    assert all(0 < queued < expected for queued in at_kills), at_kills  # mid-expansion
    assert state.finished_at is not None and state.queued == expected
    assert len(keys) == len(set(keys)) == expected  # none twice, none skipped
    assert {key.rsplit(":", 1)[1] for key in keys} == {
        contact_id for contact_id in _contact_ids(engine)}


def _contact_ids(engine) -> set[str]:
    from contacts.vault.models import Contact

    with session_scope(engine) as session:
        return set(session.exec(select(Contact.id)).all())
