"""SQL access for the audit chain. Functions take the caller's connection."""

from collections.abc import Iterator
from typing import LiteralString

from psycopg.rows import DictRow

from control_plane.core.db import DbConnection, fetch_all, fetch_page, load_queries


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.audit")[name]


def iter_events(conn: DbConnection, batch_size: int = 1000) -> Iterator[DictRow]:
    """Yield every event in seq order, a batch at a time, so memory stays flat."""
    after_seq = 0
    while True:
        rows = fetch_all(conn, _q("events_after"), {"after_seq": after_seq, "limit": batch_size})
        if not rows:
            return
        yield from rows
        after_seq = rows[-1]["seq"]


def list_events(
    conn: DbConnection, filters: dict[str, str | None], limit: int, offset: int
) -> tuple[list[DictRow], int]:
    """Return one page of events matching ``filters`` and the total that match."""
    return fetch_page(conn, _q("list_events"), _q("count_events"), filters, limit, offset)
