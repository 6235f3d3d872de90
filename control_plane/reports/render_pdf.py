"""The PDF format: the report as a person reads it, with ReportLab (docs/reports.md).

First page: the headline, one line per measure. Then the charts (capacity and GPU-hours
by origin and zone over the period, stacked bars) and every table. Every page names the report, its
period and the checkpoint it covers, and is numbered "page n of m". A table longer than
``PDF_ROW_LIMIT`` rows shows its first rows and says how many there are in all; the JSON
and CSV formats carry them all, and every row is still in the content digest, so the
PDF's seal is the same as theirs. The last page is the seal.
"""

from datetime import datetime, timedelta
from decimal import Decimal
from typing import IO, Any
from xml.sax.saxutils import escape

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from control_plane.reports.content import ContentDigest, Sealer
from control_plane.reports.models import Headline, Report, ReportTable, Series

#: Rows of one table the PDF shows; the rest are counted and left to JSON and CSV.
PDF_ROW_LIMIT = 300
_PAGE = landscape(A4)
_MARGIN = 15 * mm
_PALETTE = (
    colors.HexColor("#1f77b4"),
    colors.HexColor("#ff7f0e"),
    colors.HexColor("#2ca02c"),
    colors.HexColor("#d62728"),
    colors.HexColor("#9467bd"),
    colors.HexColor("#8c564b"),
    colors.HexColor("#e377c2"),
    colors.HexColor("#7f7f7f"),
    colors.HexColor("#bcbd22"),
    colors.HexColor("#17becf"),
)
#: Groups a chart shows by name; the rest are summed as "other".
_CHART_GROUPS = len(_PALETTE) - 1

_STYLES = getSampleStyleSheet()
_CELL = ParagraphStyle("cell", parent=_STYLES["BodyText"], fontSize=7, leading=8.5)
_HEAD = ParagraphStyle("head", parent=_CELL, fontName="Helvetica-Bold")
_BODY = ParagraphStyle("body", parent=_STYLES["BodyText"], fontSize=9, leading=11)
_KEPT = ParagraphStyle("kept", parent=_BODY, keepWithNext=1)
#: A table's heading stays on the page of its table's first rows.
_HEADING = ParagraphStyle("heading", parent=_STYLES["Heading2"], keepWithNext=1)
_MONO = ParagraphStyle("mono", parent=_BODY, fontName="Courier", fontSize=7.5, leading=9)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _when(value)
    if isinstance(value, float):
        return number_text(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def number_text(value: float) -> str:
    """A decimal as the PDF prints it: two decimals with thousands separators.

    A small amount that is not zero (a few seconds of GPU time) keeps three significant
    digits instead, so it never reads as none ("0.0000349").
    """
    if 0 < abs(value) < 0.01:
        return format(Decimal(f"{value:.3g}"), "f")
    return f"{value:,.2f}"


def _p(value: Any, style: ParagraphStyle = _CELL) -> Paragraph:
    return Paragraph(escape(_text(value)), style)


def _widths(titles: list[str], rows: list[list[Any]]) -> list[float]:
    """Column widths by how much each column says, page-wide.

    A column gets at least its longest word (so no word breaks) and at most 60
    characters' worth; in between, its longest cell among the first rows.
    """
    weights = []
    for i, title in enumerate(titles):
        cells = [_text(row[i]) for row in rows[:50]]
        longest_word = max((len(w) for text in [title, *cells] for w in text.split()), default=4)
        weights.append(min(60, max(longest_word + 2, *(len(c) for c in cells), 6)))
    usable = _PAGE[0] - 2 * _MARGIN
    return [usable * w / sum(weights) for w in weights]


def _grid(header: list[Any], rows: list[list[Any]], widths: list[float] | None = None) -> Table:
    table = Table([header, *rows], colWidths=widths, repeatRows=1, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde4ee")),
                ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#9aa5b1")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f4f6f9")]),
            ]
        )
    )
    return table


def _headline(lines: list[Headline]) -> list[Any]:
    """The first page's table, and the note on its columns when it has moments."""
    if all(line.at_start is None and line.at_end is None for line in lines):
        # Measures of the whole period only (the compliance report): two columns.
        width = _PAGE[0] - 2 * _MARGIN
        header = [_p("Measure", _HEAD), _p("Over the period", _HEAD)]
        rows = [
            [
                _p(line.text, _BODY),
                _p(line.unavailable or _value(line.whole_period, line.unit), _BODY),
            ]
            for line in lines
        ]
        return [_grid(header, rows, [width * 0.7, width * 0.3])]
    return [_moments(lines), Spacer(1, 2 * mm), Paragraph(escape(HEADLINE_NOTE), _CELL)]


def _value(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    return f"{v:.2f} %" if unit == "percent" else f"{v:,.0f}"


def _moments(lines: list[Headline]) -> Table:
    rows = []
    for line in lines:
        change = line.to_json()["change"]
        rows.append(
            [
                _p(line.text, _BODY),
                _p(line.unavailable or _value(line.at_start, line.unit), _BODY),
                _p("" if line.unavailable else _value(line.at_end, line.unit), _BODY),
                _p(
                    ""
                    if change is None
                    else f"{change:+.2f} pt"
                    if line.unit == "percent"
                    else f"{change:+,.0f}",
                    _BODY,
                ),
                _p("" if line.unavailable else _value(line.whole_period, line.unit), _BODY)
                if line.whole_period is not None or line.measure.startswith("gpu_hours")
                else _p(""),
            ]
        )
    width = _PAGE[0] - 2 * _MARGIN
    header = [
        _p(h, _HEAD)
        for h in ("Measure", "At period start", "At period end", "Change", "Whole period")
    ]
    return _grid(
        header, rows, [width * 0.40, width * 0.20, width * 0.14, width * 0.12, width * 0.14]
    )


#: Under the first page's table: what its columns mean, and what a dash says.
HEADLINE_NOTE = (
    "Capacity is measured at two moments, the period's start and its end. GPU-hours are"
    " summed: the start and end columns are their shares in the period's first and last"
    " UTC hour (a period of up to two days) or day, and the last column over the whole"
    " period. A dash: nothing to share at that moment or in that hour or day (no GPUs"
    " registered yet, no GPU-hours metered)."
)


def _chart(series: Series) -> Drawing:
    width = _PAGE[0] - 2 * _MARGIN
    drawing = Drawing(width, 75 * mm)
    ranked = sorted(series.groups, key=lambda g: -max(series.groups[g], default=0))
    shown = ranked[:_CHART_GROUPS]
    data = [series.groups[g] for g in shown]
    rest = ranked[_CHART_GROUPS:]
    if rest:
        data.append([sum(series.groups[g][i] for g in rest) for i in range(len(series.times))])
        shown = [*shown, "other"]
    chart = VerticalBarChart()
    chart.x, chart.y = 30, 25
    chart.width, chart.height = int(width - 190), int(75 * mm - 45)
    chart.data = data or [[0.0] * len(series.times)]
    chart.categoryAxis.style = "stacked"
    span = series.times[-1] - series.times[0] if series.times else timedelta(0)
    shape = (
        "%Y-%m-%d"
        if span >= timedelta(days=7)
        else "%m-%d %H:%M"
        if span >= timedelta(hours=2) or not span
        else "%H:%M:%S"
        if span >= timedelta(minutes=1)
        else "%H:%M:%S.%f"  # a period of seconds: to the millisecond
    )
    # At most about 24 labels; a day-by-day quarter labels every fourth day.
    every = max(1, -(-len(series.times) // 24))
    chart.categoryAxis.categoryNames = [
        (t.strftime(shape)[:-3] if shape.endswith("%f") else t.strftime(shape))
        if i % every == 0
        else ""
        for i, t in enumerate(series.times)
    ]
    chart.categoryAxis.labels.fontSize = 6
    chart.categoryAxis.labels.angle = 20
    chart.categoryAxis.labels.dy = -8
    chart.valueAxis.valueMin = 0
    chart.valueAxis.labelTextFormat = lambda v: number_text(float(v)).removesuffix(".00")
    chart.valueAxis.labels.fontSize = 7
    chart.barSpacing = 1
    for position in range(len(chart.data)):
        chart.bars[position].fillColor = _PALETTE[position % len(_PALETTE)]
        chart.bars[position].strokeColor = None
    drawing.add(chart)
    legend = Legend()
    legend.x, legend.y = int(width - 140), int(75 * mm - 25)
    legend.fontSize = 7
    legend.alignment = "right"
    # Top to bottom as the bars stack: the last series is on top.
    pairs = [(_PALETTE[i % len(_PALETTE)], name) for i, name in enumerate(shown)]
    legend.colorNamePairs = pairs[::-1]
    drawing.add(legend)
    drawing.add(String(0, 75 * mm - 8, f"{series.title} ({series.unit})", fontSize=9))
    return drawing


def _table(table: ReportTable, digest: ContentDigest) -> list[Any]:
    digest.table(table)
    shown: list[list[Any]] = []
    count = 0
    for row in table.rows:
        digest.row(row)
        count += 1
        if table.in_pdf and len(shown) < PDF_ROW_LIMIT:
            shown.append(list(row))
    story: list[Any] = [
        Paragraph(escape(table.title), _HEADING),
        Paragraph(escape(table.description), _KEPT),
        Spacer(1, 2 * mm),
    ]
    if not table.in_pdf:
        note = (
            "Shown as the charts after the first page; the JSON and CSV formats carry its"
            f" {count:,} rows."
        )
        return [KeepTogether([*story, Paragraph(note, _BODY)]), Spacer(1, 5 * mm)]
    if not shown:
        story.append(Paragraph("None in the period.", _BODY))
    else:
        titles = [c.title for c in table.columns]
        widths = _widths(titles, shown)
        header = [_p(title, _HEAD) for title in titles]
        story.append(_grid(header, [[_p(v) for v in row] for row in shown], widths))
    if count > len(shown):
        story.append(
            Paragraph(
                f"The first {len(shown):,} of {count:,} rows; the JSON and CSV formats"
                " of this report carry them all.",
                _BODY,
            )
        )
    story.append(Spacer(1, 5 * mm))
    return story


def _numbered_canvas(banner: str) -> type[Canvas]:
    """A canvas that writes the banner and "page n of m" on every page (two passes)."""

    class NumberedCanvas(Canvas):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:  # noqa: N802 - ReportLab's name
            self._pages.append(dict(self.__dict__))
            self._startPage()  # type: ignore[attr-defined]

        def save(self) -> None:
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self.setFont("Helvetica", 7.5)
                self.setFillColor(colors.HexColor("#44505c"))
                self.drawString(_MARGIN, _PAGE[1] - 10 * mm, banner)
                self.drawRightString(
                    _PAGE[0] - _MARGIN, 8 * mm, f"Page {self.getPageNumber()} of {total}"
                )
                super().showPage()
            super().save()

    return NumberedCanvas


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def render_pdf(report: Report, out: IO[bytes], seal: Sealer) -> str:
    """Write ``report`` to ``out`` as PDF; its content digest."""
    digest = ContentDigest(report)
    checkpoint = (
        "no audit checkpoint yet"
        if report.checkpoint is None
        else f"audit checkpoint #{report.checkpoint.number} (chain head"
        f" {report.checkpoint.head_seq}, signed {_when(report.checkpoint.signed_at)})"
    )
    period = f"{_when(report.period.start)} to {_when(report.period.end)}"
    title = f"{report.kind.value.capitalize()} report"
    story: list[Any] = [
        Paragraph(escape(title), _STYLES["Title"]),
        Paragraph(escape(f"Period: {period} (end exclusive)"), _BODY),
        Paragraph(escape(f"Covers: {checkpoint}"), _BODY),
        Paragraph(escape(f"Generated: {_when(report.generated_at)}"), _BODY),
        Spacer(1, 5 * mm),
        *_headline(report.headline),
    ]
    # The headline is on the first page; its table is there already, so not repeated.
    tables = [t for t in report.tables if t.name != "headline"]
    headline_tables = [t for t in report.tables if t.name == "headline"]
    for table in headline_tables:
        digest.table(table)
        for row in table.rows:
            digest.row(row)
    if report.charts:
        story.append(PageBreak())
        story += [KeepTogether([_chart(s), Spacer(1, 6 * mm)]) for s in report.charts]
    story.append(PageBreak())
    for table in tables:
        story += _table(table, digest)
    content = digest.hexdigest()
    sealed = seal(content)
    story += [
        PageBreak(),
        Paragraph("Signature", _STYLES["Heading2"]),
        Paragraph(
            "The signature is Ed25519 over the statement below, exactly as printed (no"
            " newline at its end), with the control plane's audit signing key;"
            " docs/reports.md shows how to check it, and how to recompute the content digest"
            " from the JSON or CSV format of this report.",
            _BODY,
        ),
        Spacer(1, 3 * mm),
        Paragraph(f"<b>Statement:</b> {escape(sealed.statement)}", _MONO),
        Paragraph(f"<b>Signature:</b> {escape(sealed.signature)}", _MONO),
        Paragraph(f"<b>Key fingerprint:</b> {escape(sealed.key_fingerprint)}", _MONO),
        Paragraph(f"<b>Content SHA-256:</b> {escape(content)}", _MONO),
    ]
    banner = f"Sovereign · {title} · {period} · {checkpoint}"
    document = SimpleDocTemplate(
        out,
        pagesize=_PAGE,
        leftMargin=_MARGIN,
        rightMargin=_MARGIN,
        topMargin=_MARGIN + 3 * mm,
        bottomMargin=_MARGIN,
        title=title,
        subject=f"{period}; {checkpoint}",
        keywords=[f"content_sha256={content}", f"signature={sealed.signature}"],
        author="Sovereign",
        invariant=1,
    )
    document.build(story, canvasmaker=_numbered_canvas(banner))
    return content
