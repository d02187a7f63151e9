"""A service's refusal shown on the page of the form that asked: the one place a route
turns a LifelineError into a form message, after dropping what the request changed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flask import flash

from contacts.core.db import rollback_request_session
from contacts.core.errors import LifelineError


@dataclass
class Refusal:
    """What `form_errors` caught: false until a service refused."""

    error: LifelineError | None = None

    def __bool__(self) -> bool:
        return self.error is not None

    @property
    def message(self) -> str:
        return self.error.message if self.error else ""

    @property
    def status(self) -> int:
        return self.error.status if self.error else 200


@contextmanager
def form_errors(field=None, *, flash_as: str | None = None,
                catching: tuple[type[LifelineError], ...] = (LifelineError,),
                ) -> Iterator[Refusal]:
    """Run the block; when a service refuses (a LifelineError, or only those `catching`
    names), roll back everything the request changed (a half-made change is never
    committed), then put the message under `field` and/or flash it (`flash_as` words it:
    "Nothing was changed: {}"). The yielded Refusal says whether it happened and why."""
    refusal = Refusal()
    try:
        yield refusal
    except catching as exc:
        rollback_request_session()
        refusal.error = exc
        if field is not None:
            field.errors = [exc.message]
        if flash_as is not None:
            flash(flash_as.format(exc.message))
