"""Rate limits, declared on the view and applied when the app is built.

Each app gets its own limiter. Counters live in memory for one process, or in Redis when
`security.rate_limit_storage_uri` points there, so several processes count together.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits.storage import MemoryStorage


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
    return limiter
