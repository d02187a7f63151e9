"""`flask --app app backup ...`: create, verify and restore snapshots, and drill the latest."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from flask.cli import with_appcontext

from contacts.backup import drills, restore, sealed, snapshot
from contacts.core import audit, schema
from contacts.core.audit import Actor
from contacts.core.db import make_engine, session_scope
from contacts.core.errors import CliError, cli_errors
from contacts.core.services import services


@click.group("backup", help="Encrypted snapshots outside the database: create, restore, drill.")
def backup_group():
    pass


def _backup_key() -> bytes:
    return services().settings.secrets.backup_key


def _backup_dir(given: Path | None) -> Path:
    return given or Path(services().settings.backup_dir)


@backup_group.command("create")
@click.option("--to", "directory", type=click.Path(path_type=Path), default=None,
              help="Folder for the snapshot (default: [backup] dir).")
@with_appcontext
@cli_errors
def backup_create(directory: Path | None):
    """Write an encrypted, authenticated snapshot of the whole database."""
    engine = services().engine
    started = time.perf_counter()
    with click.progressbar(length=snapshot.count_rows(engine), label="Snapshotting rows",
                           show_pos=True, file=sys.stderr) as bar:
        path, manifest = snapshot.create_snapshot(
            engine=engine, backup_key=_backup_key(), directory=_backup_dir(directory),
            revision=schema.database_revision(engine), progress=bar.update)
    with session_scope(engine) as session:
        audit.record(session, Actor.system("cli"), "backup.created", snapshot=path.name,
                     rows=manifest.rows)
    click.echo(f"wrote {path} ({manifest.rows} rows, {path.stat().st_size} bytes) "
               f"in {drills.elapsed(started)} s")


@backup_group.command("verify")
@click.argument("file", type=click.Path(path_type=Path))
@with_appcontext
@cli_errors
def backup_verify(file: Path):
    """Decrypt and authenticate a snapshot and check it against its manifest."""
    manifest = sealed.verify_snapshot(file, _backup_key())
    click.echo(f"{file.name}: authentic, {manifest.rows} rows in {len(manifest.tables)} tables, "
               f"made {manifest.created_at} at schema revision {manifest.revision}")


@backup_group.command("restore")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--database-url", required=True,
              help="An empty database to fill, for example postgresql://lifeline@db/restored.")
@with_appcontext
@cli_errors
def backup_restore(file: Path, database_url: str):
    """Fill an empty database from a snapshot, then check every table's checksum."""
    target = make_engine(database_url)
    try:
        schema.upgrade_database(target)
        started = time.perf_counter()
        total = sealed.verify_snapshot(file, _backup_key()).rows
        with click.progressbar(length=total, label="Restoring rows", show_pos=True,
                               file=sys.stderr) as bar:
            manifest = restore.restore_snapshot(path=file, backup_key=_backup_key(),
                                                engine=target,
                                                head_revision=schema.head_revision(),
                                                progress=bar.update)
    finally:
        target.dispose()
    with session_scope(services().engine) as session:
        audit.record(session, Actor.system("cli"), "backup.restored", snapshot=file.name,
                     rows=manifest.rows)
    click.echo(f"restored {manifest.rows} rows from {file.name} in {drills.elapsed(started)} s; "
               "every table matches its checksum")


@backup_group.command("drill")
@click.option("--from", "directory", type=click.Path(path_type=Path), default=None,
              help="Folder of snapshots (default: [backup] dir); the latest is drilled.")
@click.option("--database-url", default=None,
              help="An empty scratch database (default: a temporary SQLite file).")
@with_appcontext
@cli_errors
def backup_drill(directory: Path | None, database_url: str | None):
    """Restore the latest snapshot into a scratch database, check it, record the result."""
    result = drills.drill_latest(
        directory=_backup_dir(directory), backup_key=_backup_key(),
        load_field_keys=services().field_keys_source,
        engine=services().engine, database_url=database_url)
    state = "passed" if result.ok else "FAILED"
    click.echo(f"drill of {result.snapshot} {state} in {result.seconds} s: {result.detail}")
    if not result.ok:
        raise CliError(f"drill failed: {result.detail}")
