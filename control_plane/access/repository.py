"""SQL access for API tokens. Functions take the caller's connection."""

from typing import Any, LiteralString
from uuid import UUID

from control_plane.access.models import Principal, TokenPublic
from control_plane.core.db import (
    DbConnection,
    fetch_all,
    fetch_all_as,
    fetch_one_as,
    fetch_returning_as,
    load_queries,
    references,
    refused,
    unique,
)

_CONSTRAINTS = {
    "api_token_active_name_key": unique("name", "an active token already has this name"),
    "api_token_zone_fkey": references("zone", "no zone"),
    "api_token_site_fkey": references("site", "no site"),
    "api_token_scope_only_bootstrap": refused("zone", "only bootstrap tokens have a scope"),
}


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.access")[name]


def insert_token(conn: DbConnection, values: dict[str, Any]) -> TokenPublic:
    """Store a token's hash and metadata; return the stored token without the hash."""
    return fetch_returning_as(conn, TokenPublic, _q("insert_token"), values, _CONSTRAINTS)


def active_token_by_hash(conn: DbConnection, token_hash: str) -> Principal | None:
    """The caller holding the unrevoked token with this hash, or None."""
    return fetch_one_as(conn, Principal, _q("active_token_by_hash"), {"token_hash": token_hash})


def list_tokens(
    conn: DbConnection, *, include_revoked: bool, include_agents: bool
) -> list[TokenPublic]:
    """List tokens, oldest first."""
    return fetch_all_as(
        conn,
        TokenPublic,
        _q("list_tokens"),
        {"include_revoked": include_revoked, "include_agents": include_agents},
    )


def find_active_tokens(conn: DbConnection, ref: str) -> list[TokenPublic]:
    """Active tokens whose id, name or prefix is ``ref``."""
    return fetch_all_as(conn, TokenPublic, _q("find_token"), {"ref": ref})


def revoke_token(conn: DbConnection, token_id: UUID) -> TokenPublic | None:
    """Mark a token revoked; None if it was already."""
    return fetch_one_as(conn, TokenPublic, _q("revoke_token"), {"id": token_id})


def revoke_node_tokens(conn: DbConnection, node_id: UUID) -> list[UUID]:
    """Revoke every credential of one node (on re-registration); their ids."""
    return [row["id"] for row in fetch_all(conn, _q("revoke_node_tokens"), {"node_id": node_id})]
