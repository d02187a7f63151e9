"""Staff sign-in: the form, the session cookie, failures audited, attempts rate limited."""

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlmodel import select

from contacts.core.audit import AuditEntry
from contacts.core.db import session_scope
from contacts.core.services import services
from tests.helpers import Auth, csrf_token_from, require_redis


def audit_actions(engine) -> list[AuditEntry]:
    with session_scope(engine) as session:
        return list(session.exec(select(AuditEntry).order_by(AuditEntry.id)))


def test_a_staff_member_signs_in_and_reaches_the_console(client, auth, make_staff, engine):
    account = make_staff("support")
    response = auth.login(account)
    assert response.status_code == 302 and response.headers["Location"] == "/console/"
    page = client.get("/console/")
    assert page.status_code == 200
    assert account.id in page.get_data(as_text=True)
    login = audit_actions(engine)[-1]
    assert (login.action, login.actor_id, login.ip) == ("staff.login", account.id, "127.0.0.1")


def test_the_session_cookie_is_httponly_and_samesite_lax(auth, make_staff, make_app, client):
    response = auth.login(make_staff())
    cookie = next(c for c in response.headers.getlist("Set-Cookie")
                  if c.startswith("lifeline_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    secure_client = make_app(server_session_cookie_secure=True).test_client()
    page = secure_client.get("/login", base_url="https://localhost")
    token = csrf_token_from(page.get_data(as_text=True))
    response = secure_client.post("/login", base_url="https://localhost",
                                  headers={"Referer": "https://localhost/login"},
                                  data={"email": "x@example.com", "password": "whatever",
                                        "csrf_token": token})
    cookie = next(c for c in response.headers.getlist("Set-Cookie")
                  if c.startswith("lifeline_session="))
    assert "; Secure" in cookie
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"


def test_a_wrong_password_is_refused_and_audited_without_the_address(
        client, auth, make_staff, engine, caplog):
    account = make_staff()
    caplog.set_level(logging.DEBUG)
    response = auth.login(account, password="not the password at all")
    assert response.status_code == 401
    assert "Wrong email or password." in response.get_data(as_text=True)
    assert client.get("/console/").status_code == 302
    failure = audit_actions(engine)[-1]
    assert failure.action == "staff.login_failed"
    assert failure.target_id == account.id
    assert failure.detail["reason"] == "wrong_password"
    assert account.email not in str(failure.detail)
    assert account.email not in caplog.text


def test_an_unknown_address_gets_the_same_answer_as_a_wrong_password(client, auth, make_staff,
                                                                     engine):
    known = make_staff()
    wrong = auth.login(known, password="not the password at all")
    unknown = client.post("/login", data={"email": "nobody@example.com", "password": "whatever",
                                          "csrf_token": auth.csrf()})
    assert unknown.status_code == wrong.status_code == 401
    assert "Wrong email or password." in unknown.get_data(as_text=True)
    failure = audit_actions(engine)[-1]
    assert failure.detail["reason"] == "unknown_email" and failure.target_id is None


def test_the_sixth_rapid_wrong_attempt_is_rate_limited(client, auth, make_staff, engine):
    account = make_staff()
    statuses = [auth.login(account, password=f"wrong password {n}").status_code
                for n in range(6)]
    assert statuses == [401, 401, 401, 401, 401, 429]
    # Even the right password waits until the window has passed.
    assert auth.login(account).status_code == 429
    failures = [e for e in audit_actions(engine) if e.action == "staff.login_failed"]
    assert len(failures) == 5


def test_a_burst_of_parallel_guesses_cannot_slip_past_the_limit(app, make_staff):
    account = make_staff()
    clients = [app.test_client() for _ in range(12)]
    tokens = [Auth(client).csrf() for client in clients]

    def guess(number):
        return clients[number].post("/login", data={
            "email": account.email, "password": f"guess {number}",
            "csrf_token": tokens[number]}).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(guess, range(12)))
    assert sorted(statuses) == [401] * 5 + [429] * 7


def test_console_pages_are_never_cached(client, auth, make_staff):
    auth.login(make_staff())
    assert client.get("/console/").headers["Cache-Control"] == "no-store"
    assert "no-store" not in client.get("/static/lifeline.css").headers.get("Cache-Control", "")


def test_signing_out_ends_the_session_and_is_audited(client, auth, make_staff, engine):
    account = make_staff()
    auth.login(account)
    response = auth.logout()
    assert response.status_code == 302
    assert client.get("/console/").status_code == 302
    assert audit_actions(engine)[-1].action == "staff.logout"


def test_after_sign_in_only_same_site_next_addresses_are_followed(client, auth, make_staff):
    account = make_staff()
    page = client.get("/login?next=//evil.example/steal").get_data(as_text=True)
    assert "evil.example" not in page
    response = auth.login(account, next="https://evil.example/")
    assert response.headers["Location"] == "/console/"


def test_an_anonymous_visitor_is_sent_to_sign_in_and_back(client, auth, make_staff):
    response = client.get("/console/audit?action=staff.login")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/console/audit?action%3Dstaff.login"
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'value="/console/audit?action=staff.login"' in page


def test_a_deactivated_account_loses_its_session(client, auth, make_staff, app):
    from contacts.core.audit import Actor
    from contacts.staff import service

    admin, member = make_staff("admin"), make_staff("support")
    auth.login(member)
    assert client.get("/console/").status_code == 200
    with session_scope(services(app).engine) as session:
        service.set_active(session=session, actor=Actor("staff", admin.id), staff_id=member.id,
                           active=False)
    assert client.get("/console/").status_code == 302
    assert auth.login(member).status_code == 401


def test_processes_sharing_redis_share_the_login_limit(make_app, make_staff):
    """Several web processes count attempts together when the limiter uses Redis."""
    url = "redis://127.0.0.1:6379/15"
    require_redis(url)
    prefix = f"test-{uuid.uuid4().hex}"
    first, second = (make_app(security_rate_limit_storage_uri=url,
                              security_rate_limit_key_prefix=prefix) for _ in range(2))
    account = make_staff()
    one, two = Auth(first.test_client()), Auth(second.test_client())
    statuses = [(one if n % 2 else two).login(account, password=f"wrong {n}").status_code
                for n in range(6)]
    assert statuses == [401, 401, 401, 401, 401, 429]
