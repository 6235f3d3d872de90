"""The agent's work: register once, then sweep and report, surviving control-plane outages.

Each sweep reads telemetry (cheap), builds a heartbeat with the next sequence number and
the full inventory only when it changed, and delivers it. While the control plane is
unreachable, heartbeats go to the on-disk spool and delivery backs off exponentially (with
jitter, up to a cap); when it answers again, the spool is replayed oldest first. The server
drops repeated sequence numbers, so a heartbeat sent twice still counts once.
"""

import dataclasses
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents import __version__
from agents.backends.base import BackendUnavailableError, GpuBackend
from agents.client import (
    ControlPlaneClient,
    ControlPlaneUnreachableError,
    CredentialRejectedError,
    RequestRejectedError,
)
from agents.config import AgentConfig
from agents.files import write_atomically
from agents.host import HostIdentity, read_host_identity
from agents.metrics import AgentMetrics
from agents.protocol import (
    GpuInventory,
    GpuTelemetry,
    Heartbeat,
    Inventory,
    inventory_hash,
    to_wire,
)
from agents.spool import Spool

log = logging.getLogger("sovereign.agent")

CREDENTIAL_FILE = "credential.json"
SEQUENCE_FILE = "seq"
BACKOFF_BASE_SECONDS = 1.0
#: Sweeps start up to this fraction of the interval early or late, so a rack of agents
#: restarted together does not report in lock-step.
JITTER_FRACTION = 0.1


def gpu_health(reading: GpuTelemetry) -> str:
    """The health a GPU's reading shows: "ecc-errors" while uncorrected ECC errors count up."""
    return "ecc-errors" if reading.ecc_uncorrected_errors else "ok"


class RegistrationError(Exception):
    """The node could not register, and nothing can be delivered until someone acts.

    No or a revoked bootstrap token, rejected declarations, or a machine id already
    registered that this agent holds no credential for (an admin approves a replacement).
    Heartbeats stay in the spool and registration is retried with backoff.
    """


class Agent:
    """One node's agent: the state, the sweep and the delivery loop."""

    def __init__(
        self,
        config: AgentConfig,
        backend: GpuBackend,
        client: ControlPlaneClient,
        *,
        hostname: str | None = None,
        host_root: Path = Path("/"),
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.backend = backend
        self.client = client
        #: Attached by the caller once the host (and so the node label) is known.
        self.metrics: AgentMetrics | None = None
        self.clock = clock
        self.rng = random.Random()  # noqa: S311 - jitter, not secrets
        self.state_dir = config.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # Static facts once: some NVML calls cost milliseconds.
        self.statics: list[GpuInventory] = backend.static()
        self.host: HostIdentity = read_host_identity(
            self.state_dir, [g.uuid for g in self.statics], root=host_root, hostname=hostname
        )
        self.spool = Spool(self.state_dir / "spool", config.spool_max_entries)
        self.interval = config.sweep_interval_seconds
        self.seq = self._read_sequence()
        self.credential = self._read_credential()
        self._sent_inventory_hash: str | None = None
        self._failures = 0
        self._next_attempt = 0.0
        self._health: dict[str, str] = {g.uuid: "ok" for g in self.statics}
        #: Set by ``run`` on SIGTERM, so replaying a long spool does not delay shutdown.
        self._stopping = threading.Event()
        self._sequence_fd: int | None = None
        #: The inventory and its hash, built on first use and again only after GPU health
        #: changed (nothing else in it changes while the agent runs).
        self._inventory: tuple[Inventory, str] | None = None

    # -- state on disk --------------------------------------------------------------------

    def _read_sequence(self) -> int:
        """The last sequence number used; never below what the spool still holds."""
        try:
            stored = int((self.state_dir / SEQUENCE_FILE).read_text().strip())
        except (OSError, ValueError):
            stored = 0
        return max(stored, self.spool.newest_seq())

    def _next_sequence(self) -> int:
        self.seq += 1
        self._write_sequence()
        return self.seq

    def _write_sequence(self) -> None:
        """Record the sequence number: one fixed-width write into an open file per sweep.

        Fixed width means the write never leaves a shorter number with a longer one's tail.
        If the number is ever lost, the spool and the control plane's duplicate answers
        (which carry its last sequence number) put the agent back ahead.
        """
        if self._sequence_fd is None:
            self._sequence_fd = os.open(
                self.state_dir / SEQUENCE_FILE, os.O_RDWR | os.O_CREAT, 0o600
            )
        os.pwrite(self._sequence_fd, b"%20d\n" % self.seq, 0)

    def _read_credential(self) -> dict[str, str] | None:
        try:
            stored: dict[str, str] = json.loads((self.state_dir / CREDENTIAL_FILE).read_text())
        except (OSError, ValueError):
            return None
        if stored.get("control_plane_url") != self.client.base_url:
            return None  # registered with another control plane: start over
        return stored

    # -- what is reported -----------------------------------------------------------------

    def inventory(self) -> Inventory:
        """The full static inventory: host facts, and each GPU's facts with its health."""
        return self._inventory_and_hash()[0]

    def _inventory_and_hash(self) -> tuple[Inventory, str]:
        if self._inventory is None:
            inventory = Inventory(
                host=self.host.facts,
                gpus=tuple(
                    dataclasses.replace(g, health=self._health.get(g.uuid, "unknown"))
                    for g in self.statics
                ),
            )
            self._inventory = (inventory, inventory_hash(to_wire(inventory)))
        return self._inventory

    def register(self) -> None:
        """Register and keep the node credential (mode 0600).

        With the node credential held, with it: a known machine id is registered again
        only by that node (or with an admin's approval). Without one, with the bootstrap
        token: for a new machine, or one an admin approved a replacement for.
        """
        token = self.credential["token"] if self.credential else self.config.bootstrap_token
        if not token:
            raise CredentialRejectedError(
                "no node credential and no bootstrap token to register with "
                "(set control_plane.bootstrap_token or SOVEREIGN_AGENT_BOOTSTRAP_TOKEN)"
            )
        inventory, digest = self._inventory_and_hash()
        answer = self.client.register(token, to_wire(self.config.registration(inventory)))
        self.credential = {
            "node_id": str(answer["node_id"]),
            "token": str(answer["token"]),
            "control_plane_url": self.client.base_url,
        }
        write_atomically(self.state_dir / CREDENTIAL_FILE, json.dumps(self.credential))
        self._sent_inventory_hash = digest
        self._adopt_interval(answer.get("heartbeat_interval_seconds"))
        log.info("registered as node %s (%s)", self.credential["node_id"], self.host.facts.hostname)
        if answer.get("status") == "planned":
            log.warning(
                "node %s waits for an admin to confirm its zone (the bootstrap token has no"
                " zone scope); it gets no workloads until then",
                self.credential["node_id"],
            )

    def sweep(self) -> dict[str, Any]:
        """Read telemetry and build the next heartbeat (inventory only if it changed)."""
        started = time.perf_counter()
        try:
            readings = self.backend.telemetry()
        except BackendUnavailableError as exc:
            # One failed read (a driver hiccup, an nvidia-smi timeout) is a gap in the
            # telemetry, not a reason to stop reporting.
            log.warning("telemetry unavailable this sweep: %s", exc)
            readings = []
        if self.metrics is not None:
            self.metrics.observe_sweep(time.perf_counter() - started)
            self.metrics.observe(readings)
        for reading in readings:
            health = gpu_health(reading)
            if self._health.get(reading.uuid) != health:
                self._health[reading.uuid] = health
                self._inventory = None  # rebuilt (and rehashed) on next use
        inventory, digest = self._inventory_and_hash()
        changed = digest != self._sent_inventory_hash
        self._sent_inventory_hash = digest
        return to_wire(
            Heartbeat(
                seq=self._next_sequence(),
                telemetry=tuple(readings),
                inventory=inventory if changed else None,
            )
        )

    # -- delivery -------------------------------------------------------------------------

    def _back_off(self, reason: str) -> None:
        self._failures += 1
        ceiling = min(
            self.config.backoff_max_seconds, BACKOFF_BASE_SECONDS * 2 ** min(self._failures - 1, 30)
        )
        delay = ceiling * self.rng.uniform(0.5, 1.0)
        self._next_attempt = self.clock() + delay
        log.warning(
            "not delivered (%s); %d heartbeat(s) spooled, retry in %.1f s",
            reason,
            len(self.spool),
            delay,
        )

    def _ensure_registered(self) -> dict[str, str]:
        if self.credential is None:
            try:
                self.register()
            except RequestRejectedError as exc:
                if exc.status == 409:
                    # The machine id is registered and our credential is gone (revoked, or
                    # lost with the state directory): only an admin can vouch for us now.
                    # Retried with backoff, so an approval is picked up without a restart.
                    log.error(
                        "cannot register: the control plane already has a node with this "
                        "machine id (%s) and this agent holds no credential for it; an admin "
                        "must approve a replacement (sovctl nodes approve-replacement NODE): %s",
                        self.host.facts.machine_id,
                        exc,
                    )
                else:
                    log.error("cannot register: %s", exc)
                raise RegistrationError(str(exc)) from None
            except CredentialRejectedError as exc:
                log.error("cannot register: %s", exc)
                raise RegistrationError(str(exc)) from None
        assert self.credential is not None
        return self.credential

    def _send(self, heartbeat: dict[str, Any]) -> None:
        """Send one heartbeat, registering first (or again) when needed."""
        credential = self._ensure_registered()
        try:
            answer = self.client.heartbeat(credential["node_id"], credential["token"], heartbeat)
        except CredentialRejectedError:
            log.warning("node credential rejected; registering again")
            self.credential = None
            credential = self._ensure_registered()
            answer = self.client.heartbeat(credential["node_id"], credential["token"], heartbeat)
        if self.metrics is not None:
            self.metrics.count_heartbeat("duplicate" if answer.get("duplicate") else "sent")
        last_seq = answer.get("last_seq")
        if answer.get("duplicate") and isinstance(last_seq, int) and last_seq > self.seq:
            # Our sequence number was lost or rolled back: continue after the server's.
            log.warning(
                "control plane is at seq %d, ahead of ours (%d); catching up", last_seq, self.seq
            )
            self.seq = last_seq
            self._write_sequence()
        self._adopt_interval(answer.get("heartbeat_interval_seconds"))

    def _adopt_interval(self, expected: object) -> None:
        """Sweep at least as often as the control plane expects, or it marks us offline."""
        if isinstance(expected, int | float) and 0 < expected < self.interval:
            log.warning(
                "control plane expects heartbeats every %s s; sweeping that often", expected
            )
            self.interval = float(expected)

    def deliver(self, heartbeat: dict[str, Any]) -> None:
        """Send a heartbeat, or queue it behind spooled ones while that is not possible.

        With nothing waiting it goes straight out: the disk is touched only when the
        control plane cannot be reached, which keeps the everyday sweep cheap.
        """
        seq = int(heartbeat["seq"])
        if not len(self.spool) and self.clock() >= self._next_attempt and self._attempt(heartbeat):
            return
        dropped = self.spool.append(heartbeat)
        if dropped:
            log.warning("spool full: dropped the %d oldest heartbeat(s)", dropped)
            # The dropped ones may have carried an inventory change: send it again.
            self._sent_inventory_hash = None
            if self.metrics is not None:
                self.metrics.count_dropped(dropped)
        self.drain()
        if self.metrics is not None and self.spool.holds(seq):
            self.metrics.count_heartbeat("spooled")

    def _attempt(self, heartbeat: dict[str, Any]) -> bool:
        """Send one heartbeat; False when it must wait (the control plane is unreachable).

        True when it is done with: delivered, or refused, since resending the same body
        cannot succeed (it is logged and counted, and the queue keeps moving).
        """
        try:
            self._send(heartbeat)
        except (ControlPlaneUnreachableError, RegistrationError) as exc:
            self._back_off(str(exc))
            return False
        except (RequestRejectedError, CredentialRejectedError) as exc:
            log.error("heartbeat %s refused: %s", heartbeat["seq"], exc)
            if "inventory" in heartbeat:
                self._sent_inventory_hash = None  # send the inventory again next time
            if self.metrics is not None:
                self.metrics.count_heartbeat("failed")
        self._failures = 0
        return True

    def drain(self) -> None:
        """Send spooled heartbeats oldest first until one fails or none are left."""
        while self.clock() >= self._next_attempt and not self._stopping.is_set():
            heartbeat = self.spool.oldest()
            if heartbeat is None:
                break
            if not self._attempt(heartbeat):
                break
            self.spool.remove(int(heartbeat["seq"]))
        if self.metrics is not None:
            self.metrics.set_spool_depth(len(self.spool))

    def next_sweep_delay(self) -> float:
        """The interval with jitter."""
        return self.interval * self.rng.uniform(1 - JITTER_FRACTION, 1 + JITTER_FRACTION)

    def close(self) -> None:
        """Release the backend, the connection and the sequence file."""
        self.backend.close()
        self.client.close()
        if self._sequence_fd is not None:
            os.close(self._sequence_fd)
            self._sequence_fd = None

    def run(self, stop: threading.Event) -> None:
        """Sweep and deliver until ``stop`` is set (SIGTERM sets it), then close cleanly."""
        log.info(
            "agent %s on %s: %d GPU(s), every %.1f s, %d heartbeat(s) spooled",
            __version__,
            self.host.facts.hostname,
            len(self.statics),
            self.interval,
            len(self.spool),
        )
        self._stopping = stop
        try:
            while not stop.is_set():
                self.deliver(self.sweep())
                stop.wait(self.next_sweep_delay())
        finally:
            self.close()
            log.info("agent stopped; %d heartbeat(s) left in the spool", len(self.spool))
