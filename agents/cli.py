"""``sovereign-agent``: the node agent's command line.

``probe`` reads everything once and prints it, so an operator (or support, with a
customer's ``nvidia-smi -q -x`` capture) sees exactly what the agent would report. ``run``
is the daemon. ``simulate`` runs many virtual agents from recorded readings.
"""

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from agents import __version__
from agents.backends.base import BackendUnavailableError
from agents.backends.selection import BackendKind, open_backend
from agents.client import ControlPlaneClient
from agents.config import DEFAULT_STATE_DIR, AgentConfigError, load_config
from agents.daemon import Agent, gpu_health
from agents.host import read_host_identity
from agents.metrics import AgentMetrics
from agents.protocol import to_wire
from agents.simulator import FleetPlan, allow_open_files, build_fleet, run_fleet

log = logging.getLogger("sovereign.agent")


def _add_backend_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--backend",
        type=BackendKind,
        choices=list(BackendKind),
        default=None,
        help="Where to read GPUs from (default auto).",
    )
    command.add_argument(
        "--nvidia-smi-xml",
        type=Path,
        metavar="PATH",
        help="Parse this `nvidia-smi -q -x` capture instead of running it.",
    )
    command.add_argument(
        "--replay",
        type=Path,
        metavar="PATH",
        help="A recording (folder with nvml-dump.json or nvidia-smi-q.xml).",
    )


def _add_agent_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--config", type=Path, help="YAML file (default /etc/sovereign/agent.yaml)."
    )
    command.add_argument("--control-plane", dest="control_plane_url", metavar="URL")
    command.add_argument("--bootstrap-token", help="Registers the node the first time.")
    command.add_argument("--ca-bundle", type=Path)
    command.add_argument("--interval", dest="sweep_interval_seconds", type=float)
    command.add_argument("--state-dir", type=Path)
    command.add_argument("--metrics-port", type=int)
    command.add_argument("--zone")
    command.add_argument("--site")
    command.add_argument(
        "--kubernetes-node-name",
        help="the Kubernetes Node this server is (the chart passes spec.nodeName)",
    )
    command.add_argument("--origin-country")
    command.add_argument("--component-origins", metavar="gpu=TW,cpu=US")
    command.add_argument("--labels", metavar="k=v,k2=v2")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sovereign-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sovereign-agent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    probe = commands.add_parser("probe", help="Read GPUs and host identity once and print them.")
    _add_backend_options(probe)
    probe.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="Where a derived machine id is kept (hosts without one).",
    )
    probe.add_argument("--json", action="store_true", help="Print JSON instead of text.")
    run = commands.add_parser("run", help="Register and report until SIGTERM (the daemon).")
    _add_backend_options(run)
    _add_agent_options(run)
    simulate = commands.add_parser("simulate", help="Run N virtual agents from a recording.")
    _add_agent_options(simulate)
    simulate.add_argument("--nodes", type=int, required=True)
    simulate.add_argument(
        "--fixture",
        type=Path,
        required=True,
        help="Recording folder (nvml-dump.json or nvidia-smi-q.xml).",
    )
    simulate.add_argument("--zones", default="", help="Comma-separated zone slugs.")
    simulate.add_argument("--origins", default="", help="Comma-separated ISO country codes.")
    simulate.add_argument("--hostname-prefix", default="sim")
    simulate.add_argument(
        "--zone-token",
        action="append",
        default=[],
        metavar="ZONE=FILE",
        help="A file holding a bootstrap token scoped to ZONE, for that zone's nodes"
        " (repeatable); other zones use the config's token.",
    )
    return parser


def probe(args: argparse.Namespace) -> dict[str, Any]:
    """Read everything once: the backend chosen and why, the host, each GPU.

    The host and each GPU appear as the agent reports them to the control plane, with the
    GPU's telemetry beside it and the machine id's source added to the host.
    """
    backend, reason = open_backend(
        args.backend or BackendKind.AUTO, nvidia_smi_xml=args.nvidia_smi_xml, replay=args.replay
    )
    try:
        statics = backend.static()
        readings = {t.uuid: t for t in backend.telemetry()}
    finally:
        backend.close()
    host = read_host_identity(args.state_dir, [s.uuid for s in statics])
    gpus = []
    for gpu in statics:
        reading = readings.get(gpu.uuid)
        facts = gpu if reading is None else dataclasses.replace(gpu, health=gpu_health(reading))
        gpus.append({**to_wire(facts), "telemetry": to_wire(reading) if reading else None})
    return {
        "backend": backend.name,
        "reason": reason,
        "host": {**to_wire(host.facts), "machine_id_source": host.machine_id_source},
        "gpus": gpus,
    }


def _print_text(report: dict[str, Any]) -> None:
    print(f"backend: {report['backend']} ({report['reason']})")
    host = report["host"]
    print(
        f"host: {host['hostname']}  machine id: {host['machine_id']} ({host['machine_id_source']})"
    )
    for gpu in report["gpus"]:
        print(
            f"gpu {gpu['index']}: {gpu['model']}  uuid {gpu['uuid']}  serial {gpu['serial']}  "
            f"memory {gpu['memory_total_bytes']} B  driver {gpu['driver_version']}"
        )


_CONFIG_FLAGS = (
    "control_plane_url",
    "bootstrap_token",
    "ca_bundle",
    "sweep_interval_seconds",
    "state_dir",
    "metrics_port",
    "zone",
    "site",
    "origin_country",
    "component_origins",
    "labels",
    "kubernetes_node_name",
    "backend",
    "nvidia_smi_xml",
    "replay",
)


def _stop_on_signals() -> threading.Event:
    """SIGTERM (systemd, Kubernetes) and SIGINT stop the loop after the current step."""
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
    return stop


def _config(args: argparse.Namespace) -> Any:
    flags = {name: getattr(args, name, None) for name in _CONFIG_FLAGS}
    config = load_config(args.config, flags=flags)
    if not config.control_plane_url:
        raise AgentConfigError(
            "control plane URL missing (--control-plane, "
            "SOVEREIGN_AGENT_CONTROL_PLANE_URL or control_plane.url)"
        )
    if config.ca_bundle is not None and not config.control_plane_url.startswith("https://"):
        # Most likely a URL left at http:// after the control plane moved to HTTPS.
        log.warning(
            "control_plane.ca_bundle is set but %s is not https://: nothing is verified and "
            "the tokens travel in clear",
            config.control_plane_url,
        )
    return config


def run(args: argparse.Namespace) -> int:
    """The daemon: register once, then sweep and report until SIGTERM."""
    config = _config(args)
    backend, reason = open_backend(
        BackendKind(config.backend), nvidia_smi_xml=config.nvidia_smi_xml, replay=config.replay
    )
    log.info("backend %s: %s", backend.name, reason)
    client = ControlPlaneClient(config.control_plane_url, ca_bundle=config.ca_bundle)
    try:
        agent = Agent(config, backend, client)
    except OSError as exc:
        raise AgentConfigError(f"state_dir {config.state_dir}: {exc.strerror or exc}") from None
    metrics = AgentMetrics(
        node=agent.host.facts.hostname, zone=config.zone, origin_country=config.origin_country
    )
    metrics.set_agent_info(__version__, backend.name)
    metrics.set_inventory(agent.statics, component_origins=dict(config.component_origins))
    agent.metrics = metrics
    try:
        server = metrics.serve(config.metrics_host, config.metrics_port)
    except OSError as exc:
        raise AgentConfigError(
            f"metrics: cannot listen on {config.metrics_host}:{config.metrics_port} "
            f"({exc.strerror or exc})"
        ) from None
    try:
        agent.run(_stop_on_signals())
    finally:
        server.close()
    return 0


def _zone_tokens(pairs: list[str]) -> dict[str, str]:
    """``ZONE=FILE`` pairs read into zone → token; a bad pair or file is a config error."""
    tokens = {}
    for pair in pairs:
        zone, sep, file = pair.partition("=")
        if not sep or not zone or not file:
            raise AgentConfigError(f"--zone-token {pair!r}: use ZONE=FILE")
        try:
            tokens[zone] = Path(file).read_text().strip()
        except OSError as exc:
            raise AgentConfigError(f"--zone-token {zone}: {file}: {exc.strerror or exc}") from None
    return tokens


def simulate(args: argparse.Namespace) -> int:
    """Run ``--nodes`` virtual agents until SIGTERM or Ctrl-C."""
    config = _config(args)
    plan = FleetPlan(
        nodes=args.nodes,
        fixture=args.fixture,
        zones=tuple(z.strip() for z in args.zones.split(",") if z.strip()) or (None,),
        origins=tuple(o.strip().upper() for o in args.origins.split(",") if o.strip()) or (None,),
        hostname_prefix=args.hostname_prefix,
        zone_tokens=_zone_tokens(args.zone_token),
    )
    try:
        allow_open_files(plan.nodes)
    except OSError as exc:
        raise AgentConfigError(str(exc)) from None
    client = ControlPlaneClient(config.control_plane_url, ca_bundle=config.ca_bundle)
    agents = build_fleet(plan, config, client)
    run_fleet(agents, config.sweep_interval_seconds, _stop_on_signals())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run a command; a configuration or backend problem is one line on stderr, exit 1."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            return run(args)
        if args.command == "simulate":
            return simulate(args)
        report = probe(args)
    except (BackendUnavailableError, AgentConfigError) as exc:
        print(f"sovereign-agent: {exc}", file=sys.stderr)
        return 1
    log.info("backend %s: %s", report["backend"], report["reason"])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    return 0
