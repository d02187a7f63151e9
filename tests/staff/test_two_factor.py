"""Two-factor sign-in: enrolment before any console page, TOTP codes used once, recovery
codes used once, codes limited like passwords, the CLI reset, secrets sealed at rest."""

import re
import threading
import time
from datetime import UTC, datetime

import pyotp
import pytest
from sqlmodel import select

from contacts.core.audit import Actor, AuditEntry
from contacts.core.db import session_scope
from contacts.core.errors import Invalid
from contacts.core.services import services
from contacts.staff import twofactor
from contacts.staff.models import STAFF_TOTP_SECRET, RecoveryCode, StaffUser
from tests import helpers
from tests.helpers import Auth, StaffAccount, csrf_token_from, stored_bytes

SECRET_FIELD = re.compile(r'id="totp-secret"[^>]*value="([A-Z2-7]+)"')
RECOVERY = re.compile(r"<li><code>([a-z2-9]{5}-[a-z2-9]{5})</code></li>")


def audit_actions(engine) -> list[AuditEntry]:
    with session_scope(engine) as session:
        return list(session.exec(select(AuditEntry).order_by(AuditEntry.id)))


def post_code(client, path: str, code: str):
    token = csrf_token_from(client.get(path).get_data(as_text=True))
    return client.post(path, data={"code": code, "csrf_token": token})


def enrol_code(client, code: str):
    """Answer the secret the enrolment page offered last (the CSRF token is taken from the
    sign-in page, as a visit to the enrolment page would offer a new secret)."""
    token = csrf_token_from(client.get("/login").get_data(as_text=True))
    return client.post("/login/enrol", data={"code": code, "csrf_token": token})


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
    totp = pyotp.TOTP(secret)
    refused = enrol_code(client, not_the_code(totp))
    assert refused.status_code == 401 and "does not match" in refused.get_data(as_text=True)
    assert SECRET_FIELD.search(refused.get_data(as_text=True)).group(1) == secret
    assert client.get("/console/").status_code == 302
    done = enrol_code(client, totp.now())
    assert done.status_code == 200
    codes = RECOVERY.findall(done.get_data(as_text=True))
    assert len(codes) == 10 and len(set(codes)) == 10
    assert client.get("/console/").status_code == 200
    actions = [entry.action for entry in audit_actions(engine)]
    assert actions[-2:] == ["staff.2fa_enrolled", "staff.login"]
    with session_scope(engine) as session:
        assert len(session.exec(select(RecoveryCode).where(
            RecoveryCode.staff_id == admin.id)).all()) == 10


def offered_secret(client) -> str:
    return SECRET_FIELD.search(client.get("/login/enrol").get_data(as_text=True)).group(1)


def session_cookie(app, client) -> dict:
    serializer = app.session_interface.get_signing_serializer(app)
    return serializer.loads(client.get_cookie("lifeline_session").value)


def test_every_visit_to_the_enrolment_page_offers_a_fresh_secret_kept_sealed(app, client,
                                                                            make_staff, engine):
    admin = make_staff("admin", two_factor=False)
    password_step(Auth(client), admin)
    first, second = offered_secret(client), offered_secret(client)
    assert first != second
    for secret in (first, second):  # the signed cookie can be read: it holds sealed text
        assert secret not in str(session_cookie(app, client))
    with session_scope(engine) as session:  # nothing is stored before a code confirms it
        assert session.get(StaffUser, admin.id).totp_secret_encrypted is None
    for step in (-1, 0, 1):  # the first visit's secret, in every step of the window
        refused = enrol_code(client, pyotp.TOTP(first).at(time.time() + 30 * step))
        assert refused.status_code == 401 and "does not match" in refused.get_data(
            as_text=True)
        assert SECRET_FIELD.search(refused.get_data(as_text=True)).group(1) == second
    done = enrol_code(client, pyotp.TOTP(second).now())
    assert done.status_code == 200 and len(RECOVERY.findall(done.get_data(as_text=True))) == 10
    started = [entry for entry in audit_actions(engine)
               if entry.action == "staff.2fa_enrolment_started"]
    assert len(started) == 2 and {entry.target_id for entry in started} == {admin.id}
    assert [entry.action for entry in audit_actions(engine)][-2:] == [
        "staff.2fa_enrolled", "staff.login"]


def test_a_secret_copied_from_the_enrolment_page_is_no_second_factor_once_the_owner_enrols(
        app, make_staff, engine):
    admin = make_staff("admin", two_factor=False)
    attacker = Auth(app.test_client())
    password_step(attacker, admin)
    copied = pyotp.TOTP(offered_secret(attacker.client))
    owner = Auth(app.test_client())
    password_step(owner, admin)
    secret = offered_secret(owner.client)
    assert secret != copied.secret
    assert enrol_code(owner.client, copied.now()).status_code == 401
    assert enrol_code(owner.client, pyotp.TOTP(secret).now()).status_code == 200
    # The attacker's pending sign-in is over; a new one needs a code of the owner's secret.
    assert attacker.client.get("/login/enrol").headers["Location"] == "/login"
    assert password_step(attacker, admin).headers["Location"] == "/login/code"
    for step in (-1, 0, 1):
        code = copied.at(time.time() + 30 * step)
        assert post_code(attacker.client, "/login/code", code).status_code == 401
    assert audit_actions(engine)[-1].detail["reason"] == "wrong_code"
    assert attacker.client.get("/console/").status_code == 302


def test_a_secret_stored_unconfirmed_by_an_older_version_is_never_offered(app, client,
                                                                        make_staff, engine):
    admin = make_staff("admin", two_factor=False)
    crypto = services(app).crypto
    stale = pyotp.random_base32()
    with session_scope(engine) as session:
        user = session.get(StaffUser, admin.id)
        user.totp_secret_encrypted = crypto.cipher.encrypt(stale, context=STAFF_TOTP_SECRET)
    password_step(Auth(client), admin)
    assert offered_secret(client) != stale
    with session_scope(engine) as session:
        assert session.get(StaffUser, admin.id).totp_secret_encrypted is None
    for step in (-1, 0, 1):
        code = pyotp.TOTP(stale).at(time.time() + 30 * step)
        assert enrol_code(client, code).status_code == 401


def test_an_enrolment_code_is_checked_against_this_attempts_secret_only(app, client,
                                                                        make_staff):
    admin, other = make_staff("admin", two_factor=False), make_staff("admin", two_factor=False)
    crypto = services(app).crypto
    password_step(Auth(client), admin)
    # A POST with no secret offered (no visit first) starts over with a fresh one.
    answer = enrol_code(client, "123456")
    page = answer.get_data(as_text=True)
    assert answer.status_code == 400 and "The enrolment expired" in page
    assert SECRET_FIELD.search(page)
    for code in ("\u0661\u0662\u0663\u0664\u0665\u0666", "12345", "1234567", "abcdef",
                 "x" * 64):
        assert enrol_code(client, code).status_code == 401, code
    with session_scope(engine_of(app)) as session:
        offer = twofactor.begin_enrolment(session=session, crypto=crypto,
                                          actor=Actor.system("test"), staff_id=other.id,
                                          issuer="Lifeline")
        for sealed in (offer.sealed, None, "", "k1.bm90IHNlYWxlZA"):
            with pytest.raises(Invalid):  # another account's offer opens for it only
                twofactor.confirm_enrolment(
                    session=session, crypto=crypto, actor=Actor.system("test"),
                    staff_id=admin.id, sealed=sealed, code=pyotp.TOTP(offer.secret).now(),
                    recovery_codes=10)
        assert session.get(StaffUser, admin.id).totp_secret_encrypted is None


def test_of_two_enrolments_confirmed_at_once_one_enrols_and_its_secret_is_kept(app,
                                                                              make_staff):
    admin = make_staff("admin", two_factor=False)
    clients = [app.test_client() for _ in range(2)]
    secrets_offered, tokens = [], []
    for one in clients:
        password_step(Auth(one), admin)
        secrets_offered.append(offered_secret(one))
        tokens.append(csrf_token_from(one.get("/login").get_data(as_text=True)))
    answers, start = [None, None], threading.Barrier(2)

    def send(number):
        start.wait()
        answers[number] = clients[number].post("/login/enrol", data={
            "code": pyotp.TOTP(secrets_offered[number]).now(),
            "csrf_token": tokens[number]}).status_code

    threads = [threading.Thread(target=send, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200, 409]
    winner, loser = (0, 1) if answers[0] == 200 else (1, 0)
    assert clients[winner].get("/console/").status_code == 200
    assert clients[loser].get("/console/").status_code == 302
    auth = Auth(app.test_client())
    assert password_step(auth, admin).headers["Location"] == "/login/code"
    assert post_code(auth.client, "/login/code", pyotp.TOTP(secrets_offered[loser]).at(
        time.time() + 30)).status_code == 401
    assert post_code(auth.client, "/login/code", pyotp.TOTP(secrets_offered[winner]).at(
        time.time() + 30)).status_code == 302


def engine_of(app):
    return services(app).engine


def test_the_code_that_confirmed_the_enrolment_cannot_sign_in_again(client, make_staff,
                                                                    engine):
    admin = make_staff("admin", two_factor=False)
    auth = Auth(client)
    password_step(auth, admin)
    totp = pyotp.TOTP(offered_secret(client))
    code = totp.now()
    assert enrol_code(client, code).status_code == 200
    auth.logout()
    assert password_step(auth, admin).headers["Location"] == "/login/code"
    assert post_code(client, "/login/code", code).status_code == 401
    assert audit_actions(engine)[-1].detail["reason"] == "replayed_code"
    later = StaffAccount(admin.id, admin.email, admin.role, totp_secret=totp.secret,
                         last_step=totp.timecode(datetime.now(UTC)))
    assert post_code(client, "/login/code", later.code()).status_code == 302


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
    for other_digits in ("\u0661\u0662\u0663\u0664\u0665\u0666", "\uff11" * 6):
        assert post_code(client, "/login/code", other_digits).status_code == 401
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


class Clock:
    """The test helpers' clock, set by hand: sleeping moves it on."""

    def __init__(self, at: float):
        self.at, self.slept = at, []

    def time(self) -> float:
        return self.at

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.at += seconds


def test_the_code_helper_gives_three_sign_ins_a_step_before_it_waits(monkeypatch):
    totp = pyotp.TOTP(pyotp.random_base32())
    step = totp.timecode(datetime.now(UTC))
    clock = Clock(step * 30 + 5)
    monkeypatch.setattr(helpers, "time", clock)
    account = StaffAccount("stf_x", "a@staff.example.com", "admin", totp_secret=totp.secret,
                           last_step=step - 2)  # as enrol_two_factor leaves it
    assert [account.code() for _ in range(3)] == [totp.generate_otp(step + n)
                                                  for n in (-1, 0, 1)]
    assert clock.slept == []
    assert account.code() == totp.generate_otp(step + 2) and len(clock.slept) == 1
    # Near the end of a step, the step before leaves the window soon: it is not given.
    clock.at, account.last_step = (step + 10) * 30 + 25, step + 8
    assert account.code() == totp.generate_otp(step + 10)
