"""Times as people read them: converted to UTC before they are formatted, wherever they came
from (a form, an API call with an offset, the database). Every time an email or a page shows
goes through here (the Jinja filter `utc` is `as_utc`)."""

from __future__ import annotations

from datetime import UTC, datetime

DISPLAY = "%Y-%m-%d %H:%M UTC"


def as_utc(moment: datetime) -> datetime:
    """The same instant in UTC; a naive time is taken as UTC (the project stores no other)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_utc(moment: datetime) -> str:
    """`2026-12-02 08:34 UTC` for 09:34+01:00."""
    return as_utc(moment).strftime(DISPLAY)


def rfc3339(moment: datetime) -> str:
    """`2026-12-02T08:34:00Z`, as Atom and most machines want it."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")
