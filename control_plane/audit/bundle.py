"""Audit export bundles: writing one, and verifying one offline (docs/audit.md#export-bundles).

A bundle is a directory (tar it to send it; the verifier reads the directory)::

    manifest.json          what was exported: range, first/last seq, the chain anchor, files
    SHA256SUMS             sha256sum -c of every other file, manifest.json included
    events.jsonl           one event per line: exactly the canonical JSON its hash is over
    checkpoints.jsonl      one checkpoint per line: number, statement, signature, hash
    checkpoints/N.statement, checkpoints/N.sig   the signed bytes and the raw signature
    keys/<fingerprint>.pem the public keys that signed the checkpoints

Each line of ``events.jsonl`` is the text ``core.audit_log.hashed_text`` hashes, so the
SHA-256 of a line (without its newline) is that event's hash and the next line's
``prev_hash``; nothing else need be trusted to recompute the chain. The events run from the
first one in the requested time range to the head of the first checkpoint at or after the
last one, so a signature covers the tail.

Verification needs no database, no server and no settings. It checks the checkpoints
(``verification``), walks the lines hashing each, and pinpoints the first modified,
deleted, inserted or reordered event, a truncated tail, a forged checkpoint or one signed by
a key that is not trusted; the manifest's file hashes last (they carry no secret, so they
only catch damage in transit). Keys are trusted as pinned by the auditor (``--key``) or, if
none are, as the bundle carries them; a change of key needs the audited rotation.
"""

import base64
import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agents.protocol import canonical_json
from control_plane.audit.signatures import (
    Statement,
    StatementError,
    fingerprint,
    load_public_key,
)
from control_plane.audit.verification import (
    CheckpointHeads,
    Finding,
    SignedCheckpoint,
    Tampering,
    check_checkpoints,
)

BUNDLE_FORMAT = "sovereign-audit-bundle/1"
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
EVENTS = "events.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
_PREV = b',"prev_hash":"'
_SEQ = b',"seq":'
#: Below this, starting worker processes costs more than walking in one (about 50,000 events).
PARALLEL_MIN_BYTES = 32 << 20


@dataclass(frozen=True, slots=True)
class BundleCheckpoint:
    """A checkpoint as a bundle carries it."""

    number: int
    statement: str
    signature: str
    checkpoint_hash: str
    public_key: str
    key_fingerprint: str


@dataclass(frozen=True, slots=True)
class BundleVerification:
    """What verifying a bundle found: the counts, and the first problem if any."""

    ok: bool
    events_checked: int
    first_seq: int | None
    last_seq: int | None
    checkpoints_checked: int
    key_fingerprints: list[str]
    keys_pinned: bool
    finding: Finding | None = None

    def as_json(self) -> dict[str, Any]:
        """A JSON-safe summary, for ``-o json``."""
        found = self.finding
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "checkpoints_checked": self.checkpoints_checked,
            "key_fingerprints": self.key_fingerprints,
            "keys_pinned": self.keys_pinned,
            "kind": None if found is None else found.kind.value,
            "first_bad_seq": None if found is None else found.seq,
            "checkpoint": None if found is None else found.checkpoint,
            "reason": None if found is None else found.message,
        }


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bundle(
    directory: Path,
    event_lines: Iterable[str],
    checkpoints: Sequence[BundleCheckpoint],
    manifest: dict[str, Any],
) -> dict[str, Any]:
    """Write a bundle into ``directory`` (new or empty); the manifest as written.

    ``event_lines`` are the events' hashed texts in seq order; ``manifest`` holds what the
    caller knows of the range, and gets the counts, keys and file hashes added.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty")
    (directory / "checkpoints").mkdir()
    (directory / "keys").mkdir()
    count = 0
    with (directory / EVENTS).open("w", encoding="utf-8", newline="\n") as events:
        for line in event_lines:
            events.write(line)
            events.write("\n")
            count += 1
    with (directory / CHECKPOINTS).open("w", encoding="utf-8", newline="\n") as lines:
        for checkpoint in checkpoints:
            record = {
                "checkpoint_hash": checkpoint.checkpoint_hash,
                "number": checkpoint.number,
                "signature": checkpoint.signature,
                "statement": checkpoint.statement,
            }
            lines.write(canonical_json(record) + "\n")
            base = directory / "checkpoints" / str(checkpoint.number)
            base.with_suffix(".statement").write_bytes(checkpoint.statement.encode("utf-8"))
            base.with_suffix(".sig").write_bytes(_b64decode(checkpoint.signature))
    keys = {c.key_fingerprint: c.public_key for c in checkpoints}
    for key_fingerprint, pem in keys.items():
        (directory / "keys" / f"{key_fingerprint}.pem").write_text(pem, encoding="ascii")
    files = sorted(
        str(path.relative_to(directory))
        for path in directory.rglob("*")
        if path.is_file() and path.name not in (MANIFEST, SUMS)
    )
    written = {
        **manifest,
        "format": BUNDLE_FORMAT,
        "events": count,
        "checkpoints": [c.number for c in checkpoints],
        "keys": sorted(keys),
        "files": {name: _sha256_file(directory / name) for name in files},
    }
    (directory / MANIFEST).write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")
    sums = [f"{digest}  {name}" for name, digest in written["files"].items()]
    sums.append(f"{_sha256_file(directory / MANIFEST)}  {MANIFEST}")
    (directory / SUMS).write_text("\n".join(sorted(sums, key=lambda s: s[66:])) + "\n")
    return written


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


# -- verifying ---------------------------------------------------------------------------


def line_fields(line: bytes) -> tuple[str, int]:
    """The ``prev_hash`` and ``seq`` of one event line, without parsing all of it.

    In canonical JSON they are the top-level object's last keys but one and last (only
    ``request_id``, a string or null, lies between), so the last occurrences are theirs:
    a quote inside a string value is always escaped. ``ValueError`` if the line is not so.
    """
    at = line.rfind(_PREV)
    seq_at = line.rfind(_SEQ)
    if at < 0 or seq_at < at or not line.endswith(b"}"):
        raise ValueError("not an event line")
    return line[at + 14 : at + 78].decode("ascii"), int(line[seq_at + 7 : -1])


def walk_lines(
    lines: Iterable[bytes], anchor: str, first_seq: int, heads: CheckpointHeads | None = None
) -> tuple[int, str, Finding | None]:
    """Hash each line and link it to the one before; (count, last hash, first problem).

    The fast path of verification (what bench/audit_chain.py times): per line one SHA-256,
    one search for the top-level ``prev_hash`` (see ``line_fields``) and two comparisons of
    bytes; the checkpoint heads are looked at only on the seqs they name. On a problem it
    stops and says where; ``classify`` then says what kind.
    """
    sha256 = hashlib.sha256
    prev = anchor.encode("ascii")
    expected = first_seq
    watched = frozenset() if heads is None else heads.watched()
    for line in lines:
        at = line.rfind(_PREV)
        if line[at + 14 : at + 78] != prev or not line.endswith(b',"seq":%d}' % expected):
            count = expected - first_seq
            if at < 0 or not line.endswith(b"}"):
                message = f"line {count + 1} of {EVENTS} is not an event"
                return count, prev.decode(), Finding(Tampering.BAD_BUNDLE, message, seq=expected)
            return count, prev.decode(), Finding(Tampering.MODIFIED, "", seq=expected)
        digest = sha256(line).hexdigest()
        if expected in watched and heads is not None:
            found = heads.at_event(expected, digest, partial(_describe, line))
            if found is not None:
                return expected - first_seq, prev.decode(), found
        prev = digest.encode("ascii")
        expected += 1
    return expected - first_seq, prev.decode(), None


@dataclass(frozen=True, slots=True)
class _Part:
    """What walking one byte range of ``events.jsonl`` found, self-anchored."""

    first_seq: int
    first_prev: str
    count: int
    last_hash: str
    ok: bool
    rotations_seen: list[bool]


#: How much of a part a worker reads at a time: small enough to stay in the CPU's caches
#: while its lines are hashed, large enough that reading costs little per line.
_BLOCK = 4 << 20


def _part_lines(path: Path, start: int, end: int) -> Iterator[bytes]:
    """The lines that start in ``[start, end)``, read a block at a time."""
    with path.open("rb") as file:
        file.seek(start)
        rest = b""
        left = end - start
        while left > 0:
            block = file.read(min(_BLOCK, left))
            if not block:
                break
            left -= len(block)
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            yield from lines
        if rest:
            yield rest


def _walk_part(path: Path, start: int, end: int, statements: list[Statement]) -> _Part | None:
    """Walk the lines that start in ``[start, end)``, anchored on the first one's own fields."""
    lines = _part_lines(path, start, end)
    first = next(lines, None)
    if first is None:
        return None
    try:
        first_prev, first_seq = line_fields(first)
    except ValueError:
        return _Part(0, "", 0, "", False, [])
    heads = CheckpointHeads(statements)
    count, last, found = walk_lines(itertools.chain([first], lines), first_prev, first_seq, heads)
    return _Part(first_seq, first_prev, count, last, found is None, heads.rotations_seen())


def _ranges(path: Path, jobs: int) -> list[tuple[int, int]]:
    """``jobs`` byte ranges of the file, each starting at a line."""
    size = path.stat().st_size
    cuts = [0]
    with path.open("rb") as file:
        for part in range(1, jobs):
            file.seek(size * part // jobs)
            file.readline()
            cuts.append(max(file.tell(), cuts[-1]))
    cuts.append(size)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def walk_parallel(
    path: Path, anchor: str, first_seq: int, heads: CheckpointHeads, jobs: int
) -> tuple[int, bool]:
    """Walk ``events.jsonl`` in ``jobs`` processes; (events, whether every link held).

    Each part is walked on its own, anchored on its first line; the parts are then joined:
    each must start at the seq after the previous part's last and name its last hash as
    ``prev_hash``. Only the good case is fast: on any problem the caller walks again in one
    process, which names the first one exactly.
    """
    parts_ranges = _ranges(path, jobs)
    statements = list(heads.statements)
    # This process walks the first part itself while the workers walk the others: one
    # process fewer to start, and no core waits idle on the results.
    with ProcessPoolExecutor(max_workers=max(1, len(parts_ranges) - 1)) as pool:
        futures = [pool.submit(_walk_part, path, a, b, statements) for a, b in parts_ranges[1:]]
        parts = [_walk_part(path, *parts_ranges[0], statements)] if parts_ranges else []
        parts += [future.result() for future in futures]
    expected, prev, total = first_seq, anchor, 0
    for part in parts:
        if part is None:
            continue
        if not part.ok or part.first_seq != expected or part.first_prev != prev:
            return total, False
        heads.merge_seen(part.rotations_seen)
        expected += part.count
        prev = part.last_hash
        total += part.count
    return total, True


def _describe(line: bytes) -> tuple[str, str]:
    document = json.loads(line)
    return str(document.get("action")), str(document.get("object_id"))


def _read_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        for raw in file:
            yield raw[:-1] if raw.endswith(b"\n") else raw


def classify(lines: Sequence[bytes], index: int, anchor: str, first_seq: int) -> Finding:
    """What went wrong at line ``index``, where the walk stopped (seq or link broken)."""
    seqs: list[int | None] = []
    for line in lines:
        try:
            seqs.append(line_fields(line)[1])
        except ValueError:
            seqs.append(None)
    expected = first_seq + index
    found = seqs[index]
    if found != expected:
        if found is not None and Counter(seqs)[found] > 1 and found < expected:
            return Finding(
                Tampering.INSERTED,
                f"line {index + 1} is a second event with seq {found}: an inserted event",
                seq=found,
            )
        if expected in seqs[index + 1 :]:
            return Finding(
                Tampering.REORDERED,
                f"seq {found} comes before seq {expected}: events were reordered",
                seq=expected,
            )
        if found is not None and found > expected:
            gone = f"{expected}" if found == expected + 1 else f"{expected} to {found - 1}"
            return Finding(Tampering.DELETED, f"seq {gone} missing: events deleted", seq=expected)
        return Finding(
            Tampering.INSERTED, f"line {index + 1}: unexpected seq {found}", seq=expected
        )
    hashes = [hashlib.sha256(line).hexdigest() for line in lines]
    line_prev = line_fields(lines[index])[0]
    if index == 0:
        return Finding(
            Tampering.MODIFIED,
            f"seq {expected}: prev_hash {line_prev} is not the bundle's anchor {anchor}",
            seq=expected,
        )
    after = index + 1
    if after < len(lines) and line_fields(lines[after])[0] == hashes[index - 1]:
        return Finding(
            Tampering.INSERTED,
            f"seq {expected}: an inserted event (the event after it names the one before it "
            "as its predecessor)",
            seq=expected,
        )
    return Finding(
        Tampering.MODIFIED,
        f"seq {expected - 1} was modified: it no longer hashes to the prev_hash that seq "
        f"{expected} records",
        seq=expected - 1,
    )


def _trusted_keys(
    directory: Path, pinned: Sequence[Ed25519PublicKey] | None
) -> tuple[dict[str, Ed25519PublicKey], Finding | None]:
    if pinned:
        return {fingerprint(key): key for key in pinned}, None
    keys: dict[str, Ed25519PublicKey] = {}
    for path in sorted((directory / "keys").glob("*.pem")):
        try:
            key = load_public_key(path.read_bytes())
        except StatementError as exc:
            return keys, Finding(Tampering.BAD_BUNDLE, f"keys/{path.name}: {exc}")
        if fingerprint(key) != path.stem:
            return keys, Finding(
                Tampering.BAD_BUNDLE, f"keys/{path.name} holds key {fingerprint(key)}"
            )
        keys[path.stem] = key
    return keys, None


def _read_checkpoints(directory: Path) -> tuple[list[SignedCheckpoint], Finding | None]:
    signed: list[SignedCheckpoint] = []
    for number, raw in enumerate(_read_lines(directory / CHECKPOINTS), start=1):
        try:
            record = json.loads(raw)
            statement = record["statement"].encode("utf-8")
            item = SignedCheckpoint(statement, record["signature"], record["checkpoint_hash"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return signed, Finding(Tampering.BAD_BUNDLE, f"line {number} of {CHECKPOINTS}")
        base = directory / "checkpoints" / str(record.get("number"))
        try:
            same = base.with_suffix(".statement").read_bytes() == statement and (
                base.with_suffix(".sig").read_bytes() == _b64decode(item.signature)
            )
        except (OSError, ValueError):
            same = False
        if not same:
            return signed, Finding(
                Tampering.FORGED_CHECKPOINT,
                f"checkpoints/{record.get('number')}.statement or .sig differs from {CHECKPOINTS}",
                checkpoint=record.get("number"),
            )
        signed.append(item)
    return signed, None


def _check_files(directory: Path, manifest: dict[str, Any]) -> Finding | None:
    files = manifest.get("files")
    if not isinstance(files, dict):
        return Finding(Tampering.BAD_BUNDLE, f"{MANIFEST} lists no files")
    for name, digest in sorted(files.items()):
        path = directory / name
        if not path.is_file() or _sha256_file(path) != digest:
            return Finding(Tampering.BAD_BUNDLE, f"{name} does not match its sha256 in {MANIFEST}")
    return None


def verify_bundle(
    directory: Path, pinned: Sequence[Ed25519PublicKey] | None = None, jobs: int = 1
) -> BundleVerification:
    """Verify a bundle offline; pinpoint the first problem (see the module docstring).

    ``jobs`` > 1 walks the events in that many processes (``walk_parallel``) when the file
    is large enough to pay for them; a problem is then pinpointed by a walk in one.
    """
    keys_pinned = bool(pinned)

    def result(
        found: Finding | None, checked: int = 0, first: int | None = None, last: int | None = None
    ) -> BundleVerification:
        return BundleVerification(
            ok=found is None,
            events_checked=checked,
            first_seq=first,
            last_seq=last,
            checkpoints_checked=len(statements),
            key_fingerprints=sorted(trusted),
            keys_pinned=keys_pinned,
            finding=found,
        )

    statements: list[Any] = []
    trusted: dict[str, Ed25519PublicKey] = {}
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        anchor = str(manifest["anchor_prev_hash"])
        first_seq = int(manifest["first_seq"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return result(Finding(Tampering.BAD_BUNDLE, f"{MANIFEST}: {exc}"))
    trusted, found = _trusted_keys(directory, pinned)
    if found is not None:
        return result(found)
    signed, found = _read_checkpoints(directory)
    if found is not None:
        return result(found)
    statements, found = check_checkpoints(signed, trusted)
    if found is not None:
        return result(found)
    if not statements:
        return result(Finding(Tampering.UNSIGNED_TAIL, "the bundle holds no checkpoint"))
    heads = CheckpointHeads(statements)
    events = directory / EVENTS
    intact = False
    if jobs > 1 and events.stat().st_size >= PARALLEL_MIN_BYTES:
        checked, intact = walk_parallel(events, anchor, first_seq, heads, jobs)
        found = None
    if not intact:
        heads = CheckpointHeads(statements)
        checked, _, found = walk_lines(_read_lines(events), anchor, first_seq, heads)
    last_seq = first_seq + checked - 1 if checked else None
    if found is not None:
        if found.kind is Tampering.MODIFIED and not found.message:
            found = classify(list(_read_lines(events)), checked, anchor, first_seq)
        return result(found, checked, first_seq, last_seq)
    if last_seq is None:
        return result(Finding(Tampering.BAD_BUNDLE, f"{EVENTS} holds no event"))
    found = heads.at_end(last_seq)
    if found is None and statements[-1].head_seq < last_seq:
        found = Finding(
            Tampering.UNSIGNED_TAIL,
            f"events {statements[-1].head_seq + 1} to {last_seq} come after the newest "
            f"checkpoint ({statements[-1].number}): no signature covers them",
            seq=statements[-1].head_seq + 1,
        )
    if found is None:
        found = _check_files(directory, manifest)
    return result(found, checked, first_seq, last_seq)
