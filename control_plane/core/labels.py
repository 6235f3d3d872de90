"""Labels: small key/value maps on nodes, datasets and models, changed by merge patch."""

from collections.abc import Mapping

from control_plane.core.errors import InvalidInputError
from control_plane.domain.types import MAX_LABELS


def merge_labels(
    current: Mapping[str, str], patch: Mapping[str, str | None] | None
) -> dict[str, str]:
    """Apply a JSON merge patch (RFC 7396) to labels: a key set to None is removed.

    A patch may add labels a few at a time, so the result is bounded too: more than
    ``MAX_LABELS`` is a 422 naming ``labels``.
    """
    merged = dict(current)
    for key, value in (patch or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > MAX_LABELS:
        raise InvalidInputError.for_field(
            "labels", f"at most {MAX_LABELS} labels; the change would leave {len(merged)}"
        )
    return merged
