"""How much of one CPU core the node agent uses, sweeping 8 GPUs every second.

Run from the repository root::

    python bench/agent_cpu_share.py                      # 60 s, 8 replayed H100s, local sink
    python bench/agent_cpu_share.py --seconds 30 --json
    python bench/agent_cpu_share.py --backend nvml       # on a GPU host: its real GPUs
    python bench/agent_cpu_share.py --control-plane https://cp.example:8443 \\
        --bootstrap-token "$TOKEN"                       # against a real control plane

The real daemon runs in a child process, ``python -m agents run`` with ``--interval 1``,
exactly as an operator starts it, so its CPU time is its own: the control plane it talks to
(a small stdlib HTTP sink in this process, answering register and heartbeat as the control
plane does, over HTTP/1.1 keep-alive as uvicorn does) is not counted. With ``--backend
replay`` the GPUs are the recorded H100 cloned ``--gpus`` times (distinct index, UUID,
serial and PCI bus id) into a temporary recording.

The CPU share is measured in the steady state: after the first heartbeat arrives and a
warm-up, the child's user + system time is read from ``/proc/<pid>/stat`` (every thread,
including ones that ended; 1/CLK_TCK resolution, usually 10 ms) at the start and the end of
a ``--seconds`` window. Start-up (interpreter, imports, registration) is reported apart,
from ``getrusage(RUSAGE_CHILDREN)`` once the child exits on SIGTERM. Prometheus scrapes of
the agent's ``/metrics`` are part of its life, so the parent scrapes it every
``--scrape-interval`` seconds (0: never). Linux only (``/proc``).
"""

import argparse
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from machine_info import describe_machine, filesystem_of

ROOT = Path(__file__).resolve().parents[1]
# The recording's GPU is cloned as the unit tests' NVML stand-in clones it (stdlib only).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.unit.agent.fake_pynvml import clone_device  # noqa: E402

RECORDING = ROOT / "tests" / "fixtures" / "gpu" / "h100-80gb-hbm3"
#: The goal: at most this share of one core for 8 GPUs swept every second.
GOAL_PERCENT_OF_CORE = 0.1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_HEARTBEAT_PATH = re.compile(r"^/v1/nodes/[^/]+/heartbeat$")


@dataclass
class SinkRecord:
    """What the sink saw, read by the main thread while the server thread writes it."""

    registrations: int = 0
    heartbeats: int = 0
    duplicates: int = 0
    bytes_received: int = 0
    first_heartbeat: threading.Event = field(default_factory=threading.Event)
    seen: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _SinkHandler(BaseHTTPRequestHandler):
    """Answers ``/v1/agents/register`` and ``/v1/nodes/{id}/heartbeat`` as the control plane."""

    server: "ControlPlaneSink"
    #: Keep-alive, as uvicorn (the real control plane) answers: the agent keeps one
    #: connection open. HTTP/1.0 would make it reconnect for every heartbeat.
    protocol_version = "HTTP/1.1"
    #: TCP_NODELAY, as asyncio (uvicorn) sets it: the body goes out right after the
    #: headers instead of waiting ~40 ms for the agent's delayed ACK.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        record = self.server.record
        if self.path == "/v1/agents/register":
            with record.lock:
                record.registrations += 1
            answer: dict[str, Any] = {
                "node_id": "bench-node",
                "token": "bench-node-token",
                "heartbeat_interval_seconds": 1,
            }
        elif _HEARTBEAT_PATH.match(self.path):
            seq = int(json.loads(body).get("seq", -1))
            with record.lock:
                duplicate = seq in record.seen
                record.seen.add(seq)
                record.heartbeats += 1
                record.duplicates += duplicate
                record.bytes_received += len(body)
            record.first_heartbeat.set()
            answer = {"accepted": True, "duplicate": duplicate}
        else:
            self.send_error(404)
            return
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one line per heartbeat would drown the report."""


class ControlPlaneSink(ThreadingHTTPServer):
    """A stand-in control plane on 127.0.0.1, served from a daemon thread."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.record = SinkRecord()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The base URL the agent is given."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        """Stop serving and release the port."""
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


def clone_recording(source: Path, target: Path, gpus: int) -> Path:
    """Write an ``nvml-dump.json`` holding the recorded GPU ``gpus`` times, each distinct."""
    dump = json.loads((source / "nvml-dump.json").read_text())
    dump["devices"] = [clone_device(dump["devices"][0], index) for index in range(gpus)]
    dump["system"]["device_count"] = gpus
    target.mkdir(parents=True, exist_ok=True)
    (target / "nvml-dump.json").write_text(json.dumps(dump, indent=1))
    return target


def free_port() -> int:
    """A TCP port nothing listens on now, for the agent's ``/metrics``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, every thread included (``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name (which may hold spaces) in parentheses; utime and
    # stime are fields 14 and 15 of the whole line.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def live_threads_cpu_seconds(pid: int) -> float | None:
    """CPU time of the process's live threads in nanoseconds, from ``schedstat``, as seconds.

    Finer than ``/proc/<pid>/stat`` but blind to threads that have ended (one per scrape in
    prometheus_client's server); a cross-check, ``None`` where the kernel lacks schedstat.
    """
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except FileNotFoundError:
                continue  # the thread ended between the listing and the read
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return total / 1e9


def agent_command(args: argparse.Namespace, work: Path, url: str, metrics_port: int) -> list[str]:
    """``python -m agents run ...`` as an operator would start it (under cProfile if asked)."""
    config = work / "agent.yaml"
    # Only the version is required; /metrics stays on loopback while the benchmark runs.
    config.write_text("version: v1\nmetrics:\n  host: 127.0.0.1\n")
    command = [sys.executable]
    if args.profile is not None:
        command += ["-m", "cProfile", "-o", str(args.profile)]
    command += [
        "-m",
        "agents",
        "run",
        "--config",
        str(config),
        "--control-plane",
        url,
        "--bootstrap-token",
        args.bootstrap_token,
        "--backend",
        args.backend,
        "--interval",
        str(args.interval),
        "--state-dir",
        str(work / "state"),
        "--metrics-port",
        str(metrics_port),
    ]
    if args.backend == "replay":
        command += ["--replay", str(clone_recording(RECORDING, work / "recording", args.gpus))]
    return command


def agent_environment() -> dict[str, str]:
    """This environment without ``SOVEREIGN_AGENT_*`` (they would override the flags' file)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_AGENT_")}
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), environment.get("PYTHONPATH")])
    )
    return environment


def scrape(port: int) -> int:
    """Fetch the agent's ``/metrics`` as Prometheus would; the size of the answer."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return len(answer.read())


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, as systemd stops the agent; SIGKILL if it does not exit in 15 s."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def wait_for_first_heartbeat(
    sink: ControlPlaneSink, process: subprocess.Popen[bytes], timeout_s: float
) -> None:
    """Return once the sink has a heartbeat; fail fast if the agent exits first."""
    deadline = time.monotonic() + timeout_s
    while not sink.record.first_heartbeat.wait(timeout=0.1):
        if process.poll() is not None:
            raise RuntimeError(
                f"the agent exited with status {process.returncode} before its first heartbeat"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agent sent no heartbeat within {timeout_s:g} s")


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Start the agent, wait for its steady state, measure a window, stop it."""
    sink = ControlPlaneSink() if args.control_plane is None else None
    url = sink.url if sink is not None else args.control_plane
    metrics_port = free_port()
    log_path = work / "agent.log"
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    launched = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            agent_command(args, work, url, metrics_port),
            cwd=ROOT,
            env=agent_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        if sink is None:
            # No view of the heartbeats: give start-up and registration time instead.
            time.sleep(5)
        else:
            wait_for_first_heartbeat(sink, process, timeout_s=60)
        first_heartbeat_after = time.monotonic() - launched
        time.sleep(args.warmup)
        if process.poll() is not None:
            raise RuntimeError(f"the agent exited early with status {process.returncode}")
        scrapes = scraped_bytes = 0
        heartbeats_before = sink.record.heartbeats if sink is not None else None
        cpu_before = cpu_seconds(process.pid)
        threads_before = live_threads_cpu_seconds(process.pid)
        window_started = time.monotonic()
        next_scrape = window_started + args.scrape_interval
        while (now := time.monotonic()) < window_started + args.seconds:
            if process.poll() is not None:
                raise RuntimeError(f"the agent exited with status {process.returncode}")
            if args.scrape_interval > 0 and now >= next_scrape:
                scraped_bytes += scrape(metrics_port)
                scrapes += 1
                next_scrape += args.scrape_interval
            time.sleep(min(0.1, window_started + args.seconds - now))
        cpu_after = cpu_seconds(process.pid)
        threads_after = live_threads_cpu_seconds(process.pid)
        window = time.monotonic() - window_started
        heartbeats = None if sink is None else sink.record.heartbeats - (heartbeats_before or 0)
    except BaseException:
        stop(process)
        print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
        raise
    finally:
        if sink is not None:
            sink.close()
    exit_status = stop(process)
    lifetime = time.monotonic() - launched
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lifetime_cpu = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    window_cpu = cpu_after - cpu_before
    share = 100 * window_cpu / window
    return {
        "benchmark": "agent_cpu_share",
        "backend": args.backend,
        "gpus": args.gpus if args.backend == "replay" else None,
        "sweep_interval_s": args.interval,
        "control_plane": "local sink" if sink is not None else args.control_plane,
        "scrape_interval_s": args.scrape_interval,
        "profiled": args.profile is not None,
        "machine": {**describe_machine(), "state_dir_filesystem": filesystem_of(work)},
        "window": {
            "wall_s": window,
            "cpu_s": window_cpu,
            "cpu_resolution_s": 1 / CLOCK_TICKS,
            "percent_of_core": share,
            "live_threads_percent_of_core": (
                100 * (threads_after - threads_before) / window
                if threads_before is not None and threads_after is not None
                else None
            ),
            "heartbeats": heartbeats,
            "cpu_ms_per_heartbeat": (1000 * window_cpu / heartbeats) if heartbeats else None,
            "scrapes": scrapes,
            "scraped_bytes": scraped_bytes,
        },
        "startup": {
            "first_heartbeat_after_s": first_heartbeat_after if sink is not None else None,
            "cpu_before_window_s": cpu_before,
        },
        "lifetime": {
            "wall_s": lifetime,
            "cpu_s": lifetime_cpu,
            "percent_of_core": 100 * lifetime_cpu / lifetime,
            "max_rss_mib": children_after.ru_maxrss / 1024,
            "exit_status": exit_status,
        },
        "goal_percent_of_core": GOAL_PERCENT_OF_CORE,
        "meets_goal": None if args.profile is not None else share <= GOAL_PERCENT_OF_CORE,
    }


def print_report(report: dict[str, Any]) -> None:
    """The report as text, with the verdict."""
    machine, window = report["machine"], report["window"]
    startup, lifetime = report["startup"], report["lifetime"]
    gpus = f"{report['gpus']} replayed H100s" if report["gpus"] else "this host's GPUs (NVML)"
    print(
        f"agent CPU share: {gpus}, sweep every {report['sweep_interval_s']} s, "
        f"control plane: {report['control_plane']}, scrape every "
        f"{report['scrape_interval_s'] or 'never'} s"
    )
    print(
        f"machine: {machine['cpu_model']}, {machine['cpus_usable']} CPUs, Python "
        f"{machine['python']}, state dir on {machine['state_dir_filesystem']}, "
        f"{machine['date_utc']}"
    )
    print(
        f"\nsteady state: {window['cpu_s']:.2f} s CPU in {window['wall_s']:.1f} s = "
        f"{window['percent_of_core']:.3f} % of one core "
        f"(CPU time resolution {window['cpu_resolution_s'] * 1000:.0f} ms)"
    )
    if window["live_threads_percent_of_core"] is not None:
        print(
            f"  cross-check from schedstat (ns, live threads only): "
            f"{window['live_threads_percent_of_core']:.3f} %"
        )
    if window["heartbeats"]:
        print(
            f"  {window['heartbeats']} heartbeats received, "
            f"{window['cpu_ms_per_heartbeat']:.2f} ms CPU each (sweep, spool, HTTP, idle "
            f"wake-ups), {window['scrapes']} scrapes"
        )
    if startup["first_heartbeat_after_s"] is not None:
        print(f"first heartbeat {startup['first_heartbeat_after_s']:.2f} s after launch")
    print(
        f"start-up and first sweeps, before the window: {startup['cpu_before_window_s']:.2f} s CPU"
    )
    print(
        f"whole life: {lifetime['cpu_s']:.2f} s CPU in {lifetime['wall_s']:.1f} s "
        f"({lifetime['percent_of_core']:.3f} % of a core), max RSS "
        f"{lifetime['max_rss_mib']:.0f} MiB, exit status {lifetime['exit_status']}"
    )
    if report["profiled"]:
        print("\nrun under cProfile: the share above is inflated and not compared with the goal")
        return
    verdict = "meets" if report["meets_goal"] else "MISSES"
    print(
        f"\ngoal: at most {report['goal_percent_of_core']} % of one core: {verdict} it "
        f"({window['percent_of_core']:.3f} %)"
    )


def print_profile(path: Path, limit: int = 25) -> None:
    """The functions the agent's main thread spent the most time in."""
    import pstats

    print(f"\ncProfile of the agent's main thread ({path}), by own time:")
    pstats.Stats(str(path)).strip_dirs().sort_stats("tottime").print_stats(limit)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--backend", choices=("replay", "nvml"), default="replay")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs to replay (replay only).")
    parser.add_argument("--seconds", type=float, default=60.0, help="Measured window.")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="Seconds after the first heartbeat."
    )
    parser.add_argument("--interval", type=float, default=1.0, help="Sweep interval (s).")
    parser.add_argument(
        "--scrape-interval",
        type=float,
        default=15.0,
        help="Scrape /metrics this often during the window (0: never).",
    )
    parser.add_argument(
        "--control-plane", metavar="URL", help="A real control plane instead of the sink."
    )
    parser.add_argument("--bootstrap-token", default=None)
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="Where the agent's state and the recording go (default: the system temp dir).",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="PATH",
        help="Run the agent under cProfile, keep the stats here and print the top entries.",
    )
    parser.add_argument("--json", action="store_true", help="Print JSON instead of text.")
    args = parser.parse_args(argv)
    if args.control_plane is not None and not args.bootstrap_token:
        parser.error("--control-plane needs --bootstrap-token")
    if args.bootstrap_token is None:
        args.bootstrap_token = "bench-bootstrap-token"
    if args.gpus < 1 or args.seconds <= 0 or args.interval <= 0:
        parser.error("--gpus, --seconds and --interval must be positive")
    if args.profile is not None:
        args.profile = args.profile.resolve()
    with tempfile.TemporaryDirectory(prefix="sovereign-cpu-", dir=args.work_dir) as work:
        try:
            report = measure(args, Path(work))
        except RuntimeError as exc:
            print(f"agent_cpu_share: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    if args.profile is not None and not args.json:
        print_profile(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
