"""Every route's error answers in the OpenAPI document, with the body the server really sends.

FastAPI documents a route's success and, for a route with parameters, a 422 in a shape of
its own (``HTTPValidationError``) that this API never sends. ``document_errors`` replaces
that with what the error handlers (``core.http``) answer, ``ErrorBody``, worked out once
per operation from what the document already says of it rather than written by hand on
each route:

* an operation that asks for a bearer token (``security``) can answer 401 (no valid
  token), 403 (the role may not), 413 (a body over the limit), 422, 429 (too many failed
  authentications) and 503 (the database, which authentication and every ``/v1`` route
  read, is down);
* an operation with parameters or a body can answer 422;
* an operation with path parameters names an object, and can answer 404;
* a write (POST, PUT, PATCH, DELETE) can answer 409: a name taken, an object still in
  use, a state that does not allow the change.

A route that answers something these rules cannot see says so with ``error_responses``
in its ``responses=`` (a node named by a hostname two nodes share is a 409 on a GET). A
route the rules would over-document (the admission webhooks' POSTs change nothing that
can conflict, yet would get a 409 as writes) lists exactly what it answers with
``exact_errors`` in its ``openapi_extra``; the rules then do not apply to it.
429 and 503 document their ``Retry-After`` header. Generated clients and schemathesis
(``tests/integration/test_api_contract.py``) then see what the server sends.
"""

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from control_plane.core.errors import (
    ConflictError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
    SovereignError,
)
from control_plane.core.http import RETRY_AFTER_SECONDS


class FieldProblem(BaseModel):
    """One refused field of a request, as ``details.fields`` of ``invalid_input`` lists it."""

    field: str = Field(
        description='Dotted path of the field ("zones.0", "labels.team"); "body" for the '
        "body as a whole, or the name of a query or path parameter."
    )
    message: str = Field(description="What is wrong with it.")
    type: str | SkipJsonSchema[None] = Field(
        default=None, description="The validation error's type, when request validation refused it."
    )
    value: Any = Field(
        default=None, description="The refused value, when the rule that refused it names it."
    )


class ErrorDetails(BaseModel):
    """Machine-readable particulars of an error; what else it holds depends on the code."""

    model_config = ConfigDict(extra="allow")

    fields: list[FieldProblem] | SkipJsonSchema[None] = Field(
        default=None, description="For invalid_input: every field refused, in request order."
    )


class ApiError(BaseModel):
    """An error: a stable code to branch on, a sentence for people, and particulars."""

    code: str = Field(description="Stable and machine-readable; docs/api.md lists every one.")
    message: str
    details: ErrorDetails


class ErrorBody(BaseModel):
    """The body of every error answer, whatever its status."""

    error: ApiError


@dataclass(frozen=True)
class _Answer:
    """How the document describes one error status, with an example body."""

    description: str
    example: dict[str, Any]
    retries: bool = False


def _example(error: SovereignError | dict[str, Any]) -> dict[str, Any]:
    body = error.to_body() if isinstance(error, SovereignError) else {"error": error}
    return ErrorBody.model_validate(body).model_dump(mode="json", exclude_none=True)


#: Every status ``document_errors`` gives a route, with the example made by the error class
#: that raises it (413 and 429 are raised by the request plumbing, with these codes).
_ANSWERS: dict[int, _Answer] = {
    401: _Answer(
        "No valid bearer token: missing, unknown or revoked (`not_authenticated`).",
        _example(NotAuthenticatedError("missing bearer token (Authorization: Bearer <token>)")),
    ),
    403: _Answer(
        "The token's role does not allow this (`permission_denied`).",
        _example(
            PermissionDeniedError(
                "role 'auditor' may not inventory:write",
                details={"role": "auditor", "permission": "inventory:write"},
            )
        ),
    ),
    404: _Answer(
        "The object named in the path does not exist (`not_found`).",
        _example(NotFoundError("zone 'mars' does not exist")),
    ),
    409: _Answer(
        "The request conflicts with what is stored (`conflict`): a name taken, an object "
        "still in use, a state that does not allow the change.",
        _example(
            ConflictError(
                "slug: a zone with this slug already exists",
                details={"field": "slug", "constraint": "residency_zone_pkey"},
            )
        ),
    ),
    413: _Answer(
        "The body is larger than the route accepts (`payload_too_large`).",
        _example(
            {
                "code": "payload_too_large",
                "message": "body: larger than 1048576 bytes, the most this route accepts",
                "details": {"field": "body", "max_bytes": 1048576},
            }
        ),
    ),
    422: _Answer(
        "A parameter or the body is invalid (`invalid_input`); `details.fields` names each "
        "field refused.",
        _example(
            InvalidInputError.for_field(
                "country", "'XX' is not an ISO 3166-1 alpha-2 country code", "XX"
            )
        ),
    ),
    429: _Answer(
        "Too many failed authentications from this address (`too_many_requests`); retry "
        "after `Retry-After` seconds.",
        _example(
            {
                "code": "too_many_requests",
                "message": "too many failed authentications from this address; retry in 30 s",
                "details": {"retry_after_seconds": 30},
            }
        ),
        retries=True,
    ),
    503: _Answer(
        "The database is unavailable (`service_unavailable`); retry after `Retry-After` seconds.",
        _example(
            ServiceUnavailableError(
                "the database is unavailable; retry shortly", details={"dependency": "database"}
            )
        ),
        retries=True,
    ),
}

_RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0, "example": RETRY_AFTER_SECONDS},
    }
}
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ERROR_BODY_REF = {"$ref": "#/components/schemas/ErrorBody"}
#: What FastAPI documents for 422 by itself, and the schemas that only it uses.
_FASTAPI_422_REF = {"$ref": "#/components/schemas/HTTPValidationError"}
_FASTAPI_ONLY_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _response(status: int, schema: dict[str, Any] | None) -> dict[str, Any]:
    answer = _ANSWERS[status]
    content: dict[str, Any] = {"example": answer.example}
    if schema is not None:
        content["schema"] = schema
    response: dict[str, Any] = {
        "description": answer.description,
        "content": {"application/json": content},
    }
    if answer.retries:
        response["headers"] = _RETRY_AFTER_HEADER
    return response


#: The ``openapi_extra`` key under which ``exact_errors`` lists a route's error statuses;
#: taken out of the document once read.
EXACT_ERRORS_KEY = "x-sovereign-error-statuses"


def exact_errors(*statuses: int) -> dict[str, list[int]]:
    """``openapi_extra`` for a route that answers exactly these error statuses, no others."""
    unknown = set(statuses) - set(_ANSWERS)
    if unknown:
        raise ValueError(f"no documented answer for {sorted(unknown)}")
    return {EXACT_ERRORS_KEY: sorted(statuses)}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that answers statuses ``document_errors`` cannot see."""
    return {status: {"model": ErrorBody, **_response(status, None)} for status in statuses}


def answers(method: str, operation: dict[str, Any]) -> frozenset[int]:
    """The error statuses an operation can answer, by the rules in this module's docstring.

    Read from the operation as FastAPI documents it (its security, parameters and body),
    so the rules see exactly what clients see; a route's ``exact_errors`` replace them.
    """
    if EXACT_ERRORS_KEY in operation:
        return frozenset(operation[EXACT_ERRORS_KEY])
    statuses: set[int] = set()
    if operation.get("security"):
        statuses |= {401, 403, 413, 422, 429, 503}
    locations = {parameter["in"] for parameter in operation.get("parameters", [])}
    if locations or "requestBody" in operation:
        statuses.add(422)
    if "path" in locations:
        statuses.add(404)
    if method.upper() in _WRITES:
        statuses.add(409)
    return frozenset(statuses)


def _error_schemas() -> dict[str, Any]:
    schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    nested: dict[str, Any] = schema.pop("$defs", {})
    return {**nested, "ErrorBody": schema}


#: Keywords whose numbers FastAPI's document models hold as floats (``2**63`` as ``9.2e18``).
_BOUNDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
_HEX = "[0-9A-Fa-f]"
_HYPHENATED = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
#: The spellings of a UUID that validation takes: hyphenated (bare, braced or as a URN)
#: or 32 hex digits.
UUID_PATTERN = f"^(?:{_HYPHENATED}|\\{{{_HYPHENATED}\\}}|urn:uuid:{_HYPHENATED}|{_HEX}{{32}})$"


def _as_validated(schema: Any) -> None:
    """Make the schemas in the document say what validation does, where they are looser.

    * Pydantic documents ``dict[LabelKey, ...]`` as ``patternProperties``, which by itself
      lets any other key through; the server validates every key, so no other is taken.
    * An integral bound is written as an integer again: a float bound reads as a float to
      a client, and past 2**53 it is not the number the server compares with.
    * ``format: uuid`` gets the pattern of what validation takes: a format is only an
      annotation in JSON Schema, and ``null`` or ``latest`` would pass for a UUID.
    """
    if isinstance(schema, dict):
        if "patternProperties" in schema:
            schema.setdefault("additionalProperties", False)
        if schema.get("format") == "uuid":
            schema.setdefault("pattern", UUID_PATTERN)
        for key, value in schema.items():
            if key in _BOUNDS and isinstance(value, float) and value.is_integer():
                schema[key] = int(value)
            else:
                _as_validated(value)
    elif isinstance(schema, list):
        for value in schema:
            _as_validated(value)


def _complete(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_ONLY_SCHEMAS:
        schemas.pop(name, None)
    schemas.update(_error_schemas())
    _as_validated(document)
    for operations in document.get("paths", {}).values():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            fastapi_422 = responses.get("422", {}).get("content", {}).get("application/json", {})
            if fastapi_422.get("schema") == _FASTAPI_422_REF:
                del responses["422"]
            statuses = answers(method, operation)
            if EXACT_ERRORS_KEY in operation:
                del operation[EXACT_ERRORS_KEY]
                extra = {code for code in responses if code[0] in "45"} - {
                    str(status) for status in statuses
                }
                if extra:
                    raise ValueError(f"{method} documents {sorted(extra)} beyond its exact_errors")
            for status in sorted(statuses):
                responses.setdefault(str(status), _response(status, _ERROR_BODY_REF))


def document_errors(app: FastAPI) -> None:
    """Make ``app.openapi()`` document every route's error answers (see the module doc).

    FastAPI builds the document once (and again when routes change); it is completed
    each time it is built, not each time it is served.
    """
    generate = app.openapi
    completed: dict[str, Any] | None = None

    def openapi() -> dict[str, Any]:
        nonlocal completed
        document = generate()
        if document is not completed:
            _complete(document)
            completed = document
        return document

    # FastAPI's documented way to extend the document is to replace this method.
    app.openapi = openapi  # type: ignore[method-assign]
