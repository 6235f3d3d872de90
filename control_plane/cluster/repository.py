"""SQL access for the label sync's stored report. Functions take the caller's connection."""

from typing import LiteralString

from control_plane.cluster.models import LabelSyncRun, SyncReport
from control_plane.core.db import DbConnection, fetch_one_as, load_queries


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.cluster")[name]


def save_report(conn: DbConnection, report: SyncReport) -> None:
    """Replace the stored report with ``report``, finished now (the database's clock)."""
    conn.execute(
        _q("save_report"),
        {
            "nodes_seen": report.nodes_seen,
            "patched": report.patched,
            "unchanged": report.unchanged,
            "unknown_count": report.unknown_count,
            "unknown": list(report.unknown),
        },
    )


def last_report(conn: DbConnection) -> LabelSyncRun | None:
    """The latest run's report, or None before the first."""
    return fetch_one_as(conn, LabelSyncRun, _q("last_report"), {})
