"""The README's contract, driven as a user would: ``make up``, then the documented steps.

``make up`` runs with environment overrides only (its own fresh database, a free port, a
private state folder), so the test exercises the real Makefile, migrations, demo seed,
API, Celery worker and beat as separate processes.
"""

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import REDIS_URL, drop_database, free_port, url_for, wait_until_ready

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
READY_WITHIN_SECONDS = 30
#: Fewer than make up's default 50: the test's 1 s heartbeats on 2 cores.
SIMULATED_NODES = 8


@dataclass
class Stack:
    url: str
    state_dir: Path
    workdir: Path
    env: dict[str, str]
    process: subprocess.Popen[str]
    output: Path


def _environment(database: str, port: int, state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOVEREIGN_", "SOVCTL_"))}
    env.update(
        {
            "SOVEREIGN_DATABASE_URL": url_for(database),
            "SOVEREIGN_REDIS_URL": REDIS_URL,
            "SOVEREIGN_API__PORT": str(port),
            "SOVEREIGN_STATE_DIR": str(state_dir),
            "SOVEREIGN_CELERY_QUEUE": f"sovereign-e2e-{uuid.uuid4().hex[:8]}",
            # Fast clocks so the offline sweep is visible within the test.
            "SOVEREIGN_HEARTBEAT_INTERVAL_SECONDS": "1",
            "SOVEREIGN_OFFLINE_SWEEP_SECONDS": "0.5",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    database = f"sovereign_e2e_{uuid.uuid4().hex[:8]}"  # does not exist yet: make up creates it
    port = free_port()
    state_dir = tmp_path / ".sovereign"
    env = _environment(database, port, state_dir)
    output = tmp_path / "make-up.log"
    with output.open("w") as log:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "up", f"SIMULATED_NODES={SIMULATED_NODES}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        yield Stack(url, state_dir, tmp_path, env, process, output)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        drop_database(database)


def readme_first_steps() -> str:
    """The README's "First steps" shell block, exactly as a newcomer would paste it."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### First steps", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, "README has no shell block under 'First steps'"
    return block.group(1)


def test_make_up_then_the_readme_steps(stack: Stack) -> None:
    started = time.monotonic()
    wait_until_ready(
        f"{stack.url}/readyz", timeout=READY_WITHIN_SECONDS + 60, process=stack.process
    )
    elapsed = time.monotonic() - started
    # The first start includes creating and migrating the database.
    assert elapsed < READY_WITHIN_SECONDS, f"/readyz took {elapsed:.1f} s"

    token = (stack.state_dir / "admin.token").read_text().strip()
    assert token in stack.output.read_text(), "make up must print the demo admin token"
    assert (stack.state_dir / "admin.token").stat().st_mode & 0o077 == 0

    script = readme_first_steps().replace("http://127.0.0.1:8080", stack.url)
    env = {**stack.env, "PATH": f"{Path(sys.executable).parent}:{stack.env['PATH']}"}
    # The README runs from the checkout, where make up left .sovereign/; so do we.
    (stack.workdir / ".venv").symlink_to(Path(sys.executable).parent.parent)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=stack.workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "gpu-node-01" in out
    assert "de-fra" in out
    assert "audit chain intact" in out

    headers = {"Authorization": f"Bearer {token}"}
    by_zone = httpx.get(f"{stack.url}/v1/nodes", params={"zone": "de"}, headers=headers).json()
    assert [n["hostname"] for n in by_zone["items"]] == ["gpu-node-01"]
    node = by_zone["items"][0]
    assert node["labels"] == {"team": "research", "rack": "a1"}
    assert node["provenance"]["origin_country"] == "TW"
    by_origin = httpx.get(
        f"{stack.url}/v1/nodes", params={"origin_country": "TW", "limit": 500}, headers=headers
    ).json()
    assert "gpu-node-01" in [n["hostname"] for n in by_origin["items"]]

    # The simulated fleet: every node registered, spread over 4 zones and 3 origins.
    def fleet() -> list[dict[str, Any]]:
        page = httpx.get(f"{stack.url}/v1/nodes", params={"limit": 500}, headers=headers).json()
        return [n for n in page["items"] if n["labels"].get("simulated") == "true"]

    deadline = time.monotonic() + 30
    while len(fleet()) < SIMULATED_NODES and time.monotonic() < deadline:
        time.sleep(0.5)
    simulated = fleet()
    assert len(simulated) == SIMULATED_NODES, stack.output.read_text()[-3000:]
    assert {n["zone"] for n in simulated} == {"jp-east", "jp-west", "tw-north", "us-east"}
    assert {n["provenance"]["origin_country"] for n in simulated} == {"TW", "US", "JP"}
    assert all(n["gpu_count"] == 1 for n in simulated)

    # Worker and beat are running: the node never sends a heartbeat, so within a few
    # seconds (3 missed 1 s intervals, swept every 0.5 s) it is marked offline.
    deadline = time.monotonic() + 30
    status = node["status"]
    while status != "offline" and time.monotonic() < deadline:
        time.sleep(0.5)
        status = httpx.get(f"{stack.url}/v1/nodes/{node['id']}", headers=headers).json()["status"]
    assert status == "offline", stack.output.read_text()[-3000:]
    events = httpx.get(
        f"{stack.url}/v1/audit/events", params={"action": "node.offline"}, headers=headers
    ).json()
    assert events["total"] == 1


def test_ctrl_c_stops_every_process(stack: Stack) -> None:
    wait_until_ready(f"{stack.url}/readyz", timeout=90, process=stack.process)
    os.killpg(stack.process.pid, signal.SIGINT)
    assert stack.process.wait(timeout=30) is not None
    leftover = subprocess.run(
        ["pgrep", "-s", str(stack.process.pid)], capture_output=True, text=True, check=False
    )
    assert leftover.stdout.strip() == "", "processes outlived make up"


@pytest.mark.parametrize(
    ("variable", "value", "service"),
    [
        ("SOVEREIGN_REDIS_URL", "redis://127.0.0.1:1/0", "Redis"),
        ("SOVEREIGN_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/sovereign", "PostgreSQL"),
    ],
)
def test_make_up_names_an_unreachable_service(
    tmp_path: Path, variable: str, value: str, service: str
) -> None:
    env = _environment("sovereign_never_created", free_port(), tmp_path / ".sovereign")
    env[variable] = value
    result = subprocess.run(
        ["make", "--no-print-directory", "up"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "not reachable" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{service} is not reachable")
    assert "start it with" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
