"""What one label sync reports, as it runs, as it is stored and as the audit log has it.

The label scheme itself (names, values, which zones) is ``domain.kubernetes``, shared with
the admission webhooks that select on it.
"""

from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, Field

from control_plane.domain.kubernetes import NodeLabelChange

#: How many unknown Kubernetes node names a report lists; ``unknown_count`` is exact.
UNKNOWN_SAMPLE = 100


class NodeLabelsSynced(BaseModel):
    """One Node's labels as the sync changed them, as the audit log records it."""

    node: str
    #: The inventory node the Node was matched to; None when none was (labels removed).
    node_id: str | None
    changes: list[NodeLabelChange]


@dataclass(slots=True)
class SyncReport:
    """What one label sync found and did.

    ``unknown`` names (a sample of at most ``UNKNOWN_SAMPLE``) the Kubernetes Nodes the
    inventory has no node for, or more than one node with that hostname: they get no
    labels of ours. ``synced`` is what each patch changed, in order; ``unchanged`` counts
    the Nodes already right (no request sent).
    """

    nodes_seen: int = 0
    unchanged: int = 0
    unknown_count: int = 0
    unknown: list[str] = field(default_factory=list)
    synced: list[NodeLabelsSynced] = field(default_factory=list)

    @property
    def patched(self) -> int:
        """How many Nodes had their labels changed."""
        return len(self.synced)

    def to_json(self) -> dict[str, object]:
        """The counts and the unknown names as JSON-safe values (the Celery task's result)."""
        return {
            "nodes_seen": self.nodes_seen,
            "patched": self.patched,
            "unchanged": self.unchanged,
            "unknown_count": self.unknown_count,
            "unknown": list(self.unknown),
        }


class LabelSyncRun(BaseModel):
    """The latest label sync's report, as stored (migration 0031)."""

    finished_at: datetime
    nodes_seen: int = Field(description="Kubernetes Nodes listed.")
    patched: int = Field(description="Nodes whose `sovereign.io/*` labels were changed.")
    unchanged: int = Field(description="Nodes whose labels were already right.")
    unknown_count: int = Field(
        description="Nodes the inventory has no node for (or two): never labelled."
    )
    unknown: list[str] = Field(
        description=f"Their names, the first {UNKNOWN_SAMPLE} (`unknown_count` is exact)."
    )


class LabelSyncStatus(BaseModel):
    """Whether this deployment syncs Node labels, and what the latest run found."""

    enabled: bool = Field(description="`SOVEREIGN_KUBERNETES__LABEL_SYNC_ENABLED`.")
    interval_seconds: float = Field(description="`SOVEREIGN_KUBERNETES__LABEL_SYNC_SECONDS`.")
    last_run: LabelSyncRun | None = Field(description="None until a run has finished.")
