"""Bad input gets a clear 4xx in our one error shape; nothing ever shows a stack trace."""

import json
import re

from flask import request
from openapi_spec_validator import validate
from sqlmodel import select

from contacts.core import audit
from contacts.core.access import public, rule_for
from contacts.core.audit import Actor, AuditEntry
from contacts.core.crypto import DecryptionFailed
from contacts.core.db import request_session, session_scope
from contacts.core.errors import Invalid


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
    public = {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(rule))
              for rule in app.url_map.iter_rules()
              if rule_for(app, rule.endpoint).kind == "public"}
    assert "/api/v1/requests" in public  # the intake: open to people with no login
    for path, method in described:
        operation = document["paths"][path][method.lower()]
        if path in public:
            assert not {"401", "403"} & set(operation["responses"]), (path, method)
            assert not operation.get("security"), (path, method)
        else:
            assert {"401", "403"} <= set(operation["responses"]), (path, method)
            assert operation["security"] == [{"bearer": []}]


def test_the_document_names_the_errors_every_operation_can_answer(client):
    """A body can be too large (413) and an address can name nothing (404), whatever the
    operation; both answers came back undocumented before."""
    document = client.get("/api/v1/openapi.json").get_json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = set(operation["responses"])
            assert ("413" in responses) == ("requestBody" in operation), (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            for status in responses - {"200", "201", "202"}:
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, status)


def test_a_write_followed_by_an_error_is_rolled_back(app, engine):
    @app.post("/api/v1/_write", endpoint="test_write")
    @public
    def write():
        audit.record(request_session(), Actor.system("t"), "test.written")
        if "fail" in request.args:
            raise Invalid("refused after writing")
        return {"ok": True}

    client = app.test_client()
    assert client.post("/api/v1/_write?fail=1").status_code == 400
    assert client.post("/api/v1/_write").status_code == 200
    with session_scope(engine) as session:
        assert len(session.exec(select(AuditEntry)).all()) == 1


def test_a_server_side_failure_of_ours_is_logged_and_not_described(app, caplog):
    @app.get("/api/v1/_decrypt", endpoint="test_decrypt")
    @public
    def decrypt():
        raise DecryptionFailed("field encrypted with unknown key id 'k1'")

    response = app.test_client().get("/api/v1/_decrypt")
    assert response.status_code == 500
    assert "k1" not in response.get_data(as_text=True)
    assert "unknown key id 'k1'" in caplog.text


def test_hostile_query_strings_get_4xx_not_500(client, auth, make_staff, make_token, engine):
    with session_scope(engine) as session:
        for _ in range(55):
            audit.record(session, Actor.system("t"), "test.filler")
    auth.login(make_staff())
    page = client.get("/console/audit?_method=POST&_scheme=x&_external=1&until=9999-12-31"
                      "&before=99999999999999999999999")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "_scheme" not in body and "_method" not in body
    assert client.get("/console/audit?actor=%00").status_code == 400
    headers = {"Authorization": f"Bearer {make_token('audit:read')}"}
    for query in ("before_id=99999999999999999999999", "since=0001-01-01T00:00:00%2B01:00",
                  "until=9999-12-31T23:59:59-01:00"):
        assert client.get(f"/api/v1/audit?{query}", headers=headers).status_code == 422, query
    assert client.get("/api/v1/audit?action=%00", headers=headers).status_code == 400


def test_deeply_nested_json_is_refused(app):
    @app.post("/api/v1/_echo", endpoint="test_echo")
    @public
    def echo():
        return {"ok": True}

    response = app.test_client().post("/api/v1/_echo", data="[" * 100_000,
                                      content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == (
        "The body is nested too deeply (more than 64 levels).")


def test_cli_database_errors_are_one_line(app, make_app, tmp_path):
    result = app.test_cli_runner().invoke(args=["db", "upgrade", "nosuch"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("Error: migrations: ")
    empty = make_app(database_url=f"sqlite:///{tmp_path}/empty.db")
    listed = empty.test_cli_runner().invoke(args=["tokens", "list"])
    assert listed.exit_code == 2
    assert len(listed.output.strip().splitlines()) == 1
    assert "is it migrated?" in listed.output


def test_a_nul_character_typed_into_a_console_form_is_refused_not_a_500(client, auth,
                                                                        make_staff):
    """PostgreSQL cannot store a NUL: a form carrying one is refused whole, on either
    database, before any view writes it."""
    auth.login(make_staff("comms"))
    response = client.post("/console/incidents", data={
        "csrf_token": auth.csrf("/console/incidents"), "title": "Sites\x00 deleted",
        "severity": "critical"})
    assert response.status_code == 400
    assert "The request contains a NUL character." in response.get_data(as_text=True)
