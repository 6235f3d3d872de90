"""The layer contracts (``[tool.importlinter]`` in pyproject.toml) hold, and would catch a break.

``make lint`` runs ``lint-imports`` on the tree; these tests run it on the tree and on a
scratch copy with one import added that the house forbids, so a contract that silently
stopped matching anything (a renamed package, a typo in a layer) fails here too.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the packages under ``root``, as ``make lint`` runs it there."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A copy of the packages and their contracts, to break on purpose."""
    for package in ("control_plane", "agents"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_import(root: Path, module: str, statement: str) -> None:
    path = root / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{statement}  # noqa: F401\n")


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "statement", "contract", "reported"),
    [
        (
            "control_plane.core.labels",
            "from control_plane.compliance import service",
            "Layers: entry points, then features, then vocabulary and plumbing",
            "control_plane.core.labels -> control_plane.compliance.service",
        ),
        (
            "control_plane.domain.fleet",
            "from control_plane.core import db",
            "Layers: entry points, then features, then vocabulary and plumbing",
            "control_plane.domain.fleet -> control_plane.core.db",
        ),
        (
            # facts reads the registry: the registry reading facts closes a loop.
            "control_plane.registry.service",
            "from control_plane.facts import workloads",
            "No cycles between the packages of the control plane",
            "control_plane.registry.service -> control_plane.facts.workloads",
        ),
        (
            "control_plane.registry.service",
            "from control_plane.inventory import nodes",
            "Layers: entry points, then features, then vocabulary and plumbing",
            "control_plane.registry.service -> control_plane.inventory.nodes",
        ),
        (
            "control_plane.policy.conditions",
            "import psycopg",
            "The policy engine is pure: no I/O, no storage, no feature above it",
            "control_plane.policy.conditions -> psycopg",
        ),
        (
            "control_plane.inventory.agents",
            "from agents import daemon",
            "The control plane uses only the agent's wire protocol",
            "control_plane.inventory.agents -> agents.daemon",
        ),
        (
            "agents.protocol",
            "import yaml",
            "The wire protocol is the standard library alone",
            "agents.protocol -> yaml",
        ),
        (
            "agents.daemon",
            "from control_plane.core import errors",
            "The node agent imports nothing of the control plane",
            "agents.daemon -> control_plane.core.errors",
        ),
    ],
)
def test_an_import_against_the_house_breaks_its_contract(
    scratch: Path, module: str, statement: str, contract: str, reported: str
) -> None:
    add_import(scratch, module, statement)
    result = lint_imports(scratch)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout
    assert reported in result.stdout
