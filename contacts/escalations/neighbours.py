"""What the escalations ask of the staff, intake and incidents areas, as plain functions
that the composition layer (`contacts/app.py`) wires in. The escalations import none of
those areas' code: they read people, requests and incidents through these few seams, and
the reactions to those areas' events (`contacts/reactions.py`) hand them plain data."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlmodel import Session

from contacts.core.audit import Actor


class Person(Protocol):
    """A staff member as the escalations see one."""

    id: str
    email: str
    role: str
    is_active: bool


class ChangedRequest(Protocol):
    """A support request, new or changed, that its ticket follows."""

    id: str
    reference: str
    account_id: str | None
    severity: str
    priority: int
    verification: str
    status: str
    received_at: datetime
    changed_at: datetime


class MissedAccount(Protocol):
    """An account that none of an update's emails reached."""

    account_id: str
    incident_id: str
    incident_title: str
    update_number: int
    contacts_failed: int


@dataclass(frozen=True)
class TimelineEntry:
    """One line of an account's timeline."""

    at: datetime
    kind: str  # item, request, reply, update, handoff...
    text: str
    link: str | None = None


@dataclass(frozen=True)
class Neighbours:
    staff_by_id: Callable[[Session, Iterable[str]], Mapping[str, Person]]
    get_staff: Callable[[Session, str], Person]  # NotFound for an unknown ID
    list_staff: Callable[[Session], list[Person]]
    incident_id: Callable[[Session, str], str]  # the ID of a known incident, else NotFound
    incident_titles: Callable[[Session, list[str]], dict[str, str]]
    request_references: Callable[[Session, list[str]], dict[str, str]]
    reply_to_request: Callable[[Session, Actor, str, str, datetime], None]
    account_history: Callable[[Session, str], list[TimelineEntry]]  # requests, updates
