"""form_errors: a refused service call leaves nothing behind, and says why on the form."""

from flask import get_flashed_messages
from sqlmodel import select

from contacts.core import audit
from contacts.core.access import public
from contacts.core.audit import Actor, AuditEntry
from contacts.core.db import request_session, session_scope
from contacts.core.errors import Conflict, Invalid
from contacts.core.forms import form_errors


class Field:
    errors: list[str] = []


def _actions(engine) -> list[str]:
    with session_scope(engine) as session:
        return [entry.action for entry in session.exec(select(AuditEntry))]


def test_a_refusal_rolls_back_what_the_request_wrote_though_the_page_answers(app, engine):
    """The page answers normally (a form shown again), so after_request commits: whatever
    the service wrote before it refused must already be gone."""
    field = Field()

    @app.get("/test/refused")
    @public
    def refused_view():
        with form_errors(field, flash_as="Nothing was changed: {}") as refused:
            audit.record(request_session(), Actor.system("test"), "half.done")
            raise Invalid("the second half is wrong")
        return {"refused": bool(refused), "status": refused.status,
                "flashed": get_flashed_messages()}

    @app.get("/test/accepted")
    @public
    def accepted_view():
        with form_errors(field) as refused:
            audit.record(request_session(), Actor.system("test"), "all.done")
        return {"refused": bool(refused)}

    client = app.test_client()
    answer = client.get("/test/refused").get_json()
    assert answer == {"refused": True, "status": 400,
                      "flashed": ["Nothing was changed: the second half is wrong"]}
    assert field.errors == ["the second half is wrong"]
    assert client.get("/test/accepted").get_json() == {"refused": False}
    assert _actions(engine) == ["all.done"]


def test_only_the_named_refusals_are_caught(app):
    with app.test_request_context():
        try:
            with form_errors(catching=(Invalid,)):
                raise Conflict("not this kind")
        except Conflict as exc:
            assert exc.message == "not this kind"
        else:
            raise AssertionError("a Conflict passed through form_errors(catching=Invalid)")
        with form_errors(catching=(Invalid,)) as refused:
            raise Invalid("this kind")
        assert refused and refused.message == "this kind"
