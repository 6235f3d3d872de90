"""``sovereign-agent``: the node agent's command line.

``probe`` reads everything once and prints it, so an operator (or support, with a
customer's ``nvidia-smi -q -x`` capture) sees exactly what the agent would report. The
daemon (``run``) and the fleet simulator (``simulate``) come with the agent's next steps.
"""

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

from agents import __version__
from agents.backends.base import BackendUnavailableError
from agents.backends.selection import BackendKind, open_backend
from agents.host import read_host_identity

log = logging.getLogger("sovereign.agent")
DEFAULT_STATE_DIR = Path("/var/lib/sovereign-agent")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sovereign-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sovereign-agent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    probe = commands.add_parser("probe", help="Read GPUs and host identity once and print them.")
    probe.add_argument(
        "--backend",
        type=BackendKind,
        choices=list(BackendKind),
        default=BackendKind.AUTO,
        help="Where to read GPUs from (default auto).",
    )
    probe.add_argument(
        "--nvidia-smi-xml",
        type=Path,
        metavar="PATH",
        help="Parse this `nvidia-smi -q -x` capture instead of running it.",
    )
    probe.add_argument(
        "--replay",
        type=Path,
        metavar="PATH",
        help="A recording (folder with nvml-dump.json or nvidia-smi-q.xml).",
    )
    probe.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="Where a derived machine id is kept (hosts without one).",
    )
    probe.add_argument("--json", action="store_true", help="Print JSON instead of text.")
    return parser


def probe(args: argparse.Namespace) -> dict[str, Any]:
    """Read everything once: the backend chosen and why, the host, each GPU."""
    backend, reason = open_backend(
        args.backend, nvidia_smi_xml=args.nvidia_smi_xml, replay=args.replay
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
        gpus.append(
            {
                **dataclasses.asdict(gpu),
                "telemetry": dataclasses.asdict(reading) if reading else None,
            }
        )
    return {
        "backend": backend.name,
        "reason": reason,
        "host": dataclasses.asdict(host),
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


def main(argv: list[str] | None = None) -> int:
    """Run a command; a backend that cannot run is one line on stderr and exit status 1."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = probe(args)
    except BackendUnavailableError as exc:
        print(f"sovereign-agent: {exc}", file=sys.stderr)
        return 1
    log.info("backend %s: %s", report["backend"], report["reason"])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    return 0
