"""`[inbound]`: what a mailbox entry must say, where its password comes from, and the one
clear line a wrong setting gets."""

from __future__ import annotations

import pytest

from contacts.core.errors import ConfigError
from contacts.core.mailboxes import Mailbox
from contacts.core.settings import load_settings

SUPPORT = {"name": "support", "host": "imap.example.com", "username": "support@example.com"}
PASSWORD = {"LIFELINE_INBOUND_SUPPORT_PASSWORD": "s3cret imap"}


def settings(mailboxes, environ=PASSWORD, secrets=None, **more):
    overrides = {"inbound_mailboxes": mailboxes, **more}
    if secrets is not None:
        overrides["secrets"] = secrets
    return load_settings(overrides, environ=dict(environ))


def test_inbound_is_off_by_default(service_secrets):
    loaded = load_settings({"secrets": service_secrets}, environ={})
    assert loaded.inbound_mailboxes == ()
    assert (loaded.inbound_done_folder, loaded.inbound_failed_folder) == ("Lifeline/Done",
                                                                         "Lifeline/Failed")
    assert (loaded.inbound_poll_seconds, loaded.inbound_idle) == (30, True)
    assert loaded.inbound_max_message_bytes == 40 * 1024 * 1024
    assert loaded.inbound_attachment_max_bytes == 10 * 1024 * 1024
    assert loaded.inbound_trusted_authserv_ids == []


def test_a_mailbox_gets_its_defaults_and_its_password_from_the_environment(service_secrets):
    loaded = settings([SUPPORT], secrets=service_secrets)
    assert loaded.inbound_mailboxes == (Mailbox(
        name="support", host="imap.example.com", port=993, security="tls",
        username="support@example.com", folder="INBOX", password="s3cret imap"),)
    assert "s3cret" not in repr(loaded.inbound_mailboxes)
    starttls = settings([{**SUPPORT, "security": "starttls"}], secrets=service_secrets)
    assert starttls.inbound_mailboxes[0].port == 143


def test_the_password_may_come_from_a_file(service_secrets, tmp_path):
    (tmp_path / "imap").write_text("from a file\n")
    loaded = settings([SUPPORT], {"LIFELINE_INBOUND_SUPPORT_PASSWORD_FILE":
                                  str(tmp_path / "imap")}, secrets=service_secrets)
    assert loaded.inbound_mailboxes[0].password == "from a file"


@pytest.mark.parametrize(("mailboxes", "environ", "said"), [
    ([SUPPORT], {}, "inbound mailbox 'support' has no password: set "
     "LIFELINE_INBOUND_SUPPORT_PASSWORD or LIFELINE_INBOUND_SUPPORT_PASSWORD_FILE"),
    (["support"], PASSWORD, "inbound mailboxes entry 1 must be a table such as"),
    ([{**SUPPORT, "name": "sup-port"}], PASSWORD,
     "inbound mailboxes entry 1 needs a name of letters, digits and _"),
    ([{**SUPPORT, "security": "ssl"}], PASSWORD,
     "inbound mailbox 'support': security must be one of none, starttls, tls, got 'ssl'"),
    ([{**SUPPORT, "port": 70000}], PASSWORD, "inbound mailbox 'support': port must be 1 to"),
    ([{**SUPPORT, "password": "x"}], PASSWORD,
     "inbound mailboxes entry 1 has unknown keys password"),
    ([{**SUPPORT, "host": ""}], PASSWORD, "inbound mailbox 'support': host must be a non-empty"),
    ([{k: v for k, v in SUPPORT.items() if k != "username"}], PASSWORD,
     "inbound mailbox 'support': username must be a non-empty text, got None"),
    ([SUPPORT, {**SUPPORT, "name": "SUPPORT"}], PASSWORD,
     "inbound mailboxes name 'SUPPORT' twice"),
    ([{**SUPPORT, "folder": "Lifeline/Done"}], PASSWORD,
     "inbound mailbox 'support' reads its folder 'Lifeline/Done'"),
])
def test_a_wrong_mailbox_is_one_clear_configuration_error(service_secrets, mailboxes, environ,
                                                          said):
    with pytest.raises(ConfigError) as refused:
        settings(mailboxes, environ, secrets=service_secrets)
    assert refused.value.message.startswith(said) and "\n" not in refused.value.message
    assert "s3cret" not in refused.value.message


@pytest.mark.parametrize(("more", "said"), [
    ({"inbound_poll_seconds": 0}, "inbound poll_seconds must be at least 1"),
    ({"inbound_max_message_bytes": 10}, "inbound max_message_bytes must be at least 1024"),
    ({"inbound_done_folder": "X", "inbound_failed_folder": "X"},
     "inbound done_folder and failed_folder must be two different"),
    ({"inbound_trusted_authserv_ids": ["mx.example.com", ""]},
     "inbound trusted_authserv_ids must be host names"),
    ({"inbound_results_below_received": "yes"},
     "setting 'inbound_results_below_received' in create_app overrides must be bool"),
])
def test_wrong_reader_settings_are_refused(service_secrets, more, said):
    with pytest.raises(ConfigError, match=f"^{said}"):
        settings([], secrets=service_secrets, **more)


def test_mailboxes_cannot_come_from_a_plain_environment_variable(service_secrets):
    with pytest.raises(ConfigError, match="must be a table"):
        load_settings({"secrets": service_secrets},
                      environ={"LIFELINE_INBOUND_MAILBOXES": "support"})
