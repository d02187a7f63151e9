"""Rate limits, declared on the view and applied when the app is built.

Each app gets its own limiter. Counters live in memory for one process, or in Redis when
`security.rate_limit_storage_uri` points there, so several processes count together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse
from limits.storage import MemoryStorage, Storage


@dataclass(frozen=True)
class RateLimit:
    setting: str  # the setting holding the limit, e.g. "security_login_rate_limit"
    methods: tuple[str, ...] = ("POST",)
    key: Callable[[], str] | None = None  # default: the client's address
    counts: Callable | None = None  # which responses count; default: every one
    exempt: Callable[[], bool] | None = None  # requests this limit does not apply to
    # Views declaring the same scope share one counter per key (one budget for the form and
    # the API); default: each view counts on its own.
    scope: str | None = None


def limited(*limits: RateLimit) -> Callable[[Callable], Callable]:
    def declare(view: Callable) -> Callable:
        view.rate_limits = (*getattr(view, "rate_limits", ()), *limits)
        return view

    return declare


class SweptMemoryStorage(MemoryStorage):
    """limits' in-memory storage, swept of expired counters once a second instead of every
    10 ms. Its sweep walks every key; under a flood of distinct email addresses (a key each)
    that walk took most of the CPU. Reads already ignore an expired counter (`get`), so the
    answers are the same; expired counters just stay in memory up to a second longer.
    (It overrides a private method of limits, pinned in pyproject.toml.)"""

    STORAGE_SCHEME = ["lifeline-memory"]
    SWEEP_SECONDS = 1.0

    def _MemoryStorage__schedule_expiry(self) -> None:  # noqa: N802 - the name it overrides
        if not self.timer.is_alive():
            self.timer = threading.Timer(self.SWEEP_SECONDS,
                                         self._MemoryStorage__expire_events)
            self.timer.daemon = True
            self.timer.start()


def _storage_uri(configured: str) -> str:
    return "lifeline-memory://" if configured.startswith("memory://") else configured


def init_app(app, settings) -> Limiter:
    """Call after every blueprint is registered: wraps each view that declares limits."""
    limiter = Limiter(
        key_func=get_remote_address,
        app=app,
        storage_uri=_storage_uri(settings.security_rate_limit_storage_uri),
        key_prefix=settings.security_rate_limit_key_prefix,
        # Two counters per key (this window and the last, weighted): as strict as a moving
        # window for bursts, and constant memory per key, where a moving window keeps every hit.
        strategy="sliding-window-counter",
        headers_enabled=True,
    )
    for endpoint, view in list(app.view_functions.items()):
        wrapped = view
        for rule in getattr(view, "rate_limits", ()):
            options = {"key_func": rule.key, "methods": list(rule.methods),
                       "deduct_when": rule.counts, "exempt_when": rule.exempt}
            value = getattr(settings, rule.setting)
            declared = (limiter.shared_limit(value, scope=rule.scope, **options) if rule.scope
                        else limiter.limit(value, **options))
            wrapped = declared(wrapped)
        app.view_functions[endpoint] = wrapped
    app.extensions["lifeline.limiter"] = limiter
    app.extensions["lifeline.failure_counter"] = FailureCounter(
        limiter.storage, settings.security_rate_limit_key_prefix)
    return limiter


def limiter_of(app: Flask) -> Limiter:
    return app.extensions["lifeline.limiter"]


def failure_counter_of(app: Flask) -> FailureCounter:
    return app.extensions["lifeline.failure_counter"]


# -- limits that count failures only ------------------------------------------------------


@dataclass
class Attempt:
    """One attempt's hold on the limits it falls under. `retry_after` (seconds) is set when
    a limit was already used up: the attempt must be refused and holds nothing."""

    counter: FailureCounter
    held: list[tuple[str, int]] = field(default_factory=list)  # storage key, window seconds
    retry_after: int | None = None

    @property
    def refused(self) -> bool:
        return self.retry_after is not None

    def succeeded(self) -> None:
        """A success does not count: give back what the attempt held."""
        self.counter.give_back(self.held)
        self.held = []


class FailureCounter:
    """Limits on failed attempts (sign-in), in the limiter's storage (memory or Redis).

    An attempt takes one unit of each of its limits before it is checked and gives them back
    if it succeeds, so successes never count and a burst of parallel guesses cannot all pass
    a check made before any of them failed. Each window is fixed: it starts at the first
    failure it counts. Keys are chosen by the caller and must hold no personal data."""

    def __init__(self, storage: Storage, prefix: str):
        self.storage = storage
        self.prefix = prefix

    def attempt(self, limits: Sequence[tuple[str, str]]) -> Attempt:
        """`limits`: (limit such as "5 per minute", key) pairs, in the order they are checked."""
        attempt = Attempt(self)
        for limit, key in limits:
            item = parse(limit)
            window = int(item.get_expiry())
            stored = f"{self.prefix}/failures/{key}/{item.amount}/{window}"
            attempt.held.append((stored, window))
            if self.storage.incr(stored, window) > item.amount:
                self.give_back(attempt.held)
                attempt.held = []
                attempt.retry_after = max(1, int(self.storage.get_expiry(stored) - time.time()))
                return attempt
        return attempt

    def give_back(self, held: Sequence[tuple[str, int]]) -> None:
        for stored, window in held:
            if self.storage.incr(stored, window, amount=-1) < 0:
                # The window ended while the attempt ran: leave the new one at zero.
                self.storage.incr(stored, window, amount=1)

    def clear(self, key: str, limit: str) -> None:
        item = parse(limit)
        self.storage.clear(f"{self.prefix}/failures/{key}/{item.amount}/"
                           f"{int(item.get_expiry())}")
