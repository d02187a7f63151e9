"""Rate limits, declared on the view and applied when the app is built.

Each app gets its own limiter. Counters live in memory for one process, or in Redis when
`security.rate_limit_storage_uri` points there, so several processes count together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address


@dataclass(frozen=True)
class RateLimit:
    setting: str  # the setting holding the limit, e.g. "security_login_rate_limit"
    methods: tuple[str, ...] = ("POST",)
    key: Callable[[], str] | None = None  # default: the client's address
    counts: Callable | None = None  # which responses count; default: every one
    exempt: Callable[[], bool] | None = None  # requests this limit does not apply to


def limited(*limits: RateLimit) -> Callable[[Callable], Callable]:
    def declare(view: Callable) -> Callable:
        view.rate_limits = (*getattr(view, "rate_limits", ()), *limits)
        return view

    return declare


def init_app(app, settings) -> Limiter:
    """Call after every blueprint is registered: wraps each view that declares limits."""
    limiter = Limiter(
        key_func=get_remote_address,
        app=app,
        storage_uri=settings.security_rate_limit_storage_uri,
        key_prefix=settings.security_rate_limit_key_prefix,
        strategy="moving-window",
        headers_enabled=True,
    )
    for endpoint, view in list(app.view_functions.items()):
        wrapped = view
        for rule in getattr(view, "rate_limits", ()):
            wrapped = limiter.limit(getattr(settings, rule.setting), key_func=rule.key,
                                    methods=list(rule.methods), deduct_when=rule.counts,
                                    exempt_when=rule.exempt)(wrapped)
        app.view_functions[endpoint] = wrapped
    app.extensions["lifeline.limiter"] = limiter
    return limiter
