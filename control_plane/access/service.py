"""Issuing, checking and revoking bearer tokens.

Tokens are 256-bit random strings shown once. Only an HMAC-SHA256 of each, keyed with the
server secret, is stored, so a copy of the database does not yield working tokens.
"""

import hashlib
import hmac
import secrets
from uuid import UUID

from control_plane.access import repository
from control_plane.access.models import IssuedToken, Principal, Role, TokenPublic
from control_plane.core.audit_log import AuditContext, audited
from control_plane.core.db import DbConnection
from control_plane.core.errors import (
    ConflictError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
)
from control_plane.domain.audit import AuditAction

TOKEN_PREFIX = "sov_"  # noqa: S105 - a marker so leaked tokens are easy to scan for
_PREFIX_LENGTH = 12


def hash_token(token: str, secret_key: str) -> str:
    """Return the stored form of a token."""
    return hmac.new(secret_key.encode(), token.encode(), hashlib.sha256).hexdigest()


def issue_token(
    conn: DbConnection,
    ctx: AuditContext,
    *,
    name: str,
    role: Role,
    secret_key: str,
    node_id: UUID | None = None,
    zone: str | None = None,
    site: str | None = None,
) -> IssuedToken:
    """Create a token (in the caller's transaction, if open) and audit it; the secret once.

    ``zone``/``site`` scope a bootstrap token; the caller has checked that they exist and
    agree (``inventory.agents.create_bootstrap_token``), the database that only bootstrap
    tokens carry a scope.
    """
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with audited(conn, ctx, AuditAction.TOKEN_CREATED) as change:
        info = repository.insert_token(
            conn,
            {
                "name": name,
                "role": role.value,
                "token_hash": hash_token(token, secret_key),
                "token_prefix": token[:_PREFIX_LENGTH],
                "node_id": node_id,
                "zone": zone,
                "site": site,
                "created_by": ctx.actor_name,
            },
        )
        change.object_id = str(info.id)
        change.after = info
    return IssuedToken(token=token, info=info)


def create_token(
    conn: DbConnection, ctx: AuditContext, *, name: str, role: Role, secret_key: str
) -> IssuedToken:
    """Create a human or bootstrap token (agents get theirs by registering)."""
    if role is Role.AGENT:
        raise InvalidInputError.for_field(
            "role", "agent tokens are issued by registering a node, not by hand", role.value
        )
    return issue_token(conn, ctx, name=name, role=role, secret_key=secret_key)


def authenticate(conn: DbConnection, token: str | None, secret_key: str) -> Principal:
    """Resolve a bearer token to its principal, or raise 401."""
    if not token:
        raise NotAuthenticatedError("missing bearer token (Authorization: Bearer <token>)")
    principal = repository.active_token_by_hash(conn, hash_token(token, secret_key))
    if principal is None:
        raise NotAuthenticatedError("unknown or revoked token")
    return principal


def list_tokens(
    conn: DbConnection, *, include_revoked: bool = False, include_agents: bool = False
) -> list[TokenPublic]:
    """List tokens without their secrets."""
    return repository.list_tokens(
        conn, include_revoked=include_revoked, include_agents=include_agents
    )


def revoke_token(conn: DbConnection, ctx: AuditContext, ref: str) -> TokenPublic:
    """Revoke the one active token whose id, name or prefix is ``ref``."""
    with audited(conn, ctx, AuditAction.TOKEN_REVOKED) as change:
        matches = repository.find_active_tokens(conn, ref)
        if not matches:
            raise NotFoundError(f"no active token with id, name or prefix {ref!r}")
        if len(matches) > 1:
            raise ConflictError(
                f"{ref!r} matches {len(matches)} active tokens; revoke by id",
                details={"ids": [str(m.id) for m in matches]},
            )
        before = matches[0]
        after = repository.revoke_token(conn, before.id)
        assert after is not None
        change.object_id = str(after.id)
        change.before = before
        change.after = after
        return after
