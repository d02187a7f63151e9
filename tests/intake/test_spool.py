"""Nothing is lost when our database is down: requests wait, encrypted, in the spool, and are
stored exactly once when it is back."""

from __future__ import annotations

import sqlite3
import time

from sqlalchemy import func
from sqlalchemy.engine import make_url
from sqlmodel import select

from contacts.core.db import session_scope
from contacts.core.services import services
from contacts.delivery.models import OutboxMessage
from contacts.intake.models import SupportRequest
from contacts.intake.service import Intake
from tests.helpers import TcpProxy
from tests.intake.conftest import UNLIMITED


def _database_goes_down(backend, database_url, make_app, smtp_port, retry_seconds=3600):
    """An app whose database can be taken away and given back: PostgreSQL through a proxy
    that is cut; SQLite held under an exclusive lock by another connection. Its own replay
    retries every `retry_seconds` (by default not within a test: the test replays)."""
    if backend == "postgresql":
        url = make_url(database_url)
        proxy = TcpProxy(url.port or 5432).start()
        app = make_app(database_url=url.set(host="127.0.0.1", port=proxy.port)
                       .render_as_string(hide_password=False), mail_port=smtp_port,
                       intake_spool_retry_seconds=retry_seconds, **UNLIMITED)
        return app, proxy.cut, proxy.start
    app = make_app(mail_port=smtp_port, database_sqlite_busy_timeout_ms=50,
                   intake_spool_retry_seconds=retry_seconds, **UNLIMITED)
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
    from contacts.intake.references import get_by_reference

    reference = desk.submit(desk_client, email="once@example.org", message="x").get_json()[
        "reference"]
    with session_scope(desk.engine) as session:
        request = get_by_reference(session=session, reference=reference)
        record = {"id": request.id, "reference": reference,
                  "received_at": request.received_at.isoformat(), "locale": "en",
                  "severity": "normal", "email": "once@example.org", "message": "x",
                  "name": None, "company": None, "site": None, "phone": None, "code": "123456"}
    desk.intake.spool.put(reference, record)  # stored, but the file was never removed
    assert desk.replay() == 0
    assert desk.intake.spool.pending() == []
    with session_scope(desk.engine) as session:
        assert session.exec(select(func.count()).select_from(SupportRequest)).one() == 1


def test_a_damaged_spool_file_is_left_in_place_and_the_others_go_through(desk, desk_client):
    from contacts.core.db import utcnow
    from contacts.intake.schemas import RequestIn
    from contacts.intake.writer import draft_request

    good = draft_request(RequestIn(email="g@example.org", message="ok"), locale="en",
                         now=utcnow())
    desk.intake.spool.put(good.reference, good.as_record())
    bad = desk.intake.spool.put("LL-2222-2222", {"x": 1})
    bad.write_bytes(bad.read_bytes()[:-3] + b"AAA")
    damaged = bad.read_bytes()
    assert desk.replay() == 1
    assert bad.read_bytes() == damaged and not bad.with_suffix(".bad").exists()
    assert desk.request(good.reference).verification == "unverified"
    assert desk.intake.spool.unreadable() == {"LL-2222-2222.req": "DecryptionFailed"}


# -- a web process replays its own spool; other keys leave it alone ---------------------


def _stored(engine, reference: str) -> bool:
    with session_scope(engine) as session:
        return session.exec(select(SupportRequest.id).where(
            SupportRequest.reference == reference)).first() is not None


def _eventually(check, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_a_web_process_stores_what_it_spooled_once_the_database_is_back(
        backend, database_url, make_app, smtp_server):
    app, take_down, bring_back = _database_goes_down(backend, database_url, make_app,
                                                     smtp_server[0], retry_seconds=0.2)
    assert "lifeline.scheduler" not in app.extensions  # no scheduler, no intake job here
    client = app.test_client()
    take_down()
    references = [client.post("/api/v1/requests", json={
        "email": f"web{n}@example.org", "message": "down"}).get_json()["reference"]
        for n in range(3)]
    spool = services(app).get(Intake).spool
    assert len(spool.pending()) == 3
    bring_back()  # no restart, no replay call, no further request
    engine = services(app).engine
    assert _eventually(lambda: not spool.pending())
    assert all(_stored(engine, reference) for reference in references)


def test_the_next_stored_request_replays_the_spool_too(backend, database_url, make_app,
                                                       smtp_server):
    app, take_down, bring_back = _database_goes_down(backend, database_url, make_app,
                                                     smtp_server[0])
    client = app.test_client()
    take_down()
    waiting = client.post("/api/v1/requests", json={"email": "w@example.org",
                                                    "message": "down"}).get_json()["reference"]
    bring_back()
    client.post("/api/v1/requests", json={"email": "x@example.org", "message": "up"})
    spool = services(app).get(Intake).spool
    assert _eventually(lambda: not spool.pending())
    assert _stored(services(app).engine, waiting)


def test_a_process_with_other_keys_leaves_the_spool_alone_and_healthz_says_so(
        make_app, tmp_path, caplog):
    from contacts.core.db import utcnow
    from contacts.core.settings import load_secrets
    from contacts.intake.schemas import RequestIn
    from contacts.intake.writer import draft_request

    owner = make_app(**UNLIMITED)
    spool = services(owner).get(Intake).spool
    draft = draft_request(RequestIn(email="kept@example.org", message="x"),
                          locale="en", now=utcnow())
    path = spool.put(draft.reference, draft.as_record())
    sealed = path.read_bytes()

    other_keys = load_secrets(tmp_path / "other-keys", {}, generate=True)
    stranger = make_app(secrets=other_keys, **UNLIMITED)  # a CLI run, then a web process
    health = stranger.test_client().get("/healthz")
    report = health.get_json()
    assert health.status_code == 200 and report["status"] == "degraded"
    assert report["spool"] == {"ok": False, "waiting": 1, "unreadable": 1}
    assert draft.reference not in health.get_data(as_text=True)  # counts only, in public
    assert f"{draft.reference}.req cannot be read" in caplog.text  # the name is in the log
    assert path.read_bytes() == sealed
    assert sorted(p.name for p in spool.directory.iterdir() if not p.name.startswith(".")) == [
        f"{draft.reference}.req"]

    assert owner.test_client().get("/healthz").get_json()["spool"]["ok"] is True
    assert _eventually(lambda: not spool.pending())  # the owner's writer stores it
    assert _stored(services(owner).engine, draft.reference)
