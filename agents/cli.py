"""``sovereign-agent`` entry point.

The agent's probe, daemon and fleet simulator are built in their own issue; until then
this entry point says so plainly instead of pretending to run.
"""

import sys

from agents import __version__


def main() -> int:
    """Print the version, or explain that the agent commands are not built yet."""
    if sys.argv[1:] in (["--version"], ["version"]):
        print(f"sovereign-agent {__version__}")
        return 0
    print(
        "sovereign-agent: the node agent (probe, run, simulate) is not built yet; "
        "register nodes through POST /v1/agents/register meanwhile.",
        file=sys.stderr,
    )
    return 2
