"""An incident over 30 sites of 25 accounts, built through the services."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.services import services
from contacts.incidents import fanout, progress, publishing, records
from contacts.incidents.desk import CommsDesk
from tests.vault.fixtures import make_document


@pytest.fixture
def desk(app):
    return CommsDesk.from_settings(services(app).settings,
                                   services(app).crypto,
                                   Path(app.template_folder))


@pytest.fixture
def deletion_document():
    """25 accounts, 37 sites, 3 contacts each (en, fr-FR and de locales, several roles)."""
    return make_document(accounts=25, contacts_per_account=3)


def thirty_sites(document) -> list[str]:
    """Every account's first site, and the second site of the first five that have one."""
    firsts = [account["sites"][0]["external_id"] for account in document["accounts"]]
    seconds = [account["sites"][1]["external_id"] for account in document["accounts"]
               if len(account["sites"]) > 1][:5]
    return firsts + seconds


@pytest.fixture
def incident(engine, desk, sync_document, deletion_document):
    sync_document(deletion_document)
    actor = Actor.system("test")
    with session_scope(engine) as session:
        created = records.create_incident(session=session, actor=actor,
                                          title="Sites deleted by a maintenance script",
                                          severity="critical", started_at=utcnow(),
                                          now=utcnow())
        progress.add_sites(session=session, desk=desk, actor=actor, incident_id=created.id,
                           refs=thirty_sites(deletion_document), now=utcnow())
        return created.id


def complete_draft(**changes) -> publishing.UpdateDraft:
    values = dict(state="identified",
                  what_happened="A maintenance script deleted sites instead of apps.",
                  timeline="Restores run in waves; all sites back within 4 days.",
                  next_update_at=utcnow().replace(microsecond=0) + timedelta(hours=4),
                  data_loss="Changes made after 07:33 UTC, at most 5 minutes.",
                  confidence_timeline="medium", confidence_restore="high",
                  confidence_data_loss="high")
    values.update(changes)
    return publishing.UpdateDraft(**values)


def publish_queued(*, session, desk, vault, **arguments):
    """Publish an update and queue its audience at once in the same session, as the
    fan-out job does a batch at a time."""
    update = publishing.publish(session=session, desk=desk, **arguments)
    fanout.expand(session=session, desk=desk, vault=vault, update_id=update.id,
                  now=arguments["now"])
    return update


def run_fanout(app) -> int:
    """What the fan-out job does: queue every published update's audience."""
    from contacts.vault.service import Vault

    built = services(app)
    return fanout.run_pending(engine=built.engine, desk=built.get(CommsDesk),
                              vault=built.get(Vault), clock=utcnow)
