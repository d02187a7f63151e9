"""Where an inbound email goes, decided from the message alone (no database): a report
about a message we sent (a delivery status notification or an abuse report, found by the
VERP return path it was sent back to), an answer on a thread (by the signed token of the
reply address it was sent to, else by the Message-IDs it names, which the mailroom looks
up), an automatic reply, or a new request. The mailroom (contacts/mailroom.py) acts on it."""

from __future__ import annotations

from dataclasses import dataclass

from contacts.core import mailtokens
from contacts.inbound.message import Inbound


@dataclass(frozen=True)
class Addresses:
    """Lifeline's own mailboxes, as outgoing mail names them (`[mail] reply_to` and
    `return_path`), and the key their tokens are signed with; `sender`, the From of what
    Lifeline sends (`[mail] sender`), is never answered either."""

    reply_to: str
    return_path: str
    secret: str
    sender: str = ""


@dataclass(frozen=True)
class Route:
    kind: str  # report, reply, auto_reply, request, ignored
    # The thread a reply token names: ("request", "req_..."), ("item", "itm_...") or
    # ("contact", "ctc_..."): an answer to an incident update.
    thread: tuple[str, str] | None = None
    # The outbox message a report's return path names (its row ID).
    reported: int | None = None
    # Message-IDs the message names (In-Reply-To first, then References, newest first):
    # where the thread is looked for when no token says it.
    named: tuple[str, ...] = ()
    why: str = ""  # for the record, never personal data


def route(message: Inbound, addresses: Addresses) -> Route:
    named = tuple(dict.fromkeys((*message.in_reply_to, *reversed(message.references))))
    if message.report_type:
        return Route("report", reported=_reported(message, addresses), named=named,
                     why=message.report_type)
    thread = _thread(message, addresses)
    if message.automatic:
        return Route("auto_reply", thread=thread, named=named, why=message.automatic)
    if thread is not None:
        return Route("reply", thread=thread, named=named, why="reply token")
    if named:
        return Route("reply", named=named, why="names a message")
    if _to_return_path(message, addresses):
        # Mail to the bounce mailbox that is no report: nothing a person asked for.
        return Route("ignored", why="sent to the return path, not a report")
    return Route("request", why="new")


def _thread(message: Inbound, addresses: Addresses) -> tuple[str, str] | None:
    for recipient in message.recipients:
        found = mailtokens.read_reply_address(recipient, addresses.reply_to, addresses.secret)
        if found is not None:
            return found
    return None


def _reported(message: Inbound, addresses: Addresses) -> int | None:
    """The outbox row a report is about: by the return path it was sent back to (a DSN goes
    to the envelope sender), or that it names (an abuse report's Original-Mail-From)."""
    for recipient in (*message.recipients, message.reported_return_path or ""):
        found = mailtokens.read_return_path(recipient, addresses.return_path, addresses.secret)
        if found is not None:
            return found
    return None


def _to_return_path(message: Inbound, addresses: Addresses) -> bool:
    base = addresses.return_path.lower()
    local, _, domain = base.rpartition("@")
    for recipient in message.recipients:
        their_local, _, their_domain = recipient.lower().rpartition("@")
        if their_domain == domain and their_local.split("+", 1)[0] == local:
            return True
    return False
