"""The JSON API's shared plumbing: the OpenAPI description, request validation, bodies.

Every endpoint under /api/v1/ is decorated with `spec.validate(...)` and pydantic models, so
the document at /api/v1/openapi.json is generated from the code and every body is validated
the same way. Validation failures and malformed JSON answer our one error shape.
"""

from __future__ import annotations

import copy
import inspect
import logging
import re
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, Field
from spectree import SecurityScheme, SecuritySchemeData, SpecTree

from contacts.core.errors import Invalid, LifelineError
from contacts.core.ids import PATH_PARAMETER_PATTERNS
from contacts.core.inputs import has_body

Model = TypeVar("Model", bound=BaseModel)
log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


class ValidationFailed(Invalid):
    status = 422
    code = "validation_failed"


class UnsupportedMediaType(LifelineError):
    status = 415
    code = "unsupported_media_type"


EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)


def _within_reason(value: datetime) -> datetime:
    if not EARLIEST <= value <= LATEST:
        raise ValueError("must be between 1970 and 9000")
    return value


_A_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _written_out(value: object) -> object:
    """pydantic would read 0, 0.5 or "1700000000" as seconds since 1970; the document says
    date-time, so a time is written out (the fuzzer's negative data found this)."""
    if isinstance(value, int | float) or (isinstance(value, str)
                                          and _A_NUMBER.fullmatch(value.strip())):
        raise ValueError("must be a date and time with a zone, like 2026-04-05T07:38:00Z")
    return value


# A time given to the API: written out, with a zone, and in a range every database can store.
Moment = Annotated[AwareDatetime, BeforeValidator(_written_out), AfterValidator(_within_reason)]


def _without_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


# Text given to the API: PostgreSQL cannot store a NUL character, so no database gets one.
# Query strings and forms are refused whole by app._refuse_nul_bytes; JSON text is checked
# per field here, so a 422 names the field, and a file import (no request) rejects just
# the entry. Fields sealed before storage take plain str: ciphertext holds no NUL.
Text = Annotated[str, AfterValidator(_without_nul)]


class _Overlay:
    """A row's attributes, with some values given beside it (computed, or from elsewhere)."""

    def __init__(self, row: object, given: dict):
        self._row, self._given = row, given

    def __getattr__(self, name: str):
        return self._given[name] if name in self._given else getattr(self._row, name)


def from_row(model: type[Model], row: object, **given) -> Model:
    """An API model read from an ORM row's attributes (`from_attributes`), validated, with
    the fields the row does not hold given by name."""
    return model.model_validate(_Overlay(row, given), from_attributes=True)


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, for example `invalid`.")
    message: str = Field(description="What is wrong, in words a person can act on.")
    details: object | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def _reject_invalid_request(req, resp, req_validation_error, instance, model_adapter):
    if req_validation_error is None:
        return
    problems = [
        {"field": ".".join(str(part) for part in error.get("loc", ())),
         "message": error.get("msg", "invalid"), "type": error.get("type", "invalid")}
        for error in req_validation_error.errors()
    ]
    summary = "; ".join(f"{p['field'] or 'body'}: {p['message']}" for p in problems[:5])
    raise ValidationFailed(f"The request does not match the schema: {summary}", details=problems)


def _refuse_invalid_response(req, resp, resp_validation_error, instance, model_adapter):
    if resp_validation_error is not None:
        log.error("response of %s does not match its schema: %s", req.endpoint,
                  resp_validation_error)
        raise RuntimeError("response failed its own schema")


spec = SpecTree(
    "flask",
    title="Lifeline API",
    description="Out-of-band customer communication: contacts, intake, escalations, updates. "
    "Authenticate with `Authorization: Bearer <token>`; errors are "
    '`{"error": {"code": ..., "message": ...}}`.',
    version="1",
    # Spectree skips routes under its own document path, so it gets one of its own that
    # nothing registers; /api/v1/openapi.json is served by init_app below.
    path="_spectree",
    openapi_version="3.1.0",
    mode="strict",
    page_templates={},
    security_schemes=[
        SecurityScheme(name="bearer", data=SecuritySchemeData(type="http", scheme="bearer")),
    ],
    annotations=True,
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
    validation_error_status=422,
    validation_error_model=ErrorResponse,  # documented for every operation, so our one shape
    before=_reject_invalid_request,
    after=_refuse_invalid_response,
)


def _with_path_patterns(document: dict) -> dict:
    """Spectree describes path parameters as bare strings: give each one that names an ID
    or a reference its pattern (contacts.core.ids), so clients and fuzzers send well-formed ones."""
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                pattern = PATH_PARAMETER_PATTERNS.get(parameter["name"])
                if parameter["in"] == "path" and pattern:
                    parameter["schema"] = {"type": "string", "pattern": pattern}
    return document


_WEBHOOKS: dict[str, tuple[type[BaseModel], str]] = {}
_SIGNATURE_HEADERS = (
    ("webhook-id", "The message's ID, the same on every attempt (msg_...)."),
    ("webhook-timestamp", "When this attempt was signed, in seconds since 1970."),
    ("webhook-signature", "`v1,<base64 signature>`, one or more, separated by spaces."))


def webhook_event(name: str, model: type[BaseModel], description: str) -> None:
    """Document an event POSTed to customers' endpoints, in the document's `webhooks`."""
    _WEBHOOKS[name] = (model, description)


def _with_webhooks(document: dict) -> dict:
    """OpenAPI 3.1's `webhooks`: what we POST to endpoints, their models in the components."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    webhooks = {}
    for name, (model, description) in sorted(_WEBHOOKS.items()):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        webhooks[name] = {"post": {
            "summary": (model.__doc__ or name).strip().splitlines()[0],
            "description": description, "operationId": f"webhook_{name.replace('.', '_')}",
            "parameters": [{"name": header, "in": "header", "required": True,
                            "description": text, "schema": {"type": "string"}}
                           for header, text in _SIGNATURE_HEADERS],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}},
            "responses": {"2XX": {"description": "Received; anything else is retried."}}}}
    if webhooks:
        document["webhooks"] = webhooks
    return document


def init_app(app) -> None:
    from flask import jsonify, request

    from contacts.core.access import public

    @app.get(API_PREFIX + "/openapi.json", endpoint="openapi")
    @public
    def openapi_document():
        return jsonify(_with_webhooks(_with_path_patterns(copy.deepcopy(spec.spec))))

    @app.before_request
    def parse_json_body():
        """Refuse a body that is not JSON, or JSON that does not parse, naming the problem.
        Chunked bodies too: they have no Content-Length, and the same rules."""
        if not request.path.startswith(API_PREFIX + "/") or request.routing_exception:
            return  # not the API, or an address that answers 404/405 anyway
        if request.method not in ("POST", "PUT", "PATCH") or not has_body(request):
            return
        if request.mimetype != "application/json":
            raise UnsupportedMediaType(
                f"Send the body as application/json, not {request.mimetype or 'no type'}."
            )
        request.get_json()  # contacts.core.inputs.parse_json; cached for the view's validation


def operation(*, scope: str | None, response: type[BaseModel], status: int = 200,
              query: type[BaseModel] | None = None, body: type[BaseModel] | None = None,
              errors: tuple[int, ...] = (), tags: tuple[str, ...] = ()):
    """Declare an API operation: its access rule, its models and its documented errors.

    `scope=None` makes the operation public; otherwise a bearer token with that scope is
    required, and 401/403 are documented. An operation whose address names an object (its
    view takes path parameters) documents 404; `errors` adds what else its service may
    answer, such as 409 for a conflict or 404 for an ID in the body that names nothing.
    """
    from spectree import Response

    from contacts.core.access import public, token

    codes = {f"HTTP_{status}": response, "HTTP_400": ErrorResponse, "HTTP_415": ErrorResponse,
             "HTTP_429": ErrorResponse}
    if query is not None or body is not None:
        codes["HTTP_422"] = ErrorResponse
    if body is not None:  # above server.max_body_bytes (intake.max_body_bytes on the intake)
        codes["HTTP_413"] = ErrorResponse
    if scope is not None:
        codes.update(HTTP_401=ErrorResponse, HTTP_403=ErrorResponse)
    codes.update({f"HTTP_{code}": ErrorResponse for code in errors})
    declare = public if scope is None else token(scope)

    def decorate(view):
        documented = dict(codes)
        if set(inspect.signature(view).parameters) - {"query", "json"}:
            documented["HTTP_404"] = ErrorResponse
        validate = spec.validate(
            query=query, json=body, resp=Response(**documented), tags=list(tags),
            security={"bearer": []} if scope is not None else {},
        )
        return declare(validate(view))

    return decorate
