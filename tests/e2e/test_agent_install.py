"""The agent installs on its own: a clean virtual environment, ``agents/`` and nothing else.

A GPU server gets the ``sovereign-agent`` distribution (``agents/pyproject.toml``), so it
must run with its own few dependencies and never pull in the control plane's web
framework, database driver or queue client.

Made to be quick and to need as little as possible from outside:

- ``agents/`` is copied first, so the build's ``build/`` and ``*.egg-info`` land in the
  test's directory, not in the checkout (or under a concurrent test run);
- the wheel is built by this interpreter's pip in an isolated build environment: the dev
  venv's own setuptools (65, as ``venv`` bundles it) cannot build a wheel without the
  ``wheel`` package, so ``--no-build-isolation`` would fail; pip takes setuptools from its
  configured index, from its cache after the first run;
- the new environment is made ``--without-pip`` (a tenth of a second, against seconds to
  bootstrap pip) and filled by this interpreter's pip (``pip --python``), with the
  project's pinned versions (``constraints.txt``), which pip's cache usually holds.

PyYAML and prometheus-client still come from pip's index, as on a real GPU server.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agents import __version__

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RECORDING = ROOT / "tests/fixtures/gpu/h100-80gb-hbm3"
#: The control plane's dependencies, and the control plane itself.
NOT_INSTALLED = ("fastapi", "psycopg", "celery", "pydantic", "control_plane")


def run(command: list[str | Path], cwd: Path) -> str:
    """Run a command outside the checkout, without the test's PYTHONPATH; return stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agent-install")


@pytest.fixture(scope="module")
def wheel(work: Path) -> Path:
    """The ``sovereign-agent`` wheel, built from a copy of ``agents/``."""
    source = work / "agents"
    shutil.copytree(
        ROOT / "agents",
        source,
        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"),
    )
    dist = work / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", dist, source], work)
    (built,) = dist.glob("sovereign_agent-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(work: Path, wheel: Path) -> Path:
    """A clean virtual environment with the agent's wheel and its dependencies installed."""
    path = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", path], work)
    python = path / "bin" / "python"
    pip: list[str | Path] = [sys.executable, "-m", "pip", "--python", python]
    run([*pip, "install", "--quiet", "-c", ROOT / "constraints.txt", wheel], work)
    return path


def test_the_wheel_holds_the_agent_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "agents/protocol.py" in names
    assert "agents/backends/nvml.py" in names
    assert [n for n in names if not n.startswith(("agents/", "sovereign_agent-"))] == []


def test_it_needs_only_its_own_dependencies(venv: Path, work: Path) -> None:
    python = venv / "bin" / "python"
    script = (
        "import importlib.metadata as m, importlib.util as u, json, agents; "
        f"print(json.dumps([agents.__file__, [n for n in {NOT_INSTALLED!r} if u.find_spec(n)], "
        "m.requires('sovereign-agent')]))"
    )
    location, installed, requires = json.loads(run([python, "-I", "-c", script], work))
    assert location.startswith(str(venv))  # the installed agent, not the checkout
    assert installed == []
    assert sorted(requires) == [
        "PyYAML<7,>=6",
        'nvidia-ml-py<14,>=12; extra == "nvml"',
        "prometheus-client<1,>=0.20",
    ]


def test_the_command_reports_its_version(venv: Path, work: Path) -> None:
    out = run([venv / "bin" / "sovereign-agent", "--version"], work)
    assert out.strip() == f"sovereign-agent {__version__}"


def test_probe_reads_the_recorded_h100(venv: Path, work: Path) -> None:
    probe: list[str | Path] = [venv / "bin" / "sovereign-agent", "probe", "--backend", "replay"]
    probe.append("--json")
    out = run([*probe, "--replay", RECORDING, "--state-dir", work / "state"], work)
    report = json.loads(out)
    assert report["backend"] == "replay"
    (gpu,) = report["gpus"]
    assert (gpu["uuid"], gpu["model"]) == (
        "GPU-29b79b44-4926-3788-174b-399b5b491b55",
        "NVIDIA H100 80GB HBM3",
    )
    assert gpu["pci_bus_id"] == "00000000:00:06.0"
    assert report["host"]["agent_version"] == __version__
