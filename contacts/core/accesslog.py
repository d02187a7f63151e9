"""What an access log may show of a request: its path, without the query string (lookups
carry emails and phones there) and with every secret in the path replaced by `…`.

A secret in a path is a URL variable named `token` or `..._token` (`/confirm/<token>`,
`/requests/<reference>/confirm/<token>`, `/status/subscription/<action>/<token>`): a live
link that opens or changes something for whoever holds it. Name any new one that way and
every log hides it. `init_app` leaves the app's URL map in each request's WSGI environ, so
the servers' access logs (`flask serve`'s werkzeug handler, gunicorn's logger class below,
set in gunicorn.conf.py) and our error log lines all ask `logged_path(environ)`.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from gunicorn.glogging import Logger as GunicornLogger
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import Map, RequestRedirect
from werkzeug.wsgi import get_path_info

HIDDEN = "…"
SECRET_VARIABLE = re.compile(r"(?:^|_)token$")
URL_MAP = "lifeline.url_map"


def _secrets_in(url_map: Map, path: str, method: str) -> set[str]:
    adapter = url_map.bind("lifeline.invalid")
    for _ in range(3):
        try:
            _, values = adapter.match(path, method=method)
        except MethodNotAllowed as exc:  # a link's address, whatever the method
            method = (exc.valid_methods or ["GET"])[0]
        except RequestRedirect as exc:  # //confirm/<token> is redirected to /confirm/<token>
            path = urlsplit(exc.new_url).path
        except HTTPException:  # no route: no variables to hide
            return set()
        else:
            return {str(value) for name, value in values.items()
                    if SECRET_VARIABLE.search(name)}
    return set()


def _split_target(raw: str) -> tuple[str, str]:
    """A request target's origin (`http://host` in absolute form, as a client may send it
    and RAW_URI then holds; else empty) and its path, without query or fragment. A target
    starting with `/` is all path, `//confirm/<token>` included."""
    if raw.startswith("/"):
        return "", raw.split("?", 1)[0].split("#", 1)[0]
    try:
        parts = urlsplit(raw)
    except ValueError:
        return "", raw.split("?", 1)[0].split("#", 1)[0]
    if not parts.scheme:
        return "", parts.path
    host = parts.netloc.rpartition("@")[2]  # never the userinfo
    return f"{parts.scheme}://{host}", parts.path


def hide_secrets(url_map: Map, raw_path: str, method: str = "GET") -> str:
    """`raw_path` as sent (percent-encoded, maybe with a query, maybe in absolute form
    `http://host/path`), as a log may show it."""
    origin, path = _split_target(raw_path)
    secrets = _secrets_in(url_map, unquote(path), method)
    if secrets:
        path = "/".join(HIDDEN if unquote(part) in secrets else part
                        for part in path.split("/"))
    return origin + path


def logged_path(environ: dict, raw_path: str | None = None) -> str:
    """The request's path for a log line. Outside the app (no URL map in the environ:
    a request line too broken to reach it) only the query string is dropped."""
    raw = raw_path or environ.get("RAW_URI") or environ.get("REQUEST_URI")
    raw = raw or get_path_info(environ)
    url_map = environ.get(URL_MAP)
    if url_map is None:
        origin, path = _split_target(raw)
        return origin + path
    return hide_secrets(url_map, raw, environ.get("REQUEST_METHOD", "GET"))


def logged_referer(environ: dict) -> str:
    """The Referer, which names the page the link opened: same rules as the path."""
    referer = environ.get("HTTP_REFERER")
    if not referer:
        return "-"
    try:
        parts = urlsplit(referer)
    except ValueError:
        return "-"
    url_map = environ.get(URL_MAP)
    path = hide_secrets(url_map, parts.path) if url_map is not None else parts.path
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{path}" if parts.netloc else path


class _LeaveURLMap:
    def __init__(self, wsgi_app, url_map: Map):
        self.wsgi_app = wsgi_app
        self.url_map = url_map

    def __call__(self, environ, start_response):
        environ[URL_MAP] = self.url_map
        return self.wsgi_app(environ, start_response)


def init_app(app) -> None:
    app.wsgi_app = _LeaveURLMap(app.wsgi_app, app.url_map)


class GunicornAccessLog(GunicornLogger):
    """gunicorn's logger, its access lines (request line, path, query, Referer) as
    `logged_path` has them. gunicorn.conf.py at the project's root sets it."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        path, referer = logged_path(environ), logged_referer(environ)
        atoms.update({"r": f"{environ['REQUEST_METHOD']} {path} {environ['SERVER_PROTOCOL']}",
                      "U": path, "q": "", "f": referer, "{referer}i": referer})
        return atoms
