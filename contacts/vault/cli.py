"""`flask --app app contacts ...`: import files into the vault and read it from a terminal."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click
from flask.cli import with_appcontext

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.errors import CliError, cli_errors
from contacts.core.services import services
from contacts.vault import deletions, importer, purge, service, sync
from contacts.vault.service import Vault

# Below this many contacts, starting a worker process costs more than it saves.
PARALLEL_FROM = 5000


def vault() -> service.Vault:
    return services().get(Vault)


@click.group("contacts", help="The contact vault: import and read contacts.")
def contacts_group():
    pass


@contacts_group.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--format", "file_format", type=click.Choice(["csv", "json"]), default=None,
              help="Default: from the file's extension.")
@click.option("--strict", is_flag=True, help="Any rejected entry aborts the whole import.")
@with_appcontext
@cli_errors
def import_contacts(file: Path, file_format: str | None, strict: bool):
    """Upsert the accounts, sites and contacts of a CSV or JSON file (see the README)."""
    if not file.is_file():
        raise CliError(f"no such file: {file}")
    parsed = importer.parse_file(file, file_format)
    actor = Actor.system("cli")
    engine = services().engine
    with session_scope(engine) as session:
        with click.progressbar(length=parsed.contact_count, label="Importing contacts",
                               show_pos=True, file=sys.stderr) as bar:
            report = sync.sync(session=session, vault=vault(), actor=actor,
                               entries=parsed.entries, source="import", progress=bar.update,
                               parallel=parsed.contact_count >= PARALLEL_FROM)
        report.merge(parsed.report)
        if strict and report.rejections:
            first = report.rejections[0]
            session.rollback()
            raise CliError(f"{len(report.rejections)} rejected entries, nothing imported "
                           f"(--strict); first: {first.line} {first.kind} "
                           f"{first.external_id or ''}: {first.reason}")
    for kind in ("accounts", "sites", "apps", "contacts"):
        tally = getattr(report, kind)
        click.echo(f"{kind:<9} created {tally.created:>7}  updated {tally.updated:>7}  "
                   f"unchanged {tally.unchanged:>7}  deleted {tally.deleted:>5}  "
                   f"rejected {tally.rejected:>5}" + (f"  held {tally.held:>5}"
                                                      if tally.held else ""))
    _echo_deletions(report)
    for rejection in report.rejections[:50]:
        click.echo(f"rejected {rejection.line}: {rejection.kind} "
                   f"{rejection.external_id or '(no id)'}: {rejection.reason}")
    if len(report.rejections) > 50:
        click.echo(f"... and {len(report.rejections) - 50} more rejections")


def _echo_deletions(report) -> None:
    for deletion in report.deletions:
        if deletion.state == "applied":
            click.echo(f"deleted {deletion.count} {deletion.kind}(s) ({deletion.deletion_id}); "
                       f"restorable until {deletion.restorable_until:%Y-%m-%d %H:%M} UTC with: "
                       f"flask --app app contacts undelete {deletion.deletion_id}")
            continue
        click.echo(f"held {deletion.count} {deletion.kind} deletion(s): over the cap of "
                   f"{_limits().cap}, nothing deleted (dry run {deletion.deletion_id})")
        for item in deletion.sample:
            click.echo(f"  {item.id}  {item.external_id or ''}  {item.label or ''}")
        click.echo(f"  an admin confirms them before {deletion.expires_at:%Y-%m-%d %H:%M} UTC "
                   f"with: flask --app app contacts confirm-deletion {deletion.deletion_id} "
                   f"--token {deletion.token} --reason '...'")


@contacts_group.command("list")
@click.argument("account_id")
@click.option("--as-of", "as_of", default=None,
              help="Show the contacts as they were at this time (ISO 8601 with a zone).")
@with_appcontext
@cli_errors
def list_contacts(account_id: str, as_of: str | None):
    """Print an account's contacts, decrypted (the read is audited)."""
    moment = None
    if as_of:
        try:
            moment = datetime.fromisoformat(as_of.replace("Z", "+00:00"))
        except ValueError:
            raise CliError(f"--as-of must be an ISO 8601 time, got {as_of!r}") from None
        if moment.tzinfo is None:
            raise CliError("--as-of needs a time zone, for example 2026-04-05T07:30:00Z")
    engine = services().engine
    with session_scope(engine) as session:
        contacts = service.list_contacts(session=session, vault=vault(), account_id=account_id,
                                         as_of=moment)
        audit.record(session, Actor.system("cli"), "contact.read", target_kind="account",
                     target_id=account_id, count=len(contacts), as_of=as_of)
    for contact in contacts:
        click.echo(f"{contact.id}  {contact.role:<10} {contact.name} <{contact.email}> "
                   f"{contact.phone or ''}  sites: {', '.join(contact.sites) or '-'}")


def _limits() -> deletions.Limits:
    return deletions.Limits.from_settings(services().settings)


@contacts_group.command("delete")
@click.argument("kind", type=click.Choice(list(service.KINDS)))
@click.argument("ids", nargs=-1, required=True)
@click.option("--reason", default=None, help="Required above the blast-radius cap.")
@click.option("--yes", is_flag=True, help="Confirm without asking (after the dry run).")
@with_appcontext
@cli_errors
def delete_objects(kind: str, ids: tuple[str, ...], reason: str | None, yes: bool):
    """Soft-delete objects of one KIND, after a dry run you confirm."""
    actor = Actor.system("cli")
    engine = services().engine
    with session_scope(engine) as session:
        dry_run = deletions.plan(session=session, actor=actor, kind=kind, ids=list(ids),
                                 limits=_limits(), is_admin=True, reason=reason)
    click.echo(f"dry run {dry_run.deletion_id}: {dry_run.count} {kind}(s) would be deleted")
    for item in dry_run.sample:
        click.echo(f"  {item.id}  {item.external_id or ''}  {item.label or ''}")
    if not yes:
        typed = click.prompt(f"Type {dry_run.count} to delete them", default="",
                             show_default=False)
        if typed.strip() != str(dry_run.count):
            raise CliError("not confirmed; nothing deleted")
    with session_scope(engine) as session:
        done = deletions.confirm(session=session, vault=vault(), actor=actor, kind=kind,
                                 ids=list(ids), token=dry_run.token, limits=_limits(),
                                 is_admin=True, reason=reason)
    click.echo(f"deleted {done.deleted} {kind}(s); restorable until "
               f"{done.restorable_until:%Y-%m-%d %H:%M} UTC with: "
               f"flask --app app contacts undelete {done.deletion_id}")


@contacts_group.command("confirm-deletion")
@click.argument("deletion_id")
@click.option("--token", required=True, help="The token its dry run or sync report gave.")
@click.option("--reason", default=None, help="Required above the blast-radius cap.")
@with_appcontext
@cli_errors
def confirm_deletion(deletion_id: str, token: str, reason: str | None):
    """Apply a held bulk delete (a sync's deletions over the cap), as an admin."""
    with session_scope(services().engine) as session:
        done = deletions.confirm_held(session=session, vault=vault(), actor=Actor.system("cli"),
                                      deletion_id=deletion_id, token=token, limits=_limits(),
                                      is_admin=True, reason=reason)
    click.echo(f"deleted {done.deleted} {done.kind}(s); restorable until "
               f"{done.restorable_until:%Y-%m-%d %H:%M} UTC with: "
               f"flask --app app contacts undelete {done.deletion_id}")


@contacts_group.command("undelete")
@click.argument("deletion_id")
@with_appcontext
@cli_errors
def undelete(deletion_id: str):
    """Restore everything a confirmed bulk delete removed."""
    with session_scope(services().engine) as session:
        restored = deletions.undo(session=session, vault=vault(), actor=Actor.system("cli"),
                                  deletion_id=deletion_id)
    click.echo(f"restored {restored} object(s)")


@contacts_group.command("purge")
@with_appcontext
@cli_errors
def purge_now():
    """Remove records deleted longer ago than the retention period (the job does it hourly)."""
    settings = services().settings
    with session_scope(services().engine) as session:
        purged = purge.purge_expired(session=session, now=utcnow(),
                                     retention_days=settings.vault_retention_days)
    click.echo(f"purged {purged.accounts} accounts, {purged.sites} sites, {purged.apps} apps, "
               f"{purged.contacts} contacts deleted more than {settings.vault_retention_days} "
               "days ago")
