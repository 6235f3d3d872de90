"""``sovctl policies test`` on the example files: offline, with exit codes scripts rely on."""

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from control_plane.cli.main import main

EXAMPLES = Path("examples/policy")
POLICY = EXAMPLES / "pii-stays-in-japan.yaml"
SCENARIO = EXAMPLES / "scenario.yaml"


Sovctl = Callable[..., tuple[int, str, str]]


@pytest.fixture
def sovctl(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Sovctl:
    # No server and no database: settings that would reach one are pointed nowhere.
    monkeypatch.setenv("SOVEREIGN_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("SOVCTL_URL", "http://127.0.0.1:1")

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["sovctl", *args])
        code = main()
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_the_example_is_admitted_with_warnings(sovctl: Sovctl) -> None:
    code, out, err = sovctl("policies", "test", "-f", str(POLICY), "--workload", str(SCENARIO))
    assert (code, err) == (0, "")
    assert out.startswith("outcome: admitted_with_warnings\npolicy set: version 0, sha256 ")
    assert "eligible nodes (2): gpu-jp-01, gpu-jp-02" in out
    assert "warn    verified-hardware" in out
    assert "dry run: policy no-spot-nodes would forbid nodes failing cel not-spot" in out


def test_json_output_is_the_decision(sovctl: Sovctl) -> None:
    code, out, _ = sovctl(
        "policies",
        "test",
        "-f",
        str(POLICY),
        "-w",
        str(SCENARIO),
        "-o",
        "json",
        "--policy-version",
        "4",
    )
    assert code == 0
    decision = json.loads(out)
    assert decision["outcome"] == "admitted_with_warnings"
    assert decision["point"] == "cli"
    assert decision["policy_set_version"] == 4
    assert decision["eligible_node_ids"] == ["gpu-jp-01", "gpu-jp-02"]
    assert [(r["policy"], r["action"]) for r in decision["reasons"]] == [
        ("no-spot-nodes", "dryrun"),
        ("verified-hardware", "warn"),
    ]


def test_a_denied_workload_exits_1_with_reasons(sovctl: Sovctl, tmp_path: Path) -> None:
    scenario = yaml.safe_load(SCENARIO.read_text())
    scenario["workload"]["datasets"][0]["storage_zones"] = ["tw-north"]
    scenario["nodes"] = [n for n in scenario["nodes"] if n["hostname"] == "gpu-tw-01"]
    path = tmp_path / "abroad.yaml"
    path.write_text(yaml.safe_dump(scenario))
    code, out, _ = sovctl("policies", "test", "-f", str(POLICY), "--workload", str(path))
    assert code == 1
    assert out.startswith("outcome: denied\n")
    assert (
        "dataset customer-pii is stored in tw-north; policy pii-stays-in-japan forbids data and"
        " weights outside jp"
    ) in out
    assert (
        "policy pii-stays-in-japan forbids compute in tw-north (1 node excluded: gpu-tw-01;" in out
    )
    assert "eligible nodes (0): -" in out


def test_a_scenario_says_whose_the_data_is_and_who_is_granted(
    sovctl: Sovctl, tmp_path: Path
) -> None:
    scenario = yaml.safe_load(SCENARIO.read_text())
    dataset = scenario["workload"]["datasets"][0]
    dataset["tenant"] = "clinic"
    path = tmp_path / "theirs.yaml"
    path.write_text(yaml.safe_dump(scenario))
    code, out, _ = sovctl("policies", "test", "-f", str(POLICY), "--workload", str(path))
    assert code == 1
    tenant = scenario["workload"]["tenant"]
    [line] = [line for line in out.splitlines() if " ownership " in line]
    assert line.split()[:2] == ["deny", "-"]
    assert line.endswith(
        f"dataset customer-pii belongs to tenant clinic, and tenant {tenant} holds no grant"
        " in force to use it"
    )
    dataset["granted_to"] = [tenant]
    path.write_text(yaml.safe_dump(scenario))
    code, out, _ = sovctl("policies", "test", "-f", str(POLICY), "--workload", str(path))
    assert code == 0, out


def test_invalid_policies_exit_2_listing_every_problem(sovctl: Sovctl, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: p\nrequirements:\n  compute_zones: [jp-nort]\n"
        "  cel: [{name: a, expression: 'workload.tenant == \"acme\" &&'}]\n"
    )
    code, out, err = sovctl("policies", "test", "-f", str(bad), "--workload", str(SCENARIO))
    assert (code, out) == (2, "")
    assert err.splitlines()[:3] == [
        f"error: {bad}: 2 problems",
        "  policies[0].requirements.cel[0].expression: syntax error at 1:29: mismatched input"
        " '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT,"
        " NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
        "  policies[0].requirements.compute_zones[0]: unknown zone 'jp-nort'",
    ]


def test_a_costly_expression_exits_2_naming_it(sovctl: Sovctl, tmp_path: Path) -> None:
    ten = "[0,0,0,0,0,0,0,0,0,0]"
    slow = "".join(f"{ten}.exists(v{n}, " for n in range(8)) + "true" + ")" * 8
    bad = tmp_path / "slow.yaml"
    bad.write_text(
        yaml.safe_dump({"name": "p", "requirements": {"cel": [{"name": "a", "expression": slow}]}})
    )
    code, out, err = sovctl("policies", "test", "-f", str(bad), "--workload", str(SCENARIO))
    assert (code, out) == (2, "")
    assert err.startswith(
        f"error: {bad}: policies[0].requirements.cel[0].expression: estimated cost 455,555,552"
        " exceeds the limit of 300,000"
    )


def test_an_invalid_scenario_exits_2(sovctl: Sovctl, tmp_path: Path) -> None:
    bad = tmp_path / "scenario.yaml"
    bad.write_text(SCENARIO.read_text().replace("zone: jp-west", "zone: jp-wset", 1))
    code, _, err = sovctl("policies", "test", "-f", str(POLICY), "--workload", str(bad))
    assert code == 2
    assert err == f"error: {bad}: nodes[1].zone: unknown zone 'jp-wset'\n"


def test_a_missing_file_is_a_usage_error(sovctl: Sovctl, tmp_path: Path) -> None:
    code, _, err = sovctl(
        "policies", "test", "-f", str(tmp_path / "none.yaml"), "--workload", str(SCENARIO)
    )
    assert code == 2
    assert "does not exist" in err


def _documented_runs() -> dict[str, list[str]]:
    """Each ``<!-- docs-example: NAME -->`` block of docs/policy.md: its lines after ``$``."""
    text = Path("docs/policy.md").read_text()
    found = re.findall(r"<!-- docs-example: (\w+) -->\n```\n\$ [^\n]*\n(.*?)```", text, re.S)
    return {name: block.splitlines() for name, block in found}


def test_the_documented_runs_are_what_sovctl_prints(sovctl: Sovctl, tmp_path: Path) -> None:
    """docs/policy.md's example outputs, the explanation tables included, run for real."""
    documented = _documented_runs()
    assert set(documented) == {"scenario", "internal"}
    internal = yaml.safe_load(SCENARIO.read_text())
    internal["workload"]["datasets"][0]["classification"] = "internal"
    reclassified = tmp_path / "internal.yaml"
    reclassified.write_text(yaml.safe_dump(internal))
    for name, scenario in (("scenario", SCENARIO), ("internal", reclassified)):
        code, out, err = sovctl("policies", "test", "-f", str(POLICY), "-w", str(scenario))
        assert (code, err) == (0, "")
        assert out.splitlines() == documented[name], name


def test_json_output_carries_the_explanation(sovctl: Sovctl) -> None:
    code, out, _ = sovctl("policies", "test", "-f", str(POLICY), "-w", str(SCENARIO), "-o", "json")
    assert code == 0
    explanation = json.loads(out)["explanation"]
    assert [p["name"] for p in explanation["selected"]] == [
        "no-spot-nodes",
        "pii-stays-in-japan",
        "verified-hardware",
    ]
    assert explanation["not_selected"] == []
    assert all(p["version"] is None for p in explanation["selected"])
