"""The access logs: the path of each request, never its query string (lookups carry emails
and phones there), never the token of a link (confirmation, subscription, freshness links);
checked on a real `flask serve` process and a real gunicorn started as production does."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from contacts.system.cli import RequestLog

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Tokens as our links carry them: URL-safe base64, and itsdangerous' signed form with dots.
TOKENS = ["Qm9uZCwgSmFtZXMgQm9uZC4gMDA3LiBMaXZlIHRva2Vu", "eyJjIjoiY3RjXzAxIn0.Z4k2Qw.Sig-9f3a7c1e",
          "-_cM9xKw2pLq8R"]
REFERENCE = "LL-7KQ2-9XHD"


def test_the_access_log_leaves_the_query_string_out():
    handler = RequestLog.__new__(RequestLog)  # only what log_request reads
    handler.command, handler.request_version = "GET", "HTTP/1.1"
    handler.path = "/api/v1/contacts/lookup?email=ada%40example.com&phone=%2B33612000001"
    logged = []
    handler.log = lambda level, text, *args: logged.append(text % args)

    handler.log_request(200, 512)

    assert logged == ['"GET /api/v1/contacts/lookup HTTP/1.1" 200 512']
    assert handler.path.endswith("phone=%2B33612000001")  # the request itself is untouched


def link_requests() -> list[tuple[str, str, dict]]:
    """Every link that carries a token, each way a browser, a scanner or a script calls it."""
    calls = []
    for token in TOKENS:
        for path in (f"/requests/{REFERENCE}/confirm/{token}", f"/confirm/{token}",
                     f"/status/subscription/confirm/{token}",
                     f"/status/subscription/unsubscribe/{token}"):
            calls += [("GET", path, {}), ("POST", path, {}), ("PUT", path, {}),
                      ("GET", "/" + path, {}), ("GET", path + "?utm=mail", {}),
                      ("GET", "/static/lifeline.css", {"Referer": f"http://x.example{path}"})]
        calls.append(("GET", f"/requests/{REFERENCE}?t={token}", {}))
    return calls


def send(port: int, calls) -> list[int]:
    statuses = []
    for method, path, headers in calls:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        response.read()
        statuses.append(response.status)
        connection.close()
    return statuses


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_environment(database_url: str, tmp_path: Path) -> dict[str, str]:
    inherited = {name: value for name, value in os.environ.items()
                 if not name.startswith("LIFELINE_") and name not in ("DATABASE_URL", "PORT")}
    return {**inherited, "LIFELINE_ENV": "development", "LIFELINE_DATABASE_URL": database_url,
            "LIFELINE_SECRETS_KEYS_DIR": str(tmp_path / "keys"),
            "LIFELINE_INTAKE_SPOOL_DIR": str(tmp_path / "spool"),
            "LIFELINE_BACKUP_DIR": str(tmp_path / "backups"),
            "LIFELINE_SCHEDULER_ENABLED": "false"}


@contextmanager
def serving(command: list[str], port: int, environment: dict, log_path: Path):
    """Start the server with its output in log_path, wait for /healthz, and stop it after
    the block."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=environment, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            for _ in range(300):
                try:
                    if send(port, [("GET", "/healthz", {})]) == [200]:
                        break
                except OSError:
                    pass
                assert process.poll() is None, log_path.read_text()
                time.sleep(0.1)
            yield
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def serve_and_log(command: list[str], port: int, environment: dict, log_path: Path, calls):
    """Start the server, make the calls, stop it; its output and the statuses it answered."""
    with serving(command, port, environment, log_path):
        statuses = send(port, calls)
    return log_path.read_text(), statuses


def assert_no_token_logged(output: str, calls, statuses):
    assert 500 not in statuses, output[-3000:]
    for token in TOKENS:
        assert token not in output
    # The lines are there, with the rest of the path: the log still says what happened.
    for shown in (f"/requests/{REFERENCE}/confirm/…", "/confirm/…",
                  "/status/subscription/confirm/…", "/status/subscription/unsubscribe/…",
                  f'GET /requests/{REFERENCE} HTTP/1.1'):
        assert shown in output, (shown, output[-3000:])
    assert "utm=mail" not in output and "?t=" not in output


def test_flask_serve_keeps_link_tokens_out_of_its_access_log(database_url, tmp_path):
    port = free_port()
    calls = link_requests()
    output, statuses = serve_and_log(
        [sys.executable, "-m", "flask", "--app", "app", "serve", "--port", str(port)], port,
        server_environment(database_url, tmp_path), tmp_path / "serve.log", calls)
    assert output.count("/confirm/…") >= 4 * len(TOKENS), output[-3000:]
    assert_no_token_logged(output, calls, statuses)


def test_gunicorn_keeps_link_tokens_out_of_its_access_log(database_url, tmp_path):
    """Production: gunicorn with an access log, as an operator turns it on (its settings,
    gunicorn.conf.py in the project's root, pick the logger); the Referer is logged too."""
    port = free_port()
    calls = link_requests()
    output, statuses = serve_and_log(
        [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--access-logfile", "-", "app:app"], port,
        server_environment(database_url, tmp_path), tmp_path / "gunicorn.log", calls)
    assert output.count("/confirm/…") >= 4 * len(TOKENS), output[-3000:]
    assert_no_token_logged(output, calls, statuses)
    assert '"http://x.example/confirm/…"' in output  # the Referer, hidden the same way


@pytest.mark.parametrize("token", TOKENS, ids=["base64", "signed", "dashes"])
def test_an_error_on_a_link_logs_its_path_without_the_token(app, caplog, token):
    from contacts.core.access import public

    @app.get("/_boom/<reference>/confirm/<token>", endpoint="test_boom_link")
    @public
    def boom(reference, token):
        raise RuntimeError("link handler failed")

    response = app.test_client().get(f"/_boom/{REFERENCE}/confirm/{token}")
    assert response.status_code == 500
    assert f"unhandled error on GET /_boom/{REFERENCE}/confirm/…" in caplog.text
    assert token not in caplog.text


def absolute_form_targets(token: str) -> list[str]:
    """A token's link as a request line may carry it: absolute form (RAW_URI holds the whole
    URL then), with a port, userinfo, a doubled slash, a query, or a percent-encoded slash."""
    return [f"http://lifeline.example/confirm/{token}",
            f"https://lifeline.example:8443/requests/{REFERENCE}/confirm/{token}?utm=x",
            f"http://lifeline.example//confirm/{token}",
            f"http://user:pw@lifeline.example/status/subscription/unsubscribe/{token}",
            f"HTTP://LIFELINE.EXAMPLE/status/subscription/confirm/{token}#top",
            f"//confirm/{token}", f"/confirm/{token}?t={token}"]


@pytest.mark.parametrize("token", TOKENS, ids=["base64", "signed", "dashes"])
def test_an_absolute_form_request_target_is_logged_without_its_token(app, token):
    from contacts.core.accesslog import hide_secrets, logged_path

    for target in absolute_form_targets(token):
        for shown in (hide_secrets(app.url_map, target),
                      hide_secrets(app.url_map, target, "POST"),
                      logged_path({"RAW_URI": target, "REQUEST_METHOD": "GET",
                                   "lifeline.url_map": app.url_map})):
            assert token not in shown and "pw" not in shown and "utm" not in shown, shown
        outside = logged_path({"RAW_URI": target})  # no URL map: only the query goes
        assert "pw" not in outside and "utm" not in outside, outside
    assert hide_secrets(app.url_map, f"http://lifeline.example/confirm/{token}") == (
        "http://lifeline.example/confirm/…")
    assert hide_secrets(app.url_map, f"http://lifeline.example//confirm/{token}") == (
        "http://lifeline.example//confirm/…")
    assert hide_secrets(app.url_map, f"//confirm/{token}") == "//confirm/…"


def send_raw(port: int, targets: list[str]) -> list[bytes]:
    """Each target on its own request line over a raw socket, as http.client never sends."""
    answers = []
    for target in targets:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            connection.sendall(f"GET {target} HTTP/1.1\r\nHost: lifeline.example\r\n"
                               "Connection: close\r\n\r\n".encode("ascii"))
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        answers.append(answer.split(b"\r\n", 1)[0])
    return answers


def test_flask_serve_keeps_tokens_of_absolute_form_request_lines_out_of_its_log(
        database_url, tmp_path):
    port = free_port()
    targets = [target for token in TOKENS for target in absolute_form_targets(token)]
    command = [sys.executable, "-m", "flask", "--app", "app", "serve", "--port", str(port)]
    log_path = tmp_path / "serve.log"
    with serving(command, port, server_environment(database_url, tmp_path), log_path):
        answers = send_raw(port, targets)
    output = log_path.read_text()
    assert all(answer.startswith(b"HTTP/1.1 ") and b" 500 " not in answer
               for answer in answers), answers
    for token in TOKENS:
        assert token not in output, output[-3000:]
    assert "pw@" not in output and "utm=" not in output
    assert output.count("GET http://lifeline.example/confirm/… HTTP/1.1") == len(TOKENS)
    assert output.count("http://lifeline.example//confirm/…") == len(TOKENS), output[-3000:]
