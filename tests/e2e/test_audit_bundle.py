"""``sovctl audit export`` and ``verify-bundle`` as an auditor runs them, and each tampering.

The bundle is made by the real commands, as processes, from a chain with two signed
checkpoints; each test then damages a copy the way someone hiding something would and runs
``sovctl audit verify-bundle`` (no database, no server: its environment has no settings),
which must exit 1 naming the kind of damage and the first bad seq. The last tests run the
commands docs/audit.md gives for checking a bundle by hand, with sha256sum and openssl.
"""

import base64
import dataclasses
import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from agents.protocol import canonical_json
from control_plane.audit.signatures import (
    Statement,
    checkpoint_hash,
    fingerprint,
    parse_statement,
    public_key_pem,
)
from control_plane.core.db import DbConnection
from control_plane.core.settings import Settings
from tests.integration.test_audit_chain import write_events
from tests.integration.test_audit_checkpoints import write_key
from tests.support import SOVCTL, subprocess_env

pytestmark = pytest.mark.e2e

Sovctl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return write_key(tmp_path / "signing.pem")


@pytest.fixture
def run(settings: Settings, key_file: Path, tmp_path: Path) -> Sovctl:
    """``sovctl`` as a process, with the test database and the signing key."""

    def run_sovctl(*args: str, offline: bool = False) -> subprocess.CompletedProcess[str]:
        env = subprocess_env(settings, SOVEREIGN_AUDIT__SIGNING_KEY_FILE=str(key_file))
        if offline:  # verify-bundle needs nothing: not even a database URL
            env = {k: v for k, v in env.items() if not k.startswith("SOVEREIGN_")}
        return subprocess.run(
            [*SOVCTL, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    return run_sovctl


@pytest.fixture
def bundle(conn: DbConnection, run: Sovctl, tmp_path: Path) -> Path:
    """A bundle of seq 1 to 6, with checkpoints at seq 3 and 6."""
    write_events(conn, 3)
    assert run("audit", "checkpoint").returncode == 0
    write_events(conn, 3)
    assert run("audit", "checkpoint").returncode == 0
    directory = tmp_path / "bundle"
    exported = run("audit", "export", "--from", "2000-01-01T00:00:00Z", str(directory))
    assert exported.returncode == 0, exported.stderr
    assert "exported seq 1 to 6" in exported.stdout
    return directory


def verify(run: Sovctl, directory: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = run("audit", "verify-bundle", str(directory), "-o", "json", *extra, offline=True)
    return done.returncode, json.loads(done.stdout)


def lines(directory: Path) -> list[str]:
    return (directory / "events.jsonl").read_text(encoding="utf-8").splitlines()


def write_lines(directory: Path, new: list[str]) -> None:
    (directory / "events.jsonl").write_text("".join(f"{line}\n" for line in new), encoding="utf-8")


def test_an_intact_bundle_verifies_offline(run: Sovctl, bundle: Path, key_file: Path) -> None:
    code, result = verify(run, bundle)
    assert code == 0, result
    assert (result["first_seq"], result["last_seq"], result["checkpoints_checked"]) == (1, 6, 2)
    assert result["keys_pinned"] is False
    public = key_file.parent / "public.pem"
    key = write_public(key_file, public)
    code, result = verify(run, bundle, "--key", str(public))
    assert code == 0, result
    assert result["key_fingerprints"] == [fingerprint(key)]
    human = run("audit", "verify-bundle", str(bundle), offline=True)
    assert human.stdout.startswith("bundle intact: seq 1 to 6 (6 events), 2 checkpoints")


def write_public(key_file: Path, public: Path) -> Any:
    private = load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    public.write_text(public_key_pem(private.public_key()))
    return private.public_key()


def test_a_modified_event_is_pinpointed(run: Sovctl, bundle: Path) -> None:
    events = lines(bundle)
    events[1] = events[1].replace('"actor_name":"auditor test"', '"actor_name":"nobody"')
    write_lines(bundle, events)
    code, result = verify(run, bundle)
    assert (code, result["kind"], result["first_bad_seq"]) == (1, "modified", 2)


def test_a_modified_head_event_is_caught_by_the_signature(run: Sovctl, bundle: Path) -> None:
    events = lines(bundle)
    events[-1] = events[-1].replace('"actor_name":"auditor test"', '"actor_name":"nobody"')
    write_lines(bundle, events)
    code, result = verify(run, bundle)
    assert (code, result["kind"], result["first_bad_seq"]) == (1, "modified", 6)


def test_a_deleted_event_is_pinpointed(run: Sovctl, bundle: Path) -> None:
    events = lines(bundle)
    del events[2]
    write_lines(bundle, events)
    code, result = verify(run, bundle)
    assert (code, result["kind"], result["first_bad_seq"]) == (1, "deleted", 3)


def test_an_inserted_event_is_pinpointed(run: Sovctl, bundle: Path) -> None:
    events = lines(bundle)
    events.insert(3, events[2].replace('"object_id":"z2"', '"object_id":"forged"'))
    write_lines(bundle, events)
    code, result = verify(run, bundle)
    assert (code, result["kind"], result["first_bad_seq"]) == (1, "inserted", 3)


def test_reordered_events_are_pinpointed(run: Sovctl, bundle: Path) -> None:
    events = lines(bundle)
    events[2], events[3] = events[3], events[2]
    write_lines(bundle, events)
    code, result = verify(run, bundle)
    assert (code, result["kind"], result["first_bad_seq"]) == (1, "reordered", 3)


def test_a_truncated_tail_is_caught_by_the_checkpoint(run: Sovctl, bundle: Path) -> None:
    write_lines(bundle, lines(bundle)[:4])
    code, result = verify(run, bundle)
    assert (code, result["kind"], result["first_bad_seq"]) == (1, "truncated", 5)
    assert "checkpoint 2 signed seq 6" in result["reason"]


def rewrite_checkpoint(directory: Path, number: int, statement: bytes, signature: bytes) -> None:
    """Replace checkpoint ``number`` everywhere a bundle holds it, as a careful forger would."""
    records = [
        json.loads(line) for line in (directory / "checkpoints.jsonl").read_text().splitlines()
    ]
    for record in records:
        if record["number"] == number:
            record["statement"] = statement.decode()
            record["signature"] = base64.b64encode(signature).decode()
            record["checkpoint_hash"] = checkpoint_hash(statement)
    (directory / "checkpoints.jsonl").write_text("".join(canonical_json(r) + "\n" for r in records))
    (directory / "checkpoints" / f"{number}.statement").write_bytes(statement)
    (directory / "checkpoints" / f"{number}.sig").write_bytes(signature)


def newest_statement(directory: Path) -> Statement:
    return parse_statement((directory / "checkpoints" / "2.statement").read_bytes())


def test_a_forged_checkpoint_is_refused(run: Sovctl, bundle: Path) -> None:
    """Cut the tail and make the checkpoint say the chain ended there: the signature breaks."""
    events = lines(bundle)[:4]
    write_lines(bundle, events)
    forged = dataclasses.replace(
        newest_statement(bundle),
        head_seq=4,
        head_hash=hashlib.sha256(events[-1].encode()).hexdigest(),
    )
    old_signature = (bundle / "checkpoints" / "2.sig").read_bytes()
    rewrite_checkpoint(bundle, 2, forged.encode(), old_signature)
    code, result = verify(run, bundle)
    assert (code, result["kind"], result["checkpoint"]) == (1, "forged_checkpoint", 2)


def test_a_checkpoint_signed_with_another_key_is_refused(
    run: Sovctl, bundle: Path, key_file: Path
) -> None:
    """Re-sign the cut chain's head with a key of one's own, and ship that key too."""
    events = lines(bundle)[:4]
    write_lines(bundle, events)
    signed = newest_statement(bundle)
    other = Ed25519PrivateKey.generate()
    other_fingerprint = fingerprint(other.public_key())
    forged = Statement(
        number=2,
        head_seq=4,
        head_hash=hashlib.sha256(events[-1].encode()).hexdigest(),
        signed_at=signed.signed_at,
        prev_checkpoint_hash=signed.prev_checkpoint_hash,
        key_fingerprint=other_fingerprint,
    )
    rewrite_checkpoint(bundle, 2, forged.encode(), other.sign(forged.encode()))
    (bundle / "keys" / f"{other_fingerprint}.pem").write_text(public_key_pem(other.public_key()))
    # Trusting the bundle's own keys: a change of key without the audited rotation.
    code, result = verify(run, bundle)
    assert (code, result["kind"], result["checkpoint"]) == (1, "unknown_key", 2)
    # Trusting only the published key: the other key is simply unknown.
    public = key_file.parent / "public.pem"
    write_public(key_file, public)
    code, result = verify(run, bundle, "--key", str(public))
    assert (code, result["kind"], result["checkpoint"]) == (1, "unknown_key", 2)
    assert other_fingerprint in result["reason"]


def test_a_legitimate_rotation_verifies(
    conn: DbConnection, run: Sovctl, settings: Settings, tmp_path: Path
) -> None:
    write_events(conn, 2)
    assert run("audit", "checkpoint").returncode == 0
    new_key = write_key(tmp_path / "new.pem")
    env = subprocess_env(settings, SOVEREIGN_AUDIT__SIGNING_KEY_FILE=str(new_key))
    rotated = subprocess.run(
        [*SOVCTL, "audit", "checkpoint", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["head_seq"] == 3  # the rotation event is covered
    directory = tmp_path / "rotated"
    # -o names it too, as the issue writes the command.
    assert run("audit", "export", "-o", str(directory)).returncode == 0
    code, result = verify(run, directory)
    assert code == 0, result
    assert len(result["key_fingerprints"]) == 2
    verified = run("audit", "verify")
    assert verified.returncode == 0, verified.stdout
    assert "newest checkpoint 2 signs seq 3" in verified.stdout


def test_export_refuses_a_range_no_checkpoint_covers(
    conn: DbConnection, run: Sovctl, tmp_path: Path
) -> None:
    write_events(conn, 2)
    done = run("audit", "export", str(tmp_path / "b"))
    assert done.returncode == 1
    assert "no checkpoint covers seq" in done.stderr
    bad = run("audit", "export", "--from", "yesterday", str(tmp_path / "c"))
    assert bad.returncode == 2
    assert "--from" in bad.stderr


# -- by hand, as docs/audit.md shows it --------------------------------------------------


def shell(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_a_bundle_verifies_by_hand_with_sha256sum_and_openssl(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    [fpr] = manifest["keys"]
    # 1. The files are as exported.
    assert shell("sha256sum -c --quiet SHA256SUMS", bundle).returncode == 0
    # 2. The key is the published one: its fingerprint.
    done = shell(f"openssl pkey -pubin -in keys/{fpr}.pem -outform DER | sha256sum", bundle)
    assert done.stdout.split()[0] == fpr
    # 3. Each checkpoint's signature.
    for number in manifest["checkpoints"]:
        done = shell(
            f"openssl pkeyutl -verify -pubin -inkey keys/{fpr}.pem -rawin "
            f"-in checkpoints/{number}.statement -sigfile checkpoints/{number}.sig",
            bundle,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Signature Verified Successfully" in done.stdout
    # 4. The chain: each line's sha256 is the next line's prev_hash; the last is the head.
    script = bundle.parent / "chain.sh"
    script.write_text(DOCS_CHAIN_SCRIPT)
    done = shell(f"bash {script}", bundle)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == newest_statement(bundle).head_hash


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_by_hand_a_forged_signature_and_a_broken_link_show(bundle: Path) -> None:
    statement = bundle / "checkpoints" / "2.statement"
    statement.write_bytes(statement.read_bytes().replace(b'"head_seq":6', b'"head_seq":5'))
    [fpr] = json.loads((bundle / "manifest.json").read_text())["keys"]
    done = shell(
        f"openssl pkeyutl -verify -pubin -inkey keys/{fpr}.pem -rawin "
        "-in checkpoints/2.statement -sigfile checkpoints/2.sig",
        bundle,
    )
    assert done.returncode != 0
    events = lines(bundle)
    del events[2]
    write_lines(bundle, events)
    (bundle.parent / "chain.sh").write_text(DOCS_CHAIN_SCRIPT)
    done = shell(f"bash {bundle.parent / 'chain.sh'}", bundle)
    assert done.returncode != 0
    assert "seq 3: the line does not continue the chain" in done.stderr


def _docs_chain_script() -> str:
    """The chain-walking script as docs/audit.md prints it (so the docs are what is tested)."""
    text = (Path(__file__).parents[2] / "docs" / "audit.md").read_text()
    start = text.index("<!-- chain-script:begin -->")
    return text[start:].split("```bash\n", 1)[1].split("```", 1)[0]


DOCS_CHAIN_SCRIPT = _docs_chain_script()
