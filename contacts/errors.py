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


def register_http_errors(app, render_page: Callable[[int, str, str], Any]) -> None:
    """Answer errors as JSON under /api/ and as friendly pages elsewhere."""
    from flask import request
    from flask_wtf.csrf import CSRFError
    from werkzeug.exceptions import HTTPException

    from contacts.db import rollback_request_session

    def respond(status: int, code: str, message: str, details: Any = None):
        rollback_request_session()
        if request.path.startswith("/api/"):
            return error_body(code, message, details), status
        return render_page(status, code, message)

    @app.errorhandler(LifelineError)
    def lifeline_error(exc: LifelineError):
        response = respond(exc.status, exc.code, exc.message, exc.details)
        if exc.status == 401:
            return (*response, {"WWW-Authenticate": "Bearer"})
        return response

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
        response = respond(status, code, message)
        if status == 405 and exc.valid_methods:
            return (*response, {"Allow": ", ".join(exc.valid_methods)})
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return respond(500, *HTTP_ERRORS[500])


class CliError(click.ClickException):
    """Printed as one line `Error: ...` with exit code 2."""

    exit_code = 2


def cli_errors(command: Callable) -> Callable:
    """Turn our errors raised by a CLI command into one line and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except LifelineError as exc:
            raise CliError(exc.message) from None

    return wrapper
