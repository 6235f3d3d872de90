"""Labels: small key/value maps on nodes, datasets and models, changed by merge patch."""

from collections.abc import Mapping


def merge_labels(
    current: Mapping[str, str], patch: Mapping[str, str | None] | None
) -> dict[str, str]:
    """Apply a JSON merge patch (RFC 7396) to labels: a key set to None is removed."""
    merged = dict(current)
    for key, value in (patch or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
