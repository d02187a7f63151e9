"""Two-factor sign-in: enrolment before any console page, TOTP codes used once, recovery
codes used once, codes limited like passwords, the CLI reset, secrets sealed at rest."""

import re
import threading
import time

import pyotp
from sqlmodel import select

from contacts.audit import AuditEntry
from contacts.db import session_scope
from contacts.staff.models import RecoveryCode, StaffUser
from tests.helpers import Auth, csrf_token_from, stored_bytes

SECRET_FIELD = re.compile(r'id="totp-secret"[^>]*value="([A-Z2-7]+)"')
RECOVERY = re.compile(r"<li><code>([a-z2-9]{5}-[a-z2-9]{5})</code></li>")


def audit_actions(engine) -> list[AuditEntry]:
    with session_scope(engine) as session:
        return list(session.exec(select(AuditEntry).order_by(AuditEntry.id)))


def post_code(client, path: str, code: str):
    token = csrf_token_from(client.get(path).get_data(as_text=True))
    return client.post(path, data={"code": code, "csrf_token": token})


def password_step(auth: Auth, account):
    token = auth.csrf()
    return auth.client.post("/login", data={"email": account.email,
                                            "password": account.password, "csrf_token": token})


def not_the_code(totp: pyotp.TOTP) -> str:
    """A 6-digit code that is none of the steps the server could accept in the next minute."""
    current = totp.timecode(time.time())
    valid = {totp.generate_otp(current + i) for i in range(-1, 4)}
    return next(code for code in ("000000", "111111", "222222") if code not in valid)


def test_an_admin_without_a_second_factor_enrols_before_any_console_page(client, make_staff,
                                                                         engine):
    admin = make_staff("admin", two_factor=False)
    auth = Auth(client)
    answer = password_step(auth, admin)
    assert answer.status_code == 302 and answer.headers["Location"] == "/login/enrol"
    for path in ("/console/", "/console/staff", "/console/accounts"):
        assert client.get(path).headers["Location"].startswith("/login?next="), path
    page = client.get("/login/enrol").get_data(as_text=True)
    assert "<svg" in page and "QR code of the two-factor secret" in page
    secret = SECRET_FIELD.search(page).group(1)
    assert SECRET_FIELD.search(client.get("/login/enrol").get_data(as_text=True)).group(1) \
        == secret  # a reload shows the same secret
    totp = pyotp.TOTP(secret)
    refused = post_code(client, "/login/enrol", not_the_code(totp))
    assert refused.status_code == 401 and "does not match" in refused.get_data(as_text=True)
    assert client.get("/console/").status_code == 302
    done = post_code(client, "/login/enrol", totp.now())
    assert done.status_code == 200
    codes = RECOVERY.findall(done.get_data(as_text=True))
    assert len(codes) == 10 and len(set(codes)) == 10
    assert client.get("/console/").status_code == 200
    actions = [entry.action for entry in audit_actions(engine)]
    assert actions[-2:] == ["staff.2fa_enrolled", "staff.login"]
    with session_scope(engine) as session:
        assert len(session.exec(select(RecoveryCode).where(
            RecoveryCode.staff_id == admin.id)).all()) == 10


def test_every_role_that_can_reveal_contacts_must_enrol_by_default(client, make_staff):
    for role in ("support", "comms", "admin"):
        auth = Auth(client)
        answer = password_step(auth, make_staff(role, two_factor=False))
        assert answer.headers["Location"] == "/login/enrol", role


def test_a_role_left_out_of_the_setting_signs_in_with_its_password(make_app, make_staff):
    app = make_app(security_require_2fa_roles=["admin"])
    comms = make_staff("comms", two_factor=False)
    answer = Auth(app.test_client()).login(comms)
    assert answer.headers["Location"] == "/console/"


def test_a_password_only_session_ends_once_its_role_needs_a_second_factor(make_app, make_staff):
    lenient = make_app(security_require_2fa_roles=[])
    admin = make_staff("admin", two_factor=False)
    old = Auth(lenient.test_client())
    assert old.login(admin).headers["Location"] == "/console/"
    cookie = old.client.get_cookie("lifeline_session").value
    strict = make_app().test_client()
    strict.set_cookie("lifeline_session", cookie)
    answer = strict.get("/console/")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/login?next=")
    assert strict.get("/console/").status_code == 302  # signed out, not only redirected
    other = make_app().test_client()
    other.set_cookie("lifeline_session", cookie)
    assert other.get("/contact").status_code == 200  # a public page still answers ...
    assert other.get("/console/").status_code == 302  # ... and the session is over


def test_sign_in_with_a_code_a_wrong_code_and_a_replayed_code(client, make_staff, engine):
    account = make_staff("support")
    totp = pyotp.TOTP(account.totp_secret)
    auth = Auth(client)
    assert password_step(auth, account).headers["Location"] == "/login/code"
    assert client.get("/console/").status_code == 302  # a password alone opens nothing
    wrong = post_code(client, "/login/code", not_the_code(totp))
    assert wrong.status_code == 401
    assert "That code is not right" in wrong.get_data(as_text=True)
    assert audit_actions(engine)[-1].detail["reason"] == "wrong_code"
    code = account.code()
    answer = post_code(client, "/login/code", code)
    assert answer.status_code == 302 and answer.headers["Location"] == "/console/"
    assert client.get("/console/").status_code == 200
    login = audit_actions(engine)[-1]
    assert (login.action, login.detail["second_factor"]) == ("staff.login", "totp")
    auth.logout()
    assert password_step(auth, account).headers["Location"] == "/login/code"
    replayed = post_code(client, "/login/code", code)
    assert replayed.status_code == 401
    assert audit_actions(engine)[-1].detail["reason"] == "replayed_code"
    assert client.get("/console/").status_code == 302
    assert post_code(client, "/login/code", account.code()).status_code == 302


def test_the_same_code_sent_twice_at_once_signs_in_once(app, make_staff):
    account = make_staff("admin")
    clients = [app.test_client() for _ in range(2)]
    tokens = []
    for one in clients:
        assert password_step(Auth(one), account).headers["Location"] == "/login/code"
        tokens.append(csrf_token_from(one.get("/login/code").get_data(as_text=True)))
    code, answers = account.code(), [None, None]
    start = threading.Barrier(2)

    def send(number):
        start.wait()
        answers[number] = clients[number].post("/login/code", data={
            "code": code, "csrf_token": tokens[number]}).status_code

    threads = [threading.Thread(target=send, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [302, 401]


def test_a_recovery_code_signs_in_once(client, make_staff, engine):
    account = make_staff("admin")
    recovery = account.recovery_codes[3]
    auth = Auth(client)
    password_step(auth, account)
    answer = post_code(client, "/login/code", recovery.upper().replace("-", " "))
    assert answer.status_code == 302
    assert "9 left" in client.get("/console/").get_data(as_text=True)
    assert audit_actions(engine)[-1].detail["second_factor"] == "recovery_code"
    auth.logout()
    password_step(auth, account)
    again = post_code(client, "/login/code", recovery)
    assert again.status_code == 401
    assert audit_actions(engine)[-1].detail["reason"] == "wrong_recovery_code"
    assert post_code(client, "/login/code", account.recovery_codes[4]).status_code == 302


def test_a_member_replaces_the_recovery_codes_with_a_current_code(client, make_staff, engine):
    account = make_staff("comms")
    auth = Auth(client)
    auth.login(account)
    page = client.get("/console/two-factor").get_data(as_text=True)
    assert "Recovery codes left: <strong>10</strong>" in page
    refused = post_code(client, "/console/two-factor", not_the_code(
        pyotp.TOTP(account.totp_secret)))
    assert refused.status_code == 401
    replaced = post_code(client, "/console/two-factor", account.code())
    assert replaced.status_code == 200
    codes = RECOVERY.findall(replaced.get_data(as_text=True))
    assert len(codes) == 10 and not set(codes) & set(account.recovery_codes)
    assert audit_actions(engine)[-1].action == "staff.2fa_recovery_codes_replaced"
    auth.logout()
    password_step(auth, account)
    assert post_code(client, "/login/code", account.recovery_codes[0]).status_code == 401
    assert post_code(client, "/login/code", codes[0]).status_code == 302


def test_wrong_codes_are_limited_like_passwords(client, make_staff):
    account = make_staff("admin")
    totp = pyotp.TOTP(account.totp_secret)
    auth = Auth(client)
    password_step(auth, account)
    statuses = [post_code(client, "/login/code", not_the_code(totp)).status_code
                for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    refused = post_code(client, "/login/code", account.code())
    assert refused.status_code == 429 and "Too many failed attempts" in refused.get_data(
        as_text=True)
    assert client.get("/console/").status_code == 302


def test_reset_2fa_from_the_cli_ends_sessions_and_asks_to_enrol_again(app, make_staff, engine):
    account = make_staff("admin")
    auth = Auth(app.test_client())
    assert auth.login(account).status_code == 302
    result = app.test_cli_runner().invoke(args=["staff", "reset-2fa", account.id])
    assert result.exit_code == 0, result.output
    assert f"two-factor sign-in reset for {account.id}" in result.output
    assert auth.client.get("/console/").status_code == 302  # its sessions ended
    entry = audit_actions(engine)[-1]
    assert (entry.action, entry.actor_kind, entry.actor_id, entry.target_id) == (
        "staff.2fa_reset", "system", "cli", account.id)
    with session_scope(engine) as session:
        user = session.get(StaffUser, account.id)
        assert user.totp_secret_encrypted is None and not user.has_totp
        assert not session.exec(select(RecoveryCode).where(
            RecoveryCode.staff_id == account.id)).all()
    assert password_step(auth, account).headers["Location"] == "/login/enrol"
    for args, said in ((["staff", "reset-2fa", "stf_01m8bq70k0y2nthpm9ammtm0jp"],
                        "Error: no staff account with this ID"),
                       (["staff", "reset-2fa", "tok_01m8bq70k0y2nthpm9ammtm0jp"],
                        "Error: expected a staff user ID (stf_...), got an API token ID")):
        bad = app.test_cli_runner().invoke(args=args)
        lines = bad.output.strip().splitlines()
        assert bad.exit_code == 2 and len(lines) == 1 and lines[0].startswith(said), bad.output


def test_the_totp_secret_and_recovery_codes_are_not_stored_in_plaintext(make_staff, engine):
    accounts = [make_staff("admin"), make_staff("support")]
    stored = stored_bytes(engine)
    for account in accounts:
        assert account.totp_secret.encode() not in stored
        assert account.totp_secret.lower().encode() not in stored
        for code in account.recovery_codes:
            assert code.encode() not in stored and code.replace("-", "").encode() not in stored
    with session_scope(engine) as session:
        sealed = session.get(StaffUser, accounts[0].id).totp_secret_encrypted
    assert sealed and accounts[0].totp_secret not in sealed


def test_the_api_still_signs_in_with_a_bearer_token_alone(client, make_token, make_staff):
    make_staff("admin", two_factor=False)
    answer = client.get("/api/v1/token", headers={"Authorization": f"Bearer {make_token('read')}"})
    assert answer.status_code == 200
