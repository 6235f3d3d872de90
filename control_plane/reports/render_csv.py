"""The CSV format: a zip with one CSV file per table, a manifest and the signature.

``<table>.csv`` holds a header row of column names and the table's rows (timestamps ISO
8601, empty for null). ``manifest.json`` names the report (its header), each file with
its title, description and row count, and the headline; ``signature.json`` is the seal.
The zip is written to a stream, one table at a time, so memory stays flat.
"""

import csv
import io
import json
import zipfile
from typing import IO, Any

from control_plane.reports.content import ContentDigest, Sealer
from control_plane.reports.models import Report


def _text(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


def render_csv(report: Report, out: IO[bytes], seal: Sealer) -> str:
    """Write ``report`` to ``out`` as a zip of CSV files; its content digest."""
    digest = ContentDigest(report)
    files: list[dict[str, Any]] = []
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for table in report.tables:
            digest.table(table)
            name = f"{table.name}.csv"
            count = 0
            with (
                archive.open(name, "w", force_zip64=True) as member,
                io.TextIOWrapper(member, encoding="utf-8", newline="") as text,
            ):
                writer = csv.writer(text)
                writer.writerow([c.name for c in table.columns])
                for row in table.rows:
                    writer.writerow([_text(v) for v in digest.row(row)])
                    count += 1
            files.append(
                {
                    "file": name,
                    "table": table.name,
                    "title": table.title,
                    "description": table.description,
                    "columns": [c.name for c in table.columns],
                    "row_count": count,
                }
            )
        content = digest.hexdigest()
        manifest = {
            "header": report.header(),
            "headline": [line.to_json() for line in report.headline],
            "files": files,
        }
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
        archive.writestr("signature.json", json.dumps(seal(content).to_json(), indent=2))
    return content
