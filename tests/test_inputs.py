"""Hostile bodies get a 4xx in our one shape, never a 500: huge numbers, deep nesting, bodies
over their cap, with a Content-Length or chunked (over a real socket), JSON and CSV imports."""

from __future__ import annotations

import http.client
import io
import json
from urllib.parse import urlsplit

import pytest

from contacts.core.errors import Invalid
from tests.helpers import csrf_token_from
from tests.vault.fixtures import as_csv, make_document

MAX_DEPTH = 64  # contacts.core.inputs.MAX_DEPTH, the deepest JSON we take
SMALL_CAPS = {"server_max_body_bytes": 200_000, "intake_max_body_bytes": 16_384,
              "intake_rate_limit_per_ip": "100000 per minute",
              "intake_rate_limit_per_email": "100000 per minute",
              "intake_rate_limit_per_domain": "100000 per minute"}

# Numbers no JSON body needs, in every spelling: past Python's 4,300-digit int conversion
# limit, long floats, floats that overflow to infinity, and the non-JSON constants.
HOSTILE_NUMBERS = ["1" * 5000, "-" + "9" * 5000, "1" * 4301, "1" * 101, "0." + "1" * 5000,
                   "1" * 5000 + ".5", "1" + "0" * 400 + "e-400", "1e999", "-1e999", "1E+999",
                   "NaN", "Infinity", "-Infinity"]
# Nesting deeper than any document we take: unbalanced, balanced, objects, mixed.
HOSTILE_NESTINGS = ["[" * 100_000, '{"a":' * 30_000, '[{"a":' * 25_000,
                    "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
                    "[" * 2000 + "]" * 2000, '{"a":' * 70 + "1" + "}" * 70,
                    '{"accounts": [' + "[" * 5000 + "]" * 5000 + "]}"]


@pytest.fixture
def app(make_app):
    return make_app(**SMALL_CAPS)


@pytest.fixture
def sync_headers(make_token):
    return {"Authorization": f"Bearer {make_token('contacts:write')}"}


def request_with(value: str) -> str:
    return '{"email": "ada@example.org", "message": "help", "name": ' + value + "}"


def sync_with(value: str) -> str:
    return '{"accounts": [{"external_id": "A1", "name": "Acme", "sites": ' + value + "}]}"


def assert_refused(response, status: int, code: str, words: str = ""):
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    error = response.get_json()["error"]
    assert error["code"] == code and words in error["message"], error


# -- the parser ---------------------------------------------------------------------------------


@pytest.mark.parametrize("number", HOSTILE_NUMBERS)
def test_the_parser_refuses_numbers_no_document_needs(number):
    from contacts.core.inputs import parse_json

    with pytest.raises(Invalid, match="^The body has "):
        parse_json(f'{{"n": [{number}]}}')


@pytest.mark.parametrize("nesting", HOSTILE_NESTINGS)
def test_the_parser_refuses_deep_nesting_whatever_the_brackets(nesting):
    from contacts.core.inputs import parse_json

    with pytest.raises(Invalid, match=r"^x\.json is nested too deeply \(more than 64 levels\)"):
        parse_json(nesting, name="x.json")


@pytest.mark.parametrize("text", [r'["\ud800"]', r'{"\udc00": 1}', r'["x\uDBFFy"]',
                                  r'{"a": ["\ude00\ud83d"]}'])
def test_the_parser_refuses_half_characters(text):
    from contacts.core.inputs import parse_json

    with pytest.raises(Invalid, match="lone surrogate"):
        parse_json(text)


def test_a_half_character_in_a_request_is_refused_by_name(client):
    for body in (r'{"email": "ada\udfff@example.org", "message": "x"}',
                 r'{"email": "ada@example.org", "message": "x\ud800"}'):
        assert_refused(client.post("/api/v1/requests", data=body,
                                   content_type="application/json"), 400, "invalid",
                       "lone surrogate")


def test_the_parser_takes_ordinary_documents_and_brackets_inside_strings():
    from contacts.core.inputs import MAX_DEPTH as deepest_taken
    from contacts.core.inputs import parse_json

    assert deepest_taken == MAX_DEPTH
    deepest = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_json(deepest.encode()) == json.loads(deepest)
    text = json.dumps({"message": "[" * 10_000 + '\\"{' * 1000 + "\U0001f600 \\ud800",
                       "n": -12.5e3, "i": 10 ** 99})  # an emoji escaped as a pair: one char
    assert parse_json(text.encode()) == json.loads(text)
    with pytest.raises(Invalid, match="not valid JSON: Unterminated string"):
        parse_json('["' + '\\"' * 50_000)
    with pytest.raises(Invalid, match="is not UTF-8 text"):
        parse_json(b'{"a": "\xff"}')


# -- API bodies with a Content-Length (the test client) ------------------------------------------


@pytest.mark.parametrize("number", HOSTILE_NUMBERS[:3] + HOSTILE_NUMBERS[-5:])
def test_a_hostile_number_on_the_public_intake_and_the_sync_answers_400(client, sync_headers,
                                                                        number):
    assert_refused(client.post("/api/v1/requests", data=request_with(number),
                               content_type="application/json"), 400, "invalid", "The body has")
    assert_refused(client.post("/api/v1/sync", data=sync_with(f"[{number}]"),
                               headers=sync_headers, content_type="application/json"),
                   400, "invalid", "The body has")


@pytest.mark.parametrize("nesting", HOSTILE_NESTINGS)
def test_deep_nesting_on_the_sync_answers_400_naming_the_problem(client, sync_headers, nesting):
    assert_refused(client.post("/api/v1/sync", data=sync_with(nesting),
                               headers=sync_headers, content_type="application/json"),
                   400, "invalid", "nested too deeply")


def test_the_intake_refuses_a_body_over_its_own_cap_before_parsing_it(client):
    assert_refused(client.post("/api/v1/requests", data="[" * 100_000,
                               content_type="application/json"), 413, "too_large")


def test_an_ordinary_request_still_goes_through(client):
    response = client.post("/api/v1/requests", json={
        "email": "ada@example.org", "message": "[[[ our site is down ]]] " + "{" * 500})
    assert response.status_code == 202, response.get_json()


# -- chunked bodies over a real socket ------------------------------------------------------------


def post_chunked(base: str, path: str, body: bytes, content_type: str = "application/json",
                 headers: dict | None = None):
    """POST `body` with Transfer-Encoding: chunked and no Content-Length; (status, body)."""
    address = urlsplit(base)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    chunks = (body[start:start + 8192] for start in range(0, len(body), 8192))
    try:
        connection.request("POST", path, body=chunks, encode_chunked=True,
                           headers={"Content-Type": content_type, **(headers or {})})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def test_chunked_json_meets_the_same_parser_as_any_body(live_server, sync_headers):
    for body, words in ((sync_with("[" * 100_000), "nested too deeply"),
                        (sync_with("[" + "7" * 5000 + "]"), "number longer than"),
                        (sync_with("[1e999]"), "too large to use"),
                        ('{"accounts": [', "not valid JSON")):
        status, kind, answer = post_chunked(live_server, "/api/v1/sync", body.encode(),
                                            headers=sync_headers)
        assert (status, kind) == (400, "application/json"), (words, answer[:200])
        assert words in json.loads(answer)["error"]["message"]


def test_chunked_bodies_over_the_cap_answer_413(live_server, sync_headers):
    padded = json.dumps({"email": "ada@example.org", "message": "x" * 20_000}).encode()
    status, _, answer = post_chunked(live_server, "/api/v1/requests", padded)
    assert status == 413, answer
    assert status == 413 and json.loads(answer)["error"]["code"] == "too_large"
    status, _, answer = post_chunked(live_server, "/api/v1/requests",
                                     request_with("1" * 5000).encode() + b" " * 20_000)
    assert status == 413, answer[:200]  # the cap holds before the number is parsed
    document = json.dumps(make_document(accounts=400, contacts_per_account=2)).encode()
    assert len(document) > SMALL_CAPS["server_max_body_bytes"]
    status, _, answer = post_chunked(live_server, "/api/v1/sync", document, headers=sync_headers)
    assert status == 413 and json.loads(answer)["error"]["code"] == "too_large"


def test_a_chunked_body_that_is_not_json_answers_415(live_server, sync_headers):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        status, _, answer = post_chunked(live_server, "/api/v1/requests",
                                         b"email=ada%40example.org&message=x", content_type)
        assert status == 415, (content_type, answer[:200])
        assert json.loads(answer)["error"]["code"] == "unsupported_media_type"
    status, _, _ = post_chunked(live_server, "/api/v1/sync", b"{}", "text/plain",
                                headers=sync_headers)
    assert status == 415


def test_a_chunked_request_within_the_cap_is_accepted(live_server):
    status, _, answer = post_chunked(live_server, "/api/v1/requests", json.dumps(
        {"email": "ada@example.org", "message": "site down"}).encode())
    assert status == 202, answer[:200]


def test_a_huge_form_post_answers_413_with_a_page(live_server, client):
    for path, cap in (("/contact", SMALL_CAPS["intake_max_body_bytes"]),
                      ("/login", SMALL_CAPS["server_max_body_bytes"])):
        form = b"email=ada%40example.org&message=" + b"x" * (cap + 10_000)
        status, kind, answer = post_chunked(live_server, path, form,
                                            "application/x-www-form-urlencoded")
        assert status == 413 and kind.startswith("text/html"), (path, answer[:200])
        assert b"The request body is too large." in answer
        page = client.post(path, data=form, content_type="application/x-www-form-urlencoded")
        assert page.status_code == 413 and b"too large" in page.get_data()


# -- imports: the CLI and the console ----------------------------------------------------------


def run_import(app, path):
    return app.test_cli_runner().invoke(args=["contacts", "import", str(path)])


def hostile_files() -> dict[str, str]:
    document = json.dumps(make_document(accounts=2, contacts_per_account=2))
    lines = as_csv(make_document(accounts=2, contacts_per_account=2)).splitlines()
    long_field, half = "x" * 131_073, "x" * 70_000
    return {
        "number.json": document.replace('"name": "Acme 0 Ltd"', '"name": ' + "9" * 5000),
        "float.json": document.replace('"name": "Acme 0 Ltd"', '"name": 1e999'),
        "nan.json": document.replace('"name": "Acme 0 Ltd"', '"name": NaN'),
        "nested.json": document.replace('"sites": [', '"sites": [' + "[" * 100_000, 1),
        "field.csv": "\n".join([lines[0], lines[1].replace("Acme", long_field, 1), *lines[2:]]),
        "quoted.csv": "\n".join([lines[0], lines[1], f'A9,"{half}\n{half}",C9']),
        "header.csv": long_field + "," + lines[0] + "\n" + lines[1],
    }


def test_hostile_import_files_exit_2_with_one_line(app, tmp_path):
    said = {"number.json": "number.json has a number longer than 100 digits.",
            "float.json": "float.json has a number too large to use (1e999).",
            "nan.json": "nan.json has NaN, which is not a JSON value.",
            "nested.json": "nested.json is nested too deeply (more than 64 levels).",
            "field.csv": "line 2: the CSV cannot be read (field larger than field limit",
            "quoted.csv": "line 4: the CSV cannot be read (field larger than field limit",
            "header.csv": "line 1: the CSV header cannot be read (field larger than"}
    for name, text in hostile_files().items():
        (tmp_path / name).write_text(text)
        result = run_import(app, tmp_path / name)
        assert result.exit_code == 2, (name, result.output[-500:])
        assert result.output.strip().splitlines() == [result.output.strip()], name
        assert result.output.startswith("Error: " + said[name]), (name, result.output)


def test_hostile_import_files_uploaded_in_the_console_get_a_form_message(app, client, auth,
                                                                         make_staff):
    auth.login(make_staff("admin"))
    token = csrf_token_from(client.get("/console/import").get_data(as_text=True))
    for name, text in hostile_files().items():
        response = client.post("/console/import", content_type="multipart/form-data", data={
            "file": (io.BytesIO(text.encode()), name), "csrf_token": token})
        body = response.get_data(as_text=True)
        assert response.status_code == 400, (name, body[-500:])
        assert any(words in body for words in ("has a number", "has NaN", "nested too deeply",
                                               "the CSV cannot be read",
                                               "the CSV header cannot be read")), name
