"""The audit chain: linked hashes, tamper detection, and the application role's limits."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
import pytest

from control_plane.audit import service as audit
from control_plane.core.audit_log import (
    GENESIS_HASH,
    AuditContext,
    Change,
    event_hash,
    record_change,
    record_changes,
)
from control_plane.core.db import DbConnection, connect
from control_plane.domain.audit import AuditAction
from control_plane.registry.models import QuotaPeriod, QuotaPublic
from tests.support import tamper

pytestmark = pytest.mark.integration

ACTOR = AuditContext(actor_id="test:audit", actor_name="auditor test", request_id="req-1")
#: The chain's own tests record quota changes: a quota holds floats, which the canonical
#: JSON of Python and of PostgreSQL must write alike.
ACTION = AuditAction.TENANT_QUOTA_SET


def quota(n: int, *, gpu_hours: float, tenant: str = "t") -> QuotaPublic:
    return QuotaPublic(
        tenant=tenant,
        zone=f"z{n}",
        max_gpus=n,
        gpu_hours_per_period=gpu_hours,
        period=QuotaPeriod.MONTH,
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def write_events(conn: DbConnection, count: int) -> None:
    for n in range(count):
        with conn.transaction():
            record_change(
                conn,
                ACTOR,
                ACTION,
                f"z{n}",
                before=quota(n, gpu_hours=1e20),
                after=quota(n, gpu_hours=0.1 * n),
            )


def test_events_link_to_each_other(conn: DbConnection) -> None:
    write_events(conn, 3)
    page = audit.list_events(conn)
    assert [e.seq for e in page.items] == [1, 2, 3]
    assert page.items[0].prev_hash == GENESIS_HASH
    assert page.items[1].prev_hash == page.items[0].hash
    assert page.items[2].prev_hash == page.items[1].hash
    assert page.items[0].actor_name == "auditor test"
    assert page.items[0].request_id == "req-1"
    result = audit.verify_chain(conn)
    assert result.ok
    assert result.events_checked == 3
    assert result.head_hash == page.items[2].hash


@pytest.mark.tampers_audit
def test_verify_names_the_modified_event(conn: DbConnection, owner_conn: DbConnection) -> None:
    write_events(conn, 5)
    # The owner can bypass the append-only trigger (replica mode); the chain still tells.
    tamper(owner_conn, 'UPDATE audit_event SET after = \'{"slug": "forged"}\' WHERE seq = 3')
    result = audit.verify_chain(conn)
    assert not result.ok
    assert result.first_broken_seq == 3
    assert result.events_checked == 2
    assert "contents" in (result.reason or "")


@pytest.mark.tampers_audit
def test_verify_names_a_gap_left_by_deletion(conn: DbConnection, owner_conn: DbConnection) -> None:
    write_events(conn, 4)
    tamper(owner_conn, "DELETE FROM audit_event WHERE seq = 2")
    result = audit.verify_chain(conn)
    assert not result.ok
    assert result.first_broken_seq == 2


@pytest.mark.tampers_audit
def test_verify_names_a_rehashed_event(conn: DbConnection, owner_conn: DbConnection) -> None:
    """A forger who recomputes the changed event's own hash still breaks the next link."""
    write_events(conn, 4)
    row = owner_conn.execute("SELECT * FROM audit_event WHERE seq = 2").fetchone()
    assert row is not None
    forged = {**dict(row), "actor_name": "someone else"}
    new_hash = event_hash(forged, row["prev_hash"])
    tamper(
        owner_conn,
        "UPDATE audit_event SET actor_name = 'someone else', hash = %s WHERE seq = 2",
        (new_hash,),
    )
    result = audit.verify_chain(conn)
    assert result.first_broken_seq == 3
    assert "prev_hash" in (result.reason or "")


def test_app_role_cannot_insert_update_or_delete(conn: DbConnection) -> None:
    write_events(conn, 1)
    head = audit.list_events(conn).items[-1]
    # The forgery of issue 10 item 9: an event the client hashed itself, chained on the head.
    forged = {
        "seq": head.seq + 1,
        "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
        "actor_id": "token:admin",
        "actor_name": "admin",
        "request_id": None,
        "action": AuditAction.POLICY_SET_ACTIVATED.value,
        "object_type": "policy_set",
        "object_id": "1",
        "before": None,
        "after": None,
    }
    forged["hash"] = event_hash(forged, head.hash)
    forged["prev_hash"] = head.hash
    columns = ", ".join(forged)
    values = ", ".join(f"%({name})s" for name in forged)
    for statement, params in (
        (f"INSERT INTO audit_event ({columns}) VALUES ({values})", forged),
        ("UPDATE audit_event SET actor_name = 'x'", {}),
        ("DELETE FROM audit_event", {}),
        ("TRUNCATE audit_event", {}),
        ("UPDATE audit_pending SET actor_name = 'x'", {}),
        ("DELETE FROM audit_pending", {}),
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement, params)
    assert audit.verify_chain(conn).ok
    assert [e.seq for e in audit.list_events(conn).items] == [head.seq]


def test_owner_is_stopped_by_the_trigger(owner_conn: DbConnection, conn: DbConnection) -> None:
    write_events(conn, 1)
    for statement in (
        "UPDATE audit_event SET actor_name = 'x'",
        "DELETE FROM audit_event",
        "TRUNCATE audit_event",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            owner_conn.execute(statement)


def test_record_refuses_to_run_outside_a_transaction(conn: DbConnection) -> None:
    with pytest.raises(RuntimeError, match="inside the transaction"):
        record_change(conn, ACTOR, ACTION, "1", after=quota(1, gpu_hours=1.0))


def test_a_rolled_back_change_leaves_no_event(conn: DbConnection) -> None:
    def change_then_fail() -> None:
        with conn.transaction():
            record_change(conn, ACTOR, ACTION, "1", after=quota(1, gpu_hours=1.0))
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        change_then_fail()
    assert audit.list_events(conn).total == 0
    write_events(conn, 1)
    assert audit.list_events(conn).items[0].seq == 1


# -- events are linked into the chain at commit (migration 0010) ------------------------


def test_events_of_one_transaction_keep_their_order(
    conn: DbConnection, owner_conn: DbConnection
) -> None:
    with conn.transaction():
        for n in range(3):
            record_change(conn, ACTOR, ACTION, str(n), after=quota(n, gpu_hours=1.0))
        # Not linked yet: the chain's lock is taken at commit, not here.
        assert audit.list_events(conn).total == 0
    assert [e.object_id for e in audit.list_events(conn).items] == ["0", "1", "2"]
    assert owner_conn.execute("SELECT count(*) AS n FROM audit_pending").fetchone() == {"n": 0}
    assert audit.verify_chain(conn).ok


def test_concurrent_writers_make_one_unbroken_chain(database_url: str) -> None:
    """Eight connections appending at once: every event linked once, in commit order."""
    per_writer = 25

    def writer(number: int) -> None:
        with connect(database_url) as own:
            for n in range(per_writer):
                with own.transaction():
                    own.execute("SELECT pg_sleep(random() / 1000)")
                    record_change(
                        own,
                        ACTOR,
                        ACTION,
                        f"{number}-{n}",
                        after=quota(n, gpu_hours=0.5, tenant='ünïcode "quoted" \\ slash'),
                    )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    with connect(database_url) as check:
        result = audit.verify_chain(check)
        assert result.ok, result.reason
        assert result.events_checked == 8 * per_writer
        ids = [e.object_id for e in audit.list_events(check, limit=500).items]
        # Each writer's own events appear in the order it committed them.
        for number in range(8):
            mine = [i for i in ids if i.startswith(f"{number}-")]
            assert mine == [f"{number}-{n}" for n in range(per_writer)]


def test_recording_before_or_after_a_fleet_change_cannot_deadlock(database_url: str) -> None:
    """The fleet-generation bump and the chain both lock at commit, always in one order.

    One transaction changes the zone tree (which bumps the fleet generation at commit)
    and then records; the other records first. Both commit together, repeatedly.
    """
    rounds = 15
    barrier = threading.Barrier(2)

    def change(first_record: bool) -> None:
        with connect(database_url) as own:
            for n in range(rounds):
                slug = f"z-{int(first_record)}-{n}"
                with own.transaction():
                    if first_record:
                        record_change(own, ACTOR, ACTION, slug, after=quota(n, gpu_hours=2.5))
                    own.execute(
                        "INSERT INTO residency_zone (slug, name, country) VALUES (%s, %s, 'JP')",
                        (slug, slug),
                    )
                    if not first_record:
                        record_change(own, ACTOR, ACTION, slug, after=quota(n, gpu_hours=2.5))
                    barrier.wait(timeout=30)

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(change, True), pool.submit(change, False)]:
            future.result()  # a deadlock would surface here as DeadlockDetected
    with connect(database_url) as check:
        assert audit.verify_chain(check).events_checked == 2 * rounds


# -- a transaction's events are linked by one trigger call (migration 0029) -------------


def quota_changes(prefix: str, count: int) -> list[Change]:
    return [
        Change(ACTION, f"{prefix}-{n}", after=quota(n, gpu_hours=0.25 * n)) for n in range(count)
    ]


def test_a_batch_stores_what_one_by_one_would(conn: DbConnection) -> None:
    """``record_changes`` (one COPY) stores the events ``record_change`` would, byte for byte.

    Text that COPY must escape (tab, newline, backslash, a quote, non-ASCII) and a null
    snapshot come through as hashed: the chain verifies from the stored columns.
    """
    awkward = 'tab\there\nnew line \\ back "quoted" ünïcode \\N'
    changes = [
        Change(ACTION, "1", before=None, after=quota(1, gpu_hours=0.1, tenant=awkward)),
        Change(ACTION, awkward, before=quota(2, gpu_hours=1e20), after=quota(3, gpu_hours=2.0)),
    ]
    with conn.transaction():
        record_changes(conn, ACTOR, changes)
    with conn.transaction():
        for change in changes:
            record_change(
                conn,
                ACTOR,
                change.action,
                change.object_id,
                before=change.before,
                after=change.after,
            )
    events = audit.list_events(conn).items
    assert audit.verify_chain(conn).ok

    def stored(n: int) -> tuple[object, ...]:
        e = events[n]
        return (e.actor_id, e.actor_name, e.request_id, e.action, e.object_id, e.before, e.after)

    assert [stored(0), stored(1)] == [stored(2), stored(3)]
    assert events[0].after is not None
    assert events[0].after["tenant"] == awkward
    assert events[1].object_id == awkward


def test_a_batch_with_a_rolled_back_savepoint_links_in_order_beside_other_writers(
    database_url: str, owner_conn: DbConnection
) -> None:
    """One commit links a batch in the order recorded, and only what the batch kept.

    The batch records, rolls a savepoint back, releases another and records again, while
    one writer keeps committing small batches (their pending rows take identities between
    the batch's) and another holds uncommitted events across the batch's commit. The
    batch's kept events get consecutive seqs in the order recorded; nothing of the
    rolled-back savepoint is linked; everyone's events are linked once; the chain verifies.
    """
    first, kept, second = quota_changes("a", 300), quota_changes("k", 40), quota_changes("b", 300)
    recorded = [c.object_id for c in first + kept + second]
    go, committed = threading.Semaphore(0), threading.Semaphore(0)
    committing = threading.Event()
    stop = threading.Event()
    holding = threading.Event()
    batch_committed = threading.Event()

    def busy_writer() -> int:
        """Commits a small batch when told to, then freely while the batch commits."""
        rounds = 0
        with connect(database_url) as own:
            while not stop.is_set():
                if not committing.is_set() and not go.acquire(timeout=0.05):
                    continue
                with own.transaction():
                    record_changes(own, ACTOR, quota_changes(f"w{rounds}", 5))
                rounds += 1
                committed.release()
        return rounds

    def holding_writer() -> None:
        with connect(database_url) as own, own.transaction():
            record_changes(own, ACTOR, quota_changes("h", 20))
            holding.set()
            assert batch_committed.wait(timeout=60)

    def between_rows() -> None:
        go.release()
        assert committed.acquire(timeout=60)

    with ThreadPoolExecutor(2) as pool, connect(database_url) as conn:
        busy = pool.submit(busy_writer)
        held = pool.submit(holding_writer)
        assert holding.wait(timeout=60)
        with conn.transaction():
            record_changes(conn, ACTOR, first)
            between_rows()
            with conn.transaction():
                record_changes(conn, ACTOR, quota_changes("gone", 30))
                between_rows()
                raise psycopg.Rollback  # to this savepoint only
            with conn.transaction():
                record_changes(conn, ACTOR, kept)
            between_rows()
            record_changes(conn, ACTOR, second)
            committing.set()
        batch_committed.set()
        stop.set()
        held.result()
        busy_rounds = busy.result()

        events = audit.list_events(conn, limit=100_000).items
        result = audit.verify_chain(conn)
    assert result.ok, result.reason
    assert result.events_checked == len(recorded) + 20 + 5 * busy_rounds
    ids = [e.object_id for e in events]
    assert not [i for i in ids if i.startswith("gone-")]
    batch = [e for e in events if e.object_id[0] in "akb"]
    assert [e.object_id for e in batch] == recorded
    assert [e.seq for e in batch] == list(range(batch[0].seq, batch[0].seq + len(recorded)))
    # The writer that held its events across the batch's commit was linked after it.
    assert [i for i in ids if i.startswith("h-")] == [f"h-{n}" for n in range(20)]
    assert ids.index("h-0") > ids.index(recorded[-1])
    for rounds in range(busy_rounds):
        assert [i for i in ids if i.startswith(f"w{rounds}-")] == [
            f"w{rounds}-{n}" for n in range(5)
        ]
    assert owner_conn.execute("SELECT count(*) AS n FROM audit_pending").fetchone() == {"n": 0}


def test_events_linked_early_in_a_rolled_back_savepoint_are_linked_again_at_commit(
    conn: DbConnection, owner_conn: DbConnection
) -> None:
    """``SET CONSTRAINTS ... IMMEDIATE`` links before commit; a rollback undoes that too.

    Events linked inside a savepoint that is then rolled back come back unlinked (with
    the record of having linked them), so the commit links them, and those recorded after
    an early link start a walk of their own: each event once, in the order recorded.
    """
    with conn.transaction():
        record_changes(conn, ACTOR, quota_changes("a", 3))
        with conn.transaction():
            record_changes(conn, ACTOR, quota_changes("gone", 2))
            conn.execute("SET CONSTRAINTS audit_pending_chain IMMEDIATE")
            assert audit.list_events(conn).total == 5
            raise psycopg.Rollback  # to this savepoint only
        assert audit.list_events(conn).total == 0
        conn.execute("SET CONSTRAINTS audit_pending_chain IMMEDIATE")
        assert audit.list_events(conn).total == 3
        record_changes(conn, ACTOR, quota_changes("b", 2))
        conn.execute("SET CONSTRAINTS audit_pending_chain DEFERRED")
        record_changes(conn, ACTOR, quota_changes("c", 2))
    events = audit.list_events(conn).items
    assert [e.object_id for e in events] == ["a-0", "a-1", "a-2", "b-0", "b-1", "c-0", "c-1"]
    assert [e.seq for e in events] == list(range(1, 8))
    assert audit.verify_chain(conn).ok
    assert owner_conn.execute("SELECT count(*) AS n FROM audit_pending").fetchone() == {"n": 0}


def test_a_transaction_of_more_events_than_one_walk_takes_links_them_all(
    conn: DbConnection, owner_conn: DbConnection
) -> None:
    """The trigger walks 10,000 pending rows at a time; the chunks join without a seam."""
    changes = quota_changes("big", 10_050)
    with conn.transaction():
        record_changes(conn, ACTOR, changes)
    events = audit.list_events(conn, limit=20_000).items
    assert [e.object_id for e in events] == [c.object_id for c in changes]
    assert [e.seq for e in events] == list(range(1, 10_051))
    assert audit.verify_chain(conn).ok
    assert owner_conn.execute("SELECT count(*) AS n FROM audit_pending").fetchone() == {"n": 0}
