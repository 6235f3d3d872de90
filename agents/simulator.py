"""Many virtual agents in one process, from recorded readings: demos and load tests.

Each virtual node runs the real ``Agent`` code (registration, sequence numbers, spool,
backoff) over a ``ReplayBackend`` variant, so it has its own GPU UUIDs, serials, hostname
and derived machine id, spread round-robin over the given zones and countries of origin.
"""

import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from agents.backends.replay import ReplayBackend
from agents.client import ControlPlaneClient
from agents.config import AgentConfig
from agents.daemon import Agent

log = logging.getLogger("sovereign.simulator")


@dataclass(frozen=True, slots=True)
class FleetPlan:
    """How many virtual nodes, from which recording, spread over what."""

    nodes: int
    fixture: Path
    zones: tuple[str | None, ...] = (None,)
    origins: tuple[str | None, ...] = (None,)
    hostname_prefix: str = "sim"


def build_fleet(plan: FleetPlan, base: AgentConfig, client: ControlPlaneClient) -> list[Agent]:
    """Create the virtual agents; each keeps its state under ``base.state_dir/<hostname>``."""
    agents = []
    empty_root = base.state_dir / "empty-root"  # no machine-id, no DMI: ids are derived
    empty_root.mkdir(parents=True, exist_ok=True)
    for n in range(plan.nodes):
        hostname = f"{plan.hostname_prefix}-{n:04d}"
        origin = plan.origins[n % len(plan.origins)]
        config = replace(
            base,
            state_dir=base.state_dir / hostname,
            zone=plan.zones[n % len(plan.zones)],
            origin_country=origin,
            component_origins={"gpu": origin} if origin else {},
            labels={**base.labels, "simulated": "true"},
        )
        agents.append(
            Agent(
                config,
                ReplayBackend(plan.fixture, variant=n),
                client,
                hostname=hostname,
                host_root=empty_root,
            )
        )
    return agents


def run_fleet(agents: list[Agent], interval: float, stop: threading.Event) -> None:
    """Sweep every virtual agent once per interval, spread evenly across it."""
    if not agents:
        return
    gap = interval / len(agents)
    log.info("simulating %d node(s), one heartbeat each every %.1f s", len(agents), interval)
    while not stop.is_set():
        for agent in agents:
            started = time.monotonic()
            agent.deliver(agent.sweep())
            if stop.wait(max(0.0, gap - (time.monotonic() - started))):
                break
