"""The workers' watch over a mailbox (IDLE, or polling without it) and the scheduler's job,
against the real Dovecot: new mail is read at once, a lost server is retried, and the watch
stops cleanly."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from contacts import jobs
from contacts.core import scheduler
from contacts.core.services import services
from contacts.inbound.mailbox import store_only
from contacts.inbound.watch import MailboxWatcher
from tests.inbound.messages import customer_message

DONE = "Lifeline.Done"


def wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within a minute"
        time.sleep(0.05)


def watcher(engine, crypto, dovecot, mailbox, reader, **options) -> MailboxWatcher:
    return MailboxWatcher(engine=engine, crypto=crypto, mailbox=mailbox, reader=reader,
                          handle=store_only, ssl_context=dovecot.ssl_context(),
                          **{"poll_seconds": 3600, **options})


def test_with_idle_new_mail_is_read_as_it_arrives(engine, crypto, dovecot, mailbox, reader):
    dovecot.append(customer_message(1))
    watch = watcher(engine, crypto, dovecot, mailbox, reader)  # polling once an hour
    watch.start()
    try:
        wait_for(lambda: dovecot.count(DONE) == 1)  # the first pass, at once
        time.sleep(0.3)  # now idling
        dovecot.deliver(customer_message(2))
        wait_for(lambda: dovecot.count(DONE) == 2)  # woken by IDLE, not by the hourly poll
        assert watch.passes == 2
    finally:
        watch.stop()
    assert not watch._thread.is_alive()
    assert dovecot.count("INBOX") == 0


def test_without_idle_the_mailbox_is_polled(engine, crypto, dovecot, mailbox, reader):
    watch = watcher(engine, crypto, dovecot, mailbox, reader, idle=False, poll_seconds=0.2)
    watch.start()
    try:
        wait_for(lambda: watch.passes >= 1)
        dovecot.append(customer_message(3))
        wait_for(lambda: dovecot.count(DONE) == 1)
        assert watch.passes >= 2
    finally:
        watch.stop()
    assert not watch._thread.is_alive()


def test_a_server_that_cannot_be_reached_is_retried_and_the_watch_still_stops(
        engine, crypto, dovecot, mailbox, reader, caplog):
    caplog.set_level(logging.WARNING)
    watch = watcher(engine, crypto, dovecot, replace(mailbox, port=1), reader)
    watch.start()
    try:
        wait_for(lambda: "unreachable" in caplog.text)
    finally:
        watch.stop()
    assert not watch._thread.is_alive() and watch.passes == 0
    assert "inbound watch: mailbox 'test' at 127.0.0.1:1: unreachable" in caplog.text


def test_the_job_reads_each_configured_mailbox(make_app, dovecot, monkeypatch, tmp_path):
    monkeypatch.setenv("LIFELINE_INBOUND_SUPPORT_PASSWORD", dovecot.password)
    monkeypatch.setenv("SSL_CERT_FILE", str(dovecot.cert_file))
    app = make_app(inbound_mailboxes=[{
        "name": "support", "host": "127.0.0.1", "port": dovecot.imaps_port, "security": "tls",
        "username": dovecot.user}], inbound_poll_seconds=7)
    built = services(app)
    job, = [job for job in built.jobs if job.id == "inbound-mailboxes"]
    assert (job.func, job.seconds) == (jobs.read_inbound_mailboxes, 7)
    monkeypatch.setattr(scheduler, "_app", app)
    monkeypatch.setattr(scheduler, "_engine", built.engine)
    dovecot.append([customer_message(n) for n in range(3)])
    jobs.read_inbound_mailboxes()
    assert dovecot.count(DONE) == 3 and dovecot.count("INBOX") == 0
    watchers = [loop for loop in jobs.background_services(app)
                if isinstance(loop, MailboxWatcher)]
    assert [watch.mailbox.name for watch in watchers] == ["support"]


def test_without_mailboxes_there_is_no_job_and_no_watch(app):
    assert "inbound-mailboxes" not in {job.id for job in services(app).jobs}
    assert not any(isinstance(loop, MailboxWatcher) for loop in jobs.background_services(app))
