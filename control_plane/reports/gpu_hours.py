"""The sovereignty report's GPU-hours: metering's rollups, grouped as the report shows them.

``metered`` is the sovereignty report's ``GpuHoursSource``. It asks metering's usage service
(``metering.service.usage``: the rollups only, never the raw reservations) for the
period's GPU-hours by zone, zone country, server origin and provenance, as they were at
the time of use, and marks a zone the company's own as the capacity lines do (its country
among ``SOVEREIGN_REPORTS__HOME_COUNTRIES``, or every zone when none are named).

Metering counts whole UTC hours, so the period is widened to the hours it touches (a
report from 09:30 counts the hour from 09:00). Each row is one group's GPU-hours in one
UTC hour (a period of up to two days) or one UTC day (longer), so the report can show
how the shares moved and chart them. A long period is asked for in pieces of a month.
If metering ever answered with a truncated list, the lines are left without a number
rather than made up from part of it.
"""

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from control_plane.core.db import DbConnection
from control_plane.domain.metering import UsageDimension, UsageGranularity
from control_plane.metering import service as metering
from control_plane.metering.models import MAX_USAGE_ROWS, UsageQuery
from control_plane.reports.models import Period
from control_plane.reports.sovereignty import GpuHours, GpuHoursRow

log = logging.getLogger(__name__)

_HOUR = timedelta(hours=1)
#: Up to this long (once widened to whole hours), a period is shown hour by hour.
HOURLY_UP_TO = timedelta(days=2)
#: One usage query covers at most this much: a month of days keeps its rows few.
_WINDOW = timedelta(days=31)
_GROUPS = [
    UsageDimension.ZONE,
    UsageDimension.ZONE_COUNTRY,
    UsageDimension.ORIGIN_COUNTRY,
    UsageDimension.PROVENANCE_STATUS,
]


def _floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _ceil_hour(moment: datetime) -> datetime:
    floor = _floor_hour(moment)
    return floor if floor == moment.astimezone(UTC) else floor + _HOUR


def _windows(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` (whole hours) in pieces the cheapest rollup answers.

    The hours before the first midnight and after the last go alone (the hourly rollup);
    the whole days between go in pieces of at most ``_WINDOW`` (the daily one).
    """
    first_midnight = start if start.hour == 0 else start.replace(hour=0) + timedelta(days=1)
    last_midnight = end.replace(hour=0)
    if first_midnight >= last_midnight:
        return [(start, end)]
    pieces = [(start, first_midnight)] if start < first_midnight else []
    moment = first_midnight
    while moment < last_midnight:
        pieces.append((moment, min(moment + _WINDOW, last_midnight)))
        moment += _WINDOW
    if last_midnight < end:
        pieces.append((last_midnight, end))
    return pieces


def granularity(period: Period) -> UsageGranularity:
    """Hour by hour for a period of up to two days, else day by day."""
    span = _ceil_hour(period.end) - _floor_hour(period.start)
    return UsageGranularity.HOUR if span <= HOURLY_UP_TO else UsageGranularity.DAY


def buckets(period: Period) -> list[datetime]:
    """The starts of the hours or days the period touches, in order: a chart's x axis."""
    start, end = _floor_hour(period.start), _ceil_hour(period.end)
    step = _HOUR
    if granularity(period) is UsageGranularity.DAY:
        start, step = start.replace(hour=0), timedelta(days=1)
    moments = []
    while start < end:
        moments.append(start)
        start += step
    return moments


_Window = tuple[datetime, datetime]


def _halves(since: datetime, until: datetime) -> tuple[_Window, _Window] | None:
    """``[since, until)`` cut in two at a midnight (whole days) or an hour; None if one hour."""
    if since.hour == 0 and until.hour == 0 and until - since > timedelta(days=1):
        middle = since + timedelta(days=(until - since).days // 2)
    elif until - since > _HOUR:
        middle = since + _HOUR * ((until - since) // _HOUR // 2)
    else:
        return None
    return (since, middle), (middle, until)


def metered(
    conn: DbConnection, period: Period, home: Sequence[str], *, limit: int = MAX_USAGE_ROWS
) -> GpuHours | None:
    """The period's GPU-hours from the rollups, per hour or day, zone, origin and provenance.

    A window whose answer would hold more than ``limit`` groups is asked for again in two
    halves, down to one hour; only an hour with more groups than that gives no answer.
    """
    # Nothing is metered after now: a period that runs into the future (up to 9999, which
    # the API allows) is cut at now, or its hours and days would be asked for and charted.
    end = min(period.end, max(period.start, datetime.now(UTC)))
    if end <= period.start:
        return GpuHours([], [])
    period = Period(period.start, end)
    totals: dict[tuple[datetime, str | None, str | None, str, str], float] = defaultdict(float)
    grain = granularity(period)
    pending = _windows(_floor_hour(period.start), _ceil_hour(period.end))[::-1]
    while pending:
        since, until = pending.pop()
        answer = metering.usage(
            conn,
            UsageQuery(since=since, until=until, group_by=_GROUPS, granularity=grain, limit=limit),
        )
        if answer.truncated:
            halves = _halves(since, until)
            if halves is None:
                log.warning(
                    "metering answered over %s groups in one hour: no GPU-hour lines", limit
                )
                return None
            pending += [halves[1], halves[0]]
            continue
        for row in answer.rows:
            if row.period_start is None:  # pragma: no cover - a grained query always has one
                raise RuntimeError("metering answered a grained query without period starts")
            key = (
                row.period_start,
                row.zone,
                row.zone_country,
                row.origin_country or "unknown",
                row.provenance_status or "unknown",
            )
            totals[key] += row.gpu_hours
    rows = [
        GpuHoursRow(
            bucket=bucket,
            zone=zone,
            own=zone is not None and (not home or country in home),
            origin_country=origin,
            provenance_status=provenance,
            gpu_hours=hours,
        )
        for (bucket, zone, country, origin, provenance), hours in sorted(
            totals.items(), key=lambda item: tuple(str(part) for part in item[0])
        )
    ]
    return GpuHours(buckets(period), rows)
