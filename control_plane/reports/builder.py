"""What both reports build with: progress, shares, the first page as a table (docs/reports.md).

Each report's module (``sovereignty``, ``compliance``) reads its measures through
``repository`` (functions of ``(conn, period)`` returning typed rows) and turns them into
``ReportTable``s and headline lines; neither runs SQL of its own. A build reports
progress through a callback, for the job's status.
"""

from collections.abc import Callable, Sequence

from control_plane.reports.models import Column, Headline, ReportTable

#: Called with (percent done, current step) as the build moves on.
Progress = Callable[[int, str], None]


def percent(part: int | float, whole: int | float) -> float | None:
    """``part`` of ``whole`` in %, to two decimals; None when there is no whole."""
    return None if not whole else round(100.0 * part / whole, 2)


def over_period(measure: str, text: str, value: float | None, unit: str = "percent") -> Headline:
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
