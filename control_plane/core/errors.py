"""One error hierarchy for the whole control plane.

Services and repositories raise these; a single FastAPI handler (``http.py``) turns them
into an HTTP status and the JSON body ``{"error": {"code", "message", "details"}}``. The
CLI prints the same message. Nothing below a router raises ``HTTPException``.
"""

from typing import Any, ClassVar


class SovereignError(Exception):
    """Something went wrong in Sovereign."""

    code: ClassVar[str] = "internal"
    status_code: ClassVar[int] = 500

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


class InvalidInputError(SovereignError):
    """The request is invalid."""

    code = "invalid_input"
    status_code = 422

    @classmethod
    def for_field(cls, field: str, message: str, value: Any = None) -> "InvalidInputError":
        """Name the offending field the way request validation does (``details.fields``)."""
        return cls(
            f"{field}: {message}",
            details={"fields": [{"field": field, "message": message, "value": value}]},
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


class ServiceUnavailableError(SovereignError):
    """A service Sovereign depends on is unavailable."""

    code = "service_unavailable"
    status_code = 503
