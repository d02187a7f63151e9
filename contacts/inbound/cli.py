"""`flask --app app inbound read [--mailbox NAME]`: one pass over the inbound mailboxes from
a terminal, with progress, as the scheduler's job makes it."""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext

from contacts.core.errors import CliError, cli_errors
from contacts.core.services import services
from contacts.inbound.mailbox import (
    MailHandler,
    ReaderSettings,
    configured_mailbox,
    read_mailbox,
)


@click.group("inbound", help="Inbound mail: read the IMAP mailboxes of [inbound].")
def inbound_group():
    pass


class _Progress:
    """A progress bar opened once the pass knows how many messages wait (stderr; a bar
    only on a terminal, as click draws them)."""

    def __init__(self, name: str):
        self.name, self.bar, self.shown = name, None, 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=f"Reading {self.name}",
                                         show_pos=True, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.shown)
        self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@inbound_group.command("read")
@click.option("--mailbox", "name", default=None,
              help="Only this mailbox (its name in [inbound] mailboxes).")
@with_appcontext
@cli_errors
def read(name: str | None):
    """One pass over each mailbox (or one): new mail stored, handled and moved."""
    built = services()
    settings = built.settings
    if name is not None:
        mailboxes = [configured_mailbox(settings, name)]
    else:
        mailboxes = list(settings.inbound_mailboxes)
        if not mailboxes:
            raise CliError("no inbound mailbox is configured ([inbound] mailboxes)")
    reader = ReaderSettings.from_settings(settings)
    for mailbox in mailboxes:
        progress = _Progress(mailbox.name)
        try:
            report = read_mailbox(engine=built.engine, crypto=built.crypto, mailbox=mailbox,
                                  reader=reader, handle=built.get(MailHandler).handle,
                                  progress=progress)
        finally:
            progress.close()
        click.echo(f"{mailbox.name}: {report.read} read, {report.processed} processed, "
                   f"{report.duplicates} known already, {report.failed} failed "
                   f"in {report.seconds:.1f} s")
