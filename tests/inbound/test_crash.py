"""A real reader process (`flask --app app inbound read`) over 1,000 messages, killed with
SIGKILL at random moments while it works, then run to the end: every message is stored
exactly once, acted on once by the mailroom (each, a new request) and lands in Done exactly
once; nothing is left in INBOX or Failed. And the
command's own answers: one line and exit 2 for a mailbox it does not know or cannot reach."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import func
from sqlmodel import Session, select

from contacts.inbound.mailbox import MESSAGE_ID_PURPOSE, message_id_of
from contacts.inbound.models import InboundMessage
from contacts.intake.models import SupportRequest
from tests.inbound.messages import customer_message, message_id

ROOT = Path(__file__).resolve().parents[2]
DONE, FAILED = "Lifeline.Done", "Lifeline.Failed"
MESSAGES = 1000
KILLS = 5


def reader_env(database_url, keys_dir, dovecot, tmp_path, *, port=None) -> dict[str, str]:
    """The environment of a Lifeline process that reads the test Dovecot over STARTTLS,
    trusting its certificate as a system authority (SSL_CERT_FILE)."""
    config = tmp_path / "inbound.toml"
    config.write_text(
        "[inbound]\nmailboxes = [{ name = \"support\", host = \"127.0.0.1\", "
        f"port = {port or dovecot.imap_port}, security = \"starttls\", "
        f"username = \"{dovecot.user}\" }}]\ntimeout_seconds = 5\n")
    return {**{k: v for k, v in os.environ.items() if not k.startswith("LIFELINE_")},
            "DATABASE_URL": database_url, "LIFELINE_SECRETS_KEYS_DIR": str(keys_dir),
            "LIFELINE_CONFIG": str(config), "LIFELINE_INBOUND_SUPPORT_PASSWORD": dovecot.password,
            "SSL_CERT_FILE": str(dovecot.cert_file),
            "LIFELINE_INTAKE_SPOOL_DIR": str(tmp_path / "spool"),
            "LIFELINE_BACKUP_DIR": str(tmp_path / "backups")}


def inbound_read(env, *args, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "inbound", "read",
                             *args], cwd=ROOT, env=env, **popen)


def stored(engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(InboundMessage)).one()


def test_a_reader_killed_at_random_moments_processes_each_message_exactly_once(
        engine, crypto, dovecot, database_url, service_keys_dir, tmp_path):
    sent = [customer_message(number, attachment_bytes=20_000 if number % 50 == 0 else 0)
            for number in range(MESSAGES)]
    dovecot.append(sent)
    env = reader_env(database_url, service_keys_dir, dovecot, tmp_path)
    chance = random.Random()
    killed_while_working = 0
    for _ in range(KILLS):
        before = stored(engine)
        reader = inbound_read(env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while stored(engine) == before and reader.poll() is None:
            assert time.monotonic() < deadline, "the reader stored nothing in 60 s"
            time.sleep(0.01)
        time.sleep(chance.uniform(0, 0.5))  # somewhere in the middle of its work
        if reader.poll() is None:
            killed_while_working += 1
        reader.send_signal(signal.SIGKILL)
        reader.wait(timeout=30)
        if dovecot.count("INBOX") == 0:
            break
    assert killed_while_working >= 2  # the kills did land while it worked
    final = inbound_read(env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()
    assert out.decode().startswith("support: ") and " 0 failed" in out.decode()

    digests = {crypto.index.digest(MESSAGE_ID_PURPOSE, message_id(n)): n for n in range(MESSAGES)}
    with Session(engine) as session:
        rows = session.exec(select(InboundMessage.message_id_digest, InboundMessage.state)).all()
        requests = session.exec(select(InboundMessage.request_id)).all()
        stored_requests = session.exec(select(func.count()).select_from(SupportRequest)).one()
    assert Counter(digest for digest, _ in rows) == Counter(list(digests))  # each once
    assert {state for _, state in rows} == {"processed"}
    # What the mailroom did happened once per message too: one request each, none twice.
    assert len(set(requests)) == MESSAGES == stored_requests and None not in requests
    in_done = Counter(message_id_of(raw) for raw in dovecot.messages(DONE))
    assert in_done == Counter(message_id(n) for n in range(MESSAGES))
    assert dovecot.count("INBOX") == 0 and dovecot.count(FAILED) == 0


def test_the_command_reads_with_progress_and_says_what_it_did(dovecot, database_url,
                                                              service_keys_dir, tmp_path,
                                                              engine):
    dovecot.append([customer_message(n) for n in range(3)])
    env = reader_env(database_url, service_keys_dir, dovecot, tmp_path)
    done = inbound_read(env, "--mailbox", "support", stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err.decode()
    assert out.decode().splitlines() == [
        out.decode().splitlines()[0]]  # one line a mailbox
    assert out.decode().startswith("support: 3 read, 3 processed, 0 known already, 0 failed")
    assert "Reading support" in err.decode()  # the progress bar's label (stderr)
    assert stored(engine) == 3 and dovecot.count(DONE) == 3


def test_an_unknown_mailbox_or_an_unreachable_server_is_one_line_and_exit_2(
        dovecot, database_url, service_keys_dir, service_secrets, tmp_path):
    env = reader_env(database_url, service_keys_dir, dovecot, tmp_path)
    unknown = inbound_read(env, "--mailbox", "sales", stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    said = unknown.communicate(timeout=120)[0].decode().strip().splitlines()
    assert unknown.returncode == 2
    assert said == ["Error: no inbound mailbox named 'sales' (configured: support)"]
    closed = reader_env(database_url, service_keys_dir, dovecot, tmp_path, port=1)
    unreachable = inbound_read(closed, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    said = unreachable.communicate(timeout=120)[0].decode().strip().splitlines()
    assert unreachable.returncode == 2
    assert said == ["Error: mailbox 'support' at 127.0.0.1:1: unreachable (Connection refused)"]
