"""What create_app builds once at start-up, in one typed object: the settings, the engine,
the field cipher and blind index, the scheduled jobs and health probes, and each area's own
objects (the vault, the intake, the desks...), found by their class rather than by a string.
`services()` is the app's; the core's own extensions (db, access, rate limits) keep theirs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Flask, current_app
from sqlalchemy.engine import Engine

from contacts.core.crypto import Crypto
from contacts.core.settings import Settings

T = TypeVar("T")
KEY = "lifeline"


@dataclass
class Services:
    settings: Settings
    crypto: Crypto
    engine: Engine
    # Backup drills decrypt with the keys read afresh from the key file, never with keys
    # this process only holds in memory; `keys retire` asks which snapshots need a key.
    field_keys_source: Callable[[], Any]
    snapshots_needing_key: Callable[[str], list[str]]
    jobs: list = field(default_factory=list)  # scheduler.ScheduledJob, each area's
    health_probes: dict[str, Callable[..., dict]] = field(default_factory=dict)
    background: Callable[[], list] | None = None  # what every `flask worker` runs
    account_panels: list[Callable] = field(default_factory=list)  # the account page's
    scheduler: Any = None  # a worker's SchedulerRunner, once it runs (for /healthz)
    parts: dict[type, object] = field(default_factory=dict)

    def add(self, part: T) -> T:
        """Keep one object of an area, found later by its class."""
        self.parts[type(part)] = part
        return part

    def get(self, kind: type[T]) -> T:
        try:
            return self.parts[kind]  # type: ignore[return-value]
        except KeyError:
            raise LookupError(f"no {kind.__qualname__} was built at start-up") from None


def init_app(app: Flask, services: Services) -> Services:
    app.extensions[KEY] = services
    return services


def services(app: Flask | None = None) -> Services:
    return (app if app is not None else current_app).extensions[KEY]
