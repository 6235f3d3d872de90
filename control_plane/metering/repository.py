"""SQL access for metering. Functions take the caller's connection.

The roll-up itself is SQL (migration 0027: ``meter_workloads``, ``meter_capacity``):
what counts and what moves the watermarks is one statement, under the watermark locks.
"""

from datetime import datetime
from typing import Any, LiteralString

from control_plane.core.db import DbConnection, fetch_all_as, fetch_one, load_queries
from control_plane.metering.models import UsageRow


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.metering")[name]


def meter_open_workloads(conn: DbConnection, until: datetime, limit: int) -> int:
    """Meter up to ``limit`` workloads not yet metered up to ``until``; how many moved."""
    row = fetch_one(conn, _q("meter_open_workloads"), {"until": until, "limit": limit})
    assert row is not None
    return int(row["moved"])


def meter_capacity(conn: DbConnection, until: datetime) -> int:
    """Meter the fleet's capacity up to ``until``; how many hourly buckets it touched."""
    row = fetch_one(conn, _q("meter_capacity"), {"until": until})
    assert row is not None
    return int(row["buckets"])


def capacity_position(conn: DbConnection) -> datetime:
    """How far fleet capacity (and the last roll-up) has been metered."""
    row = fetch_one(conn, _q("capacity_position"), {})
    assert row is not None
    when: datetime = row["metered_until"]
    return when


def usage(conn: DbConnection, source: str, params: dict[str, Any]) -> list[UsageRow]:
    """Grouped sums from one rollup: ``usage_by_day``, ``usage_by_hour`` or ``capacity_by_hour``."""
    query = {
        "usage_by_day": _q("usage_by_day"),
        "usage_by_hour": _q("usage_by_hour"),
        "capacity_by_hour": _q("capacity_by_hour"),
    }[source]
    return fetch_all_as(conn, UsageRow, query, params)


def charged_seconds(
    conn: DbConnection,
    tenant: str,
    period: str,
    *,
    zone: str | None = None,
    origin_country: str | None = None,
) -> float:
    """GPU-seconds a GPU-hour quota charges the tenant this ``period`` (see queries.sql)."""
    params = {"tenant": tenant, "period": period, "zone": zone, "origin_country": origin_country}
    row = fetch_one(conn, _q("charged_seconds"), params)
    assert row is not None
    return float(row["seconds"])
