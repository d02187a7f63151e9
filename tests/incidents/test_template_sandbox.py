"""Staff templates cannot freeze the server or break publishing: every bomb is refused at save
through the console with a 400 naming the problem, a template failing for some audience is
refused at save, and one that still fails at publish gives those audiences the default
template, recorded on the update, with the update and every email kept."""

from __future__ import annotations

import html
import json

import pytest
from sqlmodel import func, select

from contacts.core.audit import AuditEntry
from contacts.core.db import session_scope, utcnow
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.delivery import outbox
from contacts.incidents import sandbox
from contacts.incidents.models import IncidentUpdate, MessageTemplate
from contacts.incidents.sandbox_bounds import RENDER_SECONDS
from tests.helpers import csrf_token_from
from tests.incidents.conftest import run_fanout

REQUIRED_TEXT = ("{{ what_happened }} {{ scope }} {{ timeline }} {{ next_update }} "
                 "{{ restore_percentage }} {{ data_loss }} {{ confidence_timeline }} "
                 "{{ confidence_restore }} {{ confidence_data_loss }} {{ support }}")
COMPLETE = {"state": "identified",
            "what_happened": "A maintenance script deleted sites instead of apps.",
            "timeline": "Restores run in waves; all sites back within 4 days.",
            "next_update_at": "2030-01-01T09:00:00+00:00",
            "data_loss": "Changes made after 07:33 UTC, at most 5 minutes.",
            "confidence_timeline": "medium", "confidence_restore": "high",
            "confidence_data_loss": "high"}

# The biggest number a template may make: 4,096 bits.
BIGGEST = "{% set a = ('f' * 1024) | int(base=16) %}"
# (template, what the refusal must say): each a way to spend the server's CPU or memory, to
# fail for a real audience, or to reach outside the sandbox.
BOMBS = [
    ("{{ 10 ** 10000000 }}", "raises a number to a power over 1,000"),
    ("{{ (10 ** 1000) ** 1000 }}", "makes a number of more than 4,096 bits"),
    ("{{ (9 ** 999) * (9 ** 999) * (9 ** 999) }}", "makes a number of more than 4,096 bits"),
    ("{{ 'a' * 200000000 }}", "repeats a value past 1,000,000"),
    ("{{ 200000000 * 'a' }}", "repeats a value past 1,000,000"),
    ("{{ [0] * 200000000 }}", "repeats a value past 1,000,000"),
    ("{% set a = 'x' * 1000 %}{{ a * 10000 }}", "repeats a value past 1,000,000"),
    ("{% set a = 'x' * 900000 %}{% set b = a ~ a %}", "makes a value of more than"),
    ("{% set a = 'x' * 900000 %}{% set b = a + a %}", "makes a value of more than"),
    ("{% set a = [1] * 1000 %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
     "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{% set d = [c, c, c, c, c, c, c, c, c, c] %}"
     "{{ d }}", "makes a value of more than"),
    ("{{ range(100000000) | list }}", "makes a range of more than 10,000"),
    ("{% for a in range(10000) %}{% for b in range(10000) %}.{% endfor %}{% endfor %}",
     "takes more than 100,000 steps"),
    ("{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}",
     "takes more than 100,000 steps"),
    ("{% for a in 'x' * 900000 %}{% endfor %}", "takes more than 100,000 steps"),
    ("{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}", "writes more than 1,000,000"),
    ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
     "{{ f(40) }}", "is too costly"),
    ("{% set big = 'x y ' * 200000 %}{% for i in range(10000) %}{{ big | wordcount > 0 }}"
     "{% endfor %}", "takes longer than 1 s to render"),
    ("{{ range(1000) | map('center', 900000) | list | length }}", "makes more than 20,000,000"),
    ("{{ 'a' | center(100000000) }}", "centers text wider than"),
    ("{{ 'a' | indent(100000000) }}", "indents text past"),
    ("{{ ('a' * 500000) | replace('a', 'aaaa') }}", "replaces text past"),
    ("{{ ('a' * 500000).replace('a', 'aaaa') }}", "replaces text past"),
    ("{{ range(10000) | join('x' * 900000) }}", "joins text past"),
    ("{{ ('x' * 900000).join(range(10000) | map('string')) }}", "joins text past"),
    ("{{ [1] | batch(1000000000, 'x') | list }}", "makes more than 10,000 groups"),
    ("{{ [1] | slice(1000000000) | list }}", "makes more than 10,000 groups"),
    ("{{ ([[1]] * 9000) | sum(start=[]) }}", "uses sum on something other than numbers"),
    ("{{ '%999999999d' % 1 }}", "formats wider than"),
    ("{{ '%*d' % (5, 1) }}", "uses a * width"),
    ("{{ '%999999999s' | format('x') }}", "formats wider than"),
    ("{{ 'a'.ljust(100000000) }}", "uses str.ljust, which templates do not get"),
    ("{{ (1).to_bytes(1000000000, 'big') }}", "uses int.to_bytes"),
    ("{{ '{0:>999999999}'.format(1) }}", "uses str.format, which templates do not get"),
    ("{{ '{x}'.format_map({'x': 1}) }}", "uses str.format_map, which templates do not get"),
    ("{{ '{}'.format_map() }}", "uses str.format_map"),
    ("{% include 'base.html' %}", "templates cannot include, import or extend"),
    ("{% import 'macros.html' as m %}", "templates cannot include, import or extend"),
    ("{% from 'macros.html' import field %}", "templates cannot include, import or extend"),
    ("{% extends 'base.html' %}", "templates cannot include, import or extend"),
    ("{% for x in range(3) recursive %}{{ loop(x) }}{% endfor %}", "uses a recursive loop"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "RecursionError"),
    ("{{ ''.__class__ }}", "'__class__': Python internals are not available"),
    ("{{ ''['__class__'] }}", "'__class__': Python internals are not available"),
    ("{{ incident_title.__class__.__mro__[1].__subclasses__() }}", "Python internals"),
    ("{% if ''.__class__ %}x{% endif %}", "Python internals"),
    ("{{ range.__self__ }}", "Python internals"),
    ("{{ '' | attr('__class__') }}", "uses str.__class__, which templates do not get"),
    ("{{ ('' | attr('ljust'))(100000000) }}", "uses str.ljust"),
    ("{{ [1] | map(attribute='__class__') | list }}", "uses int.__class__"),
    ("{{ lipsum() }}", "'lipsum', which templates do not get"),
    ("{{ lipsum }}", "'lipsum', which templates do not get"),
    ("{{ cycler('a', 'b').next() }}", "'cycler', which templates do not get"),
    ("{{ cycler.__init__.__globals__ }}", "sandbox forbids"),
    ("{{ joiner() }}", "'joiner', which templates do not get"),
    ("{% set ns = namespace(x=1) %}{{ ns.x }}", "'namespace', which templates do not get"),
    ("{{ 1 // (number - 2) }}", "ZeroDivisionError"),
    ("{{ 1 / (number - 2) }}", "for an account with 40 sites, half restored, in update 2"),
    ("{{ 1 // (account_sites | length) }}", "for a public subscriber (no account)"),
    ("{{ 100 // (account_percentage[:-1] | int) }}", "ZeroDivisionError"),
    ("{{ 10.0 ** 400 }}", "OverflowError"),
    ("{{ account_sites[0].name }}", "for a public subscriber"),
    ("{{ no_such_value }}", "'no_such_value' is undefined"),
    ("{{ " + "x" * 60000 + " }}", "is longer than 50,000 characters"),
    # Numbers: no number past 4,096 bits is made, whichever way (filter, literal, operator).
    ("{% set a = ('f' * 740000) | int(base=16) %}{% set b = ('f' * 370000) | int(base=16) %}"
     "{{ (a % (b + 7)) > 0 }}", "reads a number from more than 5,000 characters"),
    ("{% set a = ('f' * 4000) | int(base=16) %}{{ a > 0 }}",
     "makes a number of more than 4,096 bits"),
    ("{{ ('7' * 4999) | int(base=8) > 0 }}", "makes a number of more than 4,096 bits"),
    ("{{ ('1' * 1000000) | float }}", "reads a number from more than 5,000 characters"),
    ("{{ 0x" + "f" * 2000 + " % 7 }}", "makes a number of more than 4,096 bits"),
    ("{{ 0b" + "1" * 5000 + " // 3 }}", "makes a number of more than 4,096 bits"),
    ("{{ 7 is divisibleby 0o" + "7" * 2000 + " }}", "makes a number of more than 4,096 bits"),
    (f"{BIGGEST}{{{{ (a + a) > 0 }}}}", "makes a number of more than 4,096 bits"),
    (f"{BIGGEST}{{{{ (-a - a) < 0 }}}}", "makes a number of more than 4,096 bits"),
    (f"{BIGGEST}{{{{ [a, a] | sum > 0 }}}}", "makes a number of more than 4,096 bits"),
    (f"{BIGGEST}{{{{ (a * 2) > 0 }}}}", "makes a number of more than 4,096 bits"),
    ("{{ 5 | round(-5000) }}", "rounds to more than 1,000 digits"),
    ("{{ 1.5 | round(5000, 'ceil') }}", "rounds to more than 1,000 digits"),
    # Tests and every operator are steps: 50,000 loop iterations and 60,000 more here.
    ("{% for i in range(10000) %}{% for j in range(5) %}{% if i is divisibleby 7 %}{% endif %}"
     "{% endfor %}{% endfor %}", "takes more than 100,000 steps"),
    ("{% for i in range(10000) %}{% for j in range(3) %}{{ (i // 2 - 1) % 1 }}{% endfor %}"
     "{% endfor %}", "takes more than 100,000 steps"),
    # tojson: a small indent, and no text past 1,000,000 however deep the value.
    ("{{ range(1000) | list | tojson(indent=2000) }}", "indents JSON by more than 8 spaces"),
    ("{{ [1] | tojson(indent='         ') }}", "indents JSON by more than 8 spaces"),
    ("{% set a = ('x' * 200000) | list %}{{ [[[[[[[[[[a]]]]]]]]]] | tojson(indent=8) }}",
     "writes JSON past 1,000,000 characters"),
    # % and format: read as Python reads them; a %(key) could print one value many times.
    ("{{ '%(a(b))50000000s' % {'a(b)': 1} }}", "key in a % format"),
    ("{{ '%(a)s' % {'a': 1} }}", "key in a % format"),
    ("{{ ('%(a)s' * 100000) % {'a': 'x' * 100} }}", "key in a % format"),
    ("{{ '%(a)s' | format(a=1) }}", "uses format with names"),
    ("{{ '%(a)s' | format({'a': 1}) }}", "key in a % format"),
    ("{{ '%-+ #0999999999.5d' % 1 }}", "formats wider than"),
    ("{{ '%.2000000000f' % 1.0 }}", "formats wider than"),
    ("{{ '%%%999999999s' % 'x' }}", "formats wider than"),
    # wordwrap's work grows with the text times its lines; sorting with its items.
    ("{{ ('x' * 100000) | wordwrap(1) }}", "wraps text into more than 2,000 lines"),
    ("{{ ('x y ' * 25000) | wordwrap(5) }}", "wraps text into more than 2,000 lines"),
    ("{{ ('x' * 200000) | wordwrap(200) }}", "works word by word through more than 100,000"),
    ("{{ ('a ' * 500000) | title }}", "works word by word through more than 100,000"),
    ("{{ ('x' * 100000) | wordwrap(10, wrapstring='') }}", "wraps text into more than 2,000"),
    ("{{ ('ab' * 60000) | list | sort | length }}", "works through more than 100,000"),
    ("{{ ('ab' * 60000) | list | unique | list | length }}", "works through more than 100,000"),
    ("{{ ('ab' * 60000) | list | max }}", "works through more than 100,000"),
    ("{{ ('ab' * 60000) | map('upper') | list | groupby(0) | length }}", "takes more than"),
]


def _save(client, page: str, body: str, kind: str = "text", locale: str = "en"):
    return client.post("/console/templates", data={
        "csrf_token": csrf_token_from(page), "kind": kind, "locale": locale, "body": body})


def _saved_templates(engine) -> int:
    with session_scope(engine) as session:
        return session.exec(select(func.count()).select_from(MessageTemplate)).one()


@pytest.mark.parametrize("kind", ["text", "html"])
def test_every_template_bomb_is_refused_at_save_with_a_400_naming_it(
        client, auth, make_staff, engine, kind, monkeypatch):
    """Each bomb by the bound that stops it. Those a count stops get all the time they
    want, so that a busy machine cannot make the clock refuse them first."""
    auth.login(make_staff("comms"))
    page = client.get("/console/templates").get_data(as_text=True)
    for bomb, says in BOMBS:
        timed = says.startswith("takes longer than")
        monkeypatch.setattr(sandbox, "RENDER_SECONDS", RENDER_SECONDS if timed else 600.0)
        answer = _save(client, page, f"{REQUIRED_TEXT} {bomb}", kind=kind)
        shown = html.unescape(answer.get_data(as_text=True))
        assert answer.status_code == 400, (bomb[:80], answer.status_code)
        assert says in shown, (bomb[:80], says)
        assert f"the {kind} template" in shown
    assert _saved_templates(engine) == 0


def test_a_template_the_sandbox_can_bound_still_saves(client, auth, make_staff, engine):
    """The bounds leave room for what update templates do: loops, filters, macros, math."""
    auth.login(make_staff("comms"))
    page = client.get("/console/templates").get_data(as_text=True)
    body = REQUIRED_TEXT + """
{% macro line(site) %}{{ site.name | upper }}: {{ site.stage }}{% endmacro %}
{% for site in account_sites | sort(attribute='name') %}{{ loop.index }}/{{ loop.length }}
{{- line(site) }}{{ loop.cycle(',', ';') }}{% else %}no sites{% endfor %}
{{ account_sites | map(attribute='name') | join(', ') }} {{ '%d%%' % (number * 10) }}
{{ '%s sites' | format(account_sites | length) }} {{ 2 ** 10 }} {{ 'ab' * 3 }}
{{ what_happened | wordwrap(40) | indent(2) }} {{ scope | truncate(30) }}
{% for g in account_sites | groupby('stage') %}{{ g.grouper }}={{ g.list | length }} {% endfor %}
{{ dict(a=1).items() | list }} {{ 'a,b'.split(',') | join('+') }} {{ [1, 2] + [3] }}
{% filter upper %}{{ account_name }}{% endfilter %} {{ range(5) | sum }}
{{ 7 // 2 }} {{ 7 / 2 }} {{ -number }} {{ number % 2 }} {{ number is divisibleby 2 }}
{{ '%5.1f%% %-3s' % (33.3, 'x') }} {{ ('12' | int) + ('1.5' | float) }}
{{ 2.5 | round(1, 'ceil') }} {{ [1] | tojson(indent=2) }}
{{ account_sites | map(attribute='name') | sort | first | default('') }}
{{ account_sites | map(attribute='name') | list | tojson }} {{ ('ff' | int(base=16)) * 2 }}"""
    for kind in ("text", "html"):
        answer = _save(client, page, body, kind=kind, locale="fr")
        assert answer.status_code == 303, html.unescape(answer.get_data(as_text=True))[-600:]
    assert _saved_templates(engine) == 2


def _languages(accounts: list[dict]) -> list[str]:
    """The languages each account is rendered in: those its contacts read."""
    return [language for account in accounts for language in {
        "fr" if contact["locale"].startswith("fr") else "en" for contact in account["contacts"]}]


class _Published:
    """The update as the API shows it once the fan-out job has queued its audience."""

    def __init__(self, body: dict):
        self.status_code, self.body = 201, body

    def get_json(self) -> dict:
        return self.body


def _publish(client, token, incident_id, **changes):
    headers = {"Authorization": f"Bearer {token}"}
    answer = client.post(f"/api/v1/incidents/{incident_id}/updates",
                         json={**COMPLETE, **changes}, headers=headers)
    if answer.status_code != 201:
        return answer
    assert answer.get_json()["audience_queued"] is False  # publishing answers at once
    run_fanout(client.application)
    updates = client.get(f"/api/v1/incidents/{incident_id}", headers=headers).get_json()
    return _Published(next(update for update in updates["updates"]
                           if update["id"] == answer.get_json()["id"]))


def _received(app, engine, smtp_server) -> list:
    """Every queued email, sent to the real SMTP server and read back there."""
    port, sink = smtp_server
    outbox.drain(engine=engine, cipher=services(app).crypto.cipher,
                 mailer=Mailer(host="127.0.0.1", port=port, sender="status@lifeline.test"),
                 now=utcnow())
    return sink.messages


def test_a_template_failing_for_some_accounts_at_publish_gives_them_the_default(
        app, client, engine, auth, make_staff, make_token, incident, deletion_document,
        smtp_server):
    """`account_sites | length - 2` is 0 only for the five accounts with two sites: no sample
    audience has two sites, so it saves; at publish those accounts get the default body,
    the others the saved one, and the update records it."""
    auth.login(make_staff("comms"))
    page = client.get("/console/templates").get_data(as_text=True)
    custom = "CUSTOM {{ 12 // (account_sites | length - 2) }} " + REQUIRED_TEXT
    for locale in ("en", "fr"):
        assert _save(client, page, custom, locale=locale).status_code == 303
    answer = _publish(client, make_token("incidents:write", "read"), incident)
    assert answer.status_code == 201, answer.get_json()
    published = answer.get_json()
    assert published["recipients"] == 75
    failures = published["template_failures"]
    # Each two-site account is rendered once per language its contacts read.
    two_sites = [account for account in deletion_document["accounts"]
                 if len(account["sites"]) > 1][:5]
    languages = _languages(two_sites)
    assert [(f["kind"], f["locale"], f["audiences"]) for f in failures] == [
        ("text", language, languages.count(language)) for language in ("en", "fr")]
    assert all("ZeroDivisionError" in failure["error"] for failure in failures)
    texts = [message.get_body(("plain",)).get_content()
             for message in _received(app, engine, smtp_server)]
    assert len(texts) == 75
    defaults = [text for text in texts if not text.startswith("CUSTOM")]
    assert len(defaults) == 5 * 3  # three contacts in each two-site account
    assert all("A maintenance script deleted sites" in text for text in defaults)
    with session_scope(engine) as session:
        audited = session.exec(select(AuditEntry).where(
            AuditEntry.action == "incident.template_failed")).all()
        assert sum(entry.detail["audiences"] for entry in audited) == len(languages)
        assert {entry.detail["update"] for entry in audited} == {published["id"]}
    page = client.get(f"/console/incidents/{incident}").get_data(as_text=True)
    assert "got the default text template" in html.unescape(page)


def test_a_template_saved_before_the_checks_cannot_lose_an_update(
        app, client, engine, make_token, incident, smtp_server):
    """The issue's own case: `1 // (number - 2)` fails for update 2, which used to answer 500
    and lose the update. Stored directly, as a version without the save check stored it."""
    with session_scope(engine) as session:
        for kind, body in (("text", "{{ 1 // (number - 2) }}"),
                           ("subject", "{{ 10 ** 10000000 }}")):
            session.add(MessageTemplate(kind=kind, locale="en", version=1, body=body,
                                        created_by="stf_old", created_at=utcnow()))
    token = make_token("incidents:write", "read")
    assert _publish(client, token, incident).status_code == 201
    second = _publish(client, token, incident)
    assert second.status_code == 201, second.get_json()
    failures = {failure["kind"]: failure for failure in second.get_json()["template_failures"]}
    assert set(failures) == {"text", "subject"}
    assert "ZeroDivisionError" in failures["text"]["error"]
    assert "raises a number to a power over 1,000" in failures["subject"]["error"]
    with session_scope(engine) as session:
        numbers = session.exec(select(IncidentUpdate.number).where(
            IncidentUpdate.incident_id == incident)).all()
    assert sorted(numbers) == [1, 2]
    received = _received(app, engine, smtp_server)
    assert len(received) == 150  # 75 contacts, two updates
    second_texts = [message.get_body(("plain",)).get_content() for message in received
                    if "Update 2" in message["Subject"] or "Point 2" in message["Subject"]]
    assert len(second_texts) == 75
    assert all("A maintenance script deleted sites" in text for text in second_texts)


def test_a_template_too_costly_at_publish_gives_every_account_the_default(
        client, engine, auth, make_staff, make_token, incident, deletion_document):
    """Costly for every real account (no sample audience has their names), so it saves; at
    publish each account gets the default, and the update says why."""
    auth.login(make_staff("comms"))
    page = client.get("/console/templates").get_data(as_text=True)
    costly = ("{% if account_name not in ('Account', 'Big & <Co>', '') %}"
              "{% for a in range(10000) %}{% for b in range(50) %}{% endfor %}{% endfor %}"
              "{% endif %}" + REQUIRED_TEXT)
    for locale in ("en", "fr"):
        assert _save(client, page, costly, locale=locale).status_code == 303
    answer = _publish(client, make_token("incidents:write", "read"), incident)
    assert answer.status_code == 201
    failures = answer.get_json()["template_failures"]
    languages = _languages(deletion_document["accounts"])
    assert [(f["kind"], f["locale"], f["audiences"]) for f in failures] == [
        ("text", language, languages.count(language)) for language in ("en", "fr")]
    assert all("takes more than 100,000 steps" in f["error"] for f in failures)
    with session_scope(engine) as session:
        stored = session.exec(select(IncidentUpdate.template_failures)).one()
    assert json.loads(json.dumps(stored)) == failures


def test_the_preview_shows_the_fallback_an_account_would_get(
        client, engine, auth, make_staff, incident, deletion_document):
    from contacts.vault import service as vault_service

    auth.login(make_staff("comms"))
    page = client.get("/console/templates").get_data(as_text=True)
    custom = "CUSTOM {{ 12 // (account_sites | length - 2) }} " + REQUIRED_TEXT
    for locale in ("en", "fr"):
        assert _save(client, page, custom, locale=locale).status_code == 303
    two_sites = next(account for account in deletion_document["accounts"]
                     if len(account["sites"]) > 1)
    with session_scope(engine) as session:
        site = vault_service.live_sites(session=session, refs=[two_sites["sites"][0][
            "external_id"]])[two_sites["sites"][0]["external_id"]]
    page = client.get(f"/console/incidents/{incident}").get_data(as_text=True)
    answer = client.post(f"/console/incidents/{incident}/updates", data={
        "csrf_token": csrf_token_from(page), "action": "preview", "state": "identified",
        "what_happened": "Sites were deleted.", "timeline": "Back within 4 days.",
        "next_update_at": "2030-01-01T09:00", "data_loss": "At most 5 minutes.",
        "confidence_timeline": "medium", "confidence_restore": "high",
        "confidence_data_loss": "low", "preview_account": site.account_id})
    shown = html.unescape(answer.get_data(as_text=True))
    assert answer.status_code == 200, shown[-800:]
    assert "This contact gets the default text template" in shown
    assert "ZeroDivisionError" in shown and "CUSTOM" not in shown.split("Subject:", 1)[1]
