"""Fixtures of the inbound tests: one real Dovecot per test process (started once, emptied
before each test), the mailbox settings that reach it (STARTTLS, TLS, none), and the
reader's settings."""

from __future__ import annotations

import pytest

from contacts.core.mailboxes import Mailbox
from contacts.core.services import services
from contacts.inbound.mailbox import ReaderSettings
from tests.helpers import IN_CI
from tests.inbound.dovecot import Dovecot, DovecotFailed, dovecot_missing, remove, start_dovecot


@pytest.fixture(scope="session")
def dovecot_server():
    missing = dovecot_missing()
    if missing:
        if IN_CI:
            pytest.fail(f"Dovecot is required with CI=true: {missing}", pytrace=False)
        pytest.skip(f"the inbound mail tests need Dovecot: {missing}")
    try:
        server = start_dovecot()
    except DovecotFailed as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    remove(server)


@pytest.fixture
def dovecot(dovecot_server) -> Dovecot:
    """The process's Dovecot with every folder empty and no Lifeline folder."""
    dovecot_server.empty()
    return dovecot_server


def mailbox_of(server: Dovecot, security: str = "starttls", name: str = "test") -> Mailbox:
    port = server.imaps_port if security == "tls" else server.imap_port
    return Mailbox(name=name, host="127.0.0.1", port=port, security=security,
                   username=server.user, password=server.password)


@pytest.fixture
def mailbox(dovecot) -> Mailbox:
    return mailbox_of(dovecot)


@pytest.fixture
def reader() -> ReaderSettings:
    return ReaderSettings(timeout_seconds=10)


@pytest.fixture
def crypto(app):
    return services(app).crypto
