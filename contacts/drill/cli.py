"""`flask --app app drill run`: the incident drill, against a local Lifeline of its own (a
scratch database, by default) or a running one (--url and --token)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click
from flask.cli import with_appcontext

from contacts.core.errors import CliError, cli_errors
from contacts.core.services import services
from contacts.drill.client import Client, DrillHttpError
from contacts.drill.local import LocalLifeline
from contacts.drill.mailstore import Mailstore, MailstoreUnavailable
from contacts.drill.report import Report
from contacts.drill.run import Drill, Options, scan_bytes
from contacts.drill.sink import Sink


@click.group("drill", help="Rehearse an incident end to end against Lifeline.")
def drill_group():
    pass


@dataclass(frozen=True)
class Target:
    url: str | None
    token: str | None
    database_url: str | None  # local drills: a PostgreSQL server for the scratch database
    smtp_port: int
    redis_url: str | None = None  # local drills: the rate limiter's storage, then scanned


def run_drill(options: Options, target: Target, settings, *, workdir: Path) -> Report:
    """Run one drill and judge it against `settings`' targets. The drill's own Lifeline
    and Dovecot, when it starts them, are stopped (the scratch database dropped, the
    mailbox removed) however it ends."""
    sink = Sink()
    sink_port = sink.start(target.smtp_port)
    local = mailstore = None
    try:
        if target.url:
            client = Client(target.url, target.token)
            report = Report(target=target.url)
            scan = None
        else:
            mailstore = Mailstore()
            mailstore.start()
            local = LocalLifeline(workdir=workdir, smtp_port=sink_port,
                                  database_url=target.database_url,
                                  redis_url=target.redis_url, mailstore=mailstore)
            token = local.start()
            client = Client(local.base_url, token)
            backend = "PostgreSQL" if target.database_url else "SQLite"
            report = Report(target=f"a local Lifeline on a scratch {backend} database")

            def scan(values: list[str]):
                local.stop()  # everything written and closed before it is read
                return scan_bytes(values, {"database": local.stored_bytes(),
                                           **local.files_at_rest(), **local.limiter_keys()})
        Drill(client=client, sink=sink, options=options, report=report, scan=scan,
              mailstore=mailstore).run()
    finally:
        if local is not None:
            local.stop()
            local.drop_database()
            local.drop_limiter_keys()
        if mailstore is not None:
            mailstore.stop()
        sink.stop()
    report.judge(settings)
    return report


@drill_group.command("run")
@click.option("--url", default=None, help="A running Lifeline to drill (default: start one "
              "on a scratch database). It must send its mail to --smtp-port on 127.0.0.1 and "
              "trust one proxy hop (server.proxy_hops = 1).")
@click.option("--token", default=None, envvar="LIFELINE_DRILL_TOKEN",
              help="With --url: an API token holding every scope (or LIFELINE_DRILL_TOKEN).")
@click.option("--database-url", default=None, help="Local drills: a PostgreSQL server URL "
              "on which a scratch database is created and dropped (default: a SQLite file).")
@click.option("--redis-url", default=None, help="Local drills: keep the rate limiter's "
              "counters in this Redis (e.g. redis://127.0.0.1:6379/15), so the plaintext scan "
              "reads its keys too (default: in the server's memory, not scanned).")
@click.option("--smtp-port", type=int, default=0, help="Port of the drill's SMTP sink "
              "(default: a free one).")
@click.option("--sites", type=click.IntRange(1, 100_000), default=883, show_default=True)
@click.option("--accounts", type=click.IntRange(1, 100_000), default=775, show_default=True)
@click.option("--stale-share", type=click.FloatRange(0, 0.9), default=0.1, show_default=True,
              help="Share of contacts whose mailbox is gone.")
@click.option("--requests", type=click.IntRange(5, 10_000), default=None,
              help="People at the public form (default: 40% of the accounts, at most 300).")
@click.option("--waves", type=click.IntRange(1, 50), default=5, show_default=True)
@click.option("--cadence-seconds", type=click.FloatRange(2, 3600), default=20.0,
              show_default=True, help="Promised time between updates.")
@click.option("--seed", type=int, default=2022, show_default=True)
@click.option("--report-json", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--report-md", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--keep", "keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Local drills: keep the instance's folder (database, server log, backups) "
                   "here instead of removing it.")
@with_appcontext
@cli_errors
def run(url, token, database_url, redis_url, smtp_port, sites, accounts, stale_share, requests,
        waves, cadence_seconds, seed, report_json, report_md, keep):
    """Replay the 2022 deletion: load, back up, lose the product, take the crowd, open the
    incident, update until every site is restored, answer and bounce the first update by
    mail (local drills), restore the vault, scan for plaintext.
    Exit code 0 when every target in [drill] is met, 1 when one is missed."""
    if sites < accounts:
        raise CliError(f"--sites ({sites}) must be at least --accounts ({accounts}): every "
                       "account has a site")
    if url and not token:
        raise CliError("--url needs --token (or LIFELINE_DRILL_TOKEN): an API token with "
                       "every scope")
    if url and database_url:
        raise CliError("--database-url is for local drills; a running Lifeline has its own")
    if url and redis_url:
        raise CliError("--redis-url is for local drills; a running Lifeline has its own")
    options = Options(sites=sites, accounts=accounts, stale_share=stale_share,
                      requests=requests, waves=waves, cadence_seconds=cadence_seconds,
                      seed=seed)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        if any(keep.iterdir()):
            raise CliError(f"--keep {keep} is not empty")
    workdir = keep or Path(tempfile.mkdtemp(prefix="lifeline-drill-"))
    try:
        report = run_drill(options, Target(url, token, database_url, smtp_port, redis_url),
                           services().settings, workdir=workdir)
    except DrillHttpError as exc:
        raise CliError(f"the drill stopped: {exc}") from None
    except MailstoreUnavailable as exc:
        raise CliError(f"a local drill reads mail through its own Dovecot: {exc}") from None
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    markdown = report.as_markdown()
    click.echo(markdown)
    if report_json:
        report_json.write_text(report.as_json() + "\n")
    if report_md:
        report_md.write_text(markdown)
    sys.exit(0 if report.all_targets_met else 1)
