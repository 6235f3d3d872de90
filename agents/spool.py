"""A bounded on-disk queue of heartbeats waiting for the control plane.

One file per heartbeat, named by its sequence number, written atomically (temporary file,
fsync, rename), so a crash never leaves half a heartbeat and a restart replays what was
waiting, in order. When full, the oldest heartbeats are dropped first and counted: the
newest readings matter most, and the count says how many were lost.
"""

import json
from pathlib import Path
from typing import Any

from agents.files import write_atomically

_SUFFIX = ".json"


class Spool:
    """Heartbeats in sequence order, at most ``max_entries`` of them."""

    def __init__(self, directory: Path, max_entries: int):
        self.directory = directory
        self.max_entries = max_entries
        directory.mkdir(parents=True, exist_ok=True)
        # Leftovers of a write interrupted by a crash are not heartbeats.
        for stray in directory.glob("*.tmp"):
            stray.unlink(missing_ok=True)
        self._seqs = sorted(int(p.stem) for p in directory.glob(f"*{_SUFFIX}") if p.stem.isdigit())

    def __len__(self) -> int:
        return len(self._seqs)

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}{_SUFFIX}"

    def append(self, heartbeat: dict[str, Any]) -> int:
        """Store a heartbeat; return how many old ones were dropped to make room."""
        seq = int(heartbeat["seq"])
        path = self._path(seq)
        write_atomically(path, json.dumps(heartbeat, separators=(",", ":")))
        self._seqs.append(seq)
        self._seqs.sort()
        dropped = 0
        while len(self._seqs) > self.max_entries:
            self.remove(self._seqs[0])
            dropped += 1
        return dropped

    def newest_seq(self) -> int:
        """The highest sequence number waiting (0 when empty)."""
        return self._seqs[-1] if self._seqs else 0

    def holds(self, seq: int) -> bool:
        """Whether the heartbeat with this sequence number still waits."""
        return seq in self._seqs

    def oldest(self) -> dict[str, Any] | None:
        """The heartbeat to send next, or None when nothing waits."""
        while self._seqs:
            try:
                loaded: dict[str, Any] = json.loads(self._path(self._seqs[0]).read_text())
                return loaded
            except (OSError, ValueError):
                # A file someone truncated or removed by hand: skip it rather than stall.
                self._seqs.pop(0)
        return None

    def remove(self, seq: int) -> None:
        """Forget a heartbeat the control plane has acknowledged."""
        self._path(seq).unlink(missing_ok=True)
        if seq in self._seqs:
            self._seqs.remove(seq)
