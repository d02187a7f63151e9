"""`flask --app app db ...`, `flask --app app serve` and `flask --app app worker`."""

from __future__ import annotations

import signal
import threading

import click
from flask import current_app
from flask.cli import with_appcontext
from werkzeug.serving import run_simple

from contacts.errors import CliError, cli_errors
from contacts.jobs import scheduled_jobs
from contacts.scheduler import SchedulerRunner
from contacts.system import service


def _engine():
    return current_app.extensions["lifeline.engine"]


@click.group("db", help="Database migrations (Alembic).")
def db_group():
    pass


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
@cli_errors
def upgrade(revision: str):
    """Apply migrations up to REVISION (default: the latest)."""
    service.upgrade_database(_engine(), revision)
    click.echo(f"database at revision {service.database_revision(_engine())}")


@db_group.command("downgrade")
@click.argument("revision")
@with_appcontext
@cli_errors
def downgrade(revision: str):
    """Revert migrations down to REVISION ("base" empties the schema)."""
    service.downgrade_database(_engine(), revision)
    click.echo(f"database at revision {service.database_revision(_engine()) or 'base'}")


@db_group.command("current")
@with_appcontext
def current():
    """Show the database's revision and the latest one."""
    click.echo(f"database: {service.database_revision(_engine()) or 'empty'}; "
               f"latest: {service.head_revision(_engine())}")


def _start_background(app) -> SchedulerRunner | None:
    settings = app.extensions["lifeline.settings"]
    if not settings.scheduler_enabled:
        return None
    runner = SchedulerRunner(app.extensions["lifeline.engine"], scheduled_jobs(settings))
    runner.start()
    app.extensions["lifeline.scheduler"] = runner
    return runner


@click.command("serve")
@click.option("--host", default=None, help="Address to listen on (default: [server] host).")
@click.option("--port", default=None, type=int, help="Port (default: [server] port or PORT).")
@with_appcontext
@cli_errors
def serve(host: str | None, port: int | None):
    """Serve Lifeline with the scheduler in the same process (development and small sites)."""
    app = current_app._get_current_object()
    settings = app.extensions["lifeline.settings"]
    engine = _engine()
    if service.database_revision(engine) != service.head_revision(engine):
        raise CliError("the database is not migrated: run flask --app app db upgrade")
    host = host or settings.server_host
    port = port or settings.server_port
    runner = _start_background(app)
    base = f"http://{host}:{port}"
    click.echo(f"Lifeline is serving on {base} ({engine.dialect.name}, "
               f"scheduler {runner.state if runner else 'disabled'})")
    click.echo(f"Staff sign in at {base}/login")
    click.echo("No account yet? .venv/bin/flask --app app staff create you@example.com "
               "--role admin")
    try:
        run_simple(host, port, app, threaded=True, use_reloader=False, use_debugger=False)
    finally:
        if runner:
            runner.shutdown()


@click.command("worker")
@with_appcontext
@cli_errors
def worker():
    """Run the scheduler without serving HTTP (beside gunicorn in production)."""
    app = current_app._get_current_object()
    runner = _start_background(app)
    if runner is None:
        raise CliError("the scheduler is disabled in the configuration ([scheduler] enabled)")
    click.echo(f"worker started: scheduler {runner.state}")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    runner.shutdown()
    click.echo("worker stopped")
