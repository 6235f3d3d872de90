"""The spellings of ``sovctl`` 0.1 against a live API: they still work, and say so once.

Each old noun and verb runs here as a user's script would run it; where the command only
reads, its old and new spellings must give the same exit code and stdout.
"""

import json
from typing import Any

import pytest

from tests.support import Run, deprecation_notice

pytestmark = pytest.mark.integration


def same_answer(sovctl: Run, old: list[str], new: list[str], *args: str) -> tuple[int, str]:
    """Run ``old`` and ``new`` with ``args``: one notice, then the same code and stdout."""
    code, out, err = sovctl(*old, *args)
    assert err == deprecation_notice(old, new)
    new_code, new_out, new_err = sovctl(*new, *args)
    assert (code, out) == (new_code, new_out), new_err
    return code, out


def created(sovctl: Run, old: list[str], new: list[str], *args: str) -> Any:
    """Create something with an old spelling; return the JSON it printed.

    ``old`` and ``new`` are the command path up to its last renamed word, as the notice
    names it; ``args`` the rest.
    """
    code, out, err = sovctl(*old, *args, "-o", "json")
    assert (code, err) == (0, deprecation_notice(old, new))
    return json.loads(out)


def test_token(sovctl: Run) -> None:
    token = created(sovctl, ["token"], ["tokens"], "create", "--role", "auditor",
                    "--name", "eve")  # fmt: skip
    assert token["role"] == "auditor"
    _, out = same_answer(sovctl, ["token"], ["tokens"], "list", "-o", "json")
    assert [t["name"] for t in json.loads(out)] == ["eve"]


def test_registry_nouns_and_register(admin_sovctl: Run) -> None:
    sovctl = admin_sovctl
    assert sovctl("zones", "create", "jp", "--name", "Japan", "--country", "JP")[0] == 0
    assert created(sovctl, ["tenant"], ["tenants"], "create", "research",
                   "--name", "Research")["slug"] == "research"  # fmt: skip
    assert same_answer(sovctl, ["tenant"], ["tenants"], "list")[0] == 0

    asset = ["--tenant", "research", "--classification", "public", "--zones", "jp"]
    assert created(sovctl, ["dataset", "register"], ["datasets", "create"], "d1", *asset)
    assert created(sovctl, ["datasets", "register"], ["datasets", "create"], "d2", *asset)
    _, out = same_answer(sovctl, ["dataset"], ["datasets"], "list", "-o", "json")
    assert [d["name"] for d in json.loads(out)["items"]] == ["d1", "d2"]

    provenance = ["--supplier", "Meta", "--origin", "US", "--license", "llama3"]
    model = ["m1", *asset, *provenance]
    assert created(sovctl, ["model", "register"], ["models", "create"], *model)
    assert created(sovctl, ["models", "register"], ["models", "create"], "m2", *model[1:])
    _, out = same_answer(sovctl, ["model"], ["models"], "list", "-o", "json")
    assert [m["name"] for m in json.loads(out)["items"]] == ["m1", "m2"]

    assert created(sovctl, ["destination"], ["destinations"], "create", "results-jp",
                   "--zone", "jp")["zone"] == "jp"  # fmt: skip
    assert "results-jp" in same_answer(sovctl, ["destination"], ["destinations"], "list")[1]


def test_policy(admin_sovctl: Run) -> None:
    code, out = same_answer(admin_sovctl, ["policy"], ["policies"], "list")
    assert code == 0
    assert "active policy set: version 0" in out


def test_workload_and_submit(admin_sovctl: Run) -> None:
    sovctl = admin_sovctl
    assert sovctl("tenants", "create", "research", "--name", "Research")[0] == 0
    # No GPU server is registered, so every request is denied: exit 1 with the reasons.
    request = ["--tenant", "research", "--gpus", "2", "-o", "json"]
    denied = {}
    for old in (["workload", "submit"], ["workloads", "submit"]):
        code, out, err = sovctl(*old, *request)
        assert (code, err) == (1, deprecation_notice(old, ["workloads", "create"]))
        denied[" ".join(old)] = json.loads(out)
    code, out, err = sovctl("workloads", "create", *request)
    assert (code, err) == (1, "")
    expected = json.loads(out)
    for workload in denied.values():
        assert workload["status"] == "denied"
        assert workload["reasons"] == expected["reasons"]
    _, out = same_answer(sovctl, ["workload"], ["workloads"], "list", "-o", "json")
    assert json.loads(out)["total"] == 3
    workload_id = expected["id"]
    assert same_answer(sovctl, ["workload"], ["workloads"], "show", workload_id)[0] == 0
