"""The API process's fleet cache: what a caller that books nothing makes it read."""

from control_plane.core.db import DbConnection
from control_plane.scheduling.fleet import FleetCache


def test_a_snapshot_reader_never_waits_for_the_bookings_to_reload(conn: DbConnection) -> None:
    now = [0.0]
    cache = FleetCache(resync_seconds=5.0, clock=lambda: now[0])
    loaded = cache.current(conn)
    assert loaded.loaded_at == 0.0

    now[0] = 60.0  # the bookings are stale now, for a caller that books
    assert cache.snapshot(conn) is loaded.snapshot
    now[0] = 62.0
    # Had the snapshot reader reloaded them at 60, they would be fresh enough at 62.
    assert cache.current(conn).loaded_at == 62.0
