"""SQL access for API tokens. Functions take the caller's connection."""

from typing import Any, LiteralString
from uuid import UUID

from psycopg.rows import DictRow

from control_plane.core.db import (
    DbConnection,
    fetch_all,
    fetch_one,
    fetch_returning,
    load_queries,
    unique,
)

_CONSTRAINTS = {
    "api_token_active_name_key": unique("name", "an active token already has this name"),
}


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.access")[name]


def insert_token(conn: DbConnection, values: dict[str, Any]) -> DictRow:
    """Store a token's hash and metadata; return the stored row without the hash."""
    return fetch_returning(conn, _q("insert_token"), values, _CONSTRAINTS)


def active_token_by_hash(conn: DbConnection, token_hash: str) -> DictRow | None:
    """Find the unrevoked token with this hash."""
    return fetch_one(conn, _q("active_token_by_hash"), {"token_hash": token_hash})


def list_tokens(
    conn: DbConnection, *, include_revoked: bool, include_agents: bool
) -> list[DictRow]:
    """List tokens, oldest first."""
    return fetch_all(
        conn,
        _q("list_tokens"),
        {"include_revoked": include_revoked, "include_agents": include_agents},
    )


def find_active_tokens(conn: DbConnection, ref: str) -> list[DictRow]:
    """Active tokens whose id, name or prefix is ``ref``."""
    return fetch_all(conn, _q("find_token"), {"ref": ref})


def revoke_token(conn: DbConnection, token_id: UUID) -> DictRow | None:
    """Mark a token revoked; None if it was already."""
    return fetch_one(conn, _q("revoke_token"), {"id": token_id})


def revoke_node_tokens(conn: DbConnection, node_id: UUID) -> list[DictRow]:
    """Revoke every credential of one node (on re-registration)."""
    return fetch_all(conn, _q("revoke_node_tokens"), {"node_id": node_id})
