"""The public side of the intake: a request with no login and no site, the same answer for
everyone, proof of address by code or link, and the request's own page."""

from __future__ import annotations

import re
import statistics
import time
from datetime import timedelta

import pytest
from sqlalchemy import event

from contacts.core.db import session_scope, utcnow
from contacts.core.errors import Invalid
from contacts.core.mail import SUPPORT_LIST_ID
from contacts.intake import writer
from contacts.intake.codes import status_token
from contacts.intake.verification import code_refused, resend_code, verify_code
from tests.helpers import csrf_token_from, stored_bytes

REFERENCE = re.compile(r"^LL-[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}$")


def test_an_email_and_a_message_are_enough(desk, desk_client):
    response = desk.submit(desk_client, email="Someone@Example.ORG", message="Site gone")
    assert response.status_code == 202
    body = response.get_json()
    assert set(body) == {"reference", "status", "message"}
    assert REFERENCE.match(body["reference"]) and body["status"] == "received"
    assert desk.deliver().sent == 1
    (mail,) = desk.mail_to("Someone@example.org")
    assert body["reference"] in mail["Subject"]
    assert mail["List-Id"] == SUPPORT_LIST_ID
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    code = desk.code_for("Someone@example.org")
    assert code in text and code in html
    assert f"/requests/{body['reference']}?t=" in text
    assert f"/requests/{body['reference']}/confirm/" in text
    assert "Site gone" not in text  # never echo what a stranger typed to an address


def test_unknown_email_gets_the_same_answer_as_a_known_one(desk, desk_client, acme):
    """Same status, keys and shape; the request path runs the very same SQL for both (it
    never reads the vault), which is why the timings match. Every round's two traces are
    compared; the medians are printed (the benchmark, not this test, measures timing)."""
    rounds = 20
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        statements.append(statement)

    event.listen(desk.engine, "before_cursor_execute", record)
    answers, timings = {}, {"known": [], "unknown": []}
    traces: dict[str, list[list[str]]] = {"known": [], "unknown": []}
    try:
        for round_ in range(rounds):
            for who, address in (("known", "ada@acme.example"),
                                 ("unknown", f"nobody{round_}@acme.example")):
                statements.clear()
                started = time.perf_counter()
                response = desk.submit(desk_client, email=address, message="Help")
                timings[who].append(time.perf_counter() - started)
                answers[who] = (response.status_code, response.get_json())
                traces[who].append(list(statements))
    finally:
        event.remove(desk.engine, "before_cursor_execute", record)
    (known_status, known), (unknown_status, unknown) = answers["known"], answers["unknown"]
    assert known_status == unknown_status == 202
    assert set(known) == set(unknown) and known["message"] == unknown["message"]
    assert REFERENCE.match(known["reference"]) and REFERENCE.match(unknown["reference"])
    assert traces["known"] == traces["unknown"] and all(traces["known"])
    vault_tables = re.compile(r'\b(FROM|JOIN|INTO|UPDATE)\s+"?(contact|account|site)\b"?\s',
                              re.IGNORECASE)
    assert not any(vault_tables.search(statement)
                   for trace in traces["known"] for statement in trace)
    known_ms = statistics.median(timings["known"]) * 1000
    unknown_ms = statistics.median(timings["unknown"]) * 1000
    print(f"\nmedian response time over {rounds} requests each: known {known_ms:.2f} ms, "
          f"unknown {unknown_ms:.2f} ms, difference "
          f"{abs(known_ms - unknown_ms) / max(known_ms, unknown_ms):.1%}")


def test_the_code_verifies_the_address_once(desk, desk_client):
    reference = desk.submit(desk_client, email="a@example.org", message="x").get_json()[
        "reference"]
    desk.deliver()
    code = desk.code_for("a@example.org")
    with session_scope(desk.engine) as session:
        verified = verify_code(session=session, intake=desk.intake, vault=desk.vault,
                               reference=reference.lower().replace("-", " "),
                               code=code, now=utcnow())
        assert verified.verification == "email_verified"
    assert desk.request(reference).code_digest is None  # spent


def test_five_wrong_codes_spend_the_code(desk, desk_client):
    reference = desk.submit(desk_client, email="b@example.org", message="x").get_json()[
        "reference"]
    desk.deliver()
    code = desk.code_for("b@example.org")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    messages = []
    for _ in range(5):
        with pytest.raises(Invalid) as refused:
            with session_scope(desk.engine) as session:
                try:
                    verify_code(session=session, intake=desk.intake, vault=desk.vault,
                                reference=reference, code=wrong, now=utcnow())
                finally:
                    session.commit()
        messages.append(refused.value.message)
    assert set(messages) == {code_refused(desk.intake)}  # no count to probe
    assert desk.request(reference).code_attempts == 5
    with pytest.raises(Invalid, match="does not work"):
        with session_scope(desk.engine) as session:
            verify_code(session=session, intake=desk.intake, vault=desk.vault,
                        reference=reference, code=code, now=utcnow())
    assert desk.request(reference).verification == "unverified"


def test_a_code_expires_after_thirty_minutes_and_a_new_one_replaces_it(desk, desk_client):
    reference = desk.submit(desk_client, email="c@example.org", message="x").get_json()[
        "reference"]
    desk.deliver()
    old = desk.code_for("c@example.org")
    later = utcnow() + timedelta(minutes=31)
    with pytest.raises(Invalid, match="does not work"):
        with session_scope(desk.engine) as session:
            verify_code(session=session, intake=desk.intake, vault=desk.vault,
                        reference=reference, code=old, now=later)
    with session_scope(desk.engine) as session:
        with desk.app.app_context():
            resend_code(session=session, intake=desk.intake, reference=reference,
                        render=_renderer(desk), now=later)
    desk.deliver(now=later)
    new = desk.code_for("c@example.org")
    assert len(desk.mail_to("c@example.org")) == 2
    if new != old:
        with pytest.raises(Invalid):
            with session_scope(desk.engine) as session:
                verify_code(session=session, intake=desk.intake, vault=desk.vault,
                            reference=reference, code=old, now=later)
    with session_scope(desk.engine) as session:
        assert verify_code(session=session, intake=desk.intake, vault=desk.vault,
                           reference=reference, code=new,
                           now=later).verification == "email_verified"


def _renderer(desk):
    from contacts.jobs import message_renderer
    return message_renderer(desk.app)


def _link_in(mail) -> str:
    text = mail.get_body(("plain",)).get_content()
    return re.search(r"http://\S+/requests/(LL-[^/]+/confirm/\S+)", text).group(1)


def test_the_one_click_link_asks_before_verifying_and_works_once(desk, desk_client):
    reference = desk.submit(desk_client, email="d@example.org", message="x").get_json()[
        "reference"]
    desk.deliver()
    path = "/requests/" + _link_in(desk.mail_to("d@example.org")[-1])
    page = desk_client.get(path)
    assert page.status_code == 200 and "Yes, I sent it" in page.get_data(as_text=True)
    assert desk.request(reference).verification == "unverified"  # a GET changes nothing
    answer = desk_client.post(path, data={"csrf_token": csrf_token_from(
        page.get_data(as_text=True))})
    assert answer.status_code == 303
    assert answer.headers["Location"].startswith(f"/requests/{reference}?t=")
    assert desk.request(reference).verification == "email_verified"
    status_page = desk_client.get(answer.headers["Location"])
    assert "Confirmed." in status_page.get_data(as_text=True)


def test_the_status_page_needs_its_token_and_shows_html_as_text(desk, desk_client):
    reference = desk.submit(desk_client, email="e@example.org",
                            message="<script>alert(1)</script> <b>gone</b>").get_json()[
        "reference"]
    assert desk_client.get(f"/requests/{reference}").status_code == 404
    assert desk_client.get(f"/requests/{reference}?t=forged").status_code == 404
    token = status_token(desk.intake, reference)
    page = desk_client.get(f"/requests/{reference}?t={token}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &lt;b&gt;gone&lt;/b&gt;" in html
    assert "<script>alert" not in html
    reply = desk_client.post(f"/requests/{reference}/reply", data={
        "csrf_token": csrf_token_from(html), "t": token, "body": "Any news?"})
    assert reply.status_code == 303
    assert "Any news?" in desk_client.get(f"/requests/{reference}?t={token}").get_data(
        as_text=True)


def test_the_form_works_without_javascript_and_keeps_what_was_typed(desk, desk_client):
    form = desk_client.get("/contact")
    html = form.get_data(as_text=True)
    assert form.status_code == 200 and "<script" not in html
    assert 'for="email"' in html and 'for="message"' in html
    refused = desk_client.post("/contact", data={
        "csrf_token": csrf_token_from(html), "email": "not an address", "message": "Gone",
        "name": "Zoé"})
    page = refused.get_data(as_text=True)
    assert refused.status_code == 400
    assert 'aria-invalid="true"' in page and "email-error" in page
    assert "Gone" in page and "Zoé" in page  # nothing typed is lost
    sent = desk_client.post("/contact", data={
        "csrf_token": csrf_token_from(html), "email": "f@example.org", "message": "Gone",
        "severity": "critical"})
    assert sent.status_code == 303 and "/verify" in sent.headers["Location"]
    reference = sent.headers["Location"].split("/")[2]
    assert desk.request(reference).severity == "critical"


def test_nothing_a_requester_typed_is_stored_in_clear(desk, desk_client):
    typed = {"email": "plain.requester@cleartext.example", "message": "Cleartext message 7731",
             "name": "Cleartext Name", "company": "Cleartext Company Ltd",
             "site": "cleartext-site.example", "phone": "+1 415 555 7731"}
    assert desk.submit(desk_client, **typed).status_code == 202
    desk.process()
    stored = stored_bytes(desk.engine)
    for value in typed.values():
        assert value.encode() not in stored, value
        assert value.lower().encode() not in stored, value


def test_a_reference_already_taken_is_never_handed_out_again(desk, desk_client, monkeypatch):
    taken = desk.submit(desk_client, email="first@example.org", message="x").get_json()[
        "reference"]
    fresh = iter([taken, "LL-2345-6789"])  # drafted with a taken one, then a new one
    monkeypatch.setattr(writer, "new_reference", lambda: next(fresh))
    second = desk.submit(desk_client, email="second@example.org", message="y").get_json()[
        "reference"]
    assert second == "LL-2345-6789"
    assert desk.request(taken).id != desk.request(second).id
    desk.deliver()
    assert second in desk.mail_to("second@example.org")[0]["Subject"]


@pytest.mark.parametrize("language", ["en", "fr"])
def test_the_code_is_in_the_body_and_never_in_the_subject(desk, desk_client, language):
    address = f"subject-{language}@example.org"
    reference = desk_client.post("/api/v1/requests", json={
        "email": address, "message": "x"}, headers={"Accept-Language": language}).get_json()[
        "reference"]
    desk.deliver()
    with session_scope(desk.engine) as session:
        with desk.app.app_context():
            resend_code(session=session, intake=desk.intake, reference=reference,
                        render=_renderer(desk), now=utcnow())
    desk.deliver()
    received, resent = desk.mail_to(address)
    for mail in (received, resent):
        assert reference in mail["Subject"] and not re.search(r"\d{6}", mail["Subject"])
        assert re.search(r"^\s+\d{6}\s*$", mail.get_body(("plain",)).get_content(), re.M)
        assert re.search(r">\d{6}<", mail.get_body(("html",)).get_content())


def _parallel(count: int, call) -> list:
    """`call(n)` in `count` threads let go at once, each with its own session; what each
    raised or returned."""
    import threading

    barrier = threading.Barrier(count)
    outcomes: list = [None] * count

    def run(n):
        barrier.wait()
        try:
            outcomes[n] = call(n)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def _guess(desk, reference: str, code: str):
    with session_scope(desk.engine) as session:
        try:
            return verify_code(session=session, intake=desk.intake, vault=desk.vault,
                               reference=reference, code=code, now=utcnow())
        finally:
            session.commit()  # the failed attempt counts, as the page commits it


def _refusals(desk, reference: str) -> int:
    from sqlmodel import func, select

    from contacts.core.audit import AuditEntry

    request_id = desk.request(reference).id
    with session_scope(desk.engine) as session:
        return session.exec(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "request.code_refused",
            AuditEntry.target_id == request_id)).one()


@pytest.mark.parametrize("guesses", [20, 12])
def test_parallel_wrong_codes_get_five_comparisons_in_all(desk, desk_client, guesses):
    """Many wrong codes at the same moment (from many addresses: no per-IP limit helps)
    each claim a try in the database before comparing: five comparisons in all, every
    answer the one refusal, never a database error; the right code after them is refused."""
    reference = desk.submit(desk_client, email="race@example.org", message="x").get_json()[
        "reference"]
    desk.deliver()
    code = desk.code_for("race@example.org")
    wrong = [f"{(int(code) + n) % 1_000_000:06d}" for n in range(1, guesses + 1)]
    outcomes = _parallel(guesses, lambda n: _guess(desk, reference, wrong[n]))
    assert all(isinstance(outcome, Invalid) for outcome in outcomes), outcomes
    assert {outcome.message for outcome in outcomes} == {code_refused(desk.intake)}
    assert desk.request(reference).code_attempts == desk.intake.code_attempts == 5
    assert _refusals(desk, reference) == 5  # compared five times, refused unseen after
    with pytest.raises(Invalid, match="does not work"):
        _guess(desk, reference, code)
    assert desk.request(reference).verification == "unverified"


def test_the_right_code_among_parallel_wrong_ones_verifies_at_most_once(desk, desk_client):
    reference = desk.submit(desk_client, email="among@example.org", message="x").get_json()[
        "reference"]
    desk.deliver()
    code = desk.code_for("among@example.org")
    codes = [f"{(int(code) + n) % 1_000_000:06d}" for n in range(1, 20)] + [code, code]
    outcomes = _parallel(len(codes), lambda n: _guess(desk, reference, codes[n]))
    verified = [outcome for outcome in outcomes if not isinstance(outcome, Exception)]
    assert all(isinstance(outcome, Invalid) for outcome in outcomes if outcome not in verified)
    assert len(verified) <= 1  # single use, even for two right codes at once
    assert desk.request(reference).code_attempts <= 5
    assert _refusals(desk, reference) + len(verified) <= 5
    state = desk.request(reference)
    assert (state.verification == "email_verified") == bool(verified)
    assert state.code_digest is None or not verified


def test_parallel_resends_send_no_more_codes_than_allowed(desk, desk_client):
    reference = desk.submit(desk_client, email="resend@example.org", message="x").get_json()[
        "reference"]

    def resend(_n):
        with session_scope(desk.engine) as session, desk.app.app_context():
            resend_code(session=session, intake=desk.intake, reference=reference,
                        render=_renderer(desk), now=utcnow())

    outcomes = _parallel(12, resend)
    assert outcomes == [None] * 12
    assert desk.request(reference).codes_sent == desk.intake.code_resends + 1
    desk.deliver()
    assert len(desk.mail_to("resend@example.org")) == desk.intake.code_resends + 1
