"""Nobody can lock a staff member out: only failures count, per address, per account and
client, and per account from strangers; the member's own browser still signs in."""

import logging
import time
import uuid

import pyotp
import pytest
import redis

from contacts.core import ratelimit
from contacts.core.db import session_scope
from contacts.core.services import services
from contacts.staff.models import StaffUser
from tests.helpers import Auth, csrf_token_from, require_redis

ATTACKERS = [f"203.0.113.{n}" for n in range(10, 16)]  # six addresses


def client_at(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def guess(client, email: str, password: str) -> int:
    token = csrf_token_from(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf_token": token}).status_code


def test_wrong_passwords_from_six_addresses_do_not_lock_the_admin_out_of_their_browser(
        app, make_staff):
    admin = make_staff("admin")
    own = Auth(app.test_client())
    assert own.login(admin).status_code == 302  # this browser becomes a known device
    own.logout()
    attackers = [client_at(app, address) for address in ATTACKERS]
    statuses = [guess(attackers[n % 6], admin.email, f"wrong {n}") for n in range(24)]
    # 4 guesses per address: under every per-address limit; the 21st closes the account
    # to every client that is not one of its known devices.
    assert statuses == [401] * 20 + [429] * 4
    stranger = Auth(client_at(app, "198.51.100.7"))
    assert stranger.login(admin).status_code == 429
    answer = own.login(admin)
    assert answer.status_code == 302 and answer.headers["Location"] == "/console/"
    assert own.client.get("/console/").status_code == 200


def post_code(client, path: str, code: str) -> int:
    token = csrf_token_from(client.get(path).get_data(as_text=True))
    return client.post(path, data={"code": code, "csrf_token": token}).status_code


@pytest.mark.parametrize("device_cookie", ["kept", "cleared"])
def test_strangers_who_spend_the_account_limit_do_not_stop_the_member_replacing_codes(
        make_app, make_staff, device_cookie):
    app = make_app(security_login_rate_limit="100 per minute")  # to see the session's own
    member = make_staff("comms")
    own = Auth(client_at(app, "192.0.2.50"))
    assert own.login(member).status_code == 302
    if device_cookie == "cleared":  # signed in, but not (or no longer) a known device
        own.client.delete_cookie("lifeline_device", path="/login")
    attackers = [client_at(app, address) for address in ATTACKERS]
    statuses = [guess(attackers[n % 6], member.email, f"wrong {n}") for n in range(24)]
    assert statuses == [401] * 20 + [429] * 4
    assert Auth(client_at(app, "198.51.100.7")).login(member).status_code == 429
    wrong = pyotp.TOTP(member.totp_secret).at(time.time() - 3600)
    assert post_code(own.client, "/console/two-factor", wrong) == 401
    assert post_code(own.client, "/console/two-factor", member.code()) == 200
    # The member's session has its own budget (10 failures an hour) that strangers did not
    # touch: the first failure above was one of its ten.
    statuses = [post_code(own.client, "/console/two-factor", wrong) for _ in range(10)]
    assert statuses == [401] * 9 + [429]


def test_a_known_device_is_limited_on_its_own(app, make_staff):
    """A stolen device cookie does not open unlimited guessing: the account-and-client
    limit (10 per hour) still holds it, from any address."""
    admin = make_staff("admin")
    own = Auth(app.test_client())
    assert own.login(admin).status_code == 302
    own.logout()
    statuses = []
    for n in range(11):
        own.client.environ_base["REMOTE_ADDR"] = f"192.0.2.{n}"
        statuses.append(guess(own.client, admin.email, f"wrong {n}"))
    assert statuses == [401] * 10 + [429]


def test_successful_sign_ins_do_not_count(make_app, make_staff):
    app = make_app(security_login_rate_limit="3 per minute",
                   security_login_rate_limit_per_email="3 per hour")
    admin = make_staff("admin", two_factor=False)
    # More right passwords from one address than the per-address limit ...
    for _ in range(4):
        assert guess(app.test_client(), admin.email, admin.password) == 302
    statuses = [guess(app.test_client(), admin.email, f"wrong {n}") for n in range(4)]
    assert statuses == [401] * 3 + [429]
    # ... and more from many addresses than the per-account limit.
    other = make_staff("support", two_factor=False)
    for n in range(4):
        assert guess(client_at(app, f"198.51.100.{n}"), other.email, other.password) == 302
    statuses = [guess(client_at(app, f"192.0.2.{n}"), other.email, f"wrong {n}")
                for n in range(4)]
    assert statuses == [401] * 3 + [429]


def test_a_burst_of_parallel_guesses_from_many_addresses_cannot_pass_the_account_limit(
        make_app, make_staff):
    from concurrent.futures import ThreadPoolExecutor

    app = make_app(security_login_rate_limit_per_email="4 per hour")
    account = make_staff()
    clients = [client_at(app, f"203.0.113.{n}") for n in range(12)]
    tokens = [csrf_token_from(c.get("/login").get_data(as_text=True)) for c in clients]

    def attempt(number):
        return clients[number].post("/login", data={
            "email": account.email, "password": f"guess {number}",
            "csrf_token": tokens[number]}).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(attempt, range(12)))
    assert sorted(statuses) == [401] * 4 + [429] * 8


def _limiter_keys(app, redis_url=None, prefix=None) -> list[str]:
    if redis_url:
        return [key.decode() for key in redis.Redis.from_url(redis_url).keys(f"*{prefix}*")]
    return list(ratelimit.failure_counter_of(app).storage.storage)


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_limiter_keys_and_logs_hold_no_address(make_app, make_staff, caplog, storage):
    overrides, url, prefix = {}, None, None
    if storage == "redis":
        url, prefix = "redis://127.0.0.1:6379/15", f"test-{uuid.uuid4().hex}"
        require_redis(url)
        overrides = {"security_rate_limit_storage_uri": url,
                     "security_rate_limit_key_prefix": prefix}
    app = make_app(**overrides)
    caplog.set_level(logging.DEBUG)
    account = make_staff()
    for n in range(7):
        guess(client_at(app, ATTACKERS[0]), account.email, f"wrong {n}")
    keys = _limiter_keys(app, url, prefix)
    with session_scope(services(app).engine) as session:
        digest = session.get(StaffUser, account.id).email_index[:16]
    assert any(digest in key for key in keys), keys
    local, domain = account.email.split("@")
    for key in keys:
        assert account.email not in key and local not in key and domain not in key, key
    assert account.email not in caplog.text and local not in caplog.text
