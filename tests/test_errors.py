"""Bad input gets a clear 4xx in our one error shape; nothing ever shows a stack trace."""

import json
import re

from openapi_spec_validator import validate

from contacts.access import public


def test_a_form_post_without_a_csrf_token_is_refused(client, make_staff):
    account = make_staff()
    response = client.post("/login", data={"email": account.email, "password": account.password})
    assert response.status_code == 400
    assert "The form expired or was not sent from this site." in response.get_data(as_text=True)


def test_a_signed_in_post_without_a_csrf_token_is_refused(client, auth, make_staff):
    auth.login(make_staff())
    response = client.post("/console/tokens", data={"name": "x", "scopes": "read"})
    assert response.status_code == 400
    assert "csrf" in response.get_data(as_text=True)


def test_an_oversized_body_is_refused_as_json_on_the_api(make_app):
    app = make_app(server_max_body_bytes=1024)

    @app.post("/api/v1/_echo", endpoint="test_echo")
    @public
    def echo():
        return {"ok": True}

    client = app.test_client()
    response = client.post("/api/v1/_echo", data=json.dumps({"pad": "x" * 4096}),
                           content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"


def test_an_oversized_form_is_refused_with_a_page(make_app):
    client = make_app(server_max_body_bytes=1024).test_client()
    response = client.post("/login", data={"email": "x" * 4096, "password": "y"})
    assert response.status_code == 413
    assert "The request body is too large." in response.get_data(as_text=True)


def test_malformed_json_is_refused_naming_the_problem(app, client, make_token):
    @app.post("/api/v1/_echo", endpoint="test_echo")
    @public
    def echo():
        return {"ok": True}

    response = client.post("/api/v1/_echo", data='{"email": "a@b.c",',
                           content_type="application/json")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid"
    assert error["message"].startswith("The body is not valid JSON: Expecting property name")
    assert "line 1 column" in error["message"]


def test_a_body_that_is_not_json_is_refused(app, client):
    @app.post("/api/v1/_echo", endpoint="test_echo")
    @public
    def echo():
        return {"ok": True}

    response = client.post("/api/v1/_echo", data="email=a", content_type="text/plain")
    assert response.status_code == 415
    assert "application/json" in response.get_json()["error"]["message"]


def test_a_query_that_fails_its_schema_answers_422_with_each_problem(client, make_token):
    response = client.get("/api/v1/audit?limit=0&since=2026-04-05T07:38:00",
                          headers={"Authorization": f"Bearer {make_token('audit:read')}"})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_failed"
    assert {problem["field"] for problem in error["details"]} == {"limit", "since"}


def test_unknown_addresses_answer_404_in_the_right_shape(client):
    api = client.get("/api/v1/nothing-here")
    assert api.status_code == 404 and api.get_json()["error"]["code"] == "not_found"
    page = client.get("/nothing-here")
    assert page.status_code == 404 and "Not found" in page.get_data(as_text=True)


def test_a_wrong_method_answers_405_with_allow(client):
    malformed = client.post("/api/v1/openapi.json", data="{", content_type="application/json")
    assert malformed.status_code == 405  # the address is wrong before the body is
    response = client.delete("/api/v1/openapi.json")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert response.get_json()["error"]["code"] == "method_not_allowed"


def test_an_unexpected_failure_shows_no_stack_trace(app, caplog):
    @app.get("/api/v1/_boom", endpoint="test_boom_api")
    @public
    def boom_api():
        raise RuntimeError("secret internals")

    @app.get("/_boom", endpoint="test_boom_page")
    @public
    def boom_page():
        raise RuntimeError("secret internals")

    client = app.test_client()
    api = client.get("/api/v1/_boom")
    page = client.get("/_boom")
    assert api.status_code == page.status_code == 500
    assert api.get_json() == {"error": {"code": "internal", "message":
                              "Something went wrong on our side. It has been logged."}}
    for body in (api.get_data(as_text=True), page.get_data(as_text=True)):
        assert "Traceback" not in body and "secret internals" not in body
    assert "secret internals" in caplog.text  # the operator still sees it


def test_the_openapi_document_is_valid_and_describes_every_api_route(app, client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    validate(document)
    assert document["openapi"].startswith("3.")
    described = {(path, method.upper()) for path, operations in document["paths"].items()
                 for method in operations}
    routed = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(rule)), method)
              for rule in app.url_map.iter_rules()
              if str(rule).startswith("/api/v1/") and rule.endpoint != "openapi"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routed and routed == described
    for path, method in described:
        operation = document["paths"][path][method.lower()]
        assert {"401", "403"} <= set(operation["responses"]), (path, method)
        assert operation["security"] == [{"bearer": []}]
