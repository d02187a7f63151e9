"""API tokens: scoped, shown once, stored hashed, revocable, expiring, their use audited."""

import re
from datetime import timedelta

from sqlmodel import select

from contacts.core.audit import Actor, AuditEntry
from contacts.core.db import session_scope, utcnow
from contacts.staff import service
from contacts.staff.models import ApiToken
from tests.helpers import csrf_token_from

SECRET = re.compile(r'id="secret"[^>]*value="(llt_[^"]+)"')


def create_in_console(client, name="product sync", scopes=("contacts:write", "read")):
    token = csrf_token_from(client.get("/console/tokens").get_data(as_text=True))
    return client.post("/console/tokens", data={"name": name, "scopes": list(scopes),
                                                "csrf_token": token})


def test_an_admin_creates_a_token_whose_secret_is_shown_once(client, auth, make_staff, engine):
    auth.login(make_staff("admin"))
    created = create_in_console(client)
    assert created.status_code == 200
    secret = SECRET.search(created.get_data(as_text=True)).group(1)
    listing = client.get("/console/tokens").get_data(as_text=True)
    assert "product sync" in listing and secret not in listing
    with session_scope(engine) as session:
        stored = session.exec(select(ApiToken)).one()
    assert secret not in stored.model_dump_json()
    assert stored.scope_list == ["contacts:write", "read"]
    answer = client.get("/api/v1/token", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200
    assert answer.get_json()["scopes"] == ["contacts:write", "read"]


def test_a_token_form_without_a_scope_is_refused_next_to_the_field(client, auth, make_staff):
    auth.login(make_staff("admin"))
    response = create_in_console(client, scopes=())
    assert response.status_code == 400
    assert "Choose at least one scope." in response.get_data(as_text=True)


def test_a_revoked_token_stops_working_at_once(client, auth, make_staff, make_token, engine):
    secret = make_token("read")
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/token", headers=headers).status_code == 200
    token_id = client.get("/api/v1/token", headers=headers).get_json()["id"]
    auth.login(make_staff("admin"))
    csrf = auth.csrf("/console/tokens")
    assert client.post(f"/console/tokens/{token_id}/revoke",
                       data={"csrf_token": csrf}).status_code == 302
    refused = client.get("/api/v1/token", headers=headers)
    assert refused.status_code == 401
    with session_scope(engine) as session:
        actions = [e.action for e in session.exec(select(AuditEntry).order_by(AuditEntry.id))]
    assert actions[-2:] == ["token.revoked", "token.refused"]


def test_an_expired_token_is_refused(client, engine):
    with session_scope(engine) as session:
        token, secret = service.create_token(session=session, actor=Actor.system("test"),
                                             name="short", scopes=["read"],
                                             expires_at=utcnow() + timedelta(hours=1))
        token.expires_at = utcnow() - timedelta(seconds=1)
    assert client.get("/api/v1/token",
                      headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_each_token_use_is_audited_with_its_address(client, make_token, engine):
    secret = make_token("read")
    client.get("/api/v1/token", headers={"Authorization": f"Bearer {secret}"})
    with session_scope(engine) as session:
        used = session.exec(select(AuditEntry).where(AuditEntry.action == "token.used")).one()
    assert used.actor_kind == "token" and used.ip == "127.0.0.1"
    assert used.detail == {"endpoint": "staff_api.current_token"}


def test_unknown_scopes_and_empty_names_are_refused(engine):
    import pytest

    from contacts.core.errors import Invalid

    with session_scope(engine) as session:
        with pytest.raises(Invalid, match="unknown scope 'delete:everything'"):
            service.create_token(session=session, actor=Actor.system("t"), name="x",
                                 scopes=["delete:everything"])
        with pytest.raises(Invalid, match="needs a name"):
            service.create_token(session=session, actor=Actor.system("t"), name=" ",
                                 scopes=["read"])
