"""The residency policy engine: pure functions from (workload, nodes, policies) to decisions.

One engine, many callers (the API, the admission webhook, the re-evaluation sweep, the
what-if simulator, ``sovctl policies test``), as Gatekeeper has one policy client behind its
webhook, audit and ``gator``. Nothing here does I/O, reads a clock, or imports a web,
database or Kubernetes library: callers load the facts and record the decisions, and
hand in a ``DecisionCache`` for what decisions may remember between calls.

How policies combine:

* a **deny** policy's workload rules (data residency, CEL without ``node``) deny the
  workload; its node rules shrink the eligible set, and when nothing is left the workload
  is denied with, per policy and rule, how many nodes it excluded and where they are;
* a **warn** policy's findings become warnings (``admitted_with_warnings``) and never
  filter; once a node is chosen, only the findings on that node make the recorded
  outcome (``evaluate_placement``), the rest are about nodes the workload does not use;
  **dryrun** findings are recorded with action ``dryrun`` and change nothing;
* deny wins: one denial denies, whatever warn or dryrun policies say, and conflicting
  deny policies (compute in ``jp`` and compute in ``tw``) leave no eligible node;
* the baseline, independent of policies: only ``active`` nodes with enough free GPUs of
  the requested kind are eligible;
* ownership, independent of policies: a workload naming a dataset or model of another
  tenant, without a grant in force naming its tenant, is denied (rule ``ownership``).

The package, by concern, each module using only those before it:

* ``gpu``: which GPUs a workload can use (shared with placement);
* ``index``: ``NodeIndex``, the nodes numbered once and the nodes per attribute as the
  bits of one integer, so a requirement is a few ``|``/``&`` whatever the fleet's size;
* ``scope``: what CEL sees of nodes (profiles) and of a workload, and the fingerprints
  a condition's answers are remembered under;
* ``cache``: ``DecisionCache``, everything remembered, owned by the caller;
* ``checks``: each requirement as the nodes that satisfy it, and the workload rules;
* ``reasons``: the words of every reason;
* ``decisions``: selection, the per-workload plan, ``decide``, ``decide_with_mask``,
  ``evaluate_node`` and ``evaluate_placement`` (the verdict on the node chosen).
"""

from control_plane.policy.engine.cache import DecisionCache
from control_plane.policy.engine.decisions import (
    Placed,
    decide,
    decide_with_mask,
    evaluate_node,
    evaluate_placement,
    selected_policies,
)
from control_plane.policy.engine.gpu import (
    GpuRequest,
    gpu_matches,
    gpu_request,
    mig_enabled,
    mig_profile_key,
)
from control_plane.policy.engine.index import NodeIndex
from control_plane.policy.engine.scope import (
    DATASET_FIELDS,
    MODEL_FIELDS,
    NODE_FIELDS,
    WORKLOAD_FIELDS,
)

__all__ = [
    "DATASET_FIELDS",
    "MODEL_FIELDS",
    "NODE_FIELDS",
    "WORKLOAD_FIELDS",
    "DecisionCache",
    "GpuRequest",
    "NodeIndex",
    "Placed",
    "decide",
    "decide_with_mask",
    "evaluate_node",
    "evaluate_placement",
    "gpu_matches",
    "gpu_request",
    "mig_enabled",
    "mig_profile_key",
    "selected_policies",
]
