"""The bounds on CEL: length, depth and estimated cost, all checked before the extension runs.

The extension segfaults on deep chains and panics on deep nesting, so the hostile shapes
are tried in a child process: if a bound let one through, the child dies, not pytest.
"""

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cel
import pytest

from control_plane.core.errors import InvalidInputError
from control_plane.domain.decisions import EnforcementPoint
from control_plane.domain.types import MAX_LABELS
from control_plane.inventory.models import Inventory, NodeRegister
from control_plane.policy import bounds, conditions
from control_plane.policy.documents import compile_policy_set, load_documents, validate_documents
from control_plane.policy.engine import DecisionCache, NodeIndex, decide, scope
from control_plane.registry.models import DatasetCreate, ModelCreate
from control_plane.scheduling.models import WorkloadCreate
from tests.unit.policy.builders import ZONES, node, policy, workload
from tests.unit.policy.builders import cel as rule

#: The expressions of the issue that crashed the API process or made it answer 500.
SEGFAULT = "workload" + ".a" * 20000 + " == 1"
PANIC = "size(" * 20000 + "[]" + ")" * 20000 + " == 0"
TEN = "[0,0,0,0,0,0,0,0,0,0]"
HUNDRED = "[" + ",".join(["0"] * 100) + "]"
DOCS = Path("docs/policy.md")


def nested(times: int, opening: str, middle: str, closing: str) -> str:
    return opening * times + middle + closing * times


def eight_deep(*macros: str) -> str:
    """Eight comprehensions over ten elements each, taking ``macros`` in turn."""
    text = "true"
    for level in reversed(range(8)):
        macro = macros[level % len(macros)]
        inner = f"{TEN}.{macro}(v{level}, {text})"
        text = f"size({inner}) > 0" if macro in ("map", "filter") else inner
    return text


def refusal(source: str) -> str:
    with pytest.raises(bounds.CelBoundError) as caught:
        conditions.compile_expression(source)
    return str(caught.value)


# -- length ----------------------------------------------------------------------------


def test_the_expressions_that_crashed_the_process_are_refused_in_a_child_that_survives() -> None:
    """Every shape that crashed or panicked the extension, at the size that did, is refused."""
    shapes = {
        "selections (segfault compiling at 19,385)": SEGFAULT,
        "indexes (segfault at 21,804)": "workload" + "[0]" * 22000 + " == 1",
        "methods (segfault at 15,394)": "'a'" + ".size()" * 16000,
        "sums (segfault at 21,811)": "1" + " + 1" * 22000 + " == 1",
        "equalities (segfault at 18,695)": "1" + "==1" * 19000,
        "calls (panic at 13,088)": PANIC,
        "maps (panic at 21,813)": nested(22000, "{1:", "1", "}") + " == {}",
        "parentheses within the length": nested(1999, "(", "1", ")"),
        "selections within the length": "workload" + ".a" * 1990,
        "sums within the length": "1" + "+1" * 1995,
        "negations within the length": "!" * 3990 + "true",
        "ternaries within the length": "true?1:" * 570 + "1",
    }
    child = (
        "import json, sys\n"
        "from control_plane.policy import bounds, conditions\n"
        "for name, source in json.load(sys.stdin).items():\n"
        "    try:\n"
        "        conditions.compile_expression(source)\n"
        "    except bounds.CelBoundError as exc:\n"
        "        print(name, '|', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child],
        input=json.dumps(shapes),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    refused = dict(line.split(" | ", 1) for line in done.stdout.splitlines())
    assert set(refused) == set(shapes)
    assert refused["calls (panic at 13,088)"] == "is 120,007 characters long; the limit is 4,000"
    assert refused["parentheses within the length"] == "nests more than 32 levels deep at 1:33"


def test_validation_names_the_field_of_an_expression_too_long() -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate_documents([policy("p", cel=[rule("long", SEGFAULT)])], ZONES)
    [problem] = caught.value.details["fields"]
    assert problem["field"] == "policies[0].requirements.cel[0].expression"
    assert problem["message"] == "String should have at most 4000 characters"


def test_the_length_limit_is_the_schema_limit() -> None:
    def of_length(length: int) -> str:
        return '"' + "a" * (length - 8) + '" != ""'

    assert conditions.compile_expression(of_length(bounds.MAX_LENGTH))
    too_long = refusal(of_length(bounds.MAX_LENGTH + 1))
    assert too_long == "is 4,001 characters long; the limit is 4,000"


# -- depth -----------------------------------------------------------------------------

DEPTHS: dict[str, Callable[[int], str]] = {
    "selections": lambda n: "workload" + ".a" * n + " == 1",
    "indexes": lambda n: "workload" + "[0]" * n + " == 1",
    "methods": lambda n: "'a'" + ".size()" * n + " == 1",
    "calls": lambda n: nested(n, "size(", "[]", ")") + " == 0",
    "parentheses": lambda n: nested(n, "(", "1", ")") + " == 1",
    "lists": lambda n: nested(n, "[", "", "]") + " == []",
    "maps": lambda n: nested(n, "{1:", "1", "}") + " == {}",
    "negations": lambda n: "!" * n + "true",
    "sums": lambda n: "1" + " + 1" * n + " == 1",
    "ternaries": lambda n: "true ? 1 : " * n + "1",
    "comprehensions": lambda n: nested(n, "[0].all(v, ", "true", ")"),
}


@pytest.mark.parametrize("shape", DEPTHS)
def test_nesting_beyond_the_depth_is_refused_and_within_it_compiles(shape: str) -> None:
    assert isinstance(conditions.compile_expression(DEPTHS[shape](24)), cel.Program)
    assert "nests more than 32 levels deep at " in refusal(DEPTHS[shape](bounds.MAX_DEPTH))


def test_a_chain_of_and_or_or_is_one_level() -> None:
    assert conditions.compile_expression(" || ".join(["workload.gpu_count == 1"] * 120))
    assert conditions.compile_expression(" && ".join(['"a" in workload.labels'] * 150))


# -- cost ------------------------------------------------------------------------------

COSTLY = {
    "eight nested all over ten": nested(8, f"{TEN}.all(v, ", "v == 0", ")"),
    "eight nested exists, exists_one, all": eight_deep("exists", "exists_one", "all"),
    "eight nested map and filter": eight_deep("map", "filter"),
    "datasets, models, zones": (
        "datasets.all(d, models.exists(m, d.storage_zones.all(z, z in m.storage_zones)))"
    ),
    "labels in labels in labels": (
        "workload.labels.all(a, workload.labels.all(b, workload.labels.exists(c, a == c)))"
    ),
    "node labels in GPU models in zones": (
        "node.labels.all(k, node.gpu_models.all(g, node.zones.all(z, k != g || g != z)))"
    ),
    "a list repeated by concatenation": f"({HUNDRED} + {HUNDRED} + {HUNDRED}).all(a,"
    f" ({HUNDRED} + {HUNDRED}).all(b, a == b))",
    "a list of lists built by map": f"{HUNDRED}.map(x, {HUNDRED}).all(l, l.all(y, l.size() > y))",
    "a list behind dyn, a map literal and a ternary": f"dyn({HUNDRED}).all(a,"
    f' {{"k": {HUNDRED}}}.k.all(b, (a == b ? {HUNDRED} : []).exists(c, c == a)))',
    "map's quadratic copy": "[" + ",".join(["0"] * 1000) + "].map(v, v).size() > 0",
    "an unknown function's result": "f(1).all(a, f(2).all(b, f(3).all(c, f(4).all(d, a == d))))",
}


@pytest.mark.parametrize("shape", COSTLY)
def test_expressions_that_may_cost_too_much_are_refused_saying_the_cost(shape: str) -> None:
    message = refusal(COSTLY[shape])
    assert message.startswith("estimated cost ")
    assert "exceeds the limit of 300,000: each comprehension multiplies" in message


def test_the_issue_s_eight_deep_comprehension_is_422_naming_the_field() -> None:
    documents = [
        policy("p", cel=[rule("fine", "true"), rule("slow", COSTLY["eight nested all over ten"])])
    ]
    with pytest.raises(InvalidInputError) as caught:
        validate_documents(documents, ZONES)
    [problem] = caught.value.details["fields"]
    assert problem["field"] == "policies[0].requirements.cel[1].expression"
    assert problem["message"].startswith("estimated cost 755,555,552 exceeds the limit of 300,000")


#: Expressions that are cheap however they nest, and what the estimate says of them.
CHEAP = {
    'datasets.all(d, d.storage_countries == ["JP"])': 33_794,
    'models.all(m, m.origin_country in ["JP", "US", "TW"])': 42_434,
    "workload.labels.all(k, workload.labels.all(j, k != j))": 29_059,
    'node.gpu_models.exists(m, m.contains("H100"))': 387,
    nested(5, "[0, 0, 0].all(v, ", "v == 0", ")"): 2_303,
    '"cost-center" in workload.labels': 69,
}


@pytest.mark.parametrize("source", CHEAP)
def test_cheap_expressions_are_accepted_with_their_estimate(source: str) -> None:
    assert bounds.check(source).cost == CHEAP[source]
    assert isinstance(conditions.compile_expression(source), cel.Program)


def test_the_examples_and_the_documented_expressions_are_accepted() -> None:
    documents = load_documents(Path("examples/policy/pii-stays-in-japan.yaml").read_text())
    documented = [
        line.split("expression:", 1)[1].strip().strip("'")
        for line in DOCS.read_text().splitlines()
        if line.strip().startswith("expression: '")
    ]
    assert len(documented) >= 5
    extra = policy("documented", cel=[rule(f"r{i}", e) for i, e in enumerate(documented)])
    assert validate_documents([*documents, extra], ZONES)


def test_the_documented_estimates_are_the_estimates() -> None:
    rows = re.findall(r"^\| `([^`]+)` \| (refused: )?([0-9,]+) \|$", DOCS.read_text(), re.M)
    assert len(rows) >= 5
    for source, refused, cost in rows:
        if refused:
            assert refusal(source).startswith(f"estimated cost {cost} exceeds")
        else:
            assert f"{bounds.check(source).cost:,}" == cost, source


# -- the reader --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        '"a//b" == r"\\" // a comment, then the rest\n|| true',
        "'''one\nline\"'''.size() > 0 && b\"\\xff\" == b'\\377'",
        "[,] == [] && {,} == {}",
        "[1, 2,].size() == 2 && {1: 2,}.size() == 1",
        ".workload.tenant == 'a' && 1.5e3 > .5 && 0x1Fu > 1u",
        "google.protobuf.Int64Value{value: 1} == 1",
        "has(workload.output.zone) ? workload.output.zone : 'none'",
        "[1, 2].map(x, x > 1, x * 2) == [4]",
        "1 in [1] && 'a' in {'a': 1} && type(1) == int && dyn(1) == 1",
    ],
)
def test_the_reader_reads_what_the_extension_compiles(source: str) -> None:
    cel.compile(source)
    assert bounds.check(source).depth >= 1


def test_what_the_reader_cannot_read_gets_the_extension_s_syntax_error() -> None:
    with pytest.raises(conditions.CelSyntaxError) as caught:
        conditions.compile_expression('workload.tenant == "acme" &&')
    assert str(caught.value).startswith("syntax error at 1:29: mismatched input '<EOF>'")


# -- what the estimate counts on ---------------------------------------------------------


def _max_items(model: Any, *path: str) -> int:
    schema = model.model_json_schema()
    found: Any = schema["properties"][path[0]]
    for key in path[1:]:
        found = schema["$defs"][found["$ref"].rsplit("/", 1)[1]]["properties"][key]
    return int(found.get("maxItems") or found["maxProperties"])


def test_the_bounds_of_what_cel_sees_are_the_api_s_limits() -> None:
    assert _max_items(WorkloadCreate, "datasets") == bounds.MAX_ASSETS
    assert _max_items(WorkloadCreate, "models") == bounds.MAX_ASSETS
    assert _max_items(DatasetCreate, "zones") == bounds.MAX_STORAGE_ZONES
    assert _max_items(Inventory, "gpus") == bounds.MAX_GPUS
    for model in (WorkloadCreate, DatasetCreate, ModelCreate, NodeRegister):
        assert _max_items(model, "labels") == MAX_LABELS


def test_the_bounds_know_every_field_cel_sees() -> None:
    def fields(name: str) -> set[str]:
        known = bounds.SCOPE[name]
        value = known.element if name in ("datasets", "models") else known
        assert value is not None
        assert value.fields is not None
        return set(value.fields)

    assert set(bounds.SCOPE) == conditions.VARIABLES
    assert fields("workload") == set(scope.WORKLOAD_FIELDS)
    assert fields("datasets") == set(scope.DATASET_FIELDS)
    assert fields("models") == set(scope.MODEL_FIELDS)
    assert fields("node") == set(scope.NODE_FIELDS)


# -- the extension's panics --------------------------------------------------------------


def _panic() -> BaseException:
    """A real ``pyo3_runtime.PanicException``, from the extension itself."""
    with pytest.raises(BaseException) as caught:
        cel.compile(PANIC)
    assert conditions.is_panic(caught.value)
    return caught.value


def test_a_panic_while_compiling_is_a_syntax_error() -> None:
    with pytest.raises(conditions.CelSyntaxError, match="the CEL parser failed"):
        conditions._compile(PANIC)


class _Panicking:
    """A program whose evaluation panics, as the extension's Rust code may."""

    def __init__(self, panic: BaseException) -> None:
        self.panic = panic

    def execute(self, context: Any = None) -> Any:
        raise self.panic


def test_a_panic_while_evaluating_fails_the_condition_closed() -> None:
    panic = _panic()
    verdict = conditions.run(_Panicking(panic), cel.Context())  # type: ignore[arg-type]
    assert not verdict.passed
    assert verdict.error


def test_an_interrupt_while_evaluating_is_not_swallowed() -> None:
    with pytest.raises(KeyboardInterrupt):
        conditions.run(_Panicking(KeyboardInterrupt()), cel.Context())  # type: ignore[arg-type]


# -- stored sets -------------------------------------------------------------------------


def test_a_stored_rule_beyond_the_bounds_compiles_and_fails_closed() -> None:
    """A set stored before the bounds still compiles; the rule they refuse denies, saying why."""
    slow = COSTLY["eight nested all over ten"]
    documents = [policy("p", cel=[rule("slow", slow, "must be quick"), rule("fine", "true")])]
    with pytest.raises(InvalidInputError):
        compile_policy_set(documents, 3, ZONES)  # as sovctl policies test compiles files

    stored = compile_policy_set(documents, 3, known_zones=None)
    assert stored.refused == (
        "policy 'p', CEL rule 'slow': estimated cost 755,555,552 exceeds the limit of 300,000:"
        " each comprehension multiplies the cost of its body by the most elements its range"
        " can have",
    )
    [condition, _] = stored.policies[0].workload_cel
    assert isinstance(condition.program, conditions.Refused)
    decision = decide(
        workload(),
        NodeIndex.build([node("a")], ZONES),
        stored,
        point=EnforcementPoint.API,
        cache=DecisionCache(),
    )
    assert decision.outcome == "denied"
    [reason] = decision.reasons
    assert reason.rule == "cel.slow"
    assert "could not evaluate: refused by the CEL bounds: estimated cost 755,555,552" in (
        reason.message
    )
