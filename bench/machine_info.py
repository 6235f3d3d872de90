"""What a benchmark ran on: CPU model, usable CPUs, Python, platform, a path's filesystem.

Standard library only: the agent benchmarks run on GPU hosts that have nothing but the
agent's own dependencies. The scripts import it as a sibling (``python bench/x.py`` puts
``bench/`` first on the path).
"""

import datetime
import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what ``platform`` knows elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def filesystem_of(path: Path) -> str:
    """The filesystem type holding ``path`` (from /proc/mounts; "unknown" elsewhere)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    best, kind = "", "unknown"
    resolved = str(path.resolve())
    for line in mounts:
        parts = line.split()
        mount_point = parts[1] if len(parts) >= 3 else ""
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if mount_point and inside and len(mount_point) >= len(best):
            best, kind = mount_point, parts[2]
    return kind


def describe_machine() -> dict[str, Any]:
    """When and on what the numbers were measured."""
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
