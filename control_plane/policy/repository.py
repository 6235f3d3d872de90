"""SQL access for stored policy versions and policy sets. Functions take the caller's connection.

Both tables are append-only for the application role, so there is nothing here that
updates or deletes. Writers take ``lock_store`` first: it serializes them, which is what
keeps version numbers gapless.
"""

from collections.abc import Sequence
from typing import Any, LiteralString

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from control_plane.core.db import (
    DbConnection,
    fetch_all,
    fetch_one,
    fetch_page,
    fetch_returning,
    load_queries,
)


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.policy")[name]


def lock_store(conn: DbConnection) -> None:
    """Hold the policy store's write lock until the transaction ends."""
    conn.execute(_q("lock_store"))


def zone_slugs(conn: DbConnection) -> set[str]:
    """Every residency zone's slug: what policy documents may name."""
    return {row["slug"] for row in fetch_all(conn, _q("zone_slugs"), {})}


def latest_version(conn: DbConnection, name: str) -> DictRow | None:
    """A policy's latest version (without its document), or None if it was never applied."""
    return fetch_one(conn, _q("latest_version"), {"name": name})


def latest_versions(conn: DbConnection) -> list[DictRow]:
    """Every policy's latest version with its document, by name."""
    return fetch_all(conn, _q("latest_versions"), {})


def insert_version(conn: DbConnection, values: dict[str, Any]) -> DictRow:
    """Store a new version of a policy; ``document`` is the validated document as JSON."""
    return fetch_returning(
        conn, _q("insert_version"), {**values, "document": Jsonb(values["document"])}
    )


def policy_versions(conn: DbConnection, name: str) -> list[DictRow]:
    """Every version of one policy with its document, oldest first."""
    return fetch_all(conn, _q("policy_versions"), {"name": name})


def get_version(conn: DbConnection, name: str, version: int) -> DictRow | None:
    """One version of a policy with its document, or None."""
    return fetch_one(conn, _q("get_version"), {"name": name, "version": version})


def member_documents(conn: DbConnection, members: Sequence[dict[str, Any]]) -> list[DictRow]:
    """The stored documents of ``members`` (``{name, version}`` each), by name."""
    return fetch_all(conn, _q("member_documents"), {"members": Jsonb(list(members))})


def active_set(conn: DbConnection) -> DictRow | None:
    """The active policy set (the last activated), or None if none ever was."""
    return fetch_one(conn, _q("active_set"), {})


def get_set(conn: DbConnection, version: int) -> DictRow | None:
    """One policy set by version, or None."""
    return fetch_one(conn, _q("get_set"), {"version": version})


def list_sets(conn: DbConnection, limit: int, offset: int) -> tuple[list[DictRow], int]:
    """A page of policy sets, newest first, and how many there are."""
    return fetch_page(conn, _q("list_sets"), _q("count_sets"), {}, limit, offset)


def insert_set(conn: DbConnection, values: dict[str, Any]) -> DictRow:
    """Store a policy set as activated; ``members`` is a list of ``{name, version}``."""
    return fetch_returning(conn, _q("insert_set"), {**values, "members": Jsonb(values["members"])})
