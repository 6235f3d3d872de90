"""Writing the agent's small state files so a crash never leaves half of one behind."""

import os
from pathlib import Path


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text``: a temporary file beside it, fsync, then rename.

    Readers (and the agent after a crash) see the old content or the new, never a cut-off
    file. ``mode`` applies from creation, so a credential is never readable by others,
    even for a moment.
    """
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
