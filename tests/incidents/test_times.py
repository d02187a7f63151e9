"""Every time an email or a page states is the instant given, in UTC: a promise sent as
09:34+01:00 reads 08:34 UTC, on both sides of UTC and across midnight, in the emails a real
SMTP server receives and on the public status page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from contacts.core.db import session_scope, utcnow
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.delivery import outbox
from contacts.incidents import cadence
from contacts.incidents.service import CommsDesk
from tests.incidents.conftest import run_fanout
from tests.vault.fixtures import make_document

# (as the API is given it, as every reader must see it)
PROMISES = [("2030-01-01T09:34:00+01:00", "2030-01-01 08:34 UTC"),
            ("2030-01-01T09:34:00-05:00", "2030-01-01 14:34 UTC"),
            ("2030-01-01T01:10:00+05:45", "2029-12-31 19:25 UTC")]


def _call(client, url, token, body):
    return client.post(url, json=body, headers={"Authorization": f"Bearer {token}"})


def _update(next_update_at: str) -> dict:
    return {"state": "identified", "what_happened": "Sites were deleted.",
            "timeline": "Back within 4 days.", "data_loss": "At most 5 minutes.",
            "next_update_at": next_update_at, "confidence_timeline": "medium",
            "confidence_restore": "high", "confidence_data_loss": "low"}


def _drain(app, engine, port):
    run_fanout(app)
    outbox.drain(engine=engine, cipher=services(app).crypto.cipher,
                 mailer=Mailer(host="127.0.0.1", port=port, sender="status@lifeline.test"),
                 now=utcnow())


def test_promised_times_read_in_utc_in_emails_and_on_the_status_page(
        app, client, engine, make_token, sync_document, smtp_server):
    port, sink = smtp_server
    sync_document(make_document(accounts=2, contacts_per_account=2))
    token = make_token("incidents:write")
    incident_id = _call(client, "/api/v1/incidents", token,
                        {"title": "Deletion", "severity": "major"}).get_json()["id"]
    assert _call(client, f"/api/v1/incidents/{incident_id}/sites", token,
                 {"sites": ["S00000-0", "S00001-0"]}).status_code == 200
    for given, _ in PROMISES:
        published = _call(client, f"/api/v1/incidents/{incident_id}/updates", token,
                          _update(given))
        assert published.status_code == 201, published.get_json()
        assert published.get_json()["next_update_at"] == (
            datetime.fromisoformat(given).astimezone(UTC).isoformat().replace("+00:00", "Z"))
    _drain(app, engine, port)

    assert len(sink.messages) == 4 * len(PROMISES)
    for number, (given, shown) in enumerate(PROMISES, start=1):
        mails = [m for m in sink.messages if f"Update {number}:" in m["Subject"]
                 or f"Point {number} :" in m["Subject"]]
        assert len(mails) == 4
        for mail in mails:
            text = mail.get_body(("plain",)).get_content()
            html = mail.get_body(("html",)).get_content()
            assert shown in text and shown in html, (given, text)
            assert given[11:16] + " UTC" not in text

    page = client.get(f"/status/{incident_id}").get_data(as_text=True)
    for given, shown in PROMISES:
        moment = datetime.fromisoformat(given).astimezone(UTC)
        assert f'<time datetime="{moment.isoformat()}">{shown}</time>' in page
    assert f"Next update by <time datetime=\"2029-12-31T19:25:00+00:00\">{PROMISES[2][1]}" \
           in page


def test_the_late_warning_states_the_promise_in_utc(app, client, engine, make_token,
                                                    sync_document, smtp_server):
    port, sink = smtp_server
    sync_document(make_document(accounts=1, contacts_per_account=1))
    token = make_token("incidents:write")
    incident_id = _call(client, "/api/v1/incidents", token,
                        {"title": "Deletion", "severity": "major"}).get_json()["id"]
    _call(client, f"/api/v1/incidents/{incident_id}/sites", token, {"sites": ["S00000-0"]})
    promised = (utcnow() - timedelta(minutes=5)).replace(second=0, microsecond=0)
    in_new_york = promised.astimezone(timezone(timedelta(hours=-5)))
    assert _call(client, f"/api/v1/incidents/{incident_id}/updates", token,
                 _update(in_new_york.isoformat())).status_code == 201
    with session_scope(engine) as session:
        desk = services(app).get(CommsDesk)
        assert cadence.warn_late(session=session, desk=desk, inbox="comms@vendor.example",
                                 now=utcnow())
    _drain(app, engine, port)
    (warning,) = [m for m in sink.messages if m["To"] == "comms@vendor.example"]
    assert promised.strftime("%Y-%m-%d %H:%M UTC") in warning["Subject"]
    assert in_new_york.strftime("%H:%M UTC") not in warning["Subject"]


def test_the_clock_converts_before_it_formats():
    from contacts.core import clock

    for offset, expected in ((timedelta(hours=1), "2030-01-01 08:34 UTC"),
                             (timedelta(hours=-5), "2030-01-01 14:34 UTC"),
                             (timedelta(hours=5, minutes=45), "2030-01-01 03:49 UTC")):
        moment = datetime(2030, 1, 1, 9, 34, tzinfo=timezone(offset))
        assert clock.format_utc(moment) == expected
        assert clock.rfc3339(moment) == expected[:10] + "T" + expected[11:16] + ":00Z"
    assert clock.format_utc(datetime(2030, 1, 1, 9, 34)) == "2030-01-01 09:34 UTC"  # naive: UTC
