"""The JSON format: one document, schema ``sovereign-report/1`` (docs/reports.md).

Written as a stream: the rows of each table go to ``out`` as they are read, so a table of
millions of denials never sits in memory. The seal comes last, once the digest is known.
"""

import json
from typing import IO, Any

from control_plane.reports.content import ContentDigest, Sealer
from control_plane.reports.models import Report


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def render_json(report: Report, out: IO[bytes], seal: Sealer) -> str:
    """Write ``report`` to ``out`` as JSON; its content digest."""
    digest = ContentDigest(report)
    out.write(b'{"header":' + _dump(report.header()))
    out.write(b',"headline":' + _dump([line.to_json() for line in report.headline]))
    out.write(b',"tables":[')
    for position, table in enumerate(report.tables):
        digest.table(table)
        meta = {
            "name": table.name,
            "title": table.title,
            "description": table.description,
            "columns": [{"name": c.name, "title": c.title, "type": c.kind} for c in table.columns],
        }
        out.write((b"," if position else b"") + _dump(meta)[:-1] + b',"rows":[')
        count = 0
        for row in table.rows:
            out.write((b",\n" if count else b"\n") + digest.row_json(row))
            count += 1
        out.write(b'],"row_count":' + _dump(count) + b"}")
    out.write(b'],"charts":')
    out.write(
        _dump(
            [
                {
                    "name": s.name,
                    "title": s.title,
                    "unit": s.unit,
                    "times": [t.isoformat() for t in s.times],
                    "groups": s.groups,
                }
                for s in report.charts
            ]
        )
    )
    content = digest.hexdigest()
    out.write(b',"signature":' + _dump(seal(content).to_json()) + b"}\n")
    return content
