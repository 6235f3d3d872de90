"""The shape of ``sovctl``, offline: its version, ``-o/--output``, and the deprecated spellings.

The spellings of 0.1 must stay hidden from ``--help``, print exactly one line on stderr and
otherwise answer as the new spelling does (``tests/integration/test_cli_deprecated.py``
runs them against the API).
"""

import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import typer
import typer.main

import control_plane
from control_plane.cli.deprecation import deprecated_alias
from control_plane.cli.main import app, main
from tests.support import deprecation_notice as notice

Sovctl = Callable[..., tuple[int, str, str]]

#: (old spelling, new spelling): every renamed noun and verb, and the two combined.
RENAMED = [
    (["token"], ["tokens"]),
    (["tenant"], ["tenants"]),
    (["dataset"], ["datasets"]),
    (["model"], ["models"]),
    (["destination"], ["destinations"]),
    (["policy"], ["policies"]),
    (["workload"], ["workloads"]),
    (["datasets", "register"], ["datasets", "create"]),
    (["models", "register"], ["models", "create"]),
    (["workloads", "submit"], ["workloads", "create"]),
    (["dataset", "register"], ["datasets", "create"]),
    (["model", "register"], ["models", "create"]),
    (["workload", "submit"], ["workloads", "create"]),
]


@pytest.fixture
def sovctl(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Sovctl:
    # No server and no database: nothing here may reach one.
    monkeypatch.setenv("SOVEREIGN_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("SOVCTL_URL", "http://127.0.0.1:1")

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["sovctl", *args])
        code = main()
        out, err = capsys.readouterr()
        return code, out, err

    return run


def without_usage(help_text: str) -> list[str]:
    """Help text less its usage line, the one line that names the spelling typed."""
    return [line for line in help_text.splitlines() if "Usage:" not in line]


def listed_commands(help_text: str) -> set[str]:
    """The command names in a help page's commands panel (not its options, nor wrapped text)."""
    return set(re.findall(r"^│ ([a-z][a-z-]*) ", help_text, flags=re.MULTILINE))


def test_version(sovctl: Sovctl) -> None:
    assert sovctl("--version") == (0, f"sovctl {control_plane.__version__}\n", "")


def test_help_lists_only_the_new_spellings(sovctl: Sovctl) -> None:
    code, out, err = sovctl("--help")
    assert (code, err) == (0, "")
    top = listed_commands(out)
    assert {"tokens", "tenants", "datasets", "models", "destinations", "policies"} <= top
    assert "workloads" in top
    old_nouns = {old[0] for old, _ in RENAMED if len(old) == 1}
    assert top.isdisjoint(old_nouns)
    for group in ("datasets", "models", "workloads"):
        commands = listed_commands(sovctl(group, "--help")[1])
        assert "create" in commands
        assert commands.isdisjoint({"register", "submit"}), group


@pytest.mark.parametrize(("old", "new"), RENAMED, ids=" ".join)
def test_an_old_spelling_says_so_once_and_answers_as_the_new(
    sovctl: Sovctl, old: list[str], new: list[str]
) -> None:
    code, out, err = sovctl(*old, "--help")
    new_code, new_out, new_err = sovctl(*new, "--help")
    assert (new_code, new_err) == (0, "")
    assert (code, err) == (0, notice(old, new))
    assert without_usage(out) == without_usage(new_out)


def test_an_old_group_without_a_command_and_with_a_bad_one(sovctl: Sovctl) -> None:
    code, out, err = sovctl("tenant")
    new_code, _, new_err = sovctl("tenants")
    assert (code, err) == (new_code, notice(["tenant"], ["tenants"]) + new_err)
    assert "quota" in listed_commands(out)
    code, _, err = sovctl("tenant", "nope")
    assert code == 2
    assert err.startswith(notice(["tenant"], ["tenants"]))
    assert err.count("deprecated") == 1
    assert "No such command 'nope'" in err


def test_an_old_command_warns_before_its_usage_error(sovctl: Sovctl) -> None:
    code, _, err = sovctl("dataset", "register", "d1")
    assert code == 2
    assert err.startswith(notice(["dataset", "register"], ["datasets", "create"]))
    assert err.count("deprecated") == 1
    assert "--tenant" in err


def test_an_old_spelling_runs_the_same_command(sovctl: Sovctl) -> None:
    # No server listens at SOVCTL_URL: both spellings fail the same way, after the call.
    code, out, err = sovctl("workload", "list")
    assert (code, out) == sovctl("workloads", "list")[:2] == (1, "")
    assert err.startswith(notice(["workload"], ["workloads"]))
    assert err.removeprefix(notice(["workload"], ["workloads"])) == sovctl("workloads", "list")[2]


def test_an_alias_needs_what_it_stands_for() -> None:
    with pytest.raises(ValueError, match="'list'"):
        deprecated_alias(typer.Typer(), "ls", "list")


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    yield " ".join(path), command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


#: Commands that write files rather than print: there ``-o`` names where (as in
#: ``sovctl audit export --from --to -o bundle``), like ``curl -o`` or ``tar -f``.
FILE_OUTPUT = {"audit export"}


def test_o_and_output_mean_the_output_format_everywhere() -> None:
    """Except for the commands that write a file, where they name it (``FILE_OUTPUT``)."""
    with_output = 0
    for path, command in _commands(typer.main.get_command(app)):
        for param in command.params:
            names = {*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])}
            if names & {"-o", "--output"}:
                assert names == {"-o", "--output"}, path
                if path in FILE_OUTPUT:
                    assert "create" in (param.help or ""), path
                    continue
                assert param.help == "table or json", path
                with_output += 1
    assert with_output > 40
