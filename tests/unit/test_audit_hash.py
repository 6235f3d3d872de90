"""The canonical JSON PostgreSQL completes at commit is exactly what ``event_hash`` hashes."""

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from agents.protocol import canonical_json
from control_plane.core.audit_log import _hash_parts_of_text, event_hash, hash_parts

FIELDS: dict[str, Any] = {
    "occurred_at": datetime(2026, 11, 25, 19, 30, 1, 123456, tzinfo=UTC),
    "actor_id": "token:1",
    "actor_name": 'Zoë "admin" \\ root',
    "request_id": "req-7",
    "action": "workload.admitted",
    "object_type": "workload",
    "object_id": "0b6f",
    "before": None,
    "after": {"z": [1, 2.5, None, True], "a": {"ü": "日本"}, "prev_hash": "not the key"},
}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"request_id": None},
        {"before": {"seq": 3}, "after": None},
        {"occurred_at": datetime(2026, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=9)))},
    ],
)
@pytest.mark.parametrize(("seq", "prev_hash"), [(1, "0" * 64), (123456789, "ab" * 32)])
def test_the_parts_complete_to_the_hashed_document(
    changes: dict[str, Any], seq: int, prev_hash: str
) -> None:
    fields = {**FIELDS, **changes}
    head, tail = hash_parts(fields)
    completed = head + prev_hash + tail + str(seq) + "}"
    document = {
        **fields,
        "occurred_at": fields["occurred_at"].astimezone(UTC).isoformat(timespec="microseconds"),
        "seq": seq,
        "prev_hash": prev_hash,
    }
    assert completed == canonical_json(document)
    digest = hashlib.sha256(completed.encode("utf-8")).hexdigest()
    assert digest == event_hash({**fields, "seq": seq}, prev_hash)


@pytest.mark.parametrize(
    ("before", "after", "request_id"),
    [
        (None, {"zone": "jp", "x": 0.1, "名前": '東京 "quoted"'}, None),
        ({"a": [1, 2.5e20, None], "b": {"c": True}}, None, "req-\u00e9"),
        (None, None, ',"prev_hash":"'),
    ],
)
def test_the_write_paths_parts_equal_hash_parts(
    before: object, after: object, request_id: str | None
) -> None:
    """The recording path builds the hashed text around the stored snapshots' own text."""
    fields = {
        "occurred_at": datetime(2026, 12, 3, 11, 0, 0, 123456, tzinfo=UTC),
        "actor_id": "token:1",
        "actor_name": "ops \u00e9",
        "request_id": request_id,
        "action": "zone.created",
        "object_type": "zone",
        "object_id": "jp/\u6771",
        "before": before,
        "after": after,
    }
    texts = [None if v is None else canonical_json(v) for v in (before, after)]
    assert _hash_parts_of_text(fields, *texts) == hash_parts(fields)
