"""Canonical JSON: the one form Sovereign hashes.

Sorted keys, no spaces, UTF-8 as is. The audit chain hashes events in it (and PostgreSQL
completes the same text at commit, migration 0010), policy sets are identified by the hash
of their documents in it. Pure, so the policy engine may use it.
"""

import json
from typing import Any


def canonical_json(value: Any) -> str:
    """Serialise JSON-safe ``value`` one way only: sorted keys, no spaces, UTF-8 as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
