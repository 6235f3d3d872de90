"""Run the API, the Celery worker and beat together in the foreground (``sovctl up``).

For development and demos: one Ctrl-C stops all three, and if one dies the others are
stopped too, so a half-running stack never lingers.
"""

import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from types import FrameType

#: How long children get to stop after SIGTERM before they are killed.
STOP_GRACE_SECONDS = 10.0


def supervise(commands: Mapping[str, Sequence[str]]) -> int:
    """Start every command; return the first exit code once any stops or we are signalled."""
    # Our own fixed command lines (sys.executable -m control_plane.cli ...), not input.
    children = {name: subprocess.Popen(list(argv)) for name, argv in commands.items()}  # noqa: S603
    stopping = False

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    exit_code = 0
    try:
        while not stopping:
            for name, child in children.items():
                code = child.poll()
                if code is not None:
                    print(
                        f"sovctl up: {name} exited with {code}; stopping the rest", file=sys.stderr
                    )
                    exit_code = code or 1
                    stopping = True
                    break
            time.sleep(0.2)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return exit_code
