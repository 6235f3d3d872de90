"""Checkpoint statements, their signatures, the signing key's loading, and the bundle walk."""

import base64
import hashlib
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from control_plane.audit.bundle import classify, line_fields, walk_lines
from control_plane.audit.keys import DEV_KEY_NAME, load_signing_key
from control_plane.audit.signatures import (
    Statement,
    StatementError,
    checkpoint_hash,
    fingerprint,
    parse_statement,
    public_key_pem,
    sign,
    signature_verifies,
)
from control_plane.audit.verification import SignedCheckpoint, Tampering, check_checkpoints
from control_plane.core.audit_log import GENESIS_HASH, hashed_text
from control_plane.core.errors import ConfigurationError
from control_plane.core.settings import AuditSettings, Environment, Settings

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
STATEMENT = Statement(
    number=1,
    head_seq=7,
    head_hash="a" * 64,
    signed_at=datetime(2026, 12, 3, 11, 0, tzinfo=UTC),
    prev_checkpoint_hash="0" * 64,
    key_fingerprint=fingerprint(KEY.public_key()),
)


def test_the_statement_is_the_documented_bytes() -> None:
    assert STATEMENT.encode() == (
        b'{"format":"sovereign-audit-checkpoint/1","head_hash":"' + b"a" * 64 + b'",'
        b'"head_seq":7,"key_fingerprint":"' + STATEMENT.key_fingerprint.encode() + b'",'
        b'"number":1,"prev_checkpoint_hash":"' + b"0" * 64 + b'",'
        b'"previous_key_fingerprint":null,"signed_at":"2026-12-03T11:00:00.000000+00:00"}'
    )
    assert parse_statement(STATEMENT.encode()) == STATEMENT


def test_the_fingerprint_is_sha256_of_the_der_public_key() -> None:
    der = KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert len(der) == 44
    assert fingerprint(KEY.public_key()) == hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize(
    "data",
    [
        STATEMENT.encode() + b"\n",  # not canonical: a trailing newline
        STATEMENT.encode().replace(b'"head_seq":7', b'"head_seq": 7'),
        STATEMENT.encode().replace(b"checkpoint/1", b"checkpoint/2"),
        b"[]",
        b"\xff",
    ],
)
def test_a_statement_in_any_other_form_is_refused(data: bytes) -> None:
    with pytest.raises(StatementError):
        parse_statement(data)


def test_a_signature_verifies_only_its_own_bytes_and_key() -> None:
    signed = STATEMENT.encode()
    signature = sign(KEY, signed)
    assert signature_verifies(KEY.public_key(), signed, signature)
    assert not signature_verifies(KEY.public_key(), signed.replace(b":7,", b":8,"), signature)
    other = Ed25519PrivateKey.generate().public_key()
    assert not signature_verifies(other, signed, signature)
    assert not signature_verifies(KEY.public_key(), signed, "not base64!")


def _signed(statement: Statement, key: Ed25519PrivateKey = KEY) -> SignedCheckpoint:
    data = statement.encode()
    return SignedCheckpoint(data, sign(key, data), checkpoint_hash(data))


def test_checkpoints_link_and_need_a_trusted_key() -> None:
    first = _signed(STATEMENT)
    second = Statement(
        number=2,
        head_seq=9,
        head_hash="b" * 64,
        signed_at=datetime(2026, 12, 3, 12, 0, tzinfo=UTC),
        prev_checkpoint_hash=first.checkpoint_hash,
        key_fingerprint=STATEMENT.key_fingerprint,
    )
    trusted = {STATEMENT.key_fingerprint: KEY.public_key()}
    statements, found = check_checkpoints([first, _signed(second)], trusted)
    assert found is None
    assert [s.number for s in statements] == [1, 2]
    broken = _signed(
        Statement(
            number=2,
            head_seq=9,
            head_hash="b" * 64,
            signed_at=second.signed_at,
            prev_checkpoint_hash="f" * 64,
            key_fingerprint=STATEMENT.key_fingerprint,
        )
    )
    _, found = check_checkpoints([first, broken], trusted)
    assert found is not None
    assert (found.kind, found.checkpoint) == (Tampering.FORGED_CHECKPOINT, 2)
    _, found = check_checkpoints([_signed(STATEMENT)], {})
    assert found is not None
    assert found.kind is Tampering.UNKNOWN_KEY


def _lines(count: int) -> list[bytes]:
    lines, prev = [], GENESIS_HASH
    for seq in range(1, count + 1):
        fields = {
            "seq": seq,
            "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
            "actor_id": "a",
            "actor_name": 'a "quoted" name',
            "request_id": ',"prev_hash":"' if seq == 2 else None,
            "action": "zone.created",
            "object_type": "zone",
            "object_id": str(seq),
            "before": {"prev_hash": "x", "seq": 99},
            "after": None,
        }
        text = hashed_text(fields, prev).encode()
        lines.append(text)
        prev = hashlib.sha256(text).hexdigest()
    return lines


def test_the_walk_reads_prev_hash_and_seq_from_the_line_itself() -> None:
    lines = _lines(4)
    assert line_fields(lines[1]) == (hashlib.sha256(lines[0]).hexdigest(), 2)
    count, last, found = walk_lines(lines, GENESIS_HASH, 1)
    assert (count, found) == (4, None)
    assert last == hashlib.sha256(lines[-1]).hexdigest()


@pytest.mark.parametrize(
    ("damage", "kind", "seq"),
    [
        (lambda ls: [ls[0].replace(b'_id":"1"', b'_id":"x"'), *ls[1:]], Tampering.MODIFIED, 1),
        (
            lambda ls: [ls[0], ls[1].replace(b'_id":"2"', b'_id":"x"'), *ls[2:]],
            Tampering.MODIFIED,
            2,
        ),
        (lambda ls: [ls[0], ls[2], ls[3]], Tampering.DELETED, 2),
        (lambda ls: [ls[0], ls[1], ls[1], ls[2], ls[3]], Tampering.INSERTED, 2),
        (lambda ls: [ls[0], ls[2], ls[1], ls[3]], Tampering.REORDERED, 2),
    ],
)
def test_the_kind_of_damage_is_named(damage: object, kind: Tampering, seq: int) -> None:
    lines = damage(_lines(4))  # type: ignore[operator]
    count, _, found = walk_lines(lines, GENESIS_HASH, 1)
    assert found is not None
    named = classify(lines, count, GENESIS_HASH, 1)
    assert (named.kind, named.seq) == (kind, seq), named


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(state_dir=tmp_path, secret_key="x" * 40, **values)  # type: ignore[arg-type]


def test_prod_refuses_to_sign_without_a_key_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="SOVEREIGN_AUDIT__SIGNING_KEY_FILE is not set"):
        load_signing_key(_settings(tmp_path, env=Environment.PROD))
    assert not (tmp_path / DEV_KEY_NAME).exists()


def test_dev_generates_a_key_once_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = load_signing_key(_settings(tmp_path))
    assert "generated a development audit signing key" in caplog.text
    assert (tmp_path / DEV_KEY_NAME).stat().st_mode & 0o777 == 0o600
    assert load_signing_key(_settings(tmp_path)).fingerprint == first.fingerprint


def test_a_key_file_must_be_an_ed25519_pem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigurationError, match=r"SOVEREIGN_AUDIT__SIGNING_KEY_FILE: .* not an"):
        load_signing_key(_settings(tmp_path, audit=AuditSettings(signing_key_file=bad)))
    missing = AuditSettings(signing_key_file=tmp_path / "missing.pem")
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_signing_key(_settings(tmp_path, audit=missing))


def test_an_openssl_key_loads_and_signs_what_openssl_verifies(tmp_path: Path) -> None:
    """The key an operator makes with openssl works, and openssl checks our signature."""
    key_file = tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key_file)], check=False
    )
    if made.returncode != 0:
        pytest.skip("openssl cannot make an ed25519 key here")
    key = load_signing_key(_settings(tmp_path, audit=AuditSettings(signing_key_file=key_file)))
    public = tmp_path / "public.pem"
    public.write_text(public_key_pem(key.private_key.public_key()))
    (tmp_path / "statement").write_bytes(STATEMENT.encode())
    (tmp_path / "sig").write_bytes(base64.b64decode(sign(key.private_key, STATEMENT.encode())))
    verified = subprocess.run(
        [
            *("openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(public), "-rawin"),
            *("-in", str(tmp_path / "statement"), "-sigfile", str(tmp_path / "sig")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr


def test_a_prod_worker_or_beat_refuses_to_start_without_the_key_setting(tmp_path: Path) -> None:
    from celery import Celery

    from control_plane.audit import tasks

    with pytest.raises(ConfigurationError, match="SOVEREIGN_AUDIT__SIGNING_KEY_FILE is not set"):
        tasks.register(Celery("t"), _settings(tmp_path, env=Environment.PROD))
    app = Celery("t")
    key_file = tmp_path / "k.pem"
    tasks.register(
        app,
        _settings(tmp_path, env=Environment.PROD, audit=AuditSettings(signing_key_file=key_file)),
    )
    assert tasks.CHECKPOINT_TASK in app.tasks


def test_the_parallel_walk_joins_its_parts_and_refuses_a_broken_link(tmp_path: Path) -> None:
    from control_plane.audit.bundle import walk_parallel
    from control_plane.audit.verification import CheckpointHeads

    lines = _lines(40)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    last = hashlib.sha256(lines[-1]).hexdigest()
    head = Statement(1, 40, last, STATEMENT.signed_at, "0" * 64, STATEMENT.key_fingerprint)
    assert walk_parallel(path, GENESIS_HASH, 1, CheckpointHeads([head]), 4) == (40, True)
    del lines[17]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    _, intact = walk_parallel(path, GENESIS_HASH, 1, CheckpointHeads([head]), 4)
    assert not intact


@pytest.mark.parametrize("block", [7, 100, 1 << 20])
def test_a_part_read_in_blocks_gives_every_line_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """Lines cut by the blocks a worker reads are put back together: the walk of each part
    (blocks of 7 bytes cut every line) finds what one walk of the whole file finds."""
    from control_plane.audit import bundle
    from control_plane.audit.verification import CheckpointHeads

    monkeypatch.setattr(bundle, "_BLOCK", block)
    lines = _lines(25)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    assert list(bundle._part_lines(path, 0, path.stat().st_size)) == lines
    cuts = bundle._ranges(path, 3)
    assert [line for a, b in cuts for line in bundle._part_lines(path, a, b)] == lines
    last = hashlib.sha256(lines[-1]).hexdigest()
    head = Statement(1, 25, last, STATEMENT.signed_at, "0" * 64, STATEMENT.key_fingerprint)
    assert bundle.walk_parallel(path, GENESIS_HASH, 1, CheckpointHeads([head]), 3) == (25, True)
