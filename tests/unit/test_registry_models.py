"""Registry vocabulary: the order of classifications and the rules on storage zones."""

import pytest
from pydantic import ValidationError

from control_plane.domain.classification import Classification
from control_plane.registry.models import DatasetCreate, ModelUpdate


def test_classifications_rank_from_public_to_restricted() -> None:
    assert [c.rank for c in Classification] == [0, 1, 2, 3]
    by_rank = sorted(Classification, key=lambda c: c.rank)
    assert [c.value for c in by_rank] == ["public", "internal", "confidential", "restricted"]
    # Alphabetical order is not sensitivity order: that is why there is a rank.
    assert Classification.CONFIDENTIAL < Classification.INTERNAL
    assert Classification.CONFIDENTIAL.rank > Classification.INTERNAL.rank


def _dataset(zones: list[str]) -> DatasetCreate:
    return DatasetCreate.model_validate(
        {"name": "d", "tenant": "t", "classification": "public", "zones": zones}
    )


def test_storage_zones_are_at_least_one_each_once() -> None:
    assert _dataset(["jp", "kr"]).zones == ["jp", "kr"]
    with pytest.raises(ValidationError, match="listed twice"):
        _dataset(["jp", "jp"])
    with pytest.raises(ValidationError, match="at least 1"):
        _dataset([])


def test_model_provenance_may_be_changed_but_not_removed() -> None:
    assert ModelUpdate.model_validate({"origin_country": "tw"}).origin_country == "TW"
    assert ModelUpdate.model_validate({}).model_fields_set == set()
    for field in ("supplier", "origin_country", "license", "classification", "zones"):
        with pytest.raises(ValidationError, match="not removed"):
            ModelUpdate.model_validate({field: None})
