"""The FastAPI dependencies that authenticate a request and check its permission.

Routers declare who may call them with ``require(permission)``, usually through an
``Annotated`` alias (``Admin = Annotated[Principal, Depends(require(...))]``). They live
with ``access`` rather than in ``core.http``: the plumbing knows nothing of tokens.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from control_plane.access import service as access
from control_plane.access.models import Permission, Principal
from control_plane.core.errors import PermissionDeniedError
from control_plane.core.http import Conn, SettingsDep

_bearer = HTTPBearer(auto_error=False, description="A token from `sovctl tokens create`.")


def get_principal(
    conn: Conn,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Authenticate the bearer token (401 when missing, unknown or revoked)."""
    token = credentials.credentials if credentials else None
    return access.authenticate(conn, token, settings.secret_key.get_secret_value())


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
