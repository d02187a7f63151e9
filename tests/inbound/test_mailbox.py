"""The mailbox reader against a real Dovecot, on SQLite and PostgreSQL: what a pass stores
(sealed), where each message ends (Done, Failed), what is known already, and the ways in
(STARTTLS, TLS, certificates checked)."""

from __future__ import annotations

import logging
import ssl

import pytest
from sqlmodel import Session, select

from contacts.core.mailboxes import Mailbox
from contacts.inbound import imap
from contacts.inbound.imap import MailboxUnavailable
from contacts.inbound.mailbox import (
    MESSAGE_ID_PURPOSE,
    ReaderSettings,
    message_id_of,
    read_mailbox,
)
from contacts.inbound.models import InboundMessage, open_raw
from tests.helpers import stored_bytes
from tests.inbound.conftest import mailbox_of
from tests.inbound.messages import customer_message, message_id, phrase, sender

# Dovecot's Maildir separates levels with ".": the reader's "Lifeline/Done" is this there.
DONE, FAILED = "Lifeline.Done", "Lifeline.Failed"


def rows(engine) -> list[InboundMessage]:
    with Session(engine) as session:
        return list(session.exec(select(InboundMessage).order_by(InboundMessage.uid)))


def test_each_message_is_stored_sealed_and_moved_to_done(engine, crypto, dovecot, mailbox,
                                                         reader, caplog):
    caplog.set_level(logging.DEBUG)
    sent = [customer_message(number, attachment_bytes=3000 if number % 5 == 0 else 0)
            for number in range(20)]
    dovecot.append(sent)
    report = read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox, reader=reader,
                          ssl_context=dovecot.ssl_context())
    assert (report.read, report.processed, report.duplicates, report.failed) == (20, 20, 0, 0)
    assert dovecot.count("INBOX") == 0 and dovecot.count(FAILED) == 0
    assert dovecot.messages(DONE) == sent  # moved whole, in order, nothing altered
    stored = rows(engine)
    assert [row.state for row in stored] == ["processed"] * 20
    assert {row.outcome for row in stored} == {"stored"}
    assert [open_raw(crypto.cipher, row.raw_encrypted) for row in stored] == sent
    assert [row.message_id_digest for row in stored] == [
        crypto.index.digest(MESSAGE_ID_PURPOSE, message_id(number)) for number in range(20)]
    assert all(row.mailbox == "test" and row.uidvalidity > 0 for row in stored)
    database = stored_bytes(engine)
    assert b"inm_" in database  # the scan does see the rows
    secrets = [phrase(n) for n in range(20)] + [sender(n) for n in range(20)] + [
        message_id(n).strip("<>") for n in range(20)] + [f"ticket walrus-{n})" for n in range(20)]
    assert [value for value in secrets if value.encode() in database] == []
    assert [value for value in secrets if value in caplog.text] == []


@pytest.mark.parametrize("security", ["tls", "starttls", "none"])
def test_each_kind_of_connection_reads_the_mailbox(engine, crypto, dovecot, reader, security):
    dovecot.append([customer_message(1), customer_message(2)])
    report = read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox_of(dovecot, security),
                          reader=reader, ssl_context=dovecot.ssl_context())
    assert report.processed == 2 and dovecot.count(DONE) == 2 and dovecot.count("INBOX") == 0


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_a_certificate_nobody_vouches_for_is_refused(engine, crypto, dovecot, reader, security):
    dovecot.append(customer_message(1))
    with pytest.raises(MailboxUnavailable, match="TLS failed"):
        read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox_of(dovecot, security),
                     reader=reader, ssl_context=ssl.create_default_context())
    assert dovecot.count("INBOX") == 1 and rows(engine) == []


def test_a_wrong_password_or_a_closed_port_is_one_clear_error(engine, crypto, dovecot, reader):
    wrong = Mailbox(name="test", host="127.0.0.1", port=dovecot.imap_port, security="none",
                    username=dovecot.user, password="not the password")
    with pytest.raises(MailboxUnavailable) as refused:
        read_mailbox(engine=engine, crypto=crypto, mailbox=wrong, reader=reader)
    assert refused.value.message == (f"mailbox 'test' at 127.0.0.1:{dovecot.imap_port}: "
                                     "login refused")
    closed = Mailbox(name="test", host="127.0.0.1", port=1, security="none",
                     username=dovecot.user, password=dovecot.password)
    with pytest.raises(MailboxUnavailable, match="^mailbox 'test' at 127.0.0.1:1: unreachable"):
        read_mailbox(engine=engine, crypto=crypto, mailbox=closed, reader=reader)


def test_a_handler_error_lands_in_failed_and_the_next_message_is_still_processed(
        engine, crypto, dovecot, mailbox, reader, caplog):
    sent = [customer_message(number) for number in range(5)]
    dovecot.append(sent)
    handled = []

    def handle(session, row, raw):
        row.outcome = "reply"
        row.subject_encrypted = "should be rolled back"
        if phrase(2).encode() in raw:
            raise KeyError(sender(2))  # what it says must not reach the log or the row
        handled.append(message_id_of(raw))

    caplog.set_level(logging.INFO)
    report = read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox, reader=reader,
                          handle=handle, ssl_context=dovecot.ssl_context())
    assert (report.processed, report.failed) == (4, 1)
    assert handled == [message_id(n) for n in (0, 1, 3, 4)]
    assert dovecot.messages(FAILED) == [sent[2]]
    assert dovecot.messages(DONE) == [sent[n] for n in (0, 1, 3, 4)]
    assert dovecot.count("INBOX") == 0
    failed = [row for row in rows(engine) if row.state == "failed"]
    assert len(failed) == 1 and failed[0].error == "KeyError"
    assert failed[0].outcome is None and failed[0].subject_encrypted is None
    assert open_raw(crypto.cipher, failed[0].raw_encrypted) == sent[2]  # kept, sealed
    assert "KeyError" in caplog.text and sender(2) not in caplog.text


def test_a_message_over_max_message_bytes_goes_to_failed_unread(engine, crypto, dovecot,
                                                               mailbox):
    small, large = customer_message(1), customer_message(2, attachment_bytes=20_000)
    dovecot.append([small, large])
    reader = ReaderSettings(max_message_bytes=10_000, timeout_seconds=10)
    report = read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox, reader=reader,
                          ssl_context=dovecot.ssl_context())
    assert (report.processed, report.failed) == (1, 1)
    assert dovecot.messages(FAILED) == [large] and dovecot.messages(DONE) == [small]
    too_large = [row for row in rows(engine) if row.state == "failed"]
    assert [(row.error, row.raw_encrypted, row.size) for row in too_large] == [
        ("too large", None, len(large))]


def test_a_message_stored_before_a_crash_is_only_moved(engine, crypto, dovecot, mailbox,
                                                     reader, monkeypatch):
    """A crash after the commit and before the move: the next pass finds each message known
    by its UID and moves it, handling nothing again."""
    sent = [customer_message(number) for number in range(6)]
    dovecot.append(sent)
    with monkeypatch.context() as crash:
        crash.setattr(imap.ImapSession, "move", lambda self, uids, path: None)
        first = read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox, reader=reader,
                             ssl_context=dovecot.ssl_context())
    assert first.processed == 6 and dovecot.count("INBOX") == 6
    handled = []
    again = read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox, reader=reader,
                         handle=lambda session, row, raw: handled.append(raw),
                         ssl_context=dovecot.ssl_context())
    assert (again.read, again.processed, again.duplicates) == (6, 0, 6) and handled == []
    assert dovecot.messages(DONE) == sent and dovecot.count("INBOX") == 0
    assert len(rows(engine)) == 6


def test_the_same_message_delivered_again_is_known_by_its_message_id(engine, crypto, dovecot,
                                                                    mailbox, reader):
    first = customer_message(7)
    dovecot.append(first)
    read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox, reader=reader,
                 ssl_context=dovecot.ssl_context())
    dovecot.deliver(first)  # by Dovecot's own delivery agent: a new UID
    dovecot.deliver(customer_message(8))
    report = read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox, reader=reader,
                          ssl_context=dovecot.ssl_context())
    assert (report.processed, report.duplicates) == (1, 1)
    assert len(rows(engine)) == 2 and dovecot.count(DONE) == 3 and dovecot.count("INBOX") == 0


def test_a_failed_message_stored_before_a_crash_goes_back_to_failed(engine, crypto, dovecot,
                                                                  mailbox, monkeypatch):
    dovecot.append(customer_message(3, attachment_bytes=20_000))
    reader = ReaderSettings(max_message_bytes=10_000, timeout_seconds=10)
    with monkeypatch.context() as crash:
        crash.setattr(imap.ImapSession, "move", lambda self, uids, path: None)
        read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox, reader=reader,
                     ssl_context=dovecot.ssl_context())
    report = read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox, reader=reader,
                          ssl_context=dovecot.ssl_context())
    assert report.duplicates == 1 and dovecot.count(FAILED) == 1 and dovecot.count(DONE) == 0
    assert len(rows(engine)) == 1


def test_without_move_the_reader_copies_flags_and_expunges_those_uids(engine, crypto, dovecot,
                                                                     mailbox, reader):
    sent = [customer_message(number) for number in range(4)]
    dovecot.append(sent)
    session = imap.connect(mailbox, timeout=10, ssl_context=dovecot.ssl_context())
    try:
        assert "MOVE" in session.capabilities and "UIDPLUS" in session.capabilities
        session.capabilities = session.capabilities - {"MOVE"}
        report = read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox, reader=reader,
                              imap=session)
    finally:
        session.close()
    assert report.processed == 4
    assert dovecot.messages(DONE) == sent and dovecot.count("INBOX") == 0


def test_nothing_read_is_marked_seen(engine, crypto, dovecot, mailbox, reader):
    dovecot.append(customer_message(1))
    read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox, reader=reader,
                 ssl_context=dovecot.ssl_context())
    client = dovecot.connect()
    try:
        client.select('"' + DONE + '"', readonly=True)
        _, data = client.uid("FETCH", "1:*", "(FLAGS)")
    finally:
        client.logout()
    assert len(data) == 1 and b"\\Seen" not in data[0]


def test_an_empty_mailbox_is_a_pass_with_nothing_read(engine, crypto, dovecot, mailbox, reader):
    report = read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox, reader=reader,
                          ssl_context=dovecot.ssl_context())
    assert (report.read, report.processed) == (0, 0)
    assert {DONE, FAILED} <= set(dovecot.folders())  # created, for the people who look


def test_any_bytes_come_back_exactly_from_their_sealed_row(engine, crypto, dovecot, mailbox,
                                                         reader):
    """8-bit bodies in no charset at all (as old mailers send them) are stored byte for byte."""
    raw = (b"From: =?iso-8859-1?q?Ren=E9?= <rene@example.fr>\r\nTo: support@example.com\r\n"
           b"Subject: caf\xe9\r\nMessage-ID: <8bit@example.fr>\r\nContent-Type: text/plain\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\nd\xe9j\xe0 vu \xff\xfe \x80\r\n")
    dovecot.append(raw)
    read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox, reader=reader,
                 ssl_context=dovecot.ssl_context())
    (row,) = rows(engine)
    assert open_raw(crypto.cipher, row.raw_encrypted) == raw == dovecot.messages(DONE)[0]
    assert row.message_id_digest == crypto.index.digest(MESSAGE_ID_PURPOSE, "<8bit@example.fr>")
