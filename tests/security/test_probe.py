"""Acceptance 2 of issue 16 in CI: the outsider probe against a Lifeline of its own, on
SQLite and on PostgreSQL, refuses every attack (exit 0, no FAIL and no SKIP line); and the
probe's own instruments measure what they claim to."""

import re
import socket
import subprocess
import sys
import time

from tests.helpers import ARTIFACTS
from tests.security.harness import (
    PROJECT_ROOT,
    Receiver,
    second_factor_form,
    totp,
    totp_secret_on,
)


def test_the_outsider_probe_finds_every_attack_refused(backend, request):
    server = request.getfixturevalue("postgresql_url") if backend == "postgresql" else None
    command = [sys.executable, "-m", "tests.security.probe",
               *(["--database-url", server] if server else [])]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=600)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"probe-{backend}.txt").write_text(done.stdout + "\n" + done.stderr)
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.startswith("FAIL")] == []
    assert [line for line in lines if line.startswith("SKIP")] == []
    assert "harness: " in done.stderr and "console signed in" in done.stderr
    assert done.returncode == 0, done.stderr[-3000:]
    summary = re.fullmatch(r"(\d+) passed, 0 failed", lines[-1])
    assert summary and int(summary.group(1)) == sum(1 for line in lines
                                                    if line.startswith("PASS"))
    assert int(summary.group(1)) >= 40  # every group ran its probes


def test_totp_codes_match_rfc_6238():
    secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # "12345678901234567890", the RFC's key
    assert totp(secret, at=59) == "287082"
    assert totp(secret, at=1111111109) == "081804"
    assert totp_secret_on(b'<img alt="otpauth://totp/Lifeline:a?secret=' + secret.encode()
                          + b'&amp;issuer=Lifeline">') == secret
    assert totp_secret_on(b"<code>GEZD GNBV GY3T QOJQ</code>") == "GEZDGNBVGY3TQOJQ"
    assert totp_secret_on(b'<svg><path d="M4 4h7"/></svg><input id="totp-secret" '
                          b'class="secret" readonly value="' + secret.encode() + b'">') == secret
    page = (b'<form method="post" action="/login"><input name="email"><input type="password" '
            b'name="password"></form><form method="post" action="/login/2fa">'
            b'<input type="hidden" name="csrf_token" value="abc"><input type="hidden" '
            b'name="next" value="/console/"><input name="totp_code" inputmode="numeric">'
            b"</form>")
    form, code_field = second_factor_form(page)
    assert (form.action, code_field) == ("/login/2fa", "totp_code")
    assert form.fields == {"csrf_token": "abc", "next": "/console/", "totp_code": ""}
    assert second_factor_form(page.split(b"</form>")[0]) is None  # a password is no code


def test_the_slow_receiver_answers_one_byte_a_second():
    receiver = Receiver(seconds=60)
    receiver.start()
    try:
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as client:
            client.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            received = client.recv(1)
            client.settimeout(0.2)  # far less than the receiver's second between two bytes
            silences = 0
            while len(received) < 3:
                try:
                    received += client.recv(16)
                except TimeoutError:
                    silences += 1
    finally:
        receiver.stop()
    assert received == b"HTT"  # one byte at a time, never the rest of the answer at once
    assert silences >= 2  # the caller waited between the bytes
    assert [call.path for call in receiver.calls] == ["/hook"]


def test_the_receiver_sees_a_caller_hang_up_and_sends_redirects_on():
    receiver = Receiver(seconds=60)
    receiver.start()
    receiver.redirect_to = "http://127.0.0.1:9/stolen"
    try:
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as client:
            client.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            assert client.recv(1) == b"H"
        deadline = time.monotonic() + 10
        while receiver.calls[0].closed_at is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert receiver.calls[0].closed_at is not None
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as client:
            client.sendall(b"POST /redirect HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            answer = client.recv(4096)
    finally:
        receiver.stop()
    assert answer.startswith(b"HTTP/1.1 302 ")
    assert b"Location: http://127.0.0.1:9/stolen\r\n" in answer
