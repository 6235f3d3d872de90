"""How every ``/v1`` request gets in: authenticated first, its body read after, strictly.

Every router uses ``SecuredRoute``. Before a byte of the body is read, it authenticates the
bearer token (401 when missing, unknown or revoked; 429 once a client address has failed
too often, see ``FailedLogins``) and keeps the caller on the request. Only then is the
body read, by the API's one body mechanism (``core.routes.JsonBodyRoute``): within the
route's size (413 beyond it), parsed by ``core.bodies.parse_json`` and checked in
pydantic's strict JSON mode (``"power_limit_w": false`` or ``"gpus": "8"`` is a 422 naming
the field, not 0.0 and 8). So an anonymous client can neither make the server hold a
large body nor make it parse one.

Routers declare who may call them with ``require(permission)``, usually through an
``Annotated`` alias (``Admin = Annotated[Principal, Depends(require(...))]``). This lives
with ``access`` rather than in ``core.http``: the plumbing knows nothing of tokens.
"""

import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool

from control_plane.access import service as access
from control_plane.access.models import Permission, Principal
from control_plane.core.db import DbConnection
from control_plane.core.errors import (
    NotAuthenticatedError,
    PermissionDeniedError,
    TooManyRequestsError,
)
from control_plane.core.routes import JsonBodyRoute
from control_plane.core.settings import Settings

#: For OpenAPI only: the route class authenticates before FastAPI resolves dependencies.
_bearer = HTTPBearer(auto_error=False, description="A token from `sovctl tokens create`.")
#: How long the event loop itself may wait for an idle pooled connection to authenticate.
_CONNECTION_WAIT_SECONDS = 5.0


class FailedLogins:
    """Failed authentications per client address, to answer 429 once there are too many.

    A sliding window: an address that failed ``limit`` times within ``window_seconds`` is
    refused (before its token is even looked up) until its oldest failure in the window
    ages out, and told when with ``Retry-After``. One per API process, so with several
    workers an address gets ``limit`` tries per worker; a success does not reset it.
    Thread-safe (failures are recorded from worker threads).
    """

    def __init__(
        self, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Allow ``limit`` failures per address per ``window_seconds``."""
        self._limit = limit
        self._window = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address)
        if times is None:
            times = self._failures[address] = deque()
        while times and times[0] <= now - self._window:
            times.popleft()
        return times

    def check(self, address: str) -> None:
        """Raise ``TooManyRequestsError`` if ``address`` failed too often of late."""
        with self._lock:
            now = self._clock()
            times = self._recent(address, now)
            if len(times) >= self._limit:
                retry_after = max(1, int(times[0] + self._window - now) + 1)
                raise TooManyRequestsError(
                    f"too many failed authentications from this address; retry in {retry_after} s",
                    details={"retry_after_seconds": retry_after},
                    retry_after=retry_after,
                )

    def failed(self, address: str) -> None:
        """Count one failed authentication from ``address``."""
        with self._lock:
            now = self._clock()
            self._recent(address, now).append(now)
            if len(self._failures) > 100_000:  # bounded: forget addresses that stopped
                for stale in [a for a, t in self._failures.items() if not t]:
                    del self._failures[stale]


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _authenticate(pool: ConnectionPool[DbConnection], token: str | None, secret: str) -> Principal:
    with pool.connection(timeout=_CONNECTION_WAIT_SECONDS) as conn:
        return access.authenticate(conn, token, secret)


async def authenticate_request(request: Request) -> Principal:
    """Authenticate the request's bearer token once, and keep the caller on the request."""
    found: Principal | None = getattr(request.state, "principal", None)
    if found is not None:
        return found
    settings: Settings = request.app.state.settings
    failures: FailedLogins = request.app.state.failed_logins
    address = request.client.host if request.client else "unknown"
    failures.check(address)
    token = _bearer_token(request)
    if token is None:
        failures.failed(address)
        raise NotAuthenticatedError("missing bearer token (Authorization: Bearer <token>)")
    try:
        principal = await run_in_threadpool(
            _authenticate, request.app.state.pool, token, settings.secret_key.get_secret_value()
        )
    except NotAuthenticatedError:
        failures.failed(address)
        raise
    request.state.principal = principal
    return principal


class SecuredRoute(JsonBodyRoute):
    """A route that authenticates before reading its body, and reads a JSON body strictly.

    Its body may be at most ``DEFAULT_BODY_BYTES`` unless its ``openapi_extra`` names
    another bound under ``core.bodies.MAX_BODY_KEY`` (``core.routes.JsonBodyRoute``).
    """

    async def before_body(self, request: Request) -> None:
        """Authenticate the bearer token before a byte of the body is read."""
        await authenticate_request(request)


async def get_principal(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The authenticated caller (``SecuredRoute`` has checked the token before the body)."""
    return await authenticate_request(request)


def require(permission: Permission) -> Callable[[Principal], Awaitable[Principal]]:
    """Build a dependency that lets the request through only with ``permission`` (else 403)."""

    async def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.can(permission):
            raise PermissionDeniedError(
                f"role {principal.role.value!r} may not {permission.value}",
                details={"role": principal.role.value, "permission": permission.value},
            )
        return principal

    dependency.__name__ = f"require_{permission.name.lower()}"
    return dependency
