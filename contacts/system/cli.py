"""`flask --app app db ...`, `flask --app app serve` and `flask --app app worker`."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from werkzeug.serving import WSGIRequestHandler, run_simple

from contacts.core import audit, keyring, schema
from contacts.core.accesslog import logged_path
from contacts.core.audit import Actor
from contacts.core.db import session_scope
from contacts.core.errors import CliError, cli_errors
from contacts.core.scheduler import SchedulerRunner
from contacts.core.services import services


def _engine():
    return services().engine


@click.group("db", help="Database migrations (Alembic).")
def db_group():
    pass


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
@cli_errors
def upgrade(revision: str):
    """Apply migrations up to REVISION (default: the latest)."""
    schema.upgrade_database(_engine(), revision)
    click.echo(f"database at revision {schema.database_revision(_engine())}")


@db_group.command("downgrade")
@click.argument("revision")
@with_appcontext
@cli_errors
def downgrade(revision: str):
    """Revert migrations down to REVISION ("base" empties the schema)."""
    schema.downgrade_database(_engine(), revision)
    click.echo(f"database at revision {schema.database_revision(_engine()) or 'base'}")


@db_group.command("current")
@with_appcontext
def current():
    """Show the database's revision and the latest one."""
    click.echo(f"database: {schema.database_revision(_engine()) or 'empty'}; "
               f"latest: {schema.head_revision(_engine())}")


def _start_background(app) -> SchedulerRunner | None:
    settings = services(app).settings
    if not settings.scheduler_enabled:
        return None
    runner = SchedulerRunner(services(app).engine, services(app).jobs,
                             app=app)
    runner.start()
    services(app).scheduler = runner
    return runner


class RequestLog(WSGIRequestHandler):
    """The access log without query strings (lookups carry emails and phones there) and
    with the tokens of links hidden (contacts.core.accesslog): nothing personal or live goes to
    the logs."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = getattr(self, "path", None)
        if path is None:
            return super().log_request(code, size)
        self.path = logged_path(getattr(self, "environ", {}), path)
        try:
            super().log_request(code, size)
        finally:
            self.path = path


@click.command("serve")
@click.option("--host", default=None, help="Address to listen on (default: [server] host).")
@click.option("--port", default=None, type=int, help="Port (default: [server] port or PORT).")
@with_appcontext
@cli_errors
def serve(host: str | None, port: int | None):
    """Serve Lifeline with the scheduler in the same process (development and small sites)."""
    app = current_app._get_current_object()
    settings = services(app).settings
    engine = _engine()
    if schema.database_revision(engine) != schema.head_revision(engine):
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
        run_simple(host, port, app, threaded=True, use_reloader=False, use_debugger=False,
                   request_handler=RequestLog)
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
    loops = services(app).background()
    for loop in loops:
        loop.start()
    click.echo(f"worker started: scheduler {runner.state}"
               + (f", {len(loops)} background loops" if loops else ""))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    for loop in loops:
        loop.stop()
    runner.shutdown()
    click.echo("worker stopped")


@click.group("keys", help="Field-encryption keys: rotate, retire, status.")
def keys_group():
    pass


def _keyring_path() -> Path:
    settings = services().settings
    return keyring.keyring_file(Path(settings.secrets_keys_dir), os.environ)


@keys_group.command("status")
@with_appcontext
@cli_errors
def keys_status():
    """How many encrypted fields each key of the keyring holds."""
    cipher = services().crypto.cipher
    cipher.reload()
    for key_id in cipher.key_ids:
        fields = keyring.count_fields(_engine(), key_id=key_id)
        active = "  (active)" if key_id == cipher.active_key_id else ""
        click.echo(f"{key_id}: {fields} fields{active}")


@keys_group.command("rotate")
@click.option("--reencrypt-only", is_flag=True,
              help="Add no key: re-encrypt under the newest key already in the keyring.")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 10_000))
@with_appcontext
@cli_errors
def keys_rotate(reencrypt_only: bool, batch_size: int):
    """Add a new field key and re-encrypt every field with it, while the service serves."""
    cipher = services().crypto.cipher
    if not reencrypt_only:
        key_id = keyring.add_key(_keyring_path())
        click.echo(f"added key {key_id} to {_keyring_path()}")
    cipher.reload()
    engine = _engine()
    stale = keyring.count_fields(engine, not_key_id=cipher.active_key_id)
    with click.progressbar(length=stale, label=f"Re-encrypting with {cipher.active_key_id}",
                           show_pos=True, file=sys.stderr) as bar:
        changed = keyring.reencrypt(engine, cipher, batch_size=batch_size, progress=bar.update)
    # Fields written meanwhile by processes that had not reloaded yet: one more pass.
    changed += keyring.reencrypt(engine, cipher, batch_size=batch_size)
    left = keyring.count_fields(engine, not_key_id=cipher.active_key_id)
    with session_scope(engine) as session:
        audit.record(session, Actor.system("cli"), "keys.rotated", key_id=cipher.active_key_id,
                     reencrypted=changed, left=left)
    click.echo(f"re-encrypted {changed} fields with {cipher.active_key_id}; {left} left under "
               "older keys")
    if left == 0:
        older = [key_id for key_id in cipher.key_ids if key_id != cipher.active_key_id]
        if older:
            click.echo(f"older keys can now be retired: flask --app app keys retire {older[0]}")


@keys_group.command("retire")
@click.argument("key_id")
@with_appcontext
@cli_errors
def keys_retire(key_id: str):
    """Remove a key from the keyring once no field uses it."""
    keyring.retire_key(_keyring_path(), key_id, _engine(),
                       needed_by=services().snapshots_needing_key)
    with session_scope(_engine()) as session:
        audit.record(session, Actor.system("cli"), "keys.retired", key_id=key_id)
    click.echo(f"retired {key_id}")
