"""What one residency decision costs, without the database.

Run from the repository root::

    python bench/policy_engine.py            # table
    python bench/policy_engine.py --json

The fleet, the policies and the workload are synthetic but shaped like a real set: 20
policies (deny, warn and dryrun; selectors by tenant, classification and labels; zones,
countries, origins, component origins, provenance, quarantine, data residency) of which
six carry CEL: four over the workload, datasets and models, one over nodes only, one over
nodes and the workload. Ten of them select the workload, which reads two datasets and a
model, writes to an output and asks for 4 H100s. Nodes spread over the 12 leaf zones of
6 countries, with 0-8 free H100s each. Results are in docs/benchmarks.md.

Timings are per call with ``time.perf_counter_ns`` after a warm-up, garbage collection on,
reported as median (p50), p90 and p99. Every decision is given the same ``DecisionCache``,
as every admission of one API process is:

``decide(), N nodes, repeated workload``
    One decision against a built ``NodeIndex`` (the steady state of the API and the sweep:
    one index per inventory snapshot), the same workload each time, so every CEL
    condition answers from memory. It includes selection, data residency, the node
    filters, the reasons and the list of eligible node ids. The 20 µs goal is about this.
``decide(), N nodes, distinct workloads``
    The same with a new ``cost-center`` label each time, which one CEL rule reads: that
    rule runs (with its CEL context) on every decision.
``decide(), 5000 nodes, 14 policies without CEL``
    The structured requirements alone.
``first decide() on a fresh index, 5000 nodes``
    Per-policy masks, node profiles for CEL and the capacity filter worked out on the
    way: eligibility over 5,000 nodes from scratch (the index built beforehand). The
    1 ms goal is about this and the warm figures.
``NodeIndex.build(), 5000 nodes``
    Building the index itself, once per inventory snapshot.
``compile_policy_set(), 20 policies``
    Validation and CEL compilation, once per policy-set version.
"""

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from machine_info import cpu_model

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from control_plane.domain.classification import Classification  # noqa: E402
from control_plane.domain.decisions import DecisionOutcome, EnforcementPoint  # noqa: E402
from control_plane.domain.fleet import DriftStatus, NodeStatus, ProvenanceStatus  # noqa: E402
from control_plane.policy.documents import PolicySet, compile_policy_set  # noqa: E402
from control_plane.policy.engine import DecisionCache, NodeIndex, decide  # noqa: E402
from control_plane.policy.models import (  # noqa: E402
    DataAssetView,
    Decision,
    DestinationView,
    GpuView,
    ModelView,
    NodeView,
    WorkloadView,
    ZoneView,
)

DECISION_GOAL_US = 20.0
ELIGIBILITY_GOAL_MS = 1.0
COUNTRIES = {"JP": "jp", "TW": "tw", "US": "us", "DE": "de", "KR": "kr", "SG": "sg"}
H100 = "NVIDIA H100 80GB HBM3"
H100_MEMORY = 85_520_809_984


def zones() -> dict[str, ZoneView]:
    """A zone tree: one zone per country, each with an east and a west child."""
    tree: dict[str, ZoneView] = {}
    for country, slug in COUNTRIES.items():
        tree[slug] = ZoneView(slug, None, country)
        for region in ("east", "west"):
            tree[f"{slug}-{region}"] = ZoneView(f"{slug}-{region}", slug, country)
    return tree


def fleet(count: int, seed: int = 7) -> list[NodeView]:
    """``count`` nodes in the leaf zones, with seeded random status, origins and free GPUs."""
    rng = random.Random(seed)
    leaf_zones = [z for z in zones() if "-" in z]
    origins = ["JP", "TW", "US", "CN", None]
    nodes = []
    for i in range(count):
        free = rng.choice([0, 2, 4, 8, 8, 8])
        nodes.append(
            NodeView(
                id=f"node-{i:05d}",
                hostname=f"gpu-{i:05d}",
                zone=rng.choice(leaf_zones),
                status=NodeStatus.ACTIVE if rng.random() < 0.92 else NodeStatus.OFFLINE,
                drift_status=DriftStatus.DRIFTED if rng.random() < 0.01 else DriftStatus.NONE,
                origin_country=rng.choice(origins),
                component_origins={"gpu": rng.choice(["TW", "US", "CN"]), "cpu": "US"},
                provenance_status=rng.choice(list(ProvenanceStatus)),
                labels={"tier": rng.choice(["spot", "ondemand", "reserved"]), "rack": f"r{i % 40}"},
                gpus=tuple(
                    GpuView(f"GPU-{i}-{g}", H100, H100_MEMORY, "Disabled") for g in range(free)
                ),
            )
        )
    return nodes


def policy_documents() -> list[dict[str, Any]]:
    """The 20 policies a decision is timed against, CEL conditions included."""
    docs: list[dict[str, Any]] = [
        {
            "name": "pii-stays-in-japan",
            "selector": {"classifications": ["restricted"]},
            "requirements": {"compute_zones": ["jp"], "data_residency": True},
        },
        {
            "name": "cost-center-required",
            "requirements": {
                "cel": [
                    {
                        "name": "cost-center",
                        "expression": '"cost-center" in workload.labels',
                        "message": "workloads must name a cost center",
                    }
                ]
            },
        },
        {
            "name": "gpu-quota-shape",
            "selector": {"tenants": ["acme"]},
            "requirements": {
                "cel": [{"name": "max-gpus", "expression": "workload.gpu_count <= 8"}]
            },
        },
        {
            "name": "restricted-needs-approval",
            "selector": {"classifications": ["restricted"]},
            "requirements": {
                "cel": [
                    {
                        "name": "approved",
                        "expression": 'datasets.all(d, d.classification != "restricted")'
                        ' || workload.labels["approval"] == "granted"',
                    }
                ]
            },
        },
        {
            "name": "model-origin",
            "enforcement_action": "warn",
            "requirements": {
                "cel": [
                    {
                        "name": "allied-models",
                        "expression": 'models.all(m, m.origin_country in ["JP", "US", "TW"])',
                    }
                ]
            },
        },
        {
            "name": "no-spot-for-pii",
            "selector": {"dataset_labels": {"pii": "true"}},
            "requirements": {
                "cel": [{"name": "not-spot", "expression": 'node.labels["tier"] != "spot"'}]
            },
        },
        {
            "name": "big-jobs-reserved",
            "enforcement_action": "dryrun",
            "requirements": {
                "cel": [
                    {
                        "name": "reserved",
                        "expression": 'workload.gpu_count < 8 || node.labels["tier"] == "reserved"',
                    }
                ]
            },
        },
        {
            "name": "verified-provenance",
            "selector": {"classifications": ["restricted", "confidential"]},
            "requirements": {"min_provenance_status": "declared"},
        },
        {
            "name": "trusted-gpus",
            "selector": {"classifications": ["restricted"]},
            "requirements": {"component_origin_countries": {"gpu": ["TW", "US"]}},
        },
        {
            "name": "trusted-servers",
            "enforcement_action": "warn",
            "requirements": {"server_origin_countries": ["JP", "TW", "US"]},
        },
    ]
    # Ten more that look like what accumulates in a real set: other tenants, other
    # countries, other labels; most do not select this workload.
    for i in range(10):
        docs.append(
            {
                "name": f"tenant-{i}-residency",
                "enforcement_action": ["deny", "warn", "dryrun"][i % 3],
                "selector": {"tenants": [f"tenant-{i}"]}
                if i % 2
                else {"model_labels": {"x": str(i)}},
                "requirements": {
                    "compute_countries": [list(COUNTRIES)[i % len(COUNTRIES)]],
                    "data_residency": bool(i % 2),
                },
            }
        )
    return docs


def workload(cost_center: str = "cc-4711") -> WorkloadView:
    """A 4-GPU workload on Japanese personal data, as the policies expect to see it."""
    return WorkloadView(
        tenant="acme",
        datasets=[
            DataAssetView("customer-pii", Classification.RESTRICTED, ("jp-east",), {"pii": "true"}),
            DataAssetView("call-logs", Classification.CONFIDENTIAL, ("jp-west",), {}),
        ],
        models=[
            ModelView(
                "llama-ja", Classification.INTERNAL, ("jp-east",), {}, "acme", "JP", "apache-2.0"
            )
        ],
        output=DestinationView("results-jp", "jp-east"),
        gpu_count=4,
        gpu_model="H100",
        labels={"cost-center": cost_center, "approval": "granted"},
    )


def timed(fn: Callable[[], Any], rounds: int, warmup: int) -> list[int]:
    """Wall time of each of ``rounds`` calls, in ns, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return samples


def deciding_on(
    workload: WorkloadView, index: NodeIndex, policy_set: PolicySet, cache: DecisionCache
) -> Callable[[], Decision]:
    """One timed call: ``workload`` decided on ``index`` (a closure, not a loop's lambda)."""

    def decide_it() -> Decision:
        return decide(workload, index, policy_set, point=EnforcementPoint.API, cache=cache)

    return decide_it


def deciding_on_next(
    workloads: Iterator[WorkloadView],
    index: NodeIndex,
    policy_set: PolicySet,
    cache: DecisionCache,
) -> Callable[[], Decision]:
    """One timed call: the next of ``workloads`` decided on ``index``."""

    def decide_next() -> Decision:
        return decide(next(workloads), index, policy_set, point=EnforcementPoint.API, cache=cache)

    return decide_next


def summary(name: str, samples: list[int], unit: str) -> dict[str, Any]:
    """Median, p90 and p99 of ``samples`` (ns) in ``unit`` (``us`` or ``ms``)."""
    scale = {"us": 1e3, "ms": 1e6}[unit]
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / scale

    return {
        "name": name,
        "unit": unit,
        "rounds": len(samples),
        "p50": statistics.median(samples) / scale,
        "p90": at(0.9),
        "p99": at(0.99),
    }


def main() -> int:
    """Parse the options, time every figure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--rounds", type=int, default=20_000, help="decisions per figure")
    args = parser.parse_args()
    gc.enable()
    tree = zones()
    docs = policy_documents()
    policy_set: PolicySet = compile_policy_set(docs, 1, tree)
    structured = compile_policy_set(
        [d for d in docs if "cel" not in d.get("requirements", {})], 1, tree
    )
    same = workload()
    # Distinct cost centers: no two decisions hand CEL the same input, so every condition
    # is evaluated every time, nothing is answered from memory.
    distinct = [workload(f"cc-{i}") for i in range(args.rounds + 2000)]
    results = [
        summary(
            "compile_policy_set(), 20 policies",
            timed(lambda: compile_policy_set(docs, 1, tree), 200, 20),
            "ms",
        )
    ]
    outcomes = {}
    cache = DecisionCache()
    for count in (100, 1000, 5000):
        index = NodeIndex.build(fleet(count), tree)
        decision = decide(same, index, policy_set, point=EnforcementPoint.WHATIF, cache=cache)
        outcomes[count] = (decision.outcome, len(decision.eligible_node_ids), len(decision.reasons))
        results.append(
            summary(
                f"decide(), {count} nodes, repeated workload",
                timed(
                    deciding_on(same, index, policy_set, cache),
                    args.rounds,
                    2000,
                ),
                "us",
            )
        )
        stream = iter(distinct)
        results.append(
            summary(
                f"decide(), {count} nodes, distinct workloads",
                timed(
                    deciding_on_next(stream, index, policy_set, cache),
                    args.rounds,
                    2000,
                ),
                "us",
            )
        )
    index = NodeIndex.build(fleet(5000), tree)
    results.append(
        summary(
            "decide(), 5000 nodes, 14 policies without CEL",
            timed(
                lambda: decide(same, index, structured, point=EnforcementPoint.API, cache=cache),
                args.rounds,
                2000,
            ),
            "us",
        )
    )
    nodes = fleet(5000)
    results.append(
        summary(
            "NodeIndex.build(), 5000 nodes",
            timed(lambda: NodeIndex.build(nodes, tree), 30, 3),
            "ms",
        )
    )
    fresh = iter([NodeIndex.build(nodes, tree) for _ in range(200)])
    results.append(
        summary(
            "first decide() on a fresh index, 5000 nodes",
            timed(
                lambda: decide(
                    same, next(fresh), policy_set, point=EnforcementPoint.API, cache=cache
                ),
                190,
                10,
            ),
            "ms",
        )
    )
    machine = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": cpu_model(),
        "cpus": os.cpu_count(),
    }
    details = {
        count: {"outcome": str(o), "eligible": e, "reasons": r}
        for count, (o, e, r) in outcomes.items()
    }
    assert all(d["outcome"] != str(DecisionOutcome.DENIED) for d in details.values())
    if args.json:
        print(json.dumps({"machine": machine, "results": results, "decisions": details}, indent=2))
        return 0
    print(f"python {machine['python']} on {machine['processor']} ({machine['cpus']} CPUs)")
    print(f"{'':50} {'p50':>10} {'p90':>10} {'p99':>10}")
    for r in results:
        unit = "µs" if r["unit"] == "us" else r["unit"]
        cells = "".join(f"{r[q]:8.2f}{unit}" for q in ("p50", "p90", "p99"))
        print(f"{r['name']:50} {cells}")
    print()
    for count, d in details.items():
        print(f"{count} nodes: {d['outcome']}, {d['eligible']} eligible, {d['reasons']} reasons")
    print(
        f"goals: decision p50 <= {DECISION_GOAL_US:g} µs; "
        f"eligibility over 5,000 nodes <= {ELIGIBILITY_GOAL_MS:g} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
