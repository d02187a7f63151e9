"""One error hierarchy, and the one place that maps it to HTTP responses and CLI exit codes.

Services raise these; routes never build error responses themselves. Anything else that
escapes a request is logged with its trace server-side and answered with a bare 500.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import click

log = logging.getLogger(__name__)


class LifelineError(Exception):
    """Base of every error we raise on purpose. `message` is safe to show to the caller."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None):
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigError(LifelineError):
    """The service cannot start: a setting or a secret is missing or malformed."""

    code = "configuration"


class Invalid(LifelineError):
    status = 400
    code = "invalid"


class WrongKind(Invalid):
    """An ID of one kind was given where another kind was expected."""

    code = "wrong_kind"


class Unauthenticated(LifelineError):
    status = 401
    code = "unauthenticated"


class Forbidden(LifelineError):
    status = 403
    code = "forbidden"


class NotFound(LifelineError):
    status = 404
    code = "not_found"


class Conflict(LifelineError):
    status = 409
    code = "conflict"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


# HTTP statuses that Werkzeug raises itself, with the code and wording we answer them with.
HTTP_ERRORS = {
    400: ("bad_request", "The request could not be understood."),
    401: ("unauthenticated", "Authentication is required."),
    403: ("forbidden", "You are not allowed to do this."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This method is not allowed here."),
    413: ("too_large", "The request body is too large."),
    415: ("unsupported_media_type", "Send the body as application/json."),
    429: ("rate_limited", "Too many attempts. Wait a little and try again."),
    500: ("internal", "Something went wrong on our side. It has been logged."),
}


def register_http_errors(app, render_page: Callable[[int, str, str], Any],
                         discard_changes: Callable[[], None],
                         api_prefix: str = "/api/") -> None:
    """Answer errors as JSON under the API and as friendly pages elsewhere; before any
    error is answered, `discard_changes` drops what the request changed (the caller
    passes the database's rollback, so this module needs no database)."""
    from flask import jsonify, make_response, request
    from flask_wtf.csrf import CSRFError
    from werkzeug.exceptions import HTTPException

    from contacts.core.accesslog import logged_path

    def respond(status: int, code: str, message: str, details: Any = None,
                headers: dict[str, str] | None = None):
        discard_changes()
        if request.path.startswith(api_prefix):
            response = make_response(jsonify(error_body(code, message, details)), status)
        else:
            response = make_response(render_page(status, code, message))
            response.status_code = status
        response.headers.update(headers or {})
        return response

    @app.errorhandler(LifelineError)
    def lifeline_error(exc: LifelineError):
        if exc.status >= 500:  # our fault, whatever the message says: log it, show nothing
            log.error("%s on %s %s: %s", type(exc).__name__, request.method,
                      logged_path(request.environ), exc.message)
            return respond(500, *HTTP_ERRORS[500])
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return respond(exc.status, exc.code, exc.message, exc.details, headers)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return respond(400, "csrf", "The form expired or was not sent from this site. "
                       "Reload the page and try again.")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        code, message = HTTP_ERRORS.get(status, ("http_error", exc.name))
        if status == 429 and exc.description:
            message = f"Too many attempts ({exc.description}). Wait a little and try again."
        headers = None
        if status == 405 and getattr(exc, "valid_methods", None):
            headers = {"Allow": ", ".join(exc.valid_methods)}
        return respond(status, code, message, headers=headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, logged_path(request.environ))
        return respond(500, *HTTP_ERRORS[500])


class CliError(click.ClickException):
    """Printed as one line `Error: ...` with exit code 2."""

    exit_code = 2


def cli_errors(command: Callable) -> Callable:
    """Turn errors raised by a CLI command into one line and exit code 2."""
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except LifelineError as exc:
            raise CliError(exc.message) from None
        except CommandError as exc:
            raise CliError(f"migrations: {str(exc).splitlines()[0]}") from None
        except SQLAlchemyError as exc:
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise CliError(f"database: {first} (is it migrated? flask --app app db upgrade)"
                           ) from None

    return wrapper
