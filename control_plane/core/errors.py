"""One error hierarchy for the whole control plane.

Services and repositories raise these; a single FastAPI handler (``http.py``) turns them
into an HTTP status and the JSON body ``{"error": {"code", "message", "details"}}``. The
CLI prints the same message. Nothing below a router raises ``HTTPException``.
"""

import json
import math
from collections.abc import Sequence
from typing import Any, ClassVar


class SovereignError(Exception):
    """Something went wrong in Sovereign."""

    code: ClassVar[str] = "internal"
    status_code: ClassVar[int] = 500
    #: HTTP headers the answer carries (``Retry-After``, say); none by default.
    headers: dict[str, str] | None = None

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None):
        self.message = message or (type(self).__doc__ or "error").strip().splitlines()[0]
        self.details: dict[str, Any] = details or {}
        super().__init__(self.message)

    def to_body(self) -> dict[str, Any]:
        """Return the JSON error body every client of the API relies on."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ConfigurationError(SovereignError):
    """The configuration is invalid."""

    code = "configuration_error"


#: The longest text an error body echoes back of a value it refuses.
ECHO_CHARACTERS = 200


def echo(value: Any) -> Any:
    """What an error body may say of a refused value: itself if small and JSON-safe.

    A refused value can be anything a client sent: megabytes of aliased YAML, a number
    JSON cannot write, a string with a lone surrogate. Echoing it as is would make the
    422 larger than the request, or a 500 where it cannot be rendered; so long text is
    cut, containers are described when they are large, and anything JSON cannot carry is
    shown by its ``repr``, cut too.
    """
    if value is None or isinstance(value, bool | int):
        return value if not isinstance(value, int) or abs(value) < 2**63 else _cut(str(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, list | tuple | dict):
        text = repr(value)
        if len(text) <= ECHO_CHARACTERS:
            try:
                json.dumps(value, allow_nan=False)
                return value
            except (TypeError, ValueError):
                return _cut(text)
        kind = "an object" if isinstance(value, dict) else "a list"
        return f"{kind} of {len(value)} values"
    return _cut(repr(value))


def _cut(text: str) -> str:
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe if len(safe) <= ECHO_CHARACTERS else safe[:ECHO_CHARACTERS] + "…"


class InvalidInputError(SovereignError):
    """The request is invalid."""

    code = "invalid_input"
    status_code = 422

    @classmethod
    def for_field(cls, field: str, message: str, value: Any = None) -> "InvalidInputError":
        """Name the offending field the way request validation does (``details.fields``)."""
        return cls.for_fields([(field, message, value)])

    @classmethod
    def for_fields(cls, problems: Sequence[tuple[str, str, Any]]) -> "InvalidInputError":
        """Name every offending ``(field, message, value)`` at once, as validation does."""
        return cls(
            "; ".join(f"{field}: {message}" for field, message, _ in problems),
            details={
                "fields": [
                    {"field": field, "message": message, "value": echo(value)}
                    for field, message, value in problems
                ]
            },
        )


class NotAuthenticatedError(SovereignError):
    """A valid bearer token is required."""

    code = "not_authenticated"
    status_code = 401


class PermissionDeniedError(SovereignError):
    """Your role does not allow this."""

    code = "permission_denied"
    status_code = 403


class NotFoundError(SovereignError):
    """The object does not exist."""

    code = "not_found"
    status_code = 404


class ConflictError(SovereignError):
    """The request conflicts with what is stored."""

    code = "conflict"
    status_code = 409


class PayloadTooLargeError(SovereignError):
    """The request body is larger than this route accepts."""

    code = "payload_too_large"
    status_code = 413

    @classmethod
    def of(cls, limit: int) -> "PayloadTooLargeError":
        """The error for a body beyond ``limit`` bytes, naming ``body`` and the limit."""
        return cls(
            f"body: larger than {limit} bytes, the most this route accepts",
            details={"field": "body", "max_bytes": limit},
        )


class TooManyRequestsError(SovereignError):
    """Too many requests; retry later."""

    code = "too_many_requests"
    status_code = 429

    def __init__(
        self, message: str | None = None, *, details: dict[str, Any] | None = None, retry_after: int
    ):
        super().__init__(message, details=details)
        self.headers = {"Retry-After": str(retry_after)}


class ServiceUnavailableError(SovereignError):
    """A service Sovereign depends on is unavailable."""

    code = "service_unavailable"
    status_code = 503
