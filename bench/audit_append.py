"""How fast audit events are appended through the real write path, one by one and batched.

Run from the repository root (PostgreSQL at ``SOVEREIGN_BENCH_ADMIN_URL``, by default
``postgresql://postgres@127.0.0.1:5432/postgres``)::

    python bench/audit_append.py
    python bench/audit_append.py --grow 1000000 --json

It creates a scratch database ``sovereign_bench_<random>`` with every migration, records
``tenant.quota_set`` events (a quota before and after, ~520 bytes of canonical JSON) as the
services do, as the application role, and drops the database at the end. Timed:

``record_change, 1 per transaction``
    What one API write costs the log: one ``record_change`` and the commit (the chain
    trigger under the writer lock, then the WAL flush).
``record_changes, N per transaction``
    A sweep's batch: ``core.audit_log.record_changes`` queues N events with one ``COPY``;
    the trigger links them all in one call at commit (migration 0029). The 20,000
    events/s goal is about this.
``... W writers``
    The same batches from W threads with a connection each: recording runs side by side,
    linking is serialized by the chain's lock.
``server only``
    The trigger's ceiling: N identical pending rows made by one ``INSERT ... SELECT``, so
    no client work at all; linking them at commit is all that is timed.
``growth``
    Batches of 1,000 while the chain grows to ``--grow`` events: the rate per window, to
    show whether appending slows as the table grows (it reads the head by index).

The chain is verified (``service.verify_chain``) after the run.
"""

import argparse
import json
import os
import platform
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from machine_info import cpu_model
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from control_plane.audit import service as audit  # noqa: E402
from control_plane.core import migrations  # noqa: E402
from control_plane.core.audit_log import (  # noqa: E402
    AuditContext,
    Change,
    hash_parts,
    record_change,
    record_changes,
)
from control_plane.core.db import connect  # noqa: E402
from control_plane.domain.audit import AuditAction  # noqa: E402
from control_plane.registry.models import QuotaPeriod, QuotaPublic  # noqa: E402

ADMIN_URL = os.environ.get(
    "SOVEREIGN_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
GOAL_PER_S = 20_000
ACTOR = AuditContext(actor_id="bench:append", actor_name="audit append bench")
ACTION = AuditAction.TENANT_QUOTA_SET


def quota(n: int) -> QuotaPublic:
    return QuotaPublic(
        tenant=f"tenant-{n % 97}",
        zone=f"jp-east-{n % 13}",
        max_gpus=n % 64,
        gpu_hours_per_period=0.1 * n,
        period=QuotaPeriod.MONTH,
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


BEFORE, AFTER = quota(0), quota(1)


def one_per_transaction(url: str, count: int) -> float:
    with connect(url) as conn:
        started = time.perf_counter()
        for n in range(count):
            with conn.transaction():
                record_change(conn, ACTOR, ACTION, f"t{n}", before=BEFORE, after=AFTER)
        return count / (time.perf_counter() - started)


def batched(url: str, count: int, batch: int, writers: int) -> float:
    """Events/s for ``writers`` threads each appending ``count / writers`` in batches."""
    # At least one batch per writer, however small ``count`` is.
    rounds = max(count // writers // batch, 1)
    barrier = threading.Barrier(writers + 1)

    def write() -> None:
        with connect(url) as conn:
            changes = [Change(ACTION, f"t{n}", BEFORE, AFTER) for n in range(batch)]
            barrier.wait()
            for _ in range(rounds):
                with conn.transaction():
                    record_changes(conn, ACTOR, changes)

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return rounds * batch * writers / (time.perf_counter() - started)


def server_only(url: str, count: int) -> float:
    """The chain trigger's own ceiling: pending rows made by one statement, no client work.

    Not a write path the services use: identical events (one prepared ``hash_head``), to
    show what linking alone costs at commit.
    """
    with connect(url) as conn:
        head, tail = _parts()
        started = time.perf_counter()
        with conn.transaction():
            conn.execute(
                "INSERT INTO audit_pending (occurred_at, actor_id, actor_name, request_id,"
                " action, object_type, object_id, before, after, hash_head, hash_tail)"
                " SELECT %(at)s, %(actor)s, %(name)s, NULL, %(action)s, 'tenant', 't',"
                " NULL, NULL, %(head)s, %(tail)s FROM generate_series(1, %(count)s)",
                {
                    "at": MOMENT,
                    "actor": ACTOR.actor_id,
                    "name": ACTOR.actor_name,
                    "action": ACTION.value,
                    "head": head,
                    "tail": tail,
                    "count": count,
                },
            )
        return count / (time.perf_counter() - started)


MOMENT = datetime(2026, 1, 1, tzinfo=UTC)


def _parts() -> tuple[str, str]:
    fields = {
        "occurred_at": MOMENT,
        "actor_id": ACTOR.actor_id,
        "actor_name": ACTOR.actor_name,
        "request_id": None,
        "action": ACTION.value,
        "object_type": "tenant",
        "object_id": "t",
        "before": None,
        "after": None,
    }
    return hash_parts(fields)


def _admin(statement: sql.Composed) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(statement)


def main() -> int:
    """Create the scratch database, time each way, verify the chain, print, drop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per batched run")
    parser.add_argument("--singles", type=int, default=2_000, help="events one per transaction")
    parser.add_argument("--grow", type=int, default=200_000, help="events added for growth")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    name = f"sovereign_bench_{uuid.uuid4().hex[:10]}"
    url = psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name)
    runs: list[dict[str, Any]] = []
    growth: list[dict[str, Any]] = []
    try:
        migrations.ensure_database(url)
        migrations.upgrade(url)
        runs.append(
            {
                "way": "record_change, 1 per transaction",
                "batch": 1,
                "writers": 1,
                "per_s": round(one_per_transaction(url, args.singles)),
            }
        )
        for batch, writers in ((10, 1), (100, 1), (1000, 1), (1000, 2), (1000, 4)):
            rate = batched(url, args.events, batch, writers)
            runs.append(
                {"way": "record_changes", "batch": batch, "writers": writers, "per_s": round(rate)}
            )
        runs.append(
            {
                "way": "server only: INSERT ... SELECT",
                "batch": args.events,
                "writers": 1,
                "per_s": round(server_only(url, args.events)),
            }
        )
        with connect(url) as conn:
            length = audit.list_events(conn, limit=1).total
        window = max(args.grow // 10, 10_000)
        target = length + args.grow
        while length < target:
            rate = batched(url, window, 1000, 1)
            length += window
            growth.append({"chain_length": length, "per_s": round(rate)})
        with connect(url) as conn:
            verified = audit.verify_chain(conn, batch_size=10_000)
    finally:
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    machine = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": cpu_model(),
        "cpus": os.cpu_count(),
    }
    report: dict[str, Any] = {
        "machine": machine,
        "goal_per_s": GOAL_PER_S,
        "runs": runs,
        "growth": growth,
        "chain_verified": verified.ok,
        "events_verified": verified.events_checked,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if verified.ok else 1
    print(f"{machine['processor']}, {machine['cpus']} CPUs")
    for run in runs:
        print(
            f"{run['way']:<34} batch {run['batch']:>5} writers {run['writers']}: "
            f"{run['per_s']:>8,} events/s"
        )
    for point in growth:
        print(f"growth: {point['chain_length']:>9,} events: {point['per_s']:>8,} events/s")
    print(f"chain verified: {verified.ok} ({verified.events_checked:,} events)")
    return 0 if verified.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
