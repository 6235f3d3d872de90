"""Building a report's tables from the measures: what each number is (docs/reports.md).

Each measure is a repository function of ``(conn, period)`` returning typed rows; this
module turns them into ``ReportTable``s and headline lines, and nothing here reads the
database itself, so swapping one measure's source (GPU-hours from metering) is one line in
``MeasureSources``. The builder reports progress through a callback, for the job's status.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from control_plane.core.db import DbConnection
from control_plane.reports import repository
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

#: Called with (percent done, current step) as the build moves on.
Progress = Callable[[int, str], None]
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


def _percent(part: int | float, whole: int | float) -> float | None:
    return None if not whole else round(100.0 * part / whole, 2)


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
            _percent(sum(r.gpus for r in start if r.own), total_start),
            _percent(sum(r.gpus for r in end if r.own), total_end),
        )
    ]
    origin_start = _sum_by(start, lambda r: r.origin_country)
    origin_end = _sum_by(end, lambda r: r.origin_country)
    for country in sorted(set(origin_start) | set(origin_end)):
        lines.append(
            Headline(
                f"gpu_capacity_origin_{country}",
                f"Share of GPU capacity on servers of origin {country}",
                _percent(origin_start.get(country, 0), total_start),
                _percent(origin_end.get(country, 0), total_end),
            )
        )
    prov_start = _sum_by(start, lambda r: PROVENANCE_CLASS.get(r.provenance_status, "unverified"))
    prov_end = _sum_by(end, lambda r: PROVENANCE_CLASS.get(r.provenance_status, "unverified"))
    for status in ("verified", "declared", "unverified"):
        lines.append(
            Headline(
                f"gpu_capacity_provenance_{status}",
                f"Share of GPU capacity with provenance {status}",
                _percent(prov_start.get(status, 0), total_start),
                _percent(prov_end.get(status, 0), total_end),
            )
        )
    return lines


def _gpu_hour_shares(rows: Iterable[GpuHoursRow]) -> dict[str, float | None]:
    """Each GPU-hour measure's share of the rows' GPU-hours, in %."""
    rows = list(rows)
    total = sum(row.gpu_hours for row in rows)
    shares = {"gpu_hours_own_zones": _percent(sum(r.gpu_hours for r in rows if r.own), total)}
    by_origin: dict[str, float] = defaultdict(float)
    by_prov: dict[str, float] = defaultdict(float)
    for row in rows:
        by_origin[row.origin_country] += row.gpu_hours
        by_prov[PROVENANCE_CLASS.get(row.provenance_status, "unverified")] += row.gpu_hours
    for country, hours in by_origin.items():
        shares[f"gpu_hours_origin_{country}"] = _percent(hours, total)
    for status in ("verified", "declared", "unverified"):
        shares[f"gpu_hours_provenance_{status}"] = _percent(by_prov.get(status, 0.0), total)
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
    first = _gpu_hour_shares(r for r in hours.rows if r.bucket == hours.buckets[0])
    last = _gpu_hour_shares(r for r in hours.rows if r.bucket == hours.buckets[-1])

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


def _over_period(measure: str, text: str, value: float | None, unit: str = "percent") -> Headline:
    """A measure of the whole period, not of a moment (the compliance report's)."""
    return Headline(measure, text, None, None, unit=unit, whole_period=value)


def headline_table(lines: Sequence[Headline]) -> ReportTable:
    """The first page as a table, for JSON and CSV."""
    return ReportTable(
        "headline",
        "Summary",
        "One line per measure: its value at the period's start and end, and the change;"
        " for GPU-hours, in the period's first and last hour or day, and over all of it.",
        [
            Column("measure", "Measure"),
            Column("text", "What it says"),
            Column("unit", "Unit"),
            Column("at_start", "At start", "float"),
            Column("at_end", "At end", "float"),
            Column("change", "Change", "float"),
            Column("unavailable", "Unavailable because"),
            Column("whole_period", "Whole period", "float"),
        ],
        [
            (
                line.measure,
                line.text,
                line.unit,
                line.at_start,
                line.at_end,
                line.to_json()["change"],
                line.unavailable,
                line.whole_period,
            )
            for line in lines
        ],
    )


_CAPACITY_COLUMNS = (
    Column("servers", "Servers", "int"),
    Column("gpus", "GPUs", "int"),
    Column("gpu_memory_bytes", "GPU memory (bytes)", "int"),
)


def _by_origin(rows: list[CapacityRow]) -> ReportTable:
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        for component, attribute in COMPONENT_FIELDS:
            cell = totals[(component, getattr(row, attribute))]
            cell[0] += row.servers
            cell[1] += row.gpus
            cell[2] += row.gpu_memory_bytes
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
        cell = totals[(row.zone or "(none)", row.zone_country or "", row.own)]
        cell[0] += row.servers
        cell[1] += row.gpus
        cell[2] += row.gpu_memory_bytes
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
        cell = totals[row.provenance_status]
        cell[0] += row.servers
        cell[1] += row.gpus
        cell[2] += row.gpu_memory_bytes
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


def build_sovereignty(
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


def build_compliance(
    conn: DbConnection,
    period: Period,
    checkpoint: CheckpointRef | None,
    progress: Progress,
) -> Report:
    """The compliance report of ``period``: what was in force, decided, found and done."""
    progress(5, "policy sets in force")
    policy_sets = repository.policy_sets_in_force(conn, period)
    progress(15, "admissions by outcome, tenant and policy set")
    groups = repository.decisions_grouped(conn, period)
    by_outcome: dict[tuple[str, str], int] = defaultdict(int)
    by_tenant: dict[tuple[str, str], int] = defaultdict(int)
    for g in groups:
        by_outcome[(g.source, g.outcome)] += g.decisions
        by_tenant[(g.tenant, g.outcome)] += g.decisions
    total = sum(g.decisions for g in groups)
    progress(30, "admissions by policy")
    findings = repository.decisions_by_policy(conn, period)
    progress(45, "violations")
    evaluations = repository.evaluations(conn, period)
    violations = repository.violations(conn, period)
    progress(55, "datasets and models")
    assets = repository.assets_processed(conn, period)
    headline = [
        _over_period("decisions", "Admission decisions in the period", total, "count"),
        *(
            _over_period(
                f"decisions_{outcome}",
                f"Share of decisions {outcome.replace('_', ' ')}",
                _percent(sum(n for (_, o), n in by_outcome.items() if o == outcome), total),
            )
            for outcome in ("admitted", "admitted_with_warnings", "denied")
        ),
        _over_period(
            "violating_workloads",
            "Violating workloads found by re-evaluation (the most in one evaluation)",
            max((e.violating_workloads for e in evaluations), default=0),
            "count",
        ),
        _over_period(
            "revoked_workloads",
            "Workloads revoked by re-evaluation",
            sum(e.revoked_workloads for e in evaluations),
            "count",
        ),
    ]
    progress(65, "denials and warnings")
    tables = [
        headline_table(headline),
        ReportTable(
            "policy_sets",
            "Policy sets in force",
            "Every policy set active at some moment of the period: its content hash, who"
            " activated it, when, with what note, and when it was replaced.",
            [
                Column("version", "Version", "int"),
                Column("content_hash", "Content hash"),
                Column("activated_by", "Activated by"),
                Column("activated_at", "Activated at", "timestamp"),
                Column("note", "Note"),
                Column("restores_version", "Restores", "int"),
                Column("replaced_at", "Replaced at", "timestamp"),
            ],
            [
                (
                    p.version,
                    p.content_hash,
                    p.activated_by,
                    p.activated_at,
                    p.note,
                    p.restores_version,
                    p.replaced_at,
                )
                for p in policy_sets
            ],
        ),
        ReportTable(
            "admissions_by_outcome",
            "Admissions by outcome",
            "Decisions of the period by where they were asked (API workload or Kubernetes"
            " pod webhook) and outcome.",
            [
                Column("source", "Source"),
                Column("outcome", "Outcome"),
                Column("decisions", "Decisions", "int"),
            ],
            [(s, o, n) for (s, o), n in sorted(by_outcome.items())],
        ),
        ReportTable(
            "admissions_by_tenant",
            "Admissions by tenant",
            "Decisions of the period by tenant and outcome (both sources).",
            [
                Column("tenant", "Tenant"),
                Column("outcome", "Outcome"),
                Column("decisions", "Decisions", "int"),
            ],
            [(t, o, n) for (t, o), n in sorted(by_tenant.items())],
        ),
        ReportTable(
            "admissions_by_policy_set",
            "Admissions by policy set",
            "Decisions of the period by source, outcome, tenant and the policy set version"
            " they were decided under.",
            [
                Column("source", "Source"),
                Column("outcome", "Outcome"),
                Column("tenant", "Tenant"),
                Column("policy_set_version", "Policy set", "int"),
                Column("decisions", "Decisions", "int"),
            ],
            [(g.source, g.outcome, g.tenant, g.policy_set_version, g.decisions) for g in groups],
        ),
        ReportTable(
            "admissions_by_policy",
            "Findings by policy",
            "How many decisions carry a finding of each policy, by the finding's action"
            " ('(baseline)': the built-in checks and quotas).",
            [
                Column("policy", "Policy"),
                Column("action", "Action"),
                Column("decisions", "Decisions", "int"),
            ],
            [(f.policy, f.action, f.decisions) for f in findings],
        ),
        ReportTable(
            "denials_and_warnings",
            "Denials and warnings",
            "Every decision of the period that denied, or admitted with warnings, with its"
            " reasons as policy/rule [action]: message.",
            [
                Column("created_at", "When", "timestamp"),
                Column("source", "Source"),
                Column("id", "Workload or pod"),
                Column("tenant", "Tenant"),
                Column("outcome", "Outcome"),
                Column("policy_set_version", "Policy set", "int"),
                Column("reasons", "Reasons"),
            ],
            repository.denials_and_warnings(conn, period),
        ),
        ReportTable(
            "evaluations",
            "Re-evaluations",
            "Every compliance evaluation of the period with its exact counts.",
            [
                Column("id", "Evaluation"),
                Column("finished_at", "Finished", "timestamp"),
                Column("policy_set_version", "Policy set", "int"),
                Column("workloads_evaluated", "Evaluated", "int"),
                Column("violating_workloads", "Violating", "int"),
                Column("warned_workloads", "Warned", "int"),
                Column("revoked_workloads", "Revoked", "int"),
                Column("notifications", "Notified", "int"),
            ],
            [
                (
                    str(e.id),
                    e.finished_at,
                    e.policy_set_version,
                    e.workloads_evaluated,
                    e.violating_workloads,
                    e.warned_workloads,
                    e.revoked_workloads,
                    e.notifications,
                )
                for e in evaluations
            ],
        ),
        ReportTable(
            "violations",
            "Violations",
            "Each workload a re-evaluation found violating a deny policy (from each"
            " evaluation's sample), the action taken and how it ended.",
            [
                Column("found_at", "Found", "timestamp"),
                Column("workload_id", "Workload"),
                Column("tenant", "Tenant"),
                Column("policy", "Policy"),
                Column("action", "Action"),
                Column("delivery_status", "Webhook"),
                Column("workload_status", "Ended as"),
                Column("ended_at", "Ended at", "timestamp"),
                Column("revocation_reason", "Revocation"),
            ],
            [
                (
                    v.found_at,
                    v.workload_id,
                    v.tenant,
                    v.policy,
                    v.action,
                    v.delivery_status,
                    v.workload_status,
                    v.ended_at,
                    v.revocation_reason,
                )
                for v in violations
            ],
        ),
        ReportTable(
            "assets",
            "Datasets and models processed",
            "Each dataset and model that admitted workloads of the period used: its owner,"
            " the tenant that used it, the zone it was processed in, and the grants (ids)"
            " in force then that let a tenant other than the owner use it.",
            [
                Column("kind", "Kind"),
                Column("name", "Name"),
                Column("owner", "Owner"),
                Column("tenant", "Used by"),
                Column("zone", "Processed in"),
                Column("workloads", "Workloads", "int"),
                Column("grants", "Grants"),
            ],
            [(a.kind, a.name, a.owner, a.tenant, a.zone, a.workloads, a.grants) for a in assets],
        ),
    ]
    return Report(ReportKind.COMPLIANCE, period, checkpoint, datetime.now(UTC), headline, tables)
