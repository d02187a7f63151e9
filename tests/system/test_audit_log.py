"""The audit log as an admin reads it: the console page with filters, and the JSON API."""

import pytest

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.db import session_scope
from tests.helpers import stored_bytes


def seed_entries(engine, count: int, action: str = "test.seeded"):
    with session_scope(engine) as session:
        for number in range(count):
            audit.record(session, Actor("staff", f"stf_{number}"), action,
                         target_kind="thing", target_id=f"thing_{number}")


def test_an_admin_filters_the_audit_log(client, auth, make_staff, engine):
    admin = make_staff("admin")
    auth.login(admin, password="a wrong password here")
    auth.login(admin)
    page = client.get("/console/audit?action=staff.login_failed").get_data(as_text=True)
    assert "staff.login_failed" in page and "wrong_password" in page
    assert "<code>staff.login</code>" not in page
    by_actor = client.get(f"/console/audit?actor={admin.id}").get_data(as_text=True)
    assert "<code>staff.login</code>" in by_actor


def test_the_audit_page_pages_back_through_old_entries(client, auth, make_staff, engine):
    seed_entries(engine, 60)
    auth.login(make_staff("admin"))
    first = client.get("/console/audit?action=test.seeded").get_data(as_text=True)
    assert first.count("<code>test.seeded</code>") == 50
    older = first.split('href="')[-1].split('"')[0].replace("&amp;", "&")
    assert "before=" in older and "action=test.seeded" in older
    second = client.get(older).get_data(as_text=True)
    assert second.count("<code>test.seeded</code>") == 10


@pytest.mark.parametrize("role", ["support", "comms"])
def test_other_roles_cannot_read_the_audit_log(client, auth, make_staff, role):
    auth.login(make_staff(role))
    assert client.get("/console/audit").status_code == 403


def test_the_audit_api_pages_newest_first(client, make_token, engine):
    seed_entries(engine, 5)
    headers = {"Authorization": f"Bearer {make_token('audit:read')}"}
    first = client.get("/api/v1/audit?action=test.&limit=3", headers=headers).get_json()
    assert [e["target_id"] for e in first["entries"]] == ["thing_4", "thing_3", "thing_2"]
    second = client.get(f"/api/v1/audit?action=test.&limit=3&before_id={first['next_before_id']}",
                        headers=headers).get_json()
    assert [e["target_id"] for e in second["entries"]] == ["thing_1", "thing_0"]
    assert second["next_before_id"] is None


def test_no_staff_email_is_stored_in_plaintext(engine, make_staff, auth):
    account = make_staff("admin", email="plain.text.canary@example.com")
    auth.login(account)
    stored = stored_bytes(engine)
    assert b"staff.login" in stored  # the scan sees what it should
    assert b"plain.text.canary" not in stored


def test_a_page_past_the_largest_entry_id_is_refused_or_ignored_not_a_server_error(
        client, auth, make_staff, make_token):
    """audit_log.id is 32 bits on PostgreSQL, where a larger number used to answer 500."""
    headers = {"Authorization": f"Bearer {make_token('audit:read')}"}
    largest = client.get(f"/api/v1/audit?before_id={audit.LARGEST_ID}", headers=headers)
    assert largest.status_code == 200
    too_large = client.get(f"/api/v1/audit?before_id={audit.LARGEST_ID + 1}", headers=headers)
    assert too_large.status_code == 422
    assert [p["field"] for p in too_large.get_json()["error"]["details"]] == ["before_id"]
    auth.login(make_staff("admin"))
    assert client.get(f"/console/audit?before={2**63 - 2}").status_code == 200
