"""The engine's ``DecisionCache``: shared by threads, indexes and policy sets, still exact.

Every test here compares decisions taken on a shared, long-lived cache with decisions on
a fresh one, which remembers nothing: a cache that kept an answer under a key missing
something it depends on, or that lost an entry half-written, shows up as a difference.
"""

import dataclasses
import random
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from control_plane.domain.classification import Classification
from control_plane.domain.decisions import EnforcementPoint
from control_plane.domain.fleet import DriftStatus, NodeStatus, ProvenanceStatus
from control_plane.policy.documents import PolicySet, compile_policy_set
from control_plane.policy.engine import (
    DecisionCache,
    NodeIndex,
    decide,
    decide_with_mask,
    evaluate_node,
)
from control_plane.policy.engine.cache import INDEXES_KEPT, MEMO_LIMIT, SETS_KEPT
from control_plane.policy.models import Decision, WorkloadView, ZoneView
from tests.unit.policy.builders import A100, ZONES, cel, dataset, model, node, policy, workload

API = EnforcementPoint.API

#: The same slugs as ``ZONES``, but jp-west lies in Taiwan: the same workload and set then
#: decide differently on an index built with this tree (data residency, storage countries).
MOVED_ZONES = {
    **ZONES,
    "jp-west": ZoneView("jp-west", "tw-north", "TW"),
}

DOCUMENTS: list[list[dict[str, Any]]] = [
    [
        policy(
            "pii-in-japan",
            selector={"classifications": ["restricted"]},
            compute_zones=["jp"],
            data_residency=True,
        ),
        policy("cc", cel=[cel("cost-center", '"cost-center" in workload.labels')]),
        policy(
            "big-reserved",
            cel=[cel("r", 'workload.gpu_count < 4 || node.labels["tier"] == "reserved"')],
        ),
        policy(
            "jp-data",
            "warn",
            cel=[cel("jp", 'datasets.all(d, d.storage_countries == ["JP"])')],
        ),
    ],
    [
        policy("team-a", selector={"tenants": ["team-a"]}, compute_zones=["tw-north"]),
        policy(
            "weights",
            "dryrun",
            selector={"model_labels": {"export": "no"}},
            data_residency=True,
            compute_countries=["JP"],
        ),
        policy(
            "shape",
            cel=[
                cel("mig", "workload.mig_profile == null"),
                cel("output", 'workload.output == null || workload.output.country == "JP"'),
                cel("tier", 'workload.labels["team"] != "x" || node.labels["tier"] != "spot"'),
            ],
        ),
        policy("no-spot", "warn", cel=[cel("spot", 'node.labels["tier"] != "spot"')]),
    ],
    [
        policy("verified", min_provenance_status="verified"),
        policy("allied", "warn", server_origin_countries=["JP", "TW"]),
        policy(
            "model-facts",
            cel=[
                cel("origin", 'models.all(m, m.origin_country == "JP")'),
                cel("whole", "size(workload.labels) < 3"),
            ],
        ),
    ],
]


def policy_sets() -> list[PolicySet]:
    """Every document list compiled, and the first two again (equal sets, other objects)."""
    compiled = [compile_policy_set(docs, version, ZONES) for version, docs in enumerate(DOCUMENTS)]
    return [*compiled, *(compile_policy_set(docs, 9, ZONES) for docs in DOCUMENTS[:2])]


def indexes() -> list[NodeIndex]:
    """Three fleets, one of them on the tree where jp-west lies in Taiwan."""
    mixed = (
        node("reserved", labels={"tier": "reserved"}),
        node("spot", "jp-west", labels={"tier": "spot"}),
        node("taipei", "tw-north", origin="TW", provenance=ProvenanceStatus.DECLARED),
        node("old", "jp-west", gpus=2, model=A100, memory=None),
        node("sick", status=NodeStatus.QUARANTINED, drift=DriftStatus.DRIFTED),
    )
    small = (node("one", gpus=2), node("two", "us-west", origin="US"))
    return [
        NodeIndex.build(mixed, ZONES),
        NodeIndex.build(mixed, MOVED_ZONES),
        NodeIndex.build(small, ZONES),
    ]


def workloads() -> list[WorkloadView]:
    """Workloads that differ in what the rules above read, one field at a time."""
    base: dict[str, Any] = {
        "datasets": (dataset(zones=("jp-west",)),),
        "models": (model(),),
        "output": ("east", "jp-east"),
        "labels": {"cost-center": "cc-1", "team": "x"},
    }
    variants: list[dict[str, Any]] = [
        {},
        {"tenant": "team-a"},
        {"datasets": (dataset(classification=Classification.INTERNAL),)},
        {"datasets": (dataset(zones=("tw-north",)),)},
        {"datasets": ()},
        {"models": (model(origin="US"),)},
        {"models": (model(labels={"export": "no"}, zones=("jp-west",)),)},
        {"output": ("west", "jp-west")},
        {"output": None},
        {"gpu_count": 2},
        {"gpu_count": 4},
        {"gpu_count": 8, "gpu_model": "a100"},
        {"mig_profile": "1g.10gb"},
        {"labels": {"team": "x"}},
        {"labels": {"cost-center": "cc-2", "team": "y"}},
        {"labels": {"cost-center": "cc-3", "team": "x", "run": "7"}},
    ]
    return [workload(**{**base, **variant}) for variant in variants]


#: One decision to take: which index, set and workload, and how (``None``: ``decide``,
#: else ``evaluate_node`` on that node).
Task = tuple[int, int, int, str | None]


def tasks(index_list: list[NodeIndex], set_count: int, workload_count: int) -> list[Task]:
    """Every combination, decided and evaluated on the first node of each index."""
    return [
        (i, s, w, how)
        for i, index in enumerate(index_list)
        for s in range(set_count)
        for w in range(workload_count)
        for how in (None, index.ids[0])
    ]


def take(
    task: Task,
    index_list: list[NodeIndex],
    set_list: list[PolicySet],
    workload_list: list[WorkloadView],
    cache: DecisionCache,
) -> tuple[Decision, int | None]:
    """The decision ``task`` names, on ``cache``, with the eligible mask for ``decide``."""
    i, s, w, node_id = task
    index, policy_set, wanted = index_list[i], set_list[s], workload_list[w]
    if node_id is None:
        return decide_with_mask(wanted, index, policy_set, point=API, cache=cache)
    return evaluate_node(wanted, node_id, index, policy_set, cache=cache), None


@contextmanager
def frequent_switches() -> Iterator[None]:
    """Let the interpreter switch threads every microsecond, so races have room to happen."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.parametrize("limit", [3, MEMO_LIMIT])
def test_decisions_from_many_threads_on_one_cache_equal_fresh_ones(limit: int) -> None:
    """Eight threads decide a shuffled mix on one cache, with tables small enough to be
    cleared under them (limit 3) or large enough to answer from memory; every result
    equals the decision on a fresh cache."""
    index_list, set_list, workload_list = indexes(), policy_sets(), workloads()
    # More indexes and sets than the cache keeps: whole tables come and go meanwhile.
    assert len(index_list) > INDEXES_KEPT
    assert len(set_list) > SETS_KEPT
    todo = tasks(index_list, len(set_list), len(workload_list))
    expected = {
        task: take(task, index_list, set_list, workload_list, DecisionCache()) for task in todo
    }
    # The table is not trivial: admitted, warned and denied, on many node sets.
    assert len({decision.outcome for decision, _ in expected.values()}) == 3
    assert len({tuple(decision.eligible_node_ids) for decision, _ in expected.values()}) > 4

    shared = DecisionCache(limit=limit)
    start = threading.Barrier(8)
    wrong: list[tuple[Task, Decision, Decision]] = []
    failures: list[BaseException] = []

    def run(seed: int) -> None:
        order = random.Random(seed).sample(todo * 2, len(todo) * 2)
        try:
            start.wait()
            for task in order:
                found = take(task, index_list, set_list, workload_list, shared)
                if found != expected[task]:
                    wrong.append((task, found[0], expected[task][0]))
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            failures.append(exc)

    with frequent_switches():
        threads = [threading.Thread(target=run, args=(seed,)) for seed in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
    assert wrong == []


def test_one_cache_across_indexes_and_sets_decides_as_fresh_caches_do() -> None:
    index_list, set_list, workload_list = indexes(), policy_sets(), workloads()
    shared = DecisionCache()
    for task in random.Random(1).sample(
        tasks(index_list, len(set_list), len(workload_list)) * 3, 600
    ):
        assert take(task, index_list, set_list, workload_list, shared) == take(
            task, index_list, set_list, workload_list, DecisionCache()
        ), task


def test_an_index_decides_by_its_own_zone_tree() -> None:
    # The same nodes, set and workload: jp-west data lies outside Japan on the moved tree.
    ordinary, moved, _ = indexes()
    policy_set = policy_sets()[0]
    wanted = workloads()[0]
    cache = DecisionCache()
    here = decide(wanted, ordinary, policy_set, point=API, cache=cache)
    there = decide(wanted, moved, policy_set, point=API, cache=cache)
    assert here.admitted
    assert not there.admitted
    assert "data_residency" in [r.rule for r in there.reasons]


def test_what_is_remembered_stays_bounded() -> None:
    index_list, set_list = indexes(), policy_sets()
    cache = DecisionCache(limit=3)
    index, policy_set = index_list[0], set_list[0]
    for number in range(20):
        decide(
            workload(labels={"cost-center": f"cc-{number}"}),
            index,
            policy_set,
            point=API,
            cache=cache,
        )
        memo = cache.memo(index, policy_set)
        assert 1 <= len(memo.plans) <= 3
        assert all(len(verdicts) <= 3 for verdicts in memo.verdicts.values())
    kept = cache.memo(index, policy_set)
    assert kept is cache.memo(index, policy_set)
    # Decisions on more indexes than are kept let the oldest go, tables and all.
    for other in index_list[1:]:
        decide(workload(), other, policy_set, point=API, cache=cache)
    assert cache.memo(index, policy_set) is not kept
    last = cache.memo(index_list[-1], policy_set)
    assert last is cache.memo(index_list[-1], policy_set)
    # As do more policy sets than are kept, on one index.
    assert len(set_list[1:]) == SETS_KEPT
    for other_set in set_list[1:]:
        decide(workload(), index_list[-1], other_set, point=API, cache=cache)
    assert cache.memo(index_list[-1], policy_set) is not last


def test_deciding_changes_neither_the_index_nor_the_policy_set() -> None:
    index_list, set_list, workload_list = indexes(), policy_sets(), workloads()

    def state() -> list[Any]:
        held: list[Any] = []
        for index in index_list:
            held += [repr(getattr(index, f.name)) for f in dataclasses.fields(index)]
        for policy_set in set_list:
            for compiled in policy_set.policies:
                for condition in (*compiled.workload_cel, *compiled.node_cel):
                    held += [
                        repr(getattr(condition, f.name))
                        for f in dataclasses.fields(condition)
                        if f.name != "program"
                    ]
        return held

    before = state()
    cache = DecisionCache()
    for task in tasks(index_list, len(set_list), len(workload_list)):
        take(task, index_list, set_list, workload_list, cache)
    assert state() == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        index_list[0].all = 0  # type: ignore[misc]
