"""Two readers on one mailbox at once (two workers), on SQLite and PostgreSQL: each
message is handled once, stored once and lands in Done once."""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy import func
from sqlmodel import Session, select

from contacts.inbound.mailbox import message_id_of, read_mailbox
from contacts.inbound.models import InboundMessage
from tests.inbound.messages import customer_message, message_id

DONE = "Lifeline.Done"
COUNT = 300


def test_two_readers_at_once_process_each_message_once(engine, crypto, dovecot, mailbox,
                                                       reader):
    dovecot.append([customer_message(number) for number in range(COUNT)])
    handled: list[str] = []
    lock = threading.Lock()
    both_listed = threading.Barrier(2, timeout=60)

    def handle(session, row, raw):
        row.outcome = "stored"
        with lock:
            handled.append(message_id_of(raw))

    reports, errors = [], []

    def run():
        try:
            # Each waits for the other to be connected, so both list the same messages.
            reports.append(read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox,
                                        reader=reader, handle=handle,
                                        ssl_context=dovecot.ssl_context(),
                                        progress=lambda done, total: done == 1
                                        and both_listed.wait()))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    readers = [threading.Thread(target=run) for _ in range(2)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join(timeout=300)
    assert errors == []
    assert sorted(handled) == sorted(message_id(n) for n in range(COUNT))  # each once
    assert sum(report.processed for report in reports) == COUNT
    assert all(report.read for report in reports)  # both took part
    with Session(engine) as session:
        stored = session.exec(select(func.count()).select_from(InboundMessage)).one()
    assert stored == COUNT
    done = Counter(message_id_of(raw) for raw in dovecot.messages(DONE))
    assert len(done) == COUNT and set(done.values()) == {1}
    assert dovecot.count("INBOX") == 0
