"""The product reports restore progress; bad reports are refused whole, with a clear 4xx."""

from __future__ import annotations

from contacts.core.db import session_scope
from contacts.incidents import progress, publishing, records
from contacts.vault import service as vault_service
from tests.incidents.conftest import publish_queued, thirty_sites


def _report(client, token, incident, sites):
    return client.post(f"/api/v1/incidents/{incident}/progress", json={"sites": sites},
                       headers={"Authorization": f"Bearer {token}"})


def test_the_product_moves_sites_through_stages(client, make_token, incident,
                                                deletion_document):
    token = make_token("progress:write")
    refs = thirty_sites(deletion_document)
    answer = _report(client, token, incident,
                     [{"site": ref, "stage": "validated_by_us"} for ref in refs[:15]])
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["restore_percentage"] == 50.0
    assert answer.get_json()["changed"] == 15
    again = _report(client, token, incident, [{"site": refs[0], "stage": "validated_by_us"}])
    assert again.get_json()["changed"] == 0


def test_a_bad_report_is_refused_whole_and_changes_nothing(client, make_token, engine, desk,
                                                           incident, deletion_document):
    token = make_token("progress:write")
    refs = thirty_sites(deletion_document)
    outside = deletion_document["accounts"][23]["sites"][1]["external_id"]  # not in it
    answer = _report(client, token, incident, [
        {"site": refs[0], "stage": "validated_by_us"},
        {"site": outside, "stage": "data_restored"},
        {"site": refs[1], "stage": "teleported"}])
    assert answer.status_code == 400
    message = answer.get_json()["error"]["message"]
    assert f"site {outside!r} is not in this incident" in message
    assert "'teleported' is not a stage" in message
    with session_scope(engine) as session:
        assert progress.progress(session=session, desk=desk,
                                 incident_id=incident).by_stage["queued"] == 30


def test_an_id_of_another_kind_is_refused_naming_both(client, make_token, engine, incident,
                                                      deletion_document):
    token = make_token("progress:write")
    with session_scope(engine) as session:
        account = vault_service.get_account(session=session, account_id=next(iter(
            vault_service.live_sites(session=session, refs=thirty_sites(deletion_document)[:1])
            .values())).account_id)
    answer = _report(client, token, incident, [{"site": account.id, "stage": "queued"}])
    assert answer.status_code == 400
    assert "expected a site ID (site_...), got an account ID" in answer.get_json()["error"][
        "message"]


def test_reading_tokens_cannot_report_progress(client, make_token, incident):
    answer = _report(client, make_token("read"), incident, [{"site": "x", "stage": "queued"}])
    assert answer.status_code == 403


def test_the_public_page_and_the_private_link_show_the_right_percentages(
        client, engine, desk, vault, incident, deletion_document):
    from datetime import timedelta

    from contacts.core.audit import Actor
    from contacts.core.db import utcnow
    from tests.incidents.conftest import complete_draft

    refs = thirty_sites(deletion_document)
    with session_scope(engine) as session:
        progress.set_stages(session=session, desk=desk, actor=Actor.system("t"),
                            incident_id=incident,
                            stages=[(ref, "validated_by_customer") for ref in refs[:6]],
                            now=utcnow())
        publish_queued(session=session, desk=desk, vault=vault, actor=Actor.system("t"),
                           incident_id=incident, draft=complete_draft(), now=utcnow())
        first = vault_service.live_sites(session=session, refs=refs[:1])[refs[0]]
    page = client.get(f"/status/{incident}").get_data(as_text=True)
    assert "20.0%</span> of affected sites restored" in page
    assert "Next update by" in page and "is late" not in page
    link = publishing.account_link(desk, incident, first.account_id).split("/status/", 1)[1]
    private = client.get("/status/" + link).get_data(as_text=True)
    assert "100.0%</span> of your 1 site restored" in private
    assert client.get(f"/status/{incident}/accounts/{first.account_id}?t=forged"
                      ).status_code == 404
    with session_scope(engine) as session:  # the promised time passes with no update
        found = records.get_incident(session=session, incident_id=incident)
        found.next_update_due = utcnow() - timedelta(minutes=1)
        session.add(found)
    late = client.get(f"/status/{incident}").get_data(as_text=True)
    assert "is late" in late


def test_the_feed_and_the_delivery_export_list_each_update(client, engine, desk, vault, auth,
                                                           make_staff, incident):
    from contacts.core.audit import Actor
    from contacts.core.db import utcnow
    from tests.incidents.conftest import complete_draft

    with session_scope(engine) as session:
        publish_queued(session=session, desk=desk, vault=vault, actor=Actor.system("t"),
                           incident_id=incident, draft=complete_draft(), now=utcnow())
    feed = client.get(f"/status/{incident}/feed.atom")
    assert feed.mimetype == "application/atom+xml"
    assert feed.get_data(as_text=True).count("<entry>") == 1
    assert "Expected data loss (high confidence)" in feed.get_data(as_text=True)
    auth.login(make_staff("comms"))
    export = client.get(f"/console/incidents/{incident}/deliveries.csv")
    lines = export.get_data(as_text=True).strip().splitlines()
    assert lines[0] == "update,published_at,account_id,recipient,channel,state,attempts,sent_at"
    assert len(lines) == 1 + 75
    assert all(",email,queued,0," in line for line in lines[1:])
    assert "@" not in export.get_data(as_text=True)  # IDs, never addresses
    page = client.get(f"/console/incidents/{incident}").get_data(as_text=True)
    assert "75 recipients: 0 sent, 75 queued, 0 failed" in page
