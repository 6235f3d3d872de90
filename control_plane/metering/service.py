"""Metering use cases: roll usage and capacity up, and read them back by any dimension.

The roll-up (``roll_up``) is incremental: each workload is metered from its watermark,
capacity from one position, both moved in the statement that adds to the rollups, so
running it twice never counts twice. A workload that ends is metered by a trigger in the
transaction that ends it (release, lease expiry, revocation), so the roll-up only has to
carry running workloads forward. Neither writes an audit event: the rollups are derived
from the audited workloads and node changes, and can be recomputed from them.

``usage`` reads the rollups only, never reservations or workloads: a report over 90 days
of a 10 000-node fleet sums the daily rollup (one row per node, tenant and state a day).
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from control_plane.core.audit_log import transaction
from control_plane.core.db import DbConnection
from control_plane.core.errors import InvalidInputError
from control_plane.core.filters import check_references
from control_plane.domain.metering import (
    CAPACITY_DIMENSIONS,
    UsageDimension,
    UsageGranularity,
    UsageMeasure,
)
from control_plane.metering import repository
from control_plane.metering.models import MAX_USAGE_DAYS, RollUp, UsageQuery, UsageReport

_HOUR = timedelta(hours=1)


def roll_up(conn: DbConnection, *, until: datetime, batch_size: int) -> RollUp:
    """Meter up to ``batch_size`` workloads, and the fleet capacity, up to ``until``.

    One transaction. ``until`` is clamped to the database's now. The workloads furthest
    behind go first; a caller whose batch came back full calls again.
    """
    with transaction(conn):
        metered = repository.meter_open_workloads(conn, until, batch_size)
        buckets = repository.meter_capacity(conn, until)
    return RollUp(until=until, workloads=metered, capacity_buckets=buckets)


def _whole_hour(value: datetime) -> bool:
    return value.minute == 0 and value.second == 0 and value.microsecond == 0


def _period(query: UsageQuery, now: datetime) -> tuple[datetime, datetime]:
    """The query's [since, until), in UTC, checked: whole hours, in order, not too long."""
    now = now.astimezone(UTC)
    since = query.since or now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    until = query.until or now.replace(minute=0, second=0, microsecond=0) + _HOUR
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    for name, value in (("since", since), ("until", until)):
        if not _whole_hour(value):
            raise InvalidInputError.for_field(
                f"query.{name}",
                "must be a whole UTC hour (minutes and seconds zero)",
                value.isoformat(),
            )
    if until <= since:
        raise InvalidInputError.for_field("query.until", "must be after since", until.isoformat())
    if until - since > timedelta(days=MAX_USAGE_DAYS):
        raise InvalidInputError.for_field(
            "query.until",
            f"the period may cover at most {MAX_USAGE_DAYS} days",
            until.isoformat(),
        )
    return since, until


def _source(query: UsageQuery, since: datetime, until: datetime) -> str:
    """The cheapest rollup that answers the query (see docs/metering.md)."""
    if query.measure is UsageMeasure.CAPACITY:
        wrong = sorted(set(query.group_by) - CAPACITY_DIMENSIONS)
        if wrong or query.tenant or query.node_id or query.workload_id:
            field = f"query.{'group_by' if wrong else 'measure'}"
            raise InvalidInputError.for_field(
                field,
                "capacity has no workload, tenant, node or MIG profile; group and filter it"
                " by zone, zone_country, origin_country, gpu_origin, provenance_status or"
                " node_status",
                ",".join(wrong) or query.measure.value,
            )
        return "capacity_by_hour"
    whole_days = since.hour == 0 and until.hour == 0
    per_workload = UsageDimension.WORKLOAD in query.group_by or query.workload_id is not None
    if whole_days and not per_workload and query.granularity is not UsageGranularity.HOUR:
        return "usage_by_day"
    return "usage_by_hour"


def usage(conn: DbConnection, query: UsageQuery, *, now: datetime | None = None) -> UsageReport:
    """GPU-hours used (or available) over a period, grouped by the dimensions asked for.

    Reads the rollups only. A tenant or zone that does not exist is a 422 naming it, as
    is a period that is not whole hours, runs backwards or is longer than
    ``MAX_USAGE_DAYS``, or capacity grouped by what capacity does not have.
    """
    check_references(conn, query)
    since, until = _period(query, now or datetime.now(UTC))
    source = _source(query, since, until)
    params: dict[str, Any] = {
        **query.model_dump(mode="json", exclude={"group_by", "since", "until", "limit"}),
        "since": since,
        "until": until,
        "group_by": [dimension.value for dimension in query.group_by],
        "node_id": query.node_id,
        "workload_id": query.workload_id,
        "limit": query.limit + 1,
    }
    rows = repository.usage(conn, source, params)
    truncated = len(rows) > query.limit
    rows = rows[: query.limit]
    return UsageReport(
        measure=query.measure,
        since=since,
        until=until,
        granularity=query.granularity,
        group_by=query.group_by,
        source={"usage_by_day": "usage_daily", "usage_by_hour": "usage_hourly"}.get(
            source, "capacity_hourly"
        ),
        metered_until=repository.capacity_position(conn),
        rows=rows,
        truncated=truncated,
        gpu_hours=sum(row.gpu_hours for row in rows),
        mig_slice_hours=sum(row.mig_slice_hours for row in rows),
    )
