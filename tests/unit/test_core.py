"""Pure helpers: canonical JSON and hashing, named queries, country codes, CLI tables."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import control_plane
from agents.protocol import canonical_json
from control_plane.cli.output import table
from control_plane.core.audit_log import GENESIS_HASH, event_hash
from control_plane.core.db import load_queries
from control_plane.domain.countries import CountryCode, is_country_code

EVENT: dict[str, Any] = {
    "seq": 1,
    "occurred_at": datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
    "actor_id": "token:1",
    "actor_name": "alice",
    "request_id": None,
    "action": "zone.created",
    "object_type": "zone",
    "object_id": "jp",
    "before": None,
    "after": {"slug": "jp", "名前": "日本"},
}


def test_canonical_json_is_order_independent_and_compact() -> None:
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert canonical_json({"a": 1, "b": 1}) == canonical_json({"b": 1, "a": 1})
    assert canonical_json({"k": "日本"}) == '{"k":"日本"}'


def test_event_hash_depends_on_every_field_and_the_previous_hash() -> None:
    base = event_hash(EVENT, GENESIS_HASH)
    assert len(base) == 64
    assert event_hash(dict(EVENT), GENESIS_HASH) == base
    for field, value in [
        ("seq", 2),
        ("actor_name", "bob"),
        ("request_id", "r"),
        ("after", {"slug": "kr"}),
        ("occurred_at", datetime(2026, 1, 1, tzinfo=UTC)),
    ]:
        assert event_hash({**EVENT, field: value}, GENESIS_HASH) != base, field
    assert event_hash(EVENT, "f" * 64) != base


def test_event_hash_is_the_same_in_any_time_zone() -> None:
    from zoneinfo import ZoneInfo

    tokyo = EVENT["occurred_at"].astimezone(ZoneInfo("Asia/Tokyo"))
    assert event_hash({**EVENT, "occurred_at": tokyo}, GENESIS_HASH) == event_hash(
        EVENT, GENESIS_HASH
    )


def test_every_feature_query_file_parses() -> None:
    root = Path(control_plane.__file__).parent
    features = sorted(path.parent.name for path in root.glob("*/queries.sql"))
    assert {"access", "audit", "inventory", "provenance"} <= set(features)
    for package in (f"control_plane.{feature}" for feature in features):
        queries = load_queries(package)
        assert queries
        for name, sql in queries.items():
            statements = [ln for ln in sql.splitlines() if ln.strip() and not ln.startswith("--")]
            assert statements, f"{package}: query {name} has no SQL"


def test_duplicate_query_names_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "dupq"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "queries.sql").write_text("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="defined twice"):
        load_queries("dupq")


def test_country_codes_come_from_iso_3166() -> None:
    assert is_country_code("JP")
    assert is_country_code("TW")
    assert not is_country_code("XX")
    assert not is_country_code("jp")

    class Place(BaseModel):
        country: CountryCode

    assert Place(country=" jp ").country == "JP"
    with pytest.raises(ValidationError, match="not an ISO 3166-1"):
        Place(country="EU")


def test_table_aligns_columns() -> None:
    rendered = table(
        [{"slug": "jp", "parent": None}, {"slug": "jp-east", "parent": "jp"}], ["slug", "parent"]
    )
    assert rendered.splitlines() == ["SLUG     PARENT", "jp       -", "jp-east  jp"]
