"""The one rate limiter. Counters live in memory for one process, or in Redis when
`security.rate_limit_storage_uri` points there so several processes share them.
"""

from __future__ import annotations

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

limiter = Limiter(key_func=get_remote_address, default_limits=[], headers_enabled=True)


def init_app(app, storage_uri: str) -> None:
    app.config["RATELIMIT_STORAGE_URI"] = storage_uri
    app.config["RATELIMIT_STRATEGY"] = "moving-window"
    limiter.init_app(app)
