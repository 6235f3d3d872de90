"""Signed checkpoints of the audit chain: signing, rotation, truncation found, the API."""

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from celery import Celery
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from control_plane.access.models import Role
from control_plane.app import create_app
from control_plane.audit import checkpoints
from control_plane.audit import service as audit
from control_plane.audit.keys import SigningKey, load_signing_key
from control_plane.audit.models import CheckpointPublic
from control_plane.audit.signatures import load_public_key, parse_statement, signature_verifies
from control_plane.audit.tasks import CHECKPOINT_TASK
from control_plane.celery_app import create_celery
from control_plane.core.audit_log import AuditContext, event_hash
from control_plane.core.db import DbConnection
from control_plane.core.settings import AuditSettings, Settings
from control_plane.domain.audit import AuditAction
from tests.integration.test_audit_chain import write_events
from tests.support import tamper

pytestmark = pytest.mark.integration

SIGNER = AuditContext(actor_id="test:signer", actor_name="checkpoint test")


def write_key(path: Path) -> Path:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.fixture
def key_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The test's settings with a signing key file of its own."""
    audit_settings = AuditSettings(signing_key_file=write_key(tmp_path / "signing.pem"))
    return settings.model_copy(update={"audit": audit_settings, "state_dir": tmp_path})


@pytest.fixture
def key(key_settings: Settings) -> SigningKey:
    return load_signing_key(key_settings)


def sign(conn: DbConnection, key: SigningKey, *, only_if_moved: bool = False) -> CheckpointPublic:
    signed = checkpoints.take_checkpoint(conn, key, SIGNER, only_if_moved=only_if_moved)
    assert signed is not None
    return signed


def test_a_checkpoint_signs_the_head_in_the_documented_form(
    conn: DbConnection, key: SigningKey
) -> None:
    write_events(conn, 3)
    signed = sign(conn, key)
    head = audit.list_events(conn).items[-1]
    statement = parse_statement(signed.statement.encode())
    assert (statement.number, statement.head_seq, statement.head_hash) == (1, 3, head.hash)
    assert statement.prev_checkpoint_hash == "0" * 64
    assert statement.key_fingerprint == key.fingerprint
    public = load_public_key(signed.public_key)
    assert signature_verifies(public, signed.statement.encode(), signed.signature)
    assert not signature_verifies(public, signed.statement.encode() + b" ", signed.signature)
    write_events(conn, 1)
    second = sign(conn, key)
    assert second.number == 2
    assert second.prev_checkpoint_hash == signed.checkpoint_hash
    result = audit.verify_chain(conn)
    assert result.ok, result
    assert (result.checkpoints_checked, result.newest_checkpoint_seq) == (2, 4)
    assert result.key_fingerprints == [key.fingerprint]


def test_an_unmoved_head_is_signed_only_on_demand(conn: DbConnection, key: SigningKey) -> None:
    assert checkpoints.take_checkpoint(conn, key, SIGNER) is None  # an empty chain
    write_events(conn, 1)
    sign(conn, key, only_if_moved=True)
    assert checkpoints.take_checkpoint(conn, key, SIGNER, only_if_moved=True) is None
    assert sign(conn, key).number == 2


@pytest.mark.tampers_audit
def test_removing_the_newest_events_is_found_by_the_checkpoint(
    conn: DbConnection, owner_conn: DbConnection, key: SigningKey
) -> None:
    write_events(conn, 5)
    sign(conn, key)
    tamper(owner_conn, "DELETE FROM audit_event WHERE seq > 3")
    result = audit.verify_chain(conn)
    assert not result.ok
    assert (result.kind, result.first_broken_seq) == ("truncated", 4)
    assert "checkpoint 1 signed seq 5" in (result.reason or "")


@pytest.mark.tampers_audit
def test_a_rewritten_chain_no_longer_matches_the_signed_head(
    conn: DbConnection, owner_conn: DbConnection, key: SigningKey
) -> None:
    """Someone past the triggers recomputes every hash after a change: the signature holds."""
    write_events(conn, 3)
    sign(conn, key)
    rows = owner_conn.execute("SELECT * FROM audit_event ORDER BY seq").fetchall()
    prev = rows[0]["prev_hash"]
    for row in rows:
        fields = {**row, "actor_name": "someone else"}
        new_hash = event_hash(fields, prev)
        tamper(
            owner_conn,
            "UPDATE audit_event SET actor_name = 'someone else', prev_hash = %s, hash = %s "
            "WHERE seq = %s",
            (prev, new_hash, row["seq"]),
        )
        prev = new_hash
    result = audit.verify_chain(conn)
    assert (result.ok, result.kind, result.first_broken_seq) == (False, "modified", 3)


@pytest.mark.tampers_audit
def test_a_forged_checkpoint_row_is_found(
    conn: DbConnection, owner_conn: DbConnection, key: SigningKey
) -> None:
    write_events(conn, 2)
    signed = sign(conn, key)
    forged = signed.statement.replace('"head_seq":2', '"head_seq":1')
    tamper(owner_conn, "UPDATE audit_checkpoint SET statement = %s", (forged,))
    result = audit.verify_chain(conn)
    assert (result.ok, result.kind) == (False, "forged_checkpoint")


@pytest.mark.tampers_audit
def test_a_checkpoint_by_a_key_not_pinned_is_refused(conn: DbConnection, key: SigningKey) -> None:
    write_events(conn, 1)
    sign(conn, key)
    other = Ed25519PrivateKey.generate().public_key()
    pinned = audit.verify_chain(conn, trusted_keys={"f" * 64: other})
    assert (pinned.ok, pinned.kind) == (False, "unknown_key")
    assert audit.verify_chain(
        conn, trusted_keys={key.fingerprint: load_public_key(key.public_key_pem)}
    ).ok


def test_the_signer_refuses_a_broken_chain(
    conn: DbConnection, owner_conn: DbConnection, key: SigningKey
) -> None:
    write_events(conn, 2)
    tamper(owner_conn, "UPDATE audit_event SET actor_name = 'x' WHERE seq = 2")
    with pytest.raises(Exception, match="broken at seq 2"):
        checkpoints.take_checkpoint(conn, key, SIGNER)
    assert checkpoints.list_checkpoints(conn, limit=10, cursor=None).items == []
    tamper(owner_conn, "UPDATE audit_event SET actor_name = 'auditor test' WHERE seq = 2")


def test_a_rotation_is_audited_and_carried_by_the_next_checkpoint(
    conn: DbConnection, key: SigningKey, key_settings: Settings, tmp_path: Path
) -> None:
    write_events(conn, 2)
    first = sign(conn, key)
    rotated_settings = key_settings.model_copy(
        update={"audit": AuditSettings(signing_key_file=write_key(tmp_path / "new.pem"))}
    )
    new_key = load_signing_key(rotated_settings)
    second = sign(conn, new_key, only_if_moved=True)
    assert second.previous_key_fingerprint == key.fingerprint
    assert second.key_fingerprint == new_key.fingerprint
    [event] = audit.list_events(conn, action=AuditAction.AUDIT_SIGNING_KEY_ROTATED.value).items
    assert event.seq == 3 == second.head_seq
    assert event.object_id == new_key.fingerprint
    assert event.before["fingerprint"] == key.fingerprint
    assert event.after == {"fingerprint": new_key.fingerprint, "public_key": new_key.public_key_pem}
    assert event.actor_id == "test:signer"
    result = audit.verify_chain(conn)
    assert result.ok, result
    assert result.key_fingerprints == sorted([key.fingerprint, new_key.fingerprint])
    published = checkpoints.public_keys(conn, new_key)
    assert published.fingerprint == new_key.fingerprint
    old, new = published.keys
    assert (old.fingerprint, old.current, old.valid_until) == (
        key.fingerprint,
        False,
        second.signed_at,
    )
    assert old.valid_from == first.signed_at
    assert (new.fingerprint, new.current, new.valid_until) == (new_key.fingerprint, True, None)


@pytest.mark.tampers_audit
def test_a_change_of_key_without_the_rotation_event_is_refused(
    conn: DbConnection,
    owner_conn: DbConnection,
    key: SigningKey,
    key_settings: Settings,
    tmp_path: Path,
) -> None:
    write_events(conn, 2)
    sign(conn, key)
    rotated = key_settings.model_copy(
        update={"audit": AuditSettings(signing_key_file=write_key(tmp_path / "new.pem"))}
    )
    sign(conn, load_signing_key(rotated))
    tamper(
        owner_conn,
        "UPDATE audit_event SET action = 'zone.created' WHERE action = %s",
        (AuditAction.AUDIT_SIGNING_KEY_ROTATED.value,),
    )
    result = audit.verify_chain(conn)
    assert not result.ok
    assert result.kind in ("modified", "unknown_key")


def test_checkpoints_are_append_only(
    conn: DbConnection, owner_conn: DbConnection, key: SigningKey
) -> None:
    write_events(conn, 1)
    sign(conn, key)
    for statement in (
        "UPDATE audit_checkpoint SET head_seq = 1",
        "DELETE FROM audit_checkpoint",
        "TRUNCATE audit_checkpoint",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
        with pytest.raises(psycopg.errors.InsufficientPrivilege), owner_conn.transaction():
            owner_conn.execute(statement)


def test_beat_signs_only_when_the_head_moved(conn: DbConnection, key_settings: Settings) -> None:
    celery: Celery = create_celery(key_settings)
    assert celery.conf.beat_schedule["audit-checkpoint"]["task"] == CHECKPOINT_TASK
    task = celery.tasks[CHECKPOINT_TASK]
    assert task.apply().get() is None  # nothing to sign yet
    write_events(conn, 2)
    assert task.apply().get() == 1
    assert task.apply().get() is None
    write_events(conn, 1)
    assert task.apply().get() == 2


# -- the API ----------------------------------------------------------------------------


@pytest.fixture
def key_client(key_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(key_settings), raise_server_exceptions=False) as test_client:
        yield test_client


def test_checkpoint_routes(
    key_client: TestClient,
    make_token: Callable[..., str],
    conn: DbConnection,
    key: SigningKey,
) -> None:
    admin = {"Authorization": f"Bearer {make_token(Role.ADMIN)}"}
    empty = key_client.post("/v1/audit/checkpoints", headers=admin)
    # Making the token was audited, so the chain is not empty: the admin signs it.
    assert empty.status_code == 201, empty.text
    body = empty.json()
    assert body["number"] == 1
    assert body["key_fingerprint"] == key.fingerprint
    listed = key_client.get("/v1/audit/checkpoints", headers=admin).json()
    assert [c["number"] for c in listed["items"]] == [1]
    assert listed["next_cursor"] is None
    published = key_client.get("/v1/audit/public-key", headers=admin).json()
    assert published["fingerprint"] == key.fingerprint
    assert published["public_key"] == key.public_key_pem
    assert [k["fingerprint"] for k in published["keys"]] == [key.fingerprint]
    verified = key_client.get("/v1/audit/verify", headers=admin).json()
    assert verified["ok"]
    assert verified["newest_checkpoint"] == 1


def test_events_newest_first_with_cursor_and_filters(
    client: TestClient, admin: dict[str, str], conn: DbConnection
) -> None:
    write_events(conn, 5)
    total = audit.list_events(conn).total
    first = client.get("/v1/audit/events", params={"limit": 2}, headers=admin).json()
    seqs = [e["seq"] for e in first["items"]]
    assert seqs == [total, total - 1]
    assert first["total"] == total
    second = client.get(
        "/v1/audit/events", params={"limit": 2, "cursor": first["next_cursor"]}, headers=admin
    ).json()
    assert [e["seq"] for e in second["items"]] == [total - 2, total - 3]
    ascending = client.get(
        "/v1/audit/events", params={"order": "asc", "limit": 1}, headers=admin
    ).json()
    assert [e["seq"] for e in ascending["items"]] == [1]
    both = client.get(
        "/v1/audit/events",
        params=[("action", "tenant.quota_set"), ("action", "token.created")],
        headers=admin,
    ).json()
    assert {e["action"] for e in both["items"]} == {"tenant.quota_set", "token.created"}
    assert both["total"] == total
    only = client.get("/v1/audit/events", params={"action": "token.created"}, headers=admin).json()
    assert {e["action"] for e in only["items"]} == {"token.created"}
    now = datetime.now(UTC)
    later = client.get(
        "/v1/audit/events", params={"since": (now + timedelta(hours=1)).isoformat()}, headers=admin
    ).json()
    assert later["items"] == []
    assert later["total"] == 0
    earlier = client.get(
        "/v1/audit/events", params={"until": (now + timedelta(hours=1)).isoformat()}, headers=admin
    ).json()
    assert earlier["total"] == total


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("since", "yesterday"),
        ("since", "0.5"),  # Unix seconds: not RFC 3339
        ("until", "2026-01-01"),
        ("until", "2026-01-01T00:00:00"),  # no zone: ambiguous
        ("action", "zone.creatd"),
        ("order", "newest"),
        ("cursor", "0"),
        ("cursor", "9223372036854775808"),
        ("offset", "100"),  # the pages before cursors: refused, not page one forever
    ],
)
def test_bad_event_filters_are_422_naming_the_field(
    client: TestClient, admin: dict[str, str], param: str, value: str
) -> None:
    response = client.get("/v1/audit/events", params={param: value}, headers=admin)
    assert response.status_code == 422, response.text
    [field] = response.json()["error"]["details"]["fields"]
    assert field["field"].startswith(f"query.{param}")
