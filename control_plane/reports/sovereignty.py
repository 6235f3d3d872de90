"""The sovereignty report: where the GPU capacity is, what it is made of, who used it.

Capacity at moments of the period (``repository.capacity_at``, the node state history),
GPU-hours per hour or day from a ``GpuHoursSource`` (``gpu_hours.metered``: metering's
rollups), drift and offline events; what each number is: docs/reports.md.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from control_plane.core.db import DbConnection
from control_plane.reports import repository
from control_plane.reports.builder import Progress, headline_table, percent
from control_plane.reports.models import (
    CheckpointRef,
    Column,
    Headline,
    Period,
    Report,
    ReportKind,
    ReportTable,
    Series,
)
from control_plane.reports.repository import CapacityRow

#: How many moments the capacity charts sample, start and end included.
CHART_POINTS = 8

#: Provenance as the board reads it: a mismatch or nothing stated is not verified.
PROVENANCE_CLASS = {
    "verified": "verified",
    "declared": "declared",
    "mismatch": "unverified",
    "unknown": "unverified",
}
#: Component classes reported beside the server's own origin (``ComponentClass``).
COMPONENT_FIELDS = (
    ("server", "origin_country"),
    ("gpu", "gpu_origin"),
    ("cpu", "cpu_origin"),
    ("board", "board_origin"),
    ("nic", "nic_origin"),
)
#: Node events the sovereignty report lists, by section.
DRIFT_ACTIONS = ("node.drift_detected", "node.drift_acknowledged")
UNCONFIRMED_ACTIONS = ("node.offline", "node.provenance_downgraded")

#: Why a GPU-hour measure has no value while no usage rollups are installed.
GPU_HOURS_UNAVAILABLE = "no complete GPU-hour answer from metering for this period"


@dataclass(frozen=True, slots=True)
class GpuHoursRow:
    """GPU-hours of one group in one hour or day of the period (metering's rollups)."""

    bucket: datetime
    zone: str | None
    own: bool
    origin_country: str
    provenance_status: str
    gpu_hours: float


@dataclass(frozen=True, slots=True)
class GpuHours:
    """The period's GPU-hours: every hour or day it touches, in order, and their rows."""

    buckets: list[datetime]
    rows: list[GpuHoursRow]


def no_gpu_hours(conn: DbConnection, period: Period, home: Sequence[str]) -> None:
    """A GPU-hour source that has none: the lines say so, and nothing is made up."""
    return


#: A GPU-hour source: the period's GPU-hours, or None when it has no complete answer.
GpuHoursSource = Callable[[DbConnection, Period, Sequence[str]], GpuHours | None]


def _chart_moments(period: Period) -> list[datetime]:
    step = (period.end - period.start) / (CHART_POINTS - 1)
    return [period.start + step * i for i in range(CHART_POINTS - 1)] + [period.end]


def _sum_by(rows: Iterable[CapacityRow], key: Callable[[CapacityRow], str]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        totals[key(row)] += row.gpus
    return dict(totals)


def _capacity_headline(start: list[CapacityRow], end: list[CapacityRow]) -> list[Headline]:
    """The capacity lines of the first page: shares of GPUs at the period's start and end."""
    total_start = sum(row.gpus for row in start)
    total_end = sum(row.gpus for row in end)
    lines = [
        Headline(
            "gpu_capacity_own_zones",
            "Share of GPU capacity in the company's own zones",
            percent(sum(r.gpus for r in start if r.own), total_start),
            percent(sum(r.gpus for r in end if r.own), total_end),
        )
    ]
    origin_start = _sum_by(start, lambda r: r.origin_country)
    origin_end = _sum_by(end, lambda r: r.origin_country)
    for country in sorted(set(origin_start) | set(origin_end)):
        lines.append(
            Headline(
                f"gpu_capacity_origin_{country}",
                f"Share of GPU capacity on servers of origin {country}",
                percent(origin_start.get(country, 0), total_start),
                percent(origin_end.get(country, 0), total_end),
            )
        )
    prov_start = _sum_by(start, lambda r: PROVENANCE_CLASS.get(r.provenance_status, "unverified"))
    prov_end = _sum_by(end, lambda r: PROVENANCE_CLASS.get(r.provenance_status, "unverified"))
    for status in ("verified", "declared", "unverified"):
        lines.append(
            Headline(
                f"gpu_capacity_provenance_{status}",
                f"Share of GPU capacity with provenance {status}",
                percent(prov_start.get(status, 0), total_start),
                percent(prov_end.get(status, 0), total_end),
            )
        )
    return lines


def _gpu_hour_shares(rows: Iterable[GpuHoursRow]) -> dict[str, float | None]:
    """Each GPU-hour measure's share of the rows' GPU-hours, in %."""
    rows = list(rows)
    total = sum(row.gpu_hours for row in rows)
    shares = {"gpu_hours_own_zones": percent(sum(r.gpu_hours for r in rows if r.own), total)}
    by_origin: dict[str, float] = defaultdict(float)
    by_prov: dict[str, float] = defaultdict(float)
    for row in rows:
        by_origin[row.origin_country] += row.gpu_hours
        by_prov[PROVENANCE_CLASS.get(row.provenance_status, "unverified")] += row.gpu_hours
    for country, hours in by_origin.items():
        shares[f"gpu_hours_origin_{country}"] = percent(hours, total)
    for status in ("verified", "declared", "unverified"):
        shares[f"gpu_hours_provenance_{status}"] = percent(by_prov.get(status, 0.0), total)
    return shares


def _gpu_hours_headline(hours: GpuHours | None) -> list[Headline]:
    """The GPU-hour lines: shares in the period's first and last hour or day, and overall.

    A share of a bucket with no GPU-hours is null (as is one of an origin not seen in
    it); ``whole_period`` sums every bucket.
    """
    if hours is None:
        return [
            Headline(
                "gpu_hours_own_zones",
                "Share of GPU-hours in the company's own zones",
                None,
                None,
                unavailable=GPU_HOURS_UNAVAILABLE,
            ),
            Headline(
                "gpu_hours_by_origin",
                "Share of GPU-hours by server origin and provenance",
                None,
                None,
                unavailable=GPU_HOURS_UNAVAILABLE,
            ),
        ]
    whole = _gpu_hour_shares(hours.rows)
    first_bucket, last_bucket = (
        (hours.buckets[0], hours.buckets[-1]) if hours.buckets else (None, None)
    )
    first = _gpu_hour_shares(r for r in hours.rows if r.bucket == first_bucket)
    last = _gpu_hour_shares(r for r in hours.rows if r.bucket == last_bucket)

    def line(measure: str, text: str) -> Headline:
        start, end = first.get(measure), last.get(measure)
        if measure.startswith("gpu_hours_origin_") and whole.get(measure) is not None:
            # An origin absent from a bucket that had GPU-hours had 0 % of them there.
            start = start if start is not None or not _has_hours(first) else 0.0
            end = end if end is not None or not _has_hours(last) else 0.0
        return Headline(measure, text, start, end, whole_period=whole.get(measure))

    lines = [line("gpu_hours_own_zones", "Share of GPU-hours in the company's own zones")]
    countries = sorted(m.removeprefix("gpu_hours_origin_") for m in whole if "_origin_" in m)
    lines += [
        line(f"gpu_hours_origin_{c}", f"Share of GPU-hours on servers of origin {c}")
        for c in countries
    ]
    lines += [
        line(f"gpu_hours_provenance_{s}", f"Share of GPU-hours with provenance {s}")
        for s in ("verified", "declared", "unverified")
    ]
    return lines


def _has_hours(shares: dict[str, float | None]) -> bool:
    return shares["gpu_hours_own_zones"] is not None


_CAPACITY_COLUMNS = (
    Column("servers", "Servers", "int"),
    Column("gpus", "GPUs", "int"),
    Column("gpu_memory_bytes", "GPU memory (bytes)", "int"),
)


def _add(cell: list[int], row: CapacityRow) -> None:
    """Add a row's servers, GPUs and GPU memory to a table cell of the three."""
    cell[0] += row.servers
    cell[1] += row.gpus
    cell[2] += row.gpu_memory_bytes


def _by_origin(rows: list[CapacityRow]) -> ReportTable:
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        for component, attribute in COMPONENT_FIELDS:
            _add(totals[(component, getattr(row, attribute))], row)
    return ReportTable(
        "capacity_by_origin",
        "Capacity by country of origin",
        "At the period's end: servers, GPUs and GPU memory by the country of origin of the"
        " server and of each component class ('unknown': none recorded).",
        [Column("component", "Component"), Column("origin_country", "Origin"), *_CAPACITY_COLUMNS],
        [(c, country, *values) for (c, country), values in sorted(totals.items())],
    )


def _by_zone(rows: list[CapacityRow]) -> ReportTable:
    totals: dict[tuple[str, str, bool], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        _add(totals[(row.zone or "(none)", row.zone_country or "", row.own)], row)
    return ReportTable(
        "capacity_by_zone",
        "Capacity by zone",
        "At the period's end: servers, GPUs and GPU memory by residency zone, and whether"
        " the zone is one of the company's own.",
        [
            Column("zone", "Zone"),
            Column("zone_country", "Country"),
            Column("own", "Own zone"),
            *_CAPACITY_COLUMNS,
        ],
        [(*key, *values) for key, values in sorted(totals.items())],
    )


def _provenance(rows: list[CapacityRow]) -> ReportTable:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        _add(totals[row.provenance_status], row)
    return ReportTable(
        "provenance",
        "Provenance",
        "At the period's end: servers and GPUs by provenance status, and the class the"
        " first page counts them in (mismatch and unknown are unverified).",
        [Column("provenance_status", "Status"), Column("class", "Class"), *_CAPACITY_COLUMNS],
        [
            (status, PROVENANCE_CLASS.get(status, "unverified"), *values)
            for status, values in sorted(totals.items())
        ],
    )


def _events_table(name: str, title: str, description: str, rows: list[Any]) -> ReportTable:
    return ReportTable(
        name,
        title,
        description,
        [
            Column("occurred_at", "When", "timestamp"),
            Column("action", "Event"),
            Column("node_id", "Node"),
            Column("hostname", "Hostname"),
            Column("zone", "Zone"),
            Column("actor", "By"),
        ],
        [(r.occurred_at, r.action, r.node_id, r.hostname, r.zone, r.actor_name) for r in rows],
    )


def build(
    conn: DbConnection,
    period: Period,
    checkpoint: CheckpointRef | None,
    home_countries: Sequence[str],
    progress: Progress,
    gpu_hours: GpuHoursSource = no_gpu_hours,
) -> Report:
    """The sovereignty report of ``period``: where the capacity is, and what it is made of."""
    progress(5, "capacity at the period's start and end")
    start = repository.capacity_at(conn, period.start, home_countries)
    end = repository.capacity_at(conn, period.end, home_countries)
    progress(20, "GPU-hours")
    hours = gpu_hours(conn, period, home_countries)
    headline = _capacity_headline(start, end) + _gpu_hours_headline(hours)
    progress(30, "capacity over time")
    by_origin = Series("gpus_by_origin", "GPUs by server origin", "GPUs")
    by_zone = Series("gpus_by_zone", "GPUs by zone", "GPUs")
    over_time: list[tuple[Any, ...]] = []
    moments = _chart_moments(period)
    samples = [start, *(repository.capacity_at(conn, m, home_countries) for m in moments[1:-1])]
    samples.append(end)
    for series, key in (
        (by_origin, lambda r: r.origin_country),
        (by_zone, lambda r: r.zone or "(none)"),
    ):
        per_moment = [_sum_by(rows, key) for rows in samples]
        groups = sorted(set().union(*per_moment))
        series.times = moments
        series.groups = {g: [float(m.get(g, 0)) for m in per_moment] for g in groups}
        over_time += [
            (moment, series.name, g, m.get(g, 0))
            for moment, m in zip(moments, per_moment, strict=True)
            for g in groups
        ]
    progress(60, "drift, quarantine and offline events")
    drift = repository.node_events(conn, period, DRIFT_ACTIONS)
    unconfirmed = repository.node_events(conn, period, UNCONFIRMED_ACTIONS)
    progress(75, "tables")
    tables = [
        headline_table(headline),
        _by_origin(end),
        _by_zone(end),
        _provenance(end),
        ReportTable(
            "capacity_over_time",
            "Capacity over time",
            f"GPUs by server origin and by zone at {CHART_POINTS} moments of the period.",
            [
                Column("at", "At", "timestamp"),
                Column("series", "Series"),
                Column("group", "Group"),
                Column("gpus", "GPUs", "int"),
            ],
            over_time,
            in_pdf=False,
        ),
        _events_table(
            "drift_quarantine_events",
            "Drift and quarantine events",
            "Nodes whose hardware identity drifted from its baseline (quarantined at once)"
            " and drift an admin acknowledged, in the period.",
            drift,
        ),
        _events_table(
            "unconfirmed_offline_nodes",
            "Nodes that went offline or unconfirmed",
            "Nodes marked offline (missed heartbeats) and nodes whose provenance was"
            " downgraded, in the period.",
            unconfirmed,
        ),
    ]
    charts = [by_origin, by_zone]
    if hours is not None:
        tables += _gpu_hours_tables(hours)
        charts += _gpu_hours_charts(hours)
    return Report(
        ReportKind.SOVEREIGNTY, period, checkpoint, datetime.now(UTC), headline, tables, charts
    )


def _gpu_hours_tables(hours: GpuHours) -> list[ReportTable]:
    """The whole period's GPU-hours by group, and the same per hour or day (the charts)."""
    whole: dict[tuple[str | None, bool, str, str], float] = defaultdict(float)
    for r in hours.rows:
        whole[(r.zone, r.own, r.origin_country, r.provenance_status)] += r.gpu_hours
    group_columns = [
        Column("zone", "Zone"),
        Column("own", "Own zone"),
        Column("origin_country", "Origin"),
        Column("provenance_status", "Provenance"),
        Column("gpu_hours", "GPU-hours", "float"),
    ]
    return [
        ReportTable(
            "gpu_hours",
            "GPU-hours",
            "GPU-hours of the whole period by zone, origin and provenance as they were at the"
            " time of use (metering).",
            group_columns,
            [(*key, value) for key, value in sorted(whole.items(), key=lambda i: str(i[0]))],
        ),
        ReportTable(
            "gpu_hours_over_time",
            "GPU-hours over time",
            "The same per UTC hour (a period of up to two days) or day, from its start.",
            [Column("bucket", "From", "timestamp"), *group_columns],
            [
                (r.bucket, r.zone, r.own, r.origin_country, r.provenance_status, r.gpu_hours)
                for r in hours.rows
            ],
            in_pdf=False,
        ),
    ]


def _gpu_hours_charts(hours: GpuHours) -> list[Series]:
    """GPU-hours per hour or day by server origin and by zone, zeros where none."""
    charts = []
    by: list[tuple[str, str, Callable[[GpuHoursRow], str]]] = [
        ("gpu_hours_by_origin", "GPU-hours by server origin", lambda r: r.origin_country),
        ("gpu_hours_by_zone", "GPU-hours by zone", lambda r: r.zone or "(none)"),
    ]
    position = {bucket: i for i, bucket in enumerate(hours.buckets)}
    for name, title, key in by:
        groups: dict[str, list[float]] = {}
        for row in hours.rows:
            values = groups.setdefault(key(row), [0.0] * len(hours.buckets))
            values[position[row.bucket]] += row.gpu_hours
        charts.append(
            Series(name, title, "GPU-hours", list(hours.buckets), dict(sorted(groups.items())))
        )
    return charts
