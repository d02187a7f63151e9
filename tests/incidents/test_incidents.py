"""Incidents: restore progress from stages, updates that must state every field, sandboxed
templates, and an update reaching every contact of every affected account over real SMTP."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlmodel import select

from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.errors import Invalid
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.delivery import outbox
from contacts.delivery.models import OutboxMessage
from contacts.incidents import cadence, progress, publishing, records
from contacts.incidents.models import AffectedSite
from contacts.vault import service as vault_service
from tests.incidents.conftest import complete_draft, publish_queued, thirty_sites

ACTOR = Actor.system("test")


def _progress(engine, desk, incident, account_id=None):
    with session_scope(engine) as session:
        return progress.progress(session=session, desk=desk, incident_id=incident,
                                 account_id=account_id)


def test_the_restore_percentage_follows_the_stages(engine, desk, incident, deletion_document):
    refs = thirty_sites(deletion_document)
    assert _progress(engine, desk, incident).sites == 30
    with session_scope(engine) as session:
        progress.set_stages(session=session, desk=desk, actor=ACTOR, incident_id=incident,
                            stages=[(ref, "validated_by_us") for ref in refs[:12]], now=utcnow())
        progress.set_stages(session=session, desk=desk, actor=ACTOR, incident_id=incident,
                            stages=[(ref, "data_restored") for ref in refs[12:20]],
                            now=utcnow() + timedelta(seconds=1))
    now = _progress(engine, desk, incident)
    assert (now.sites, now.restored, now.percentage) == (30, 12, 40.0)
    assert now.by_stage["data_restored"] == 8 and now.by_stage["queued"] == 10
    # The first account has two sites; one of them is restored.
    with session_scope(engine) as session:
        site = vault_service.live_sites(session=session, refs=[refs[0]])[refs[0]]
    account = _progress(engine, desk, incident, account_id=site.account_id)
    assert (account.sites, account.restored) == (1, 1)
    with session_scope(engine) as session:
        history = progress.progress_history(session=session, desk=desk, incident_id=incident)
    assert [pct for _, pct in history] == [0.0, 40.0, 40.0]


def test_an_update_missing_fields_is_refused_with_their_names(engine, desk, vault, incident):
    with session_scope(engine) as session:
        with pytest.raises(Invalid) as refused:
            publish_queued(session=session, desk=desk, vault=vault, actor=ACTOR,
                               incident_id=incident, now=utcnow(),
                               draft=publishing.UpdateDraft(state="identified", what_happened="x"))
    assert refused.value.details["missing"] == [
        "timeline", "data_loss", "next_update_at", "confidence_timeline",
        "confidence_restore", "confidence_data_loss"]
    assert "expected data loss" in refused.value.message
    overridden = complete_draft(restore_percentage=55.0)
    with session_scope(engine) as session:
        with pytest.raises(Invalid, match="a note on the overridden restore percentage"):
            publish_queued(session=session, desk=desk, vault=vault, actor=ACTOR,
                               incident_id=incident, draft=overridden, now=utcnow())
        assert publishing.updates_of(session=session, incident_id=incident) == []


def test_a_template_missing_fields_or_reaching_python_is_refused(engine):
    with session_scope(engine) as session:
        with pytest.raises(Invalid) as refused:
            publishing.save_template(session=session, actor=ACTOR, kind="text", locale="en",
                                     body="{{ what_happened }} {{ timeline }}", now=utcnow())
        assert "data_loss" in refused.value.details["missing"]
        assert "support" in refused.value.details["missing"]
        for escape in ("{{ ''.__class__.__mro__[1].__subclasses__() }}",
                       "{{ cycler.__init__.__globals__ }}",
                       "{% for x in range(10)|list %}{{ x.__class__.__base__ }}{% endfor %}"):
            with pytest.raises(Invalid, match="sandbox forbids|does not parse|failed"):
                publishing.save_template(session=session, actor=ACTOR, kind="text", locale="en",
                                         body=escape, now=utcnow())
        with pytest.raises(Invalid, match="does not parse"):
            publishing.save_template(session=session, actor=ACTOR, kind="html", locale="en",
                                     body="{% if %}", now=utcnow())


def test_an_update_reaches_every_contact_of_every_affected_account_once(
        app, engine, desk, vault, incident, deletion_document, smtp_server):
    port, sink = smtp_server
    with session_scope(engine) as session:
        update = publish_queued(session=session, desk=desk, vault=vault, actor=ACTOR,
                                    incident_id=incident, draft=complete_draft(), now=utcnow())
        assert update.recipients == 75  # 25 accounts x 3 contacts
        assert (update.accounts_affected, update.sites_affected) == (25, 30)
    mailer = Mailer(host="127.0.0.1", port=port, sender="status@lifeline.test")
    report = outbox.drain(engine=engine, cipher=services(app).crypto.cipher,
                          mailer=mailer, now=utcnow())
    assert report.sent == 75
    contacts = {contact["email"]: contact for account in deletion_document["accounts"]
                for contact in account["contacts"]}
    received = {message["To"]: message for message in sink.messages}
    assert set(received) == set(contacts)
    for address, message in received.items():
        text = message.get_body(("plain",)).get_content()
        french = contacts[address]["locale"].startswith("fr")
        assert ("Perte de données attendue" if french else "Expected data loss") in text
        for required in ("A maintenance script deleted sites", "all sites back within 4 days",
                         "at most 5 minutes", "0%", "/contact", "30 sites of 25",
                         "confiance : élevée" if french else "confidence: high"):
            assert required in text, (address, required)
        assert message["List-Id"] == f"Lifeline incident {incident} <{incident}.incidents.lifeline>"
        assert "/status/" in text and "/accounts/" in text
    with session_scope(engine) as session:
        keys = session.exec(select(OutboxMessage.key)).all()
    assert len(keys) == len(set(keys)) == 75


def test_a_saved_template_is_used_for_the_next_update(app, engine, desk, vault, incident):
    body = ("Custom: {{ what_happened }} | {{ scope }} | {{ timeline }} | {{ next_update }} | "
            "{{ restore_percentage }} | {{ data_loss }} | {{ confidence_timeline }} "
            "{{ confidence_restore }} {{ confidence_data_loss }} | {{ support }}")
    with session_scope(engine) as session:
        publishing.save_template(session=session, actor=ACTOR, kind="text", locale="en", body=body,
                                 now=utcnow())
    with session_scope(engine) as session:
        account_id = session.exec(select(AffectedSite.account_id)).first()
        shown = publishing.preview(session=session, desk=desk, vault=vault, incident_id=incident,
                                   draft=complete_draft(), account_id=account_id, actor=ACTOR,
                                   now=utcnow())
    if shown.locale == "en":
        assert shown.rendered.text.startswith("Custom: A maintenance script")
    assert "***@" in shown.recipient
    webhook = json.loads(shown.webhook)
    assert webhook["account"]["id"] == account_id
    assert webhook["update"]["what_happened"] == shown.update.what_happened
    assert shown.update.data_loss.startswith("Changes made after 07:33 UTC")


def test_a_late_update_warns_the_comms_inbox_once(engine, desk, vault, incident):
    with session_scope(engine) as session:
        publish_queued(session=session, desk=desk, vault=vault, actor=ACTOR,
                           incident_id=incident, now=utcnow(), draft=complete_draft(
                               next_update_at=utcnow() - timedelta(minutes=1)))
    for _ in range(2):
        with session_scope(engine) as session:
            cadence.warn_late(session=session, desk=desk, inbox="comms@vendor.example",
                              now=utcnow())
    with session_scope(engine) as session:
        warnings = session.exec(select(OutboxMessage).where(
            OutboxMessage.purpose == "incident_late")).all()
        assert len(warnings) == 1
        assert cadence.is_late(records.get_incident(session=session, incident_id=incident),
                               utcnow())


def test_long_id_lists_are_queried_in_chunks(engine, desk, vault, incident, monkeypatch):
    """An IN (...) longer than the driver takes fails (65,535 parameters on PostgreSQL): the
    100,000-recipient benchmark found it. With tiny chunks the answer is the same."""
    import contacts.core.db

    monkeypatch.setattr(contacts.core.db, "IN_LIST_SIZE", 7)
    with session_scope(engine) as session:
        update = publish_queued(session=session, desk=desk, vault=vault, actor=ACTOR,
                                    incident_id=incident, draft=complete_draft(), now=utcnow())
    assert update.recipients == 75


def test_a_preview_for_an_account_the_incident_does_not_affect_is_refused(
        engine, desk, vault, incident, sync_document):
    sync_document({"accounts": [{"external_id": "A-OTHER", "name": "Other", "sites": [],
                                 "contacts": [{"external_id": "C-O", "name": "O", "email":
                                               "o@other.example", "role": "site_admin",
                                               "locale": "en", "timezone": "UTC",
                                               "sites": []}]}]})
    with session_scope(engine) as session:
        other = session.exec(select(vault_service.Account).where(
            vault_service.Account.external_id == "A-OTHER")).one()
        with pytest.raises(Invalid, match="an account this incident affects"):
            publishing.preview(session=session, desk=desk, vault=vault, incident_id=incident,
                               draft=complete_draft(), account_id=other.id, actor=ACTOR,
                               now=utcnow())


def test_the_status_page_keeps_a_resolved_incident_for_two_weeks(client, engine, desk, vault,
                                                                incident):
    def status() -> str:
        answer = client.get("/status")
        assert answer.status_code == 200
        return answer.get_data(as_text=True)

    with session_scope(engine) as session:
        publish_queued(session=session, desk=desk, vault=vault, actor=ACTOR,
                           incident_id=incident, now=utcnow(), draft=complete_draft())
    ongoing = status()
    assert "Sites deleted by a maintenance script" in ongoing
    assert "Resolved in the last" not in ongoing

    with session_scope(engine) as session:
        publish_queued(session=session, desk=desk, vault=vault, actor=ACTOR,
                           incident_id=incident, now=utcnow(),
                           draft=complete_draft(state="resolved", next_update_at=None))
    resolved = status()
    assert "No ongoing incident." in resolved
    listed = resolved.split("Resolved in the last 14 days", 1)[1]
    assert f'href="/status/{incident}"' in listed
    assert "Sites deleted by a maintenance script</a>: resolved" in listed

    with session_scope(engine) as session:  # fifteen days later
        found = records.get_incident(session=session, incident_id=incident)
        found.last_update_at = utcnow() - timedelta(days=15)
        session.add(found)
    later = status()
    assert "No ongoing incident." in later
    assert "Resolved in the last" not in later and incident not in later


def test_the_affected_accounts_are_paged_by_name(engine, client, auth, make_staff, incident):
    from contacts.vault import service as vault_service

    with session_scope(engine) as session:
        pages = [progress.affected_accounts_page(session=session, incident_id=incident,
                                                 page=page, per_page=10)
                 for page in (0, 1, 2, 3, 99)]
        names = vault_service.account_names(session=session,
                                            ids=[i for p in pages[1:4] for i in p.account_ids])
    assert [(p.page, p.pages, p.accounts, len(p.account_ids)) for p in pages] == [
        (1, 3, 25, 10), (1, 3, 25, 10), (2, 3, 25, 10), (3, 3, 25, 5), (3, 3, 25, 5)]
    ordered = [names[i] for p in pages[1:4] for i in p.account_ids]
    assert ordered == sorted(ordered) and len(set(ordered)) == 25  # every account once
    auth.login(make_staff("comms"))
    assert client.get(f"/console/incidents/{incident}?accounts_page=x").status_code == 200
