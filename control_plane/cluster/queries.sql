-- name: save_report
-- The one row of the latest run's report (migration 0031), replaced.
INSERT INTO label_sync_report (only_row, finished_at, nodes_seen, patched, unchanged,
                               unknown_count, unknown)
VALUES (true, now(), %(nodes_seen)s, %(patched)s, %(unchanged)s, %(unknown_count)s,
        %(unknown)s)
ON CONFLICT (only_row) DO UPDATE
SET finished_at = EXCLUDED.finished_at, nodes_seen = EXCLUDED.nodes_seen,
    patched = EXCLUDED.patched, unchanged = EXCLUDED.unchanged,
    unknown_count = EXCLUDED.unknown_count, unknown = EXCLUDED.unknown;

-- name: last_report
SELECT finished_at, nodes_seen, patched, unchanged, unknown_count, unknown
FROM label_sync_report;
