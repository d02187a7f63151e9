"""`flask --app app staff ...` and `flask --app app tokens ...`."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click
from flask.cli import with_appcontext

from contacts.core.access import ROLES, SCOPES
from contacts.core.audit import Actor
from contacts.core.db import session_scope
from contacts.core.errors import CliError, cli_errors
from contacts.core.services import services
from contacts.staff import service, twofactor


def _engine():
    return services().engine


def _read_password() -> str:
    if sys.stdin.isatty():
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    line = sys.stdin.readline()
    if not line:
        raise CliError("no password on standard input")
    return line.rstrip("\r\n")


@click.group("staff", help="Manage staff accounts.")
def staff_group():
    pass


@staff_group.command("create")
@click.argument("email")
@click.option("--role", required=True, help=f"One of: {', '.join(ROLES)}.")
@with_appcontext
@cli_errors
def create_staff(email: str, role: str):
    """Create a staff account; the password is read from a prompt or from standard input."""
    if role not in ROLES:
        raise CliError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    password = _read_password()
    settings = services().settings
    with session_scope(_engine()) as session:
        created = service.create_staff(
            session=session, crypto=services().crypto,
            actor=Actor.system("cli"), email=email, role=role, password=password,
            min_password_length=settings.security_password_min_length)
    click.echo(f"created staff account {created.id} with role {created.role}")
    click.echo(f"sign in at {settings.app_base_url}/login")


@staff_group.command("list")
@with_appcontext
@cli_errors
def list_staff():
    """List staff accounts."""
    with session_scope(_engine()) as session:
        members = service.list_staff(session=session,
                                     crypto=services().crypto)
    for member in members:
        state = "active" if member.is_active else "inactive"
        factor = "2fa" if member.two_factor else "no-2fa"
        click.echo(f"{member.id}  {member.role:<8} {state:<8} {factor:<6} {member.email}")


@staff_group.command("deactivate")
@click.argument("staff_id")
@with_appcontext
@cli_errors
def deactivate_staff(staff_id: str):
    """Deactivate a staff account and end its sessions."""
    with session_scope(_engine()) as session:
        service.set_active(session=session, actor=Actor.system("cli"), staff_id=staff_id,
                           active=False)
    click.echo(f"deactivated {staff_id}")


@staff_group.command("reset-2fa")
@click.argument("staff_id")
@with_appcontext
@cli_errors
def reset_two_factor(staff_id: str):
    """Forget an account's second factor (a lost phone): its recovery codes stop working,
    its sessions end and its next sign-in sets up two-factor sign-in again. Audited."""
    with session_scope(_engine()) as session:
        twofactor.reset(session=session, actor=Actor.system("cli"), staff_id=staff_id)
    click.echo(f"two-factor sign-in reset for {staff_id}: it enrols again at its next sign-in")


@click.group("tokens", help="Manage API tokens for machine clients.")
def tokens_group():
    pass


@tokens_group.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, required=True,
              help=f"Repeat for several. One of: {', '.join(SCOPES)}.")
@click.option("--expires", "expires", default=None, help="Expiry date, YYYY-MM-DD (UTC).")
@with_appcontext
@cli_errors
def create_token(name: str, scopes: tuple[str, ...], expires: str | None):
    """Create an API token. Its secret is printed once and never stored."""
    expires_at = None
    if expires:
        try:
            expires_at = datetime.strptime(expires, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise CliError(f"--expires must be a date as YYYY-MM-DD, got {expires!r}") from None
    split = [part for scope in scopes for part in scope.replace(",", " ").split()]
    with session_scope(_engine()) as session:
        token, secret = service.create_token(session=session, actor=Actor.system("cli"),
                                             name=name, scopes=split, expires_at=expires_at)
    click.echo(f"created token {token.id} ({token.name}) with scopes {token.scopes}")
    click.echo("secret (shown once, store it now):", err=True)
    click.echo(secret)


@tokens_group.command("list")
@with_appcontext
@cli_errors
def list_tokens():
    """List API tokens (never their secrets)."""
    with session_scope(_engine()) as session:
        listing = service.list_tokens(session=session)
    for token in listing:
        state = "revoked" if token.revoked_at else "active"
        click.echo(f"{token.id}  {token.prefix}…  {state:<8} {token.scopes:<30} {token.name}")


@tokens_group.command("revoke")
@click.argument("token_id")
@with_appcontext
@cli_errors
def revoke_token(token_id: str):
    """Revoke an API token at once."""
    with session_scope(_engine()) as session:
        service.revoke_token(session=session, actor=Actor.system("cli"), token_id=token_id)
    click.echo(f"revoked {token_id}")
