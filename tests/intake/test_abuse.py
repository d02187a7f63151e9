"""Bad input and floods get a clear 4xx, never a 500, and cost only bounded work."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import csrf_token_from


@pytest.mark.parametrize(("body", "problem"), [
    ({"message": "no address"}, "email"),
    ({"email": "not-an-address", "message": "x"}, "email"),
    ({"email": "a@example.org"}, "message"),
    ({"email": "a@example.org", "message": "x", "severity": "apocalyptic"}, "severity"),
    ({"email": "a@example.org", "message": "x", "is_admin": True}, "is_admin"),
    ({"email": "a@example.org", "message": "x" * 10_001}, "message"),
])
def test_a_bad_body_is_refused_with_what_is_wrong(desk_client, body, problem):
    response = desk_client.post("/api/v1/requests", json=body)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_failed"
    assert problem in json.dumps(error)


def test_a_one_megabyte_message_is_refused_before_it_is_read(desk_client):
    response = desk_client.post("/api/v1/requests", json={
        "email": "a@example.org", "message": "x" * 1_000_000})
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"


def test_a_body_that_is_not_json_is_refused(desk_client):
    response = desk_client.post("/api/v1/requests", data="email=a@example.org&message=x",
                                content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    broken = desk_client.post("/api/v1/requests", data='{"email": ',
                              content_type="application/json")
    assert broken.status_code == 400 and "not valid JSON" in broken.get_json()["error"][
        "message"]


def test_the_form_without_its_csrf_token_is_refused(desk_client):
    response = desk_client.post("/contact", data={"email": "a@example.org", "message": "x"})
    assert response.status_code == 400
    assert "form expired" in response.get_data(as_text=True)


def test_a_filled_honeypot_is_refused_and_nothing_is_stored(desk, desk_client):
    html = desk_client.get("/contact").get_data(as_text=True)
    response = desk_client.post("/contact", data={
        "csrf_token": csrf_token_from(html), "email": "bot@example.org", "message": "buy",
        "website": "http://spam.example"})
    assert response.status_code == 400
    desk.deliver()
    assert desk.mail_to("bot@example.org") == []


def test_a_hundred_requests_a_minute_from_one_address_are_cut_off(make_app):
    client = make_app().test_client()  # the default limits: 20 a minute per address
    codes = [client.post("/api/v1/requests", json={
        "email": f"flood{n}@example.org", "message": "x"}).status_code for n in range(100)]
    assert codes[:20] == [202] * 20
    assert set(codes[20:]) == {429}
    answer = client.post("/api/v1/requests", json={"email": "z@example.org", "message": "x"})
    assert answer.get_json()["error"]["code"] == "rate_limited"


def test_one_address_and_one_domain_are_limited_wherever_they_come_from(make_app):
    app = make_app(intake_rate_limit_per_ip="1000 per minute",
                   intake_rate_limit_per_email="3 per hour",
                   intake_rate_limit_per_domain="5 per hour")
    client = app.test_client()

    def send(address: str, ip: str) -> int:
        return client.post("/api/v1/requests", json={"email": address, "message": "x"},
                           environ_base={"REMOTE_ADDR": ip}).status_code

    same_address = [send("Victim@Acme.example", f"10.0.0.{n}") for n in range(4)]
    assert same_address == [202, 202, 202, 429]
    same_domain = [send(f"user{n}@acme.example", f"10.0.1.{n}") for n in range(3)]
    assert same_domain == [202, 202, 429]  # 5 for acme.example in all
    webmail = [send(f"user{n}@gmail.com", f"10.0.2.{n}") for n in range(8)]
    assert webmail == [202] * 8  # a public webmail domain is nobody's company


BODY_KEYS = ["email", "message", "name", "company", "site", "phone", "severity", "extra"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children,
                                                                     max_size=3),
    max_leaves=6)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(BODY_KEYS), JSON_VALUES | st.emails(),
                            max_size=8) | JSON_VALUES)
def test_generated_bodies_never_get_a_server_error(desk_client, body):
    response = desk_client.post("/api/v1/requests", json=body)
    assert response.status_code in (202, 400, 413, 415, 422), response.get_data(as_text=True)
    assert response.is_json
