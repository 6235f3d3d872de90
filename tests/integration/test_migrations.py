"""Migrations applied to an empty database produce exactly the expected schema."""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from control_plane.core import migrations
from tests.support import drop_database, scratch_database, url_for

pytestmark = pytest.mark.integration

SNAPSHOT = Path(__file__).with_name("schema_snapshot.txt")

# Everything that defines the schema: columns, constraints, indexes, triggers, functions,
# and what the application role may do with each table.
SCHEMA_QUERY = """
SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type
       || CASE WHEN is_nullable = 'NO' THEN ' not null' ELSE '' END
FROM information_schema.columns
WHERE table_schema = 'public' AND table_name NOT LIKE '%yoyo%'
UNION ALL
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || contype::text
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'index ' || tablename || ' ' || indexname
FROM pg_indexes WHERE schemaname = 'public' AND tablename NOT LIKE '%yoyo%'
UNION ALL
SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname
FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'function ' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
UNION ALL
SELECT 'grant sovereign_app ' || table_name || ' ' || privilege_type
FROM information_schema.role_table_grants WHERE grantee = 'sovereign_app'
ORDER BY 1
"""


@pytest.fixture
def empty_database() -> Iterator[str]:
    with scratch_database("sovereign_empty") as name:
        yield url_for(name)


def schema_of(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        return "\n".join(row[0] for row in conn.execute(SCHEMA_QUERY)) + "\n"


def test_migrations_from_empty_match_the_snapshot(empty_database: str) -> None:
    assert migrations.pending(empty_database) != []
    applied = migrations.upgrade(empty_database)
    assert applied[0] == "0001_foundation"
    schema = schema_of(empty_database)
    if os.environ.get("UPDATE_SCHEMA_SNAPSHOT") == "1":
        SNAPSHOT.write_text(schema)
    assert schema == SNAPSHOT.read_text(), (
        "schema differs from tests/integration/schema_snapshot.txt; if the change is "
        "intended, rerun with UPDATE_SCHEMA_SNAPSHOT=1 and review the diff"
    )


def test_upgrade_is_idempotent(empty_database: str) -> None:
    migrations.upgrade(empty_database)
    assert migrations.upgrade(empty_database) == []
    assert migrations.pending(empty_database) == []


def test_app_role_may_not_rewrite_the_audit_log(empty_database: str) -> None:
    migrations.upgrade(empty_database)
    with psycopg.connect(empty_database) as conn:
        grants = {
            row[0]
            for row in conn.execute(
                "SELECT privilege_type FROM information_schema.role_table_grants "
                "WHERE grantee = 'sovereign_app' AND table_name = 'audit_event'"
            )
        }
    assert grants == {"SELECT"}


def test_ensure_database_creates_once() -> None:
    name = f"sovereign_new_{uuid.uuid4().hex[:8]}"
    url = url_for(name)
    try:
        assert migrations.ensure_database(url) is True
        assert migrations.ensure_database(url) is False
    finally:
        drop_database(name)
