"""The email lane's outcomes, committed by a thread while the pool keeps sending: what
arrived during the last commit, or within `LINGER` of the first outcome waiting, goes in
the next one (the sent ones as one UPDATE), so a busy lane commits every few messages
instead of once a message.

The backlog is held to `backlog` outcomes (the caller waits beyond it), so a sender killed
at any moment leaves at most that many, plus those being written, to be sent again, with
the same Message-ID. On PostgreSQL these commits do not wait for the WAL flush
(`synchronous_commit = off`): a killed sender loses nothing the server has, and only a
crash of the database server itself could forget the last fraction of a second.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection, Engine

from contacts.core.db import UTCDateTime, in_chunks

_AT = bindparam("at", type_=UTCDateTime)
# Each outcome of one message, in one statement (both lanes).
STATEMENTS = {
    "sent": text("UPDATE outbox_message SET state = 'sent', sent_at = :at, last_error = NULL, "
                 "failure = NULL, lease_until = NULL WHERE id = :id").bindparams(_AT),
    "retry": text("UPDATE outbox_message SET next_attempt_at = :at, last_error = :error, "
                  "failure = 'deferred', lease_until = NULL WHERE id = :id").bindparams(_AT),
    "failed": text("UPDATE outbox_message SET state = 'failed', last_error = :error, "
                   "failure = :failure, lease_until = NULL WHERE id = :id"),
}
# The sent ones of one moment, in one statement (the email lane).
_SENT_MANY = text("UPDATE outbox_message SET state = 'sent', sent_at = :at, last_error = NULL, "
                  "failure = NULL, lease_until = NULL WHERE id IN :ids").bindparams(
    _AT, bindparam("ids", expanding=True))


@contextmanager
def outcome_connection(engine: Engine) -> Iterator[Connection]:
    """A connection of its own for outcomes, each statement its own transaction; on
    PostgreSQL without waiting for the WAL flush (a killed sender loses nothing the server
    has). Never back to the pool with its settings changed."""
    postgresql = engine.dialect.name == "postgresql"
    with engine.connect() as held:
        connection = held.execution_options(isolation_level="AUTOCOMMIT")
        try:
            if postgresql:
                connection.exec_driver_sql("SET synchronous_commit TO off")
            yield connection
            if postgresql:
                connection.exec_driver_sql("RESET synchronous_commit")
        except BaseException:
            held.invalidate()
            raise

Record = Callable[[int, str, dict], None]
# Seconds the writer waits for more outcomes to commit with the first one waiting.
LINGER = 0.05


@contextmanager
def batched_writer(engine: Engine, backlog: int) -> Iterator[Record]:
    """`record(message_id, "sent" | "retry" | "failed", values)`, as `outbox._settle`
    calls it; every outcome recorded is committed when the block ends."""
    waiting: list[tuple[int, str, dict]] = []
    state = {"closing": False, "failure": None}
    changed = threading.Condition()

    def write() -> None:
        try:
            with outcome_connection(engine) as connection:
                while True:
                    with changed:
                        while not waiting and not state["closing"]:
                            changed.wait()
                        if not waiting:
                            break
                        # Let a few more arrive: one statement for several outcomes
                        # costs the database and us about what one costs.
                        changed.wait_for(lambda: len(waiting) >= backlog // 2
                                         or state["closing"], timeout=LINGER)
                        taken = list(waiting)
                    _commit(connection, taken)
                    with changed:
                        del waiting[:len(taken)]
                        changed.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the sender, which raises it
            with changed:
                state["failure"] = exc
                changed.notify_all()

    writer = threading.Thread(target=write, name="outbox-outcomes", daemon=True)
    writer.start()

    def record(message_id: int, name: str, values: dict) -> None:
        with changed:
            while len(waiting) >= backlog and state["failure"] is None:
                changed.wait()
            if state["failure"] is not None:
                raise state["failure"]
            waiting.append((message_id, name, values))
            if len(waiting) in (1, backlog // 2):  # what the writer waits for; no more
                changed.notify_all()

    try:
        yield record
    finally:
        with changed:
            state["closing"] = True
            changed.notify_all()
        writer.join()
    if state["failure"] is not None:
        raise state["failure"]


def _commit(connection: Connection, outcomes: list[tuple[int, str, dict]]) -> None:
    """One statement for the sent messages (per sending time), one per other outcome; each
    statement its own transaction."""
    sent: dict[object, list[int]] = {}
    for message_id, name, values in outcomes:
        if name == "sent":
            sent.setdefault(values["at"], []).append(message_id)
        else:
            connection.execute(STATEMENTS[name], {"id": message_id, **values})
    for at, ids in sent.items():
        for chunk in in_chunks(ids):
            connection.execute(_SENT_MANY, {"at": at, "ids": list(chunk)})
