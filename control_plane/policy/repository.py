"""SQL access for stored policy versions and policy sets. Functions take the caller's connection.

Both tables are append-only for the application role, so there is nothing here that
updates or deletes. Writers take ``lock_store`` first: it serializes them, which is what
keeps version numbers gapless.
"""

from collections.abc import Sequence
from typing import Any, LiteralString

from psycopg.types.json import Jsonb

from control_plane.core.db import (
    DbConnection,
    fetch_all,
    fetch_all_as,
    fetch_one_as,
    fetch_page_as,
    fetch_returning_as,
    load_queries,
)
from control_plane.policy.store_models import (
    MemberDocument,
    PolicySetPublic,
    StoredDocument,
    StoredVersion,
)


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.policy")[name]


def lock_store(conn: DbConnection) -> None:
    """Hold the policy store's write lock until the transaction ends."""
    conn.execute(_q("lock_store"))


def zone_slugs(conn: DbConnection) -> set[str]:
    """Every residency zone's slug: what policy documents may name."""
    return {row["slug"] for row in fetch_all(conn, _q("zone_slugs"), {})}


def latest_version(conn: DbConnection, name: str) -> StoredVersion | None:
    """A policy's latest version (without its document), or None if it was never applied."""
    return fetch_one_as(conn, StoredVersion, _q("latest_version"), {"name": name})


def latest_versions(conn: DbConnection) -> list[StoredDocument]:
    """Every policy's latest version with its document, by name."""
    return fetch_all_as(conn, StoredDocument, _q("latest_versions"), {})


def insert_version(conn: DbConnection, values: dict[str, Any]) -> StoredVersion:
    """Store a new version of a policy; ``document`` is the validated document as JSON."""
    params = {**values, "document": Jsonb(values["document"])}
    return fetch_returning_as(conn, StoredVersion, _q("insert_version"), params)


def policy_versions(conn: DbConnection, name: str) -> list[StoredDocument]:
    """Every version of one policy with its document, oldest first."""
    return fetch_all_as(conn, StoredDocument, _q("policy_versions"), {"name": name})


def get_version(conn: DbConnection, name: str, version: int) -> StoredDocument | None:
    """One version of a policy with its document, or None."""
    params = {"name": name, "version": version}
    return fetch_one_as(conn, StoredDocument, _q("get_version"), params)


def member_documents(conn: DbConnection, members: Sequence[dict[str, Any]]) -> list[MemberDocument]:
    """The stored documents of ``members`` (``{name, version}`` each), by name."""
    params = {"members": Jsonb(list(members))}
    return fetch_all_as(conn, MemberDocument, _q("member_documents"), params)


def active_set(conn: DbConnection) -> PolicySetPublic | None:
    """The active policy set (the last activated), or None if none ever was."""
    return fetch_one_as(conn, PolicySetPublic, _q("active_set"), {})


def get_set(conn: DbConnection, version: int) -> PolicySetPublic | None:
    """One policy set by version, or None."""
    return fetch_one_as(conn, PolicySetPublic, _q("get_set"), {"version": version})


def list_sets(conn: DbConnection, limit: int, offset: int) -> tuple[list[PolicySetPublic], int]:
    """A page of policy sets, newest first, and how many there are."""
    return fetch_page_as(
        conn, PolicySetPublic, _q("list_sets"), _q("count_sets"), {}, limit, offset
    )


def insert_set(conn: DbConnection, values: dict[str, Any]) -> PolicySetPublic:
    """Store a policy set as activated; ``members`` is a list of ``{name, version}``."""
    params = {**values, "members": Jsonb(values["members"])}
    return fetch_returning_as(conn, PolicySetPublic, _q("insert_set"), params)
