"""Knowing a request's reference opens nothing: the code and the one-click link are checked
every time, also on a request already verified, and only the right code or an unused link
hands out the status token. Refusals read the same whether the reference exists or not."""

from __future__ import annotations

import re
from contextlib import contextmanager

import pytest
from flask import template_rendered

from contacts.intake.codes import status_token
from tests.helpers import csrf_token_from

CSRF = re.compile(r'name="csrf_token"[^>]*value="[^"]*"|value="[^"]*"[^>]*name="csrf_token"')
LINK = re.compile(r"http://\S+/requests/(LL-[^/]+/confirm/\S+)")


def _submit(desk, client, address: str) -> str:
    return desk.submit(client, email=address, message="help").get_json()["reference"]


def _post_code(client, reference: str, code: str):
    page = client.get(f"/requests/{reference}/verify")
    return client.post(f"/requests/{reference}/verify", data={
        "csrf_token": csrf_token_from(page.get_data(as_text=True)), "code": code})


def _post_link(client, path: str):
    page = client.get(path)
    return client.post(path, data={"csrf_token": csrf_token_from(page.get_data(as_text=True))})


def _link(desk, address: str) -> str:
    text = desk.mail_to(address)[-1].get_body(("plain",)).get_content()
    return "/requests/" + LINK.search(text).group(1)


def _verified(desk, client, address: str) -> str:
    reference = _submit(desk, client, address)
    desk.deliver()
    answer = _post_code(client, reference, desk.code_for(address))
    assert answer.status_code == 303 and "?t=" in answer.headers["Location"]
    return reference


def _hands_out_no_token(desk, answer, reference: str) -> None:
    token = status_token(desk.intake, reference)
    assert answer.status_code == 400
    assert "Location" not in answer.headers
    assert token not in answer.get_data(as_text=True)


@contextmanager
def _templates(app):
    seen = []

    def record(sender, template, context, **extra):
        seen.append(template.name)

    template_rendered.connect(record, app)
    try:
        yield seen
    finally:
        template_rendered.disconnect(record, app)


@pytest.mark.parametrize("code", ["111111", "000000", "1 1 1 1 1 1", "999999", "12345678"])
def test_a_wrong_code_on_a_verified_request_opens_nothing(desk, desk_client, code):
    reference = _verified(desk, desk_client, "victim@example.org")
    if code == desk.code_for("victim@example.org"):
        code = "222222"
    answer = _post_code(desk_client, reference, code)
    _hands_out_no_token(desk, answer, reference)
    assert "does not work" in answer.get_data(as_text=True)


def test_the_right_code_entered_again_after_verifying_is_spent(desk, desk_client):
    reference = _verified(desk, desk_client, "once@example.org")
    again = _post_code(desk_client, reference, desk.code_for("once@example.org"))
    _hands_out_no_token(desk, again, reference)


def test_wrong_codes_on_a_verified_request_count_toward_the_limit(desk, desk_client):
    reference = _verified(desk, desk_client, "counted@example.org")
    for _ in range(7):
        _hands_out_no_token(desk, _post_code(desk_client, reference, "111111"), reference)
    assert desk.request(reference).code_attempts == desk.intake.code_attempts


def test_a_one_click_link_used_once_says_so_the_second_time(desk, desk_client):
    reference = _submit(desk, desk_client, "clicker@example.org")
    desk.deliver()
    path = _link(desk, "clicker@example.org")
    first = _post_link(desk_client, path)
    assert first.status_code == 303 and "?t=" in first.headers["Location"]
    for _ in range(2):
        again = _post_link(desk_client, path)
        _hands_out_no_token(desk, again, reference)
        assert "already used" in again.get_data(as_text=True)
        assert "Add a message" not in again.get_data(as_text=True)  # not the private page


def test_a_link_used_after_a_code_verified_the_request_opens_nothing(desk, desk_client):
    reference = _submit(desk, desk_client, "both@example.org")
    desk.deliver()
    path = _link(desk, "both@example.org")
    assert _post_code(desk_client, reference,
                      desk.code_for("both@example.org")).status_code == 303
    _hands_out_no_token(desk, _post_link(desk_client, path), reference)


def test_another_requests_code_or_link_opens_nothing(desk, desk_client):
    mine = _submit(desk, desk_client, "mine@example.org")
    theirs = _verified(desk, desk_client, "theirs@example.org")
    desk.deliver()
    my_code, my_link = desk.code_for("mine@example.org"), _link(desk, "mine@example.org")
    their_code = desk.code_for("theirs@example.org")
    if their_code != my_code:
        _hands_out_no_token(desk, _post_code(desk_client, mine, their_code), mine)
    _hands_out_no_token(desk, _post_code(desk_client, theirs, my_code), theirs)
    token = my_link.rsplit("/", 1)[1]
    _hands_out_no_token(desk, _post_link(desk_client, f"/requests/{theirs}/confirm/{token}"),
                        theirs)
    assert desk.request(mine).verification == "unverified"


def test_a_wrong_code_reads_the_same_for_an_unknown_reference_and_real_ones(
        desk, desk_app, desk_client):
    unverified = _submit(desk, desk_client, "waiting@example.org")
    verified = _verified(desk, desk_client, "done@example.org")
    unknown = "LL-2222-3333"
    answers = {}
    for name, reference in (("unknown", unknown), ("unverified", unverified),
                            ("verified", verified)):
        for attempt in range(3):  # the first try and later ones read the same too
            with _templates(desk_app) as seen:
                answer = _post_code(desk_client, reference, "111111")
            body = CSRF.sub("", answer.get_data(as_text=True)).replace(reference, "<ref>")
            answers[name, attempt] = (answer.status_code, body, seen[-1])
    assert len(set(answers.values())) == 1, {key: value[0] for key, value in answers.items()}
    assert next(iter(answers.values()))[0] == 400


def test_a_bad_link_reads_the_same_for_an_unknown_reference_and_a_real_one(
        desk, desk_app, desk_client):
    real = _submit(desk, desk_client, "linked@example.org")
    desk.deliver()
    token = _link(desk, "linked@example.org").rsplit("/", 1)[1]
    answers = {}
    for name, reference, given in (("unknown", "LL-2222-3333", token),
                                   ("real", real, token[:-2] + "xx"),
                                   ("unknown forged", "LL-2222-3333", "forged"),
                                   ("real forged", real, "forged")):
        with _templates(desk_app) as seen:
            answer = _post_link(desk_client, f"/requests/{reference}/confirm/{given}")
        body = CSRF.sub("", answer.get_data(as_text=True)).replace(reference, "<ref>")
        answers[name] = (answer.status_code, body, seen[-1])
    assert len(set(answers.values())) == 1
    assert answers["real"][0] == 400
