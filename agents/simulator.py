"""Many virtual agents in one process, from recorded readings: demos and load tests.

Each virtual node runs the real ``Agent`` code (registration, sequence numbers, spool,
backoff) over a ``ReplayBackend`` variant, so it has its own GPU UUIDs, serials, hostname
and derived machine id, spread round-robin over the given zones and countries of origin.
"""

import dataclasses
import logging
import random
import resource
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from agents.backends.replay import ReplayBackend
from agents.client import ControlPlaneClient
from agents.config import AgentConfig
from agents.daemon import Agent
from agents.protocol import GpuInventory, GpuTelemetry

log = logging.getLogger("sovereign.simulator")
#: Open files besides the agents' own: the interpreter, sockets, logs, the metrics server.
_SPARE_FILES = 64


@dataclass(frozen=True, slots=True)
class FleetPlan:
    """How many virtual nodes, from which recording, spread over what."""

    nodes: int
    fixture: Path
    zones: tuple[str | None, ...] = (None,)
    origins: tuple[str | None, ...] = (None,)
    hostname_prefix: str = "sim"
    #: A bootstrap token per zone (scoped to it, so the nodes there are confirmed at once);
    #: a zone without one registers with the config's token.
    zone_tokens: Mapping[str, str] = dataclasses.field(default_factory=dict)


class LivelyReplay:
    """A replayed GPU whose load wanders, so a demo fleet looks like it is working.

    Utilization takes a bounded random walk (seeded per node, so runs repeat), and memory
    used, temperature and power follow it; identity and static facts stay as recorded.
    """

    name = "replay"

    def __init__(self, recording: ReplayBackend, seed: int):
        self._recording = recording
        self._rng = random.Random(seed)  # noqa: S311 - demo load, not secrets
        self._load = {g.uuid: self._rng.uniform(0, 100) for g in recording.static()}
        self._memory = {g.uuid: g.memory_total_bytes for g in recording.static()}

    def static(self) -> list[GpuInventory]:
        """The recorded static facts."""
        return self._recording.static()

    def telemetry(self) -> list[GpuTelemetry]:
        """The recorded readings, moved along the node's load."""
        readings = []
        for reading in self._recording.telemetry():
            load = min(100.0, max(0.0, self._load[reading.uuid] + self._rng.gauss(0, 8)))
            self._load[reading.uuid] = load
            total = self._memory.get(reading.uuid)
            readings.append(
                dataclasses.replace(
                    reading,
                    utilization_pct=round(load, 1),
                    memory_used_bytes=int(total * load / 110)
                    if total
                    else reading.memory_used_bytes,
                    temperature_c=round(30 + load * 0.45, 1),
                    power_w=round(70 + load * 6.3, 1),
                )
            )
        return readings

    def close(self) -> None:
        """Nothing to release."""


def build_fleet(plan: FleetPlan, base: AgentConfig, client: ControlPlaneClient) -> list[Agent]:
    """Create the virtual agents; each keeps its state under ``base.state_dir/<hostname>``."""
    agents = []
    empty_root = base.state_dir / "empty-root"  # no machine-id, no DMI: ids are derived
    empty_root.mkdir(parents=True, exist_ok=True)
    for n in range(plan.nodes):
        hostname = f"{plan.hostname_prefix}-{n:04d}"
        origin = plan.origins[n % len(plan.origins)]
        zone = plan.zones[n % len(plan.zones)]
        config = replace(
            base,
            state_dir=base.state_dir / hostname,
            zone=zone,
            bootstrap_token=plan.zone_tokens.get(zone or "", base.bootstrap_token),
            origin_country=origin,
            component_origins={"gpu": origin} if origin else {},
            labels={**base.labels, "simulated": "true"},
        )
        agents.append(
            Agent(
                config,
                # Identities derive from the hostname, so fleets with other prefixes differ.
                LivelyReplay(ReplayBackend(plan.fixture, variant=hostname), seed=n),
                client,
                hostname=hostname,
                host_root=empty_root,
            )
        )
    return agents


def allow_open_files(nodes: int) -> None:
    """Raise this process's open-file limit so ``nodes`` agents can each keep their files.

    Every virtual agent keeps its sequence file open (one ``pwrite`` per sweep), so a
    fleet of thousands needs more than the usual soft limit of 1,024. The soft limit is
    raised up to the hard one; ``OSError`` naming both when even that is too low.
    """
    needed = nodes + _SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise OSError(
            f"{nodes} simulated nodes need about {needed} open files; this process may open"
            f" {hard} at most (ulimit -Hn): simulate fewer nodes per process"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def run_fleet(agents: list[Agent], interval: float, stop: threading.Event) -> None:
    """Sweep every virtual agent once per interval, spread evenly across it; close them after."""
    if not agents:
        return
    gap = interval / len(agents)
    log.info("simulating %d node(s), one heartbeat each every %.1f s", len(agents), interval)
    try:
        while not stop.is_set():
            for agent in agents:
                started = time.monotonic()
                agent.deliver(agent.sweep())
                if stop.wait(max(0.0, gap - (time.monotonic() - started))):
                    break
    finally:
        for agent in agents:
            agent.close()
