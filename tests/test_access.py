"""Every registered route, walked as anonymous, as each staff role and with each token scope.

New routes are covered automatically: a route that declares no access rule fails here, and
so does a new public route that is not in PUBLIC_ENDPOINTS.
"""

import pytest

from contacts.core.access import ROLES, SCOPES, rule_for
from contacts.core.ids import new_id

PUBLIC_ENDPOINTS = {"static", "openapi", "staff.login", "staff.index", "system.healthz",
                    # the steps of a sign-in after the password: a code, or enrolment
                    "staff.login_code", "staff.login_enrol",
                    "vault.confirm_page", "vault.confirm_details",
                    # the out-of-band intake: no login, by design
                    "intake.contact", "intake.verify", "intake.resend", "intake.confirm_link",
                    "intake.status", "intake.customer_reply", "intake_api.create_request",
                    # status pages: the incident, and an account's signed private link
                    "incidents.status_index", "incidents.status_page",
                    "incidents.account_status", "incidents.status_feed",
                    "incidents.subscribe", "incidents.subscription",
                    # the one-click unsubscribe of subscribers' emails (RFC 8058)
                    "unsubscribe.one_click"}
PLACEHOLDERS = {"staff_id": lambda: new_id("stf"), "token_id": lambda: new_id("tok"),
                "account_id": lambda: new_id("acc"), "deletion_id": lambda: new_id("del"),
                "contact_id": lambda: new_id("ctc"), "token": lambda: "not-a-token",
                "filename": lambda: "lifeline.css", "request_id": lambda: new_id("req"),
                "reference": lambda: "LL-7KQ2-9XHD", "incident_id": lambda: new_id("inc"),
                "action": lambda: "confirm", "item_id": lambda: new_id("itm"),
                "view_id": lambda: 1, "subscriber_id": lambda: 1,
                "endpoint_id": lambda: new_id("whk"), "message_id": lambda: new_id("inm"),
                "number": lambda: 1}


def walk(app):
    """(endpoint, method, url, rule) for every route and method."""
    with app.test_request_context():
        for url_rule in app.url_map.iter_rules():
            arguments = {name: PLACEHOLDERS[name]() for name in url_rule.arguments}
            url = app.url_map.bind("localhost").build(url_rule.endpoint, arguments)
            for method in sorted(url_rule.methods - {"HEAD", "OPTIONS"}):
                yield url_rule.endpoint, method, url, rule_for(app, url_rule.endpoint)


def test_every_route_declares_who_may_use_it(app):
    undeclared = {endpoint for endpoint, _, _, rule in walk(app) if rule is None}
    assert undeclared == set()


def test_public_routes_are_exactly_the_ones_meant_to_be(app):
    public = {endpoint for endpoint, _, _, rule in walk(app) if rule.kind == "public"}
    assert public == PUBLIC_ENDPOINTS


def test_only_the_one_click_unsubscribe_goes_without_a_csrf_token(app):
    exempt = {endpoint for endpoint, view in app.view_functions.items()
              if getattr(view, "csrf_exempt", False)}
    assert exempt == {"unsubscribe.one_click"}


def test_every_staff_route_sends_an_anonymous_visitor_to_sign_in(app, client):
    staff_routes = [(m, u) for _, m, u, rule in walk(app) if rule.kind == "staff"]
    assert len(staff_routes) >= 8
    for method, url in staff_routes:
        response = client.open(url, method=method)
        assert response.status_code == 302, (method, url)
        assert response.headers["Location"].startswith("/login?next="), (method, url)


def test_every_api_route_needs_a_token_and_its_scope(app, client, make_token):
    api_routes = [(m, u, rule) for _, m, u, rule in walk(app) if rule.kind == "token"]
    assert api_routes, "no API route found"
    for method, url, rule in api_routes:
        anonymous = client.open(url, method=method)
        assert anonymous.status_code == 401, (method, url)
        assert anonymous.get_json()["error"]["code"] == "unauthenticated"
        assert anonymous.headers["WWW-Authenticate"] == "Bearer"

        bogus = client.open(url, method=method, headers={"Authorization": "Bearer llt_nope"})
        assert bogus.status_code == 401, (method, url)

        other_scopes = [scope for scope in SCOPES if scope != rule.scope]
        wrong = client.open(url, method=method,
                            headers={"Authorization": f"Bearer {make_token(*other_scopes)}"})
        assert wrong.status_code == 403, (method, url)
        assert wrong.get_json()["error"]["code"] == "forbidden"
        assert rule.scope in wrong.get_json()["error"]["message"]

        right = client.open(url, method=method,
                            headers={"Authorization": f"Bearer {make_token(rule.scope)}"})
        assert right.status_code not in (401, 403), (method, url, right.get_json())


@pytest.mark.parametrize("role", ROLES)
def test_each_role_reaches_exactly_the_staff_routes_it_is_given(app, make_staff, role):
    from tests.helpers import Auth

    client = app.test_client()
    auth = Auth(client)
    assert auth.login(make_staff(role)).status_code == 302
    token = auth.csrf("/console/")
    for _, method, url, rule in walk(app):
        if rule.kind != "staff" or url == "/logout":
            continue
        response = client.open(url, method=method, data={"csrf_token": token})
        assert response.status_code < 500, (role, method, url)
        if rule.allows_role(role):
            assert response.status_code not in (302, 401, 403) or (
                response.status_code == 302 and not response.headers["Location"].startswith(
                    "/login")), (role, method, url, response.status_code)
        else:
            assert response.status_code == 403, (role, method, url, response.status_code)
