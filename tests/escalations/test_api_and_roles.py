"""The escalations API (every refusal a clear 4xx in our one error shape) and the role
rules on every escalations route: support triages, comms reads, only admins delete."""

from __future__ import annotations

from contacts.core.access import rule_for
from contacts.core.ids import new_id
from tests.helpers import Auth

READ_ENDPOINTS = {"escalations.queue", "escalations.item_page", "escalations.dashboard",
                  "escalations.save_view", "escalations.delete_view"}
ADMIN_ENDPOINTS = {"escalations.delete"}


def test_every_escalations_route_declares_its_role_rule(work_app):
    seen = set()
    for url_rule in work_app.url_map.iter_rules():
        endpoint = url_rule.endpoint
        if not endpoint.startswith("escalations."):
            continue
        seen.add(endpoint)
        rule = rule_for(work_app, endpoint)
        assert rule.kind == "staff", endpoint
        if endpoint in READ_ENDPOINTS:
            assert rule.roles == (), endpoint  # every role reads (and keeps its own views)
        elif endpoint in ADMIN_ENDPOINTS:
            assert rule.roles == ("admin",), endpoint
        else:
            assert rule.roles == ("support",), endpoint  # triage (admins may always)
    assert len(seen) >= 18


def _client_as(work_app, make_staff, role):
    client = work_app.test_client()
    auth = Auth(client)
    assert auth.login(make_staff(role)).status_code == 302
    return client, auth.csrf("/console/")


def test_comms_read_support_triages_and_only_an_admin_deletes(work, accounts, actor, work_app,
                                                              make_staff):
    item = work.create(actor, account_id=accounts["A-1"][0])
    comms, comms_token = _client_as(work_app, make_staff, "comms")
    assert comms.get(f"/console/items/{item.id}").status_code == 200
    assert comms.get("/console/items").status_code == 200
    assert comms.get("/console/dashboard").status_code == 200
    assert comms.get(f"/console/accounts/{accounts['A-1'][0]}").status_code == 200
    refused = comms.post(f"/console/items/{item.id}/status",
                         data={"status": "triaged", "csrf_token": comms_token})
    assert refused.status_code == 403
    assert work.item(item.id).status == "new"

    support, support_token = _client_as(work_app, make_staff, "support")
    moved = support.post(f"/console/items/{item.id}/status",
                         data={"status": "triaged", "csrf_token": support_token})
    assert moved.status_code == 302 and work.item(item.id).status == "triaged"
    wrong = support.post(f"/console/items/{item.id}/status",
                         data={"status": "closed", "csrf_token": support_token})
    assert wrong.status_code == 409
    assert "cannot go from triaged to closed" in wrong.get_data(as_text=True)
    assert support.post(f"/console/items/{item.id}/delete",
                        data={"csrf_token": support_token}).status_code == 403
    assert work.item(item.id).deleted_at is None

    admin, admin_token = _client_as(work_app, make_staff, "admin")
    assert admin.post(f"/console/items/{item.id}/delete",
                      data={"csrf_token": admin_token}).status_code == 302
    assert work.item(item.id).deleted_at is not None
    assert admin.get(f"/console/items/{item.id}").status_code == 404


def _api(work_app, make_token, *scopes):
    client = work_app.test_client()
    headers = {"Authorization": f"Bearer {make_token(*scopes)}"}
    return client, headers


def test_the_api_logs_and_moves_items_and_refuses_each_bad_call_clearly(
        work, accounts, work_app, make_token, make_staff):
    client, headers = _api(work_app, make_token, "escalations:write", "read")
    account_id, contacts = accounts["A-1"]
    created = client.post("/api/v1/items", headers=headers, json={
        "account_id": account_id, "kind": "escalation", "channel": "executive", "priority": 1,
        "title": "CEO of Acme emailed ours", "requester_contact_id": contacts["C-1"]})
    assert created.status_code == 201, created.get_json()
    item = created.get_json()
    assert (item["status"], item["priority"], item["sla_state"]) == ("new", 1, "ok")
    assert 0 < item["seconds_left"] <= 30 * 60

    def refusal(response, status, code, *words):
        body = response.get_json()
        assert response.status_code == status, body
        assert body["error"]["code"] == code
        for word in words:
            assert word in body["error"]["message"]

    refusal(client.post(f"/api/v1/items/{item['id']}/transitions", headers=headers,
                        json={"status": "closed"}),
            409, "conflict", "cannot go from new to closed", "triaged, in_progress")
    comms = make_staff("comms")
    refusal(client.patch(f"/api/v1/items/{item['id']}", headers=headers,
                         json={"owner_id": comms.id}), 400, "invalid", "comms user")
    refusal(client.post(f"/api/v1/items/{item['id']}/links", headers=headers,
                        json={"incident_id": item["id"]}),
            400, "wrong_kind", "expected an incident ID", "got a work item ID")
    ticket = client.post("/api/v1/items", headers=headers, json={
        "account_id": account_id, "kind": "ticket", "channel": "email",
        "title": "Lost my site"}).get_json()
    refusal(client.post(f"/api/v1/items/{item['id']}/links", headers=headers,
                        json={"parent_id": ticket["id"], "parent_kind": "escalation"}),
            409, "conflict", "is a ticket, not an escalation as declared")
    refusal(client.post("/api/v1/items", headers=headers, json={
        "account_id": new_id("site"), "kind": "ticket", "channel": "email", "title": "x"}),
        400, "wrong_kind", "expected an account ID")
    refusal(client.post("/api/v1/items", headers=headers, json={
        "account_id": account_id, "kind": "ticket", "channel": "fax", "title": "x"}),
        422, "validation_failed", "channel")
    refusal(client.get("/api/v1/items?priority=9", headers=headers), 422, "validation_failed")

    moved = client.post(f"/api/v1/items/{item['id']}/transitions", headers=headers,
                        json={"status": "in_progress", "note": "called back"})
    assert moved.status_code == 200 and moved.get_json()["status"] == "in_progress"
    detail = client.get(f"/api/v1/items/{item['id']}", headers=headers).get_json()
    assert [event["kind"] for event in detail["history"]] == ["created", "status"]
    assert detail["history"][1]["body"] == "called back"

    listed = client.get("/api/v1/items?channel=executive", headers=headers).get_json()
    assert [row["id"] for row in listed["items"]] == [item["id"]] and listed["total"] == 1
    picture = client.get(f"/api/v1/accounts/{account_id}/items", headers=headers).get_json()
    assert {row["id"] for row in picture["open_items"]} == {item["id"], ticket["id"]}
    assert len(picture["timeline"]) >= 3
    bulk = client.post(f"/api/v1/accounts/{account_id}/items/bulk", headers=headers,
                       json={"items": [ticket["id"]], "action": "status", "status": "triaged"})
    assert bulk.get_json() == {"changed": 1}
    dashboard = client.get("/api/v1/escalations/dashboard", headers=headers).get_json()
    assert dashboard["by_priority"]["P1"] == 1

    read_only, read_headers = _api(work_app, make_token, "read")
    assert read_only.post("/api/v1/items", headers=read_headers, json={
        "account_id": account_id, "kind": "ticket", "channel": "email",
        "title": "x"}).status_code == 403
    spec = client.get("/api/v1/openapi.json").get_json()
    assert {"/api/v1/items", "/api/v1/items/{item_id}/transitions",
            "/api/v1/accounts/{account_id}/items/bulk"} <= set(spec["paths"])


def test_each_refusal_the_api_answers_is_in_its_openapi_document(work_app, accounts,
                                                                 make_token):
    client, headers = _api(work_app, make_token, "escalations:write", "read")
    documented = client.get("/api/v1/openapi.json").get_json()["paths"]
    acme, beta = accounts["A-1"][0], accounts["B-1"][0]
    item = client.post("/api/v1/items", headers=headers, json={
        "account_id": acme, "kind": "ticket", "channel": "email", "title": "Lost my site"}
    ).get_json()["id"]
    for method, path, url, body, status in [
            ("post", "/api/v1/items", "/api/v1/items", {
                "account_id": new_id("acc"), "kind": "ticket", "channel": "email",
                "title": "x"}, 404),
            ("patch", "/api/v1/items/{item_id}", f"/api/v1/items/{new_id('itm')}",
             {"priority": 2}, 404),
            ("post", "/api/v1/items/{item_id}/transitions", f"/api/v1/items/{item}/transitions",
             {"status": "closed"}, 409),
            ("post", "/api/v1/items/{item_id}/comments", f"/api/v1/items/{item}/comments",
             {"body": "We are on it", "reply": True}, 409),
            ("post", "/api/v1/items/{item_id}/merge", f"/api/v1/items/{item}/merge",
             {"into_id": item}, 409),
            ("post", "/api/v1/accounts/{account_id}/items/bulk",
             f"/api/v1/accounts/{beta}/items/bulk",
             {"items": [item], "action": "status", "status": "triaged"}, 409)]:
        response = client.open(url, method=method.upper(), headers=headers, json=body)
        assert response.status_code == status, (method, url, response.get_json())
        assert str(status) in documented[path][method]["responses"], (method, path)
