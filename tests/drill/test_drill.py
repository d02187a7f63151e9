"""The release gate: a reduced incident drill, on SQLite and on PostgreSQL, must meet every
target in config/default.toml's [drill]. It runs a real Lifeline process, real SMTP, real
HTTP; a regression anywhere on the incident path (intake, matching, verification, triage,
updates, delivery, backups, encryption at rest) shows up here as a missed target."""

import json
import os
import subprocess
import sys

from contacts.core.settings import load_settings
from contacts.drill.cli import Target, run_drill
from contacts.drill.local import LocalLifeline, free_port
from contacts.drill.run import Options
from tests.helpers import ARTIFACTS, require_redis

REDUCED = Options(sites=50, accounts=40, requests=30, waves=3, cadence_seconds=4.0,
                  delivery_timeout=120.0)


REDIS = "redis://127.0.0.1:6379/15"  # the rate limiter's keys, scanned for plaintext


def test_the_reduced_drill_meets_every_target(backend, request, tmp_path):
    server = request.getfixturevalue("postgresql_url") if backend == "postgresql" else None
    require_redis(REDIS)
    report = run_drill(REDUCED, Target(url=None, token=None, database_url=server, smtp_port=0,
                                       redis_url=REDIS),
                       load_settings(), workdir=tmp_path)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"drill-{backend}.json").write_text(report.as_json())
    print(report.as_markdown())

    missed = [(c.figure, c.value, c.comparison, c.target) for c in report.checks if not c.met]
    assert missed == []
    assert report.all_targets_met
    checked = {check.figure for check in report.checks}
    assert "plaintext_hits" in checked  # a local drill scans its files...
    assert "rate-limit keys (Redis)" in report.plaintext_scanned  # ...and the limiter's keys
    assert report.bombing_refused > 0  # after the limits were hit (their log lines scanned)
    # The figures behind the targets are real counts, not empty sets.
    assert report.sites == 50 and report.accounts == 40
    assert report.requests_accepted >= 20 and report.requests_lost == 0
    assert report.requests_refused  # the abusive part of the crowd was refused (4xx)
    assert all(400 <= int(status) < 500 for status in report.requests_refused)
    assert report.same_answer_for_known_and_unknown
    assert report.verified == report.verifications_tried > 0
    assert report.authorized > 0
    assert report.updates_published == REDUCED.waves + 1
    assert report.admins_reached == report.admins_reachable > 0
    assert report.bounces > 0  # stale contacts' mailboxes refused mail...
    assert report.accounts_reached == report.accounts_reachable  # ...others were reached
    assert report.restore_curve[0][1] == 0.0 and report.restore_curve[-1][1] == 100.0
    assert report.vault_restore_ok and report.vault_restore_rows == report.backup_rows
    assert report.escalations_logged == report.escalations_under_their_account > 0
    # Mail came back: answers on their items, late bounces marked, the all-bounced account
    # handed to support to call, nothing Lifeline could not handle.
    assert report.inbound_run and {"replies_threaded_pct", "late_bounces_acted_pct"} <= checked
    assert report.replies_threaded == report.replies_sent >= 2
    assert report.late_bounces_acted == report.late_bounces_sent >= 3
    assert report.calls_opened == report.calls_expected == 1
    assert report.inbound_failed == 0
    document = json.loads(report.as_json())
    for key in ("requests_lost", "admins_reached_pct", "updates_missed", "all_targets_met"):
        assert key in document


def test_a_drill_against_a_running_lifeline_goes_through_its_url(backend, request, tmp_path):
    """`drill run --url --token --smtp-port`: the drill only talks to the URL it is given, and
    reads the mail that Lifeline sends to its sink."""
    server_url = request.getfixturevalue("postgresql_url") if backend == "postgresql" else None
    smtp_port = free_port()
    running = LocalLifeline(workdir=tmp_path / "running", smtp_port=smtp_port,
                            database_url=server_url)
    (tmp_path / "running").mkdir()
    token = running.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", "drill", "run",
             "--url", running.base_url, "--smtp-port", str(smtp_port), "--sites", "24",
             "--accounts", "20", "--requests", "12", "--waves", "2", "--cadence-seconds", "3",
             "--report-json", str(tmp_path / "report.json")],
            env={**os.environ, "LIFELINE_DRILL_TOKEN": token}, capture_output=True, text=True,
            timeout=600)
    finally:
        running.stop()
        running.drop_database()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["target"] == running.base_url
    assert report["all_targets_met"] and report["requests_lost"] == 0
    assert report["admins_reached_pct"] == 100.0 and report["updates_published"] == 3
    assert report["plaintext_hits"] is None  # a remote Lifeline's files are not the drill's
    assert "[8/8] Plaintext scan: not possible against a remote Lifeline" in done.stderr
    assert "[6/8] Inbound mail: not possible against a remote Lifeline" in done.stderr
    assert report["inbound_run"] is False and report["replies_threaded_pct"] is None
    assert {check["figure"] for check in report["checks"]}.isdisjoint(
        {"replies_threaded_pct", "late_bounces_acted_pct"})
