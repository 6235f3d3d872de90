"""How fast an audit chain verifies: a bundle's lines offline, and the database walk's hashing.

Run from the repository root::

    python bench/audit_chain.py                       # 10k, 100k, 1M events
    python bench/audit_chain.py --events 100000 --json

No database: the events are synthetic but shaped like the log's (a quota change with its
before and after, ~520 bytes of canonical JSON each; ``--payload`` makes them larger), built
once and chained with the real ``core.audit_log.hashed_text``. Three ways are timed, each
over the whole chain after a warm-up, best of ``--repeat`` runs (garbage collection on):

``bundle walk``
    ``control_plane.audit.bundle.walk_lines``, what ``sovctl audit verify-bundle`` runs:
    per line one SHA-256 over the bytes as exported, two searches for ``prev_hash`` and
    ``seq`` and the comparisons. The goal (>= 1,000,000 events/s) is about this.
``bundle walk + checkpoint heads``
    The same with a ``CheckpointHeads`` of one checkpoint per 1,000 events, as a bundle
    carries them.
``bundle walk, parallel``
    ``bundle.walk_parallel`` over the lines written to a file, in one process per CPU (what
    ``verify-bundle --jobs`` does for a bundle over 32 MiB), process start-up included.
``database walk (event_hash)``
    ``service.broken_link`` on the stored rows, as ``sovctl audit verify`` does after
    reading them: the canonical JSON is rebuilt from the columns for every event (no I/O
    timed here; the read from PostgreSQL adds to it).
"""

import argparse
import gc
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from machine_info import cpu_model

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from control_plane.audit.bundle import walk_lines, walk_parallel  # noqa: E402
from control_plane.audit.repository import StoredEvent  # noqa: E402
from control_plane.audit.service import broken_link  # noqa: E402
from control_plane.audit.signatures import Statement  # noqa: E402
from control_plane.audit.verification import CheckpointHeads  # noqa: E402
from control_plane.core.audit_log import GENESIS_HASH, hashed_text  # noqa: E402

GOAL_PER_S = 1_000_000
CHECKPOINT_EVERY = 1000


def events(count: int, payload: int) -> tuple[list[bytes], list[StoredEvent], list[Statement]]:
    """``count`` chained events: as bundle lines, as stored rows, and checkpoints over them."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    lines: list[bytes] = []
    rows: list[StoredEvent] = []
    heads: list[Statement] = []
    prev = GENESIS_HASH
    note = "x" * payload
    for seq in range(1, count + 1):
        quota = {
            "tenant": f"tenant-{seq % 97}",
            "zone": f"jp-east-{seq % 13}",
            "max_gpus": seq % 64,
            "gpu_hours_per_period": 0.1 * seq,
            "period": "month",
            "updated_at": "2026-01-01T00:00:00+00:00",
            "note": note,
        }
        fields: dict[str, Any] = {
            "seq": seq,
            "occurred_at": start + timedelta(microseconds=seq),
            "actor_id": "token:3f2b8c1e-0000-4000-8000-000000000001",
            "actor_name": "ops-admin",
            "request_id": f"req-{seq:012d}",
            "action": "tenant.quota_set",
            "object_type": "tenant",
            "object_id": quota["tenant"],
            "before": {**quota, "max_gpus": 0},
            "after": quota,
        }
        text = hashed_text(fields, prev).encode("utf-8")
        digest = hashlib.sha256(text).hexdigest()
        lines.append(text)
        rows.append(StoredEvent(**fields, prev_hash=prev, hash=digest))
        if seq % CHECKPOINT_EVERY == 0 or seq == count:
            heads.append(Statement(len(heads) + 1, seq, digest, start, "0" * 64, "f" * 64))
        prev = digest
    return lines, rows, heads


def best_rate(run: Any, count: int, repeat: int) -> float:
    """Events per second of the fastest of ``repeat`` runs of ``run()``."""
    run()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return count / best


def database_walk(rows: list[StoredEvent]) -> None:
    prev = GENESIS_HASH
    for expected, row in enumerate(rows, start=1):
        if broken_link(row, expected, prev) is not None:
            raise AssertionError(f"broken at {expected}")
        prev = row.hash


def measure(count: int, payload: int, repeat: int) -> dict[str, Any]:
    """Every way, for one chain length."""
    lines, rows, statements = events(count, payload)

    def bundle() -> None:
        checked, _, found = walk_lines(lines, GENESIS_HASH, 1)
        assert found is None, found
        assert checked == count

    def bundle_heads() -> None:
        checked, _, found = walk_lines(lines, GENESIS_HASH, 1, CheckpointHeads(statements))
        assert found is None, found
        assert checked == count

    db_rows = rows if count <= 100_000 else rows[:100_000]
    jobs = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "events.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in lines))

        def parallel() -> None:
            checked, intact = walk_parallel(
                path, GENESIS_HASH, 1, CheckpointHeads(statements), jobs
            )
            assert intact
            assert checked == count

        parallel_rate = best_rate(parallel, count, repeat)
    return {
        "parallel_jobs": jobs,
        "bundle_walk_parallel_per_s": round(parallel_rate),
        "events": count,
        "mean_line_bytes": round(sum(map(len, lines)) / count),
        "bundle_walk_per_s": round(best_rate(bundle, count, repeat)),
        "bundle_walk_heads_per_s": round(best_rate(bundle_heads, count, repeat)),
        "database_walk_per_s": round(
            best_rate(lambda: database_walk(db_rows), len(db_rows), repeat)
        ),
        "sha256_only_per_s": round(
            best_rate(lambda: [hashlib.sha256(x).hexdigest() for x in lines], count, repeat)
        ),
    }


def main() -> int:
    """Build each chain, time each way, print a table or JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, action="append", help="chain length (repeatable)")
    parser.add_argument("--payload", type=int, default=0, help="extra bytes in each snapshot")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = args.events or [10_000, 100_000, 1_000_000]
    results = [measure(n, args.payload, args.repeat) for n in sizes]
    report = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": cpu_model(),
            "cpus": os.cpu_count(),
        },
        "goal_per_s": GOAL_PER_S,
        "payload": args.payload,
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['machine']['processor']}, Python {report['machine']['python']}")
    header = f"{'events':>9} {'bytes':>6} {'bundle/s':>11} {'+heads/s':>11} {'db walk/s':>10}"
    print(header + f" {'sha256 only/s':>14} {'parallel/s':>11}")
    for r in results:
        print(
            f"{r['events']:>9} {r['mean_line_bytes']:>6} {r['bundle_walk_per_s']:>11,}"
            f" {r['bundle_walk_heads_per_s']:>11,} {r['database_walk_per_s']:>10,}"
            f" {r['sha256_only_per_s']:>14,} {r['bundle_walk_parallel_per_s']:>11,}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
