"""Nothing is lost when our database is down: requests wait, encrypted, in the spool, and are
stored exactly once when it is back."""

from __future__ import annotations

import sqlite3

from sqlalchemy import func
from sqlalchemy.engine import make_url
from sqlmodel import select

from contacts.db import session_scope
from contacts.delivery.models import OutboxMessage
from contacts.intake.models import SupportRequest
from tests.helpers import TcpProxy
from tests.intake.conftest import UNLIMITED


def _database_goes_down(backend, database_url, make_app, smtp_port):
    """An app whose database can be taken away and given back: PostgreSQL through a proxy
    that is cut; SQLite held under an exclusive lock by another connection."""
    if backend == "postgresql":
        url = make_url(database_url)
        proxy = TcpProxy(url.port or 5432).start()
        app = make_app(database_url=url.set(host="127.0.0.1", port=proxy.port)
                       .render_as_string(hide_password=False), mail_port=smtp_port,
                       **UNLIMITED)
        return app, proxy.cut, proxy.start
    app = make_app(mail_port=smtp_port, database_sqlite_busy_timeout_ms=50, **UNLIMITED)
    holder = sqlite3.connect(make_url(database_url).database, isolation_level=None)

    def lock():
        holder.execute("BEGIN EXCLUSIVE")

    def unlock():
        holder.execute("COMMIT")

    return app, lock, unlock


def test_a_hundred_requests_while_the_database_is_down_are_all_stored_once(
        backend, database_url, make_app, smtp_server, tmp_path):
    from tests.intake.conftest import Desk

    app, take_down, bring_back = _database_goes_down(backend, database_url, make_app,
                                                     smtp_server[0])
    desk = Desk(app, smtp_server[1])
    client = app.test_client()
    assert client.post("/api/v1/requests", json={"email": "before@example.org",
                                                 "message": "up"}).status_code == 202
    take_down()
    references = []
    for n in range(100):
        response = client.post("/api/v1/requests", json={
            "email": f"down{n}@example.org", "message": f"while down {n}"})
        assert response.status_code == 202, response.get_data(as_text=True)
        assert set(response.get_json()) == {"reference", "status", "message"}
        references.append(response.get_json()["reference"])
    spooled = desk.intake.spool.pending()
    assert len(spooled) == 100
    assert all(b"down" not in path.read_bytes() for path in spooled)  # sealed on disk
    bring_back()
    assert desk.replay() == 100
    assert desk.replay() == 0 and desk.intake.spool.pending() == []
    with session_scope(desk.engine) as session:
        stored = session.exec(select(SupportRequest.reference)).all()
        emails = session.exec(select(func.count()).select_from(OutboxMessage)).one()
    assert sorted(stored) == sorted(references + [_first(stored, references)])
    assert len(stored) == len(set(stored)) == 101
    assert emails == 101  # one verification email each, queued once
    assert desk.deliver().sent == 101


def _first(stored, references):
    (first,) = set(stored) - set(references)
    return first


def test_a_replay_interrupted_after_storing_does_not_store_twice(desk, desk_client):
    from contacts.intake import service

    reference = desk.submit(desk_client, email="once@example.org", message="x").get_json()[
        "reference"]
    with session_scope(desk.engine) as session:
        request = service.get_by_reference(session=session, reference=reference)
        record = {"id": request.id, "reference": reference,
                  "received_at": request.received_at.isoformat(), "locale": "en",
                  "severity": "normal", "email": "once@example.org", "message": "x",
                  "name": None, "company": None, "site": None, "phone": None, "code": "123456"}
    desk.intake.spool.put(reference, record)  # stored, but the file was never removed
    assert desk.replay() == 0
    assert desk.intake.spool.pending() == []
    with session_scope(desk.engine) as session:
        assert session.exec(select(func.count()).select_from(SupportRequest)).one() == 1


def test_a_damaged_spool_file_is_set_aside_and_the_others_go_through(desk, desk_client):
    from contacts.db import utcnow
    from contacts.intake import service
    from contacts.intake.schemas import RequestIn

    good = service.draft_request(RequestIn(email="g@example.org", message="ok"), locale="en",
                                 now=utcnow())
    desk.intake.spool.put(good.reference, good.as_record())
    bad = desk.intake.spool.put("LL-2222-2222", {"x": 1})
    bad.write_bytes(bad.read_bytes()[:-3] + b"AAA")
    assert desk.replay() == 1
    assert (bad.with_suffix(".bad")).exists()
    assert desk.request(good.reference).verification == "unverified"
