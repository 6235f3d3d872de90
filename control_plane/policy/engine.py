"""The residency policy engine: pure functions from (workload, nodes, policies) to decisions.

One engine, many callers (the API, the admission webhook, the re-evaluation sweep, the
what-if simulator, ``sovctl policy test``), as Gatekeeper has one policy client behind its
webhook, audit and ``gator``. Nothing here does I/O, reads a clock, or imports a web,
database or Kubernetes library: callers load the facts and record the decisions.

How policies combine:

* a **deny** policy's workload rules (data residency, CEL without ``node``) deny the
  workload; its node rules shrink the eligible set, and when nothing is left the workload
  is denied with, per policy and rule, how many nodes it excluded and where they are;
* a **warn** policy's findings become warnings (``admitted_with_warnings``) and never
  filter; **dryrun** findings are recorded with action ``dryrun`` and change nothing;
* deny wins: one denial denies, whatever warn or dryrun policies say, and conflicting
  deny policies (compute in ``jp`` and compute in ``tw``) leave no eligible node;
* the baseline, independent of policies: only ``active`` nodes with enough free GPUs of
  the requested kind are eligible.

How it stays fast. ``NodeIndex.build`` numbers the nodes once and keeps, for each zone
(with the zones it lies in), country, origin, component origin, status, provenance, drift
state, label set and GPU shape, the set of nodes that have it, as the bits of one Python
integer. A requirement is then a few dictionary look-ups and ``|``/``&`` on integers,
whatever the number of nodes, and each distinct policy's node filter is worked out once
per index. Node conditions in CEL run once per distinct node *profile* (the attributes
the expression reads), and the profiles come from the per-attribute groups, not from a
pass over the nodes. Handing values to CEL is the expensive part (about a microsecond per
string), so a decision hands over only what its conditions read, and a condition's answer
is remembered per distinct input (see ``CelCondition.answers``).
"""

import marshal
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress
from typing import Any

import cel

from control_plane.core.errors import NotFoundError
from control_plane.domain.classification import Classification
from control_plane.domain.decisions import DecisionOutcome, EnforcementAction, EnforcementPoint
from control_plane.domain.fleet import ComponentClass, DriftStatus, NodeStatus
from control_plane.policy import conditions
from control_plane.policy.documents import CelCondition, CompiledPolicy, PolicySet, either
from control_plane.policy.models import (
    DataAssetView,
    Decision,
    ModelView,
    NodeView,
    Reason,
    WorkloadView,
    ZoneView,
)

_BIT_FLAGS = bytes.maketrans(b"01", b"\x00\x01")
#: At most this many values (zones, origins, hostnames) are named in one reason.
_MAX_NAMED = 4
#: Remembered answers per condition or index before the memory is cleared and refilled.
_MEMO_LIMIT = 4096
_GIB = 1024**3
_COMPONENTS = tuple(c.value for c in ComponentClass)

#: A GPU as capacity sees it: model, memory in bytes (-1: unknown), MIG enabled.
_GpuKind = tuple[str, int, bool]
#: A node's free GPUs, grouped: (kind, how many), sorted. Fleets have few distinct shapes.
_Shape = tuple[tuple[_GpuKind, int], ...]
#: A node condition's answer over an index: nodes that pass, nodes where it broke, why.
_CelAnswer = tuple[int, int, str | None]


def _mask(positions: Sequence[int]) -> int:
    """The integer whose set bits are ``positions`` (ascending)."""
    if not positions:
        return 0
    bits = bytearray(positions[-1] // 8 + 1)
    for position in positions:
        bits[position >> 3] |= 1 << (position & 7)
    return int.from_bytes(bits, "little")


def _plural(count: int, noun: str = "node") -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    # Bounded: a long-lived index or policy set must not grow without limit.
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = value


@dataclass(frozen=True, slots=True)
class _NodeCheck:
    """One node-level requirement of one policy, evaluated over an index.

    ``allowed`` has a bit set for every node that satisfies it. ``breakdown`` names the
    index attribute that explains an exclusion (``zone``, ``origin``, ``component:gpu``,
    ``provenance``; empty for none).
    """

    rule: str
    allowed: int
    breakdown: str
    violation: str
    requirement: str


@dataclass(frozen=True, slots=True)
class _PolicyChecks:
    """A policy's node checks that do not depend on the workload, and their intersection."""

    checks: tuple[_NodeCheck, ...]
    allowed: int


class NodeIndex:
    """Nodes numbered once, with the sets of nodes per attribute as integer bitmasks.

    Build one per inventory snapshot with ``NodeIndex.build`` and reuse it for every
    decision taken on that snapshot: admission, the re-evaluation sweep and what-if all
    answer from the same index. It also remembers what it has worked out for particular
    policies, GPU requests and node conditions (bounded); that is safe because the index
    never changes after it is built. Sharing one index between threads is safe too: at
    worst two threads work out the same thing.
    """

    __slots__ = (
        "_ancestors",
        "_capacity_memo",
        "_cel_memo",
        "_dynamic_memo",
        "_plan_memo",
        "_policy_memo",
        "_positions",
        "_profile_memo",
        "all",
        "by_component",
        "by_components",
        "by_country",
        "by_drift",
        "by_labels",
        "by_origin",
        "by_provenance",
        "by_shape",
        "by_status",
        "by_zone",
        "ids",
        "nodes",
        "within_zone",
        "zones",
    )

    def __init__(self, nodes: tuple[NodeView, ...], zones: Mapping[str, ZoneView]) -> None:
        """Use ``NodeIndex.build``; this only sets up the empty containers."""
        self.nodes = nodes
        self.zones = zones
        self.ids: tuple[str, ...] = tuple(node.id for node in nodes)
        self.all = (1 << len(nodes)) - 1
        #: Nodes by their own zone (``None``: no zone).
        self.by_zone: dict[str | None, int] = {}
        #: Nodes by every zone they lie in, their own included.
        self.within_zone: dict[str, int] = {}
        self.by_country: dict[str | None, int] = {}
        self.by_origin: dict[str | None, int] = {}
        #: Nodes by (component class, its origin or ``None``).
        self.by_component: dict[tuple[str, str | None], int] = {}
        #: Nodes by their whole component-origin map (sorted items), for CEL profiles.
        self.by_components: dict[tuple[tuple[str, str], ...], int] = {}
        self.by_status: dict[str, int] = {}
        self.by_provenance: dict[str, int] = {}
        self.by_drift: dict[str, int] = {}
        #: Nodes by their whole label set (sorted items), for CEL profiles.
        self.by_labels: dict[tuple[tuple[str, str], ...], int] = {}
        self.by_shape: dict[_Shape, int] = {}
        self._positions: dict[str, int] = {}
        self._ancestors: dict[str | None, tuple[str, ...]] = {}
        self._capacity_memo: dict[tuple[int, str, int, bool], int] = {}
        self._policy_memo: dict[str, _PolicyChecks] = {}
        self._cel_memo: dict[str, _CelAnswer] = {}
        self._dynamic_memo: dict[tuple[str, str, str, Any], _NodeCheck] = {}
        self._profile_memo: dict[Any, list[tuple[dict[str, Any], int]]] = {}
        self._plan_memo: dict[tuple[str, Any], _Plan] = {}

    @classmethod
    def build(cls, nodes: Iterable[NodeView], zones: Mapping[str, ZoneView]) -> "NodeIndex":
        """Index ``nodes``; ``zones`` is the zone tree (slug to zone) they and policies use."""
        index = cls(tuple(nodes), zones)
        by_zone: dict[Any, list[int]] = {}
        by_origin: dict[Any, list[int]] = {}
        by_component: dict[Any, list[int]] = {}
        by_components: dict[Any, list[int]] = {}
        by_status: dict[Any, list[int]] = {}
        by_provenance: dict[Any, list[int]] = {}
        by_drift: dict[Any, list[int]] = {}
        by_labels: dict[Any, list[int]] = {}
        by_shape: dict[Any, list[int]] = {}
        shapes: dict[tuple[tuple[str, int | None, str | None], ...], _Shape] = {}
        positions = index._positions
        for position, node in enumerate(index.nodes):
            positions.setdefault(node.id, position)
            by_zone.setdefault(node.zone, []).append(position)
            by_origin.setdefault(node.origin_country, []).append(position)
            origins = node.component_origins
            for component in _COMPONENTS:
                by_component.setdefault((component, origins.get(component)), []).append(position)
            frozen = tuple(sorted((str(k), v) for k, v in origins.items()))
            by_components.setdefault(frozen, []).append(position)
            by_status.setdefault(node.status, []).append(position)
            by_provenance.setdefault(node.provenance_status, []).append(position)
            by_drift.setdefault(node.drift_status, []).append(position)
            by_labels.setdefault(tuple(sorted(node.labels.items())), []).append(position)
            raw = tuple((g.model, g.memory_total_bytes, g.mig_mode) for g in node.gpus)
            shape = shapes.get(raw)
            if shape is None:
                shape = shapes[raw] = _shape(raw)
            by_shape.setdefault(shape, []).append(position)
        index.by_zone = {k: _mask(v) for k, v in by_zone.items()}
        # Zones, their enclosing zones and countries come from the (few) distinct zones.
        for zone, mask in index.by_zone.items():
            for enclosing in index.ancestors(zone):
                index.within_zone[enclosing] = index.within_zone.get(enclosing, 0) | mask
            country = index.country_of(zone)
            index.by_country[country] = index.by_country.get(country, 0) | mask
        index.by_origin = {k: _mask(v) for k, v in by_origin.items()}
        index.by_component = {k: _mask(v) for k, v in by_component.items()}
        index.by_components = {k: _mask(v) for k, v in by_components.items()}
        index.by_status = {k: _mask(v) for k, v in by_status.items()}
        index.by_provenance = {k: _mask(v) for k, v in by_provenance.items()}
        index.by_drift = {k: _mask(v) for k, v in by_drift.items()}
        index.by_labels = {k: _mask(v) for k, v in by_labels.items()}
        index.by_shape = {k: _mask(v) for k, v in by_shape.items()}
        return index

    def __len__(self) -> int:
        """The number of nodes indexed."""
        return len(self.nodes)

    def ancestors(self, zone: str | None) -> tuple[str, ...]:
        """``zone`` and every zone it lies in, innermost first (just ``zone`` if unknown)."""
        cached = self._ancestors.get(zone)
        if cached is not None:
            return cached
        path: list[str] = []
        current = zone
        # The zone tree comes from the database, which refuses cycles; stop on one anyway.
        while current is not None and current not in path:
            path.append(current)
            found = self.zones.get(current)
            current = found.parent if found is not None else None
        self._ancestors[zone] = result = tuple(path)
        return result

    def country_of(self, zone: str | None) -> str | None:
        """The country of ``zone``; ``None`` for no zone or one missing from the tree."""
        found = self.zones.get(zone) if zone is not None else None
        return found.country if found is not None else None

    def position(self, node_id: str) -> int:
        """The node's bit number; ``NotFoundError`` when the index has no such node."""
        try:
            return self._positions[node_id]
        except KeyError:
            raise NotFoundError(f"node {node_id} is not in the node index") from None

    def node(self, node_id: str) -> NodeView:
        """The node with id ``node_id``."""
        return self.nodes[self.position(node_id)]

    def ids_of(self, mask: int) -> list[str]:
        """The ids of the nodes whose bits are set in ``mask``, in index order."""
        ids = self.ids
        # Two ways, fitted to measurements: few bits set, walk the set bits of each 64-bit
        # word; many, let C select over every node with bin() read backwards as flags.
        if mask.bit_count() * 14 < len(ids):
            words = (len(ids) + 63) // 64
            found = []
            for number, word in enumerate(
                struct.unpack(f"<{words}Q", mask.to_bytes(words * 8, "little"))
            ):
                base = number << 6
                while word:
                    lowest = word & -word
                    found.append(ids[base + lowest.bit_length() - 1])
                    word ^= lowest
            return found
        return list(compress(ids, bin(mask)[:1:-1].encode("ascii").translate(_BIT_FLAGS)))

    def active(self) -> int:
        """Nodes in status ``active``: the only ones placement may use."""
        return self.by_status.get(NodeStatus.ACTIVE, 0)

    def capacity(self, workload: WorkloadView) -> int:
        """Nodes with at least ``gpu_count`` GPUs of the kind the workload asks for.

        Counted over the GPUs in the node views: admission passes every GPU of a node and
        checks which are booked itself (``scheduling.fleet``); other callers may pass only
        the free ones.
        """
        if workload.gpu_count <= 0:
            return self.all
        count, wanted = workload.gpu_count, gpu_request(workload)
        key = (count, *wanted)
        cached = self._capacity_memo.get(key)
        if cached is not None:
            return cached
        result = 0
        for shape, mask in self.by_shape.items():
            fitting = sum(
                n
                for (gpu_model, gpu_memory, gpu_mig), n in shape
                if gpu_matches(gpu_model, None if gpu_memory < 0 else gpu_memory, gpu_mig, wanted)
            )
            if fitting >= count:
                result |= mask
        _remember(self._capacity_memo, key, result)
        return result

    def _field_groups(self, name: str) -> list[tuple[Any, int]]:
        """Every value the CEL-visible node field ``name`` takes, with the nodes that have it."""
        if name == "zone":
            return list(self.by_zone.items())
        if name == "zones":
            return [(list(self.ancestors(z)), m) for z, m in self.by_zone.items()]
        if name == "country":
            return list(self.by_country.items())
        if name == "origin_country":
            return list(self.by_origin.items())
        if name in ("status", "drift_status", "provenance_status"):
            table = {
                "status": self.by_status,
                "drift_status": self.by_drift,
                "provenance_status": self.by_provenance,
            }[name]
            return [(str(value), mask) for value, mask in table.items()]
        if name == "labels":
            return [(dict(items), mask) for items, mask in self.by_labels.items()]
        if name == "component_origins":
            return [(dict(items), mask) for items, mask in self.by_components.items()]
        if name == "gpu_models":
            return [(sorted({k[0] for k, _ in s}), m) for s, m in self.by_shape.items()]
        if name == "gpu_count":
            return [(sum(n for _, n in s), m) for s, m in self.by_shape.items()]
        return []

    def profiles(self, fields: conditions.Projection) -> list[tuple[dict[str, Any], int]]:
        """Nodes grouped by what a condition reading ``fields`` sees: (value, nodes) pairs.

        Built from the per-attribute groups, so the cost grows with the number of
        distinct values, not with the number of nodes.
        """
        memo_key = conditions.freeze(fields)
        cached = self._profile_memo.get(memo_key)
        if cached is not None:
            return cached
        names = list(NODE_FIELDS) if fields is None else [f for f in fields if f in NODE_FIELDS]
        current: list[tuple[dict[str, Any], int]] = [({}, self.all)] if self.nodes else []
        for name in names:
            keys = None if fields is None else fields[name]
            merged: dict[Any, tuple[Any, int]] = {}
            for value, mask in self._field_groups(name):
                if keys is not None and isinstance(value, Mapping):
                    value = {k: value[k] for k in keys if k in value}
                frozen = conditions.freeze(value)
                held = merged.get(frozen)
                merged[frozen] = (value, mask | held[1]) if held is not None else (value, mask)
            current = [
                ({**seen, name: value}, both)
                for seen, seen_mask in current
                for value, mask in merged.values()
                if (both := seen_mask & mask)
            ]
        _remember(self._profile_memo, memo_key, current)
        return current


#: The fields of ``node`` that CEL sees (docs/policy.md). No id, hostname or GPU UUIDs:
#: CEL sees what makes nodes alike, so that alike nodes share one evaluation.
NODE_FIELDS = (
    "zone",
    "zones",
    "country",
    "status",
    "drift_status",
    "origin_country",
    "component_origins",
    "provenance_status",
    "labels",
    "gpu_models",
    "gpu_count",
)


def _shape(raw: tuple[tuple[str, int | None, str | None], ...]) -> _Shape:
    kinds = Counter(
        (model, memory if memory is not None else -1, mig_enabled(mig_mode))
        for model, memory, mig_mode in raw
    )
    return tuple(sorted(kinds.items()))


# -- which GPUs a workload can use (shared with placement) ----------------------------

#: What a workload asks of each GPU: a model substring (lower case), a minimum memory in
#: bytes (0 for none; unknown memory never qualifies) and whether MIG must be enabled.
GpuRequest = tuple[str, int, bool]


def gpu_request(workload: WorkloadView) -> GpuRequest:
    """The kind of GPU ``workload`` asks for, as a hashable key."""
    return (
        (workload.gpu_model or "").lower(),
        workload.min_gpu_memory_bytes or 0,
        workload.mig_profile is not None,
    )


def mig_enabled(mig_mode: str | None) -> bool:
    """Whether a GPU's reported MIG mode (``Enabled``, ``Disabled``, ``N/A``...) is on."""
    return (mig_mode or "").strip().lower() == "enabled"


def gpu_matches(model: str, memory: int | None, mig: bool, wanted: GpuRequest) -> bool:
    """Whether a GPU (model, memory in bytes or None, MIG on) is of the kind ``wanted``.

    The model contains the wanted model ignoring case, the memory is known and at least
    the minimum, and MIG is enabled exactly when a MIG profile is asked for. Capacity here
    and placement (``scheduling.placement``) both count GPUs with this one test.
    """
    model_part, minimum, mig_wanted = wanted
    return (
        model_part in model.lower()
        and memory is not None
        and memory >= minimum
        and mig == mig_wanted
    )


# -- what CEL sees of a workload -------------------------------------------------------


def _countries(zones: Sequence[str], index: NodeIndex) -> list[str]:
    return sorted({c for c in map(index.country_of, zones) if c is not None})


def _classification(workload: WorkloadView, _index: NodeIndex) -> str | None:
    highest = Classification.highest(
        [Classification(d.classification) for d in workload.datasets]
        + [Classification(m.classification) for m in workload.models]
    )
    return None if highest is None else highest.value


def _output(workload: WorkloadView, index: NodeIndex) -> dict[str, Any] | None:
    output = workload.output
    if output is None:
        return None
    return {"name": output.name, "zone": output.zone, "country": index.country_of(output.zone)}


_Getter = Callable[[Any, NodeIndex], Any]
#: What CEL sees of ``workload``, field by field (docs/policy.md).
WORKLOAD_FIELDS: Mapping[str, _Getter] = {
    "tenant": lambda w, _: w.tenant,
    "labels": lambda w, _: dict(w.labels),
    "gpu_count": lambda w, _: w.gpu_count,
    "gpu_model": lambda w, _: w.gpu_model,
    "min_gpu_memory_bytes": lambda w, _: w.min_gpu_memory_bytes,
    "mig_profile": lambda w, _: w.mig_profile,
    "classification": _classification,
    "output": _output,
}
_ASSET_FIELDS: Mapping[str, _Getter] = {
    "name": lambda a, _: a.name,
    "classification": lambda a, _: str(a.classification),
    "storage_zones": lambda a, _: list(a.storage_zones),
    "storage_countries": lambda a, index: _countries(a.storage_zones, index),
    "labels": lambda a, _: dict(a.labels),
}
#: What CEL sees of each of ``datasets``.
DATASET_FIELDS: Mapping[str, _Getter] = _ASSET_FIELDS
#: What CEL sees of each of ``models``.
MODEL_FIELDS: Mapping[str, _Getter] = {
    **_ASSET_FIELDS,
    "supplier": lambda m, _: m.supplier,
    "origin_country": lambda m, _: m.origin_country,
    "license": lambda m, _: m.license,
}


def _visible(
    table: Mapping[str, _Getter], fields: conditions.Projection, value: Any, index: NodeIndex
) -> dict[str, Any]:
    """The part of ``value`` CEL is to see: the fields (and keys) ``fields`` names."""
    if fields is None:
        return {name: get(value, index) for name, get in table.items()}
    seen: dict[str, Any] = {}
    for name, keys in fields.items():
        get = table.get(name)
        if get is None:
            continue  # an unknown field stays missing, so the condition fails as it should
        field = get(value, index)
        # The getters return plain dicts for maps; ``type() is`` is cheaper than an ABC check.
        if keys is not None and type(field) is dict:
            field = {k: field[k] for k in keys if k in field}
        seen[name] = field
    return seen


def _fingerprint(values: Any) -> bytes:
    """Bytes that are equal only for equal values: the key answers are remembered under.

    ``marshal`` writes plain values (str, int, float, bool, None, list, dict) with their
    types, so equal bytes mean equal values, at a third of the cost of ``repr``. It refuses
    subclasses such as a ``StrEnum`` a caller left in a label; ``repr`` covers those. The
    same values in another order give other bytes, which only costs a missed answer.
    """
    try:
        return b"m" + marshal.dumps(values)
    except ValueError:
        return b"r" + repr(values).encode()


#: The fingerprint of a value that is not there (a missing field or map key).
_ABSENT = b"-"


class _CelScope:
    """What one decision's conditions read of the workload: fingerprints, and the CEL context.

    A condition's answer is remembered per tuple of fingerprints of exactly the values it
    reads (its slots), so a new cost center does not make a rule about GPU counts run
    again. The context is built only when some condition has to run, and then only with
    the variables that condition reads.
    """

    __slots__ = (
        "_added",
        "_context",
        "_index",
        "_policy_set",
        "_slot_keys",
        "_values",
        "_workload",
    )

    def __init__(
        self,
        workload: WorkloadView,
        index: NodeIndex,
        policy_set: PolicySet,
        slot_keys: list[bytes] | None = None,
    ) -> None:
        self._workload = workload
        self._index = index
        self._policy_set = policy_set
        self._values: dict[str, Any] = {}
        self._slot_keys = slot_keys
        self._context: cel.Context | None = None
        self._added: set[str] = set()

    def value(self, variable: str) -> Any:
        """``workload``, ``datasets`` or ``models`` as far as the set's conditions read them."""
        found = self._values.get(variable)
        if found is None:
            workload, index, policy_set = self._workload, self._index, self._policy_set
            if variable == "workload":
                found = _visible(WORKLOAD_FIELDS, policy_set.workload_fields, workload, index)
            elif variable == "datasets":
                fields = policy_set.dataset_fields
                found = [_visible(DATASET_FIELDS, fields, d, index) for d in workload.datasets]
            else:
                fields = policy_set.model_fields
                found = [_visible(MODEL_FIELDS, fields, m, index) for m in workload.models]
            self._values[variable] = found
        return found

    def key(self, condition: CelCondition) -> Any:
        """The fingerprints of what ``condition`` reads: the key its answers are kept under."""
        return condition.key(self.slot_keys())

    def slot_keys(self) -> list[bytes]:
        """The fingerprint of every value the set's conditions read (``PolicySet.slots``)."""
        keys = self._slot_keys
        if keys is None:
            keys = self._slot_keys = [self._slot_fingerprint(s) for s in self._policy_set.slots]
        return keys

    def _slot_fingerprint(self, slot: tuple[str, str | None, str | None]) -> bytes:
        variable, name, key = slot
        value = self.value(variable)
        if name is not None:
            if name not in value:
                return _ABSENT
            value = value[name]
            if key is not None:
                if type(value) is not dict:
                    return b"n" + _fingerprint(value)
                if key not in value:
                    return _ABSENT
                value = value[key]
        # Strings and integers are most of what is read; they need no serializer.
        kind = type(value)
        if kind is str:
            return b"s" + str.encode(value)
        if kind is int:
            return b"i%d" % value
        return _fingerprint(value)

    def context(self, condition: CelCondition) -> cel.Context:
        """The decision's CEL context, holding at least the variables ``condition`` reads."""
        context = self._context
        if context is None:
            context = self._context = cel.Context()
        for variable, reads in (
            ("workload", condition.workload_fields != {}),
            ("datasets", condition.reads_datasets),
            ("models", condition.reads_models),
        ):
            if reads and variable not in self._added:
                context.add_variable(variable, self.value(variable))
                self._added.add(variable)
        return context


def _run_workload_condition(condition: CelCondition, scope: _CelScope) -> conditions.Verdict:
    key = scope.key(condition)
    verdict = condition.answers.get(key)
    if verdict is None:
        verdict = conditions.run(condition.program, scope.context(condition))
        _remember(condition.answers, key, verdict)
    return verdict


# -- node checks -----------------------------------------------------------------------


def _union(table: Mapping[Any, int], keys: Iterable[Any]) -> int:
    result = 0
    for key in keys:
        result |= table.get(key, 0)
    return result


def _evaluate_profiles(
    index: NodeIndex, condition: CelCondition, context: cel.Context
) -> _CelAnswer:
    allowed = broken = 0
    first_error: str | None = None
    for value, mask in index.profiles(condition.node_fields):
        context.add_variable("node", value)
        verdict = conditions.run(condition.program, context)
        if verdict.passed:
            allowed |= mask
        elif verdict.error is not None:
            broken |= mask
            first_error = first_error or verdict.error
    return allowed, broken, first_error


def _node_check(condition: CelCondition, answer: _CelAnswer) -> _NodeCheck:
    allowed, broken, first_error = answer
    requirement = condition.requirement
    if broken:
        requirement += f"; could not evaluate on {_plural(broken.bit_count())}: {first_error}"
    return _NodeCheck(
        condition.rule, allowed, "", f"nodes failing cel {condition.name}", requirement
    )


def _static_cel_check(index: NodeIndex, condition: CelCondition) -> _NodeCheck:
    """A node condition that reads only ``node``: one answer per index and expression."""
    answer = index._cel_memo.get(condition.expression)
    if answer is None:
        answer = _evaluate_profiles(index, condition, cel.Context())
        _remember(index._cel_memo, condition.expression, answer)
    return _node_check(condition, answer)


def _dynamic_cel_check(index: NodeIndex, condition: CelCondition, scope: _CelScope) -> _NodeCheck:
    """A node condition that also reads the workload: one answer per distinct input."""
    memo_key = (condition.name, condition.expression, condition.message, scope.key(condition))
    check = index._dynamic_memo.get(memo_key)
    if check is None:
        # The decision's shared context: ``node`` set in it is never read by a workload
        # condition, since a condition that reads ``node`` is a node condition.
        answer = _evaluate_profiles(index, condition, scope.context(condition))
        check = _node_check(condition, answer)
        _remember(index._dynamic_memo, memo_key, check)
    return check


def _policy_checks(index: NodeIndex, policy: CompiledPolicy) -> _PolicyChecks:
    """The policy's workload-independent node checks over ``index``, computed once per index."""
    cached = index._policy_memo.get(policy.node_key)
    if cached is not None:
        return cached
    checks: list[_NodeCheck] = []
    if policy.compute_zones or policy.compute_countries:
        allowed = _union(index.within_zone, policy.compute_zones) | _union(
            index.by_country, policy.compute_countries
        )
        requirement = f"compute must be in {policy.compute_places}"
        checks.append(_NodeCheck("compute_location", allowed, "zone", "compute in", requirement))
    if policy.server_origin_countries:
        checks.append(
            _NodeCheck(
                "server_origin_countries",
                _union(index.by_origin, policy.server_origin_countries),
                "origin",
                "servers of origin",
                f"server origin must be {either(sorted(policy.server_origin_countries))}",
            )
        )
    for component, countries in sorted(policy.component_origin_countries.items()):
        checks.append(
            _NodeCheck(
                f"component_origin_countries.{component}",
                _union(index.by_component, ((component, c) for c in countries)),
                f"component:{component}",
                f"{component} components of origin",
                f"{component} origin must be {either(sorted(countries))}",
            )
        )
    if policy.allowed_provenance is not None:
        wanted = "verified" if len(policy.allowed_provenance) == 1 else "declared or verified"
        checks.append(
            _NodeCheck(
                "min_provenance_status",
                _union(index.by_provenance, policy.allowed_provenance),
                "provenance",
                "nodes with provenance",
                f"provenance must be {wanted}",
            )
        )
    if policy.exclude_quarantined:
        unhealthy = index.by_status.get(NodeStatus.QUARANTINED, 0) | index.by_drift.get(
            DriftStatus.DRIFTED, 0
        )
        checks.append(
            _NodeCheck(
                "exclude_quarantined",
                index.all & ~unhealthy,
                "",
                "quarantined or drifted nodes",
                "quarantined and drifted nodes are excluded",
            )
        )
    checks += [_static_cel_check(index, c) for c in policy.node_cel if not c.reads_workload_data]
    allowed = index.all
    for check in checks:
        allowed &= check.allowed
    result = _PolicyChecks(tuple(checks), allowed)
    _remember(index._policy_memo, policy.node_key, result)
    return result


# -- reasons ---------------------------------------------------------------------------

_DENY = EnforcementAction.DENY
_VERB = {
    EnforcementAction.DENY: "forbids",
    EnforcementAction.WARN: "warns against",
    EnforcementAction.DRYRUN: "would forbid",
}
_PREFIX = {
    EnforcementAction.DENY: "",
    EnforcementAction.WARN: "",
    EnforcementAction.DRYRUN: "dry run: ",
}


def _hosts(index: NodeIndex, mask: int) -> str:
    """The hostnames in ``mask`` when there are few enough to read, else nothing."""
    if mask.bit_count() > _MAX_NAMED:
        return ""
    return ": " + ", ".join(index.node(node_id).hostname for node_id in index.ids_of(mask))


def _named_values(index: NodeIndex, breakdown: str, excluded: int) -> str:
    """Where the excluded nodes are (or where they come from), with counts when several."""
    table: Mapping[Any, int]
    if breakdown == "zone":
        table, unnamed = index.by_zone, "no zone"
    elif breakdown == "origin":
        table, unnamed = index.by_origin, "unknown origin"
    elif breakdown == "provenance":
        table, unnamed = index.by_provenance, "unknown"
    elif breakdown.startswith("component:"):
        component = breakdown.removeprefix("component:")
        table = {c: m for (k, c), m in index.by_component.items() if k == component}
        unnamed = "unknown origin"
    else:
        return ""
    counts = sorted(
        (
            (str(value) if value is not None else unnamed, (mask & excluded).bit_count())
            for value, mask in table.items()
            if mask & excluded
        ),
        key=lambda item: (-item[1], item[0]),
    )
    if len(counts) == 1:
        return f" {counts[0][0]}"
    named = ", ".join(f"{value} ({count})" for value, count in counts[:_MAX_NAMED])
    rest = len(counts) - _MAX_NAMED
    return f" {named}" + (f" and {rest} more" if rest > 0 else "")


def _data_context(policy: CompiledPolicy, workload: WorkloadView) -> str:
    """Which dataset brings a policy into play, for compute reasons: where it is stored."""
    if not workload.datasets or not (
        policy.data_residency or policy.classifications or policy.dataset_labels
    ):
        return ""
    chosen = next(
        (
            d
            for d in workload.datasets
            if (not policy.classifications or d.classification in policy.classifications)
            and all(d.labels.get(k) == v for k, v in policy.dataset_labels)
        ),
        workload.datasets[0],
    )
    where = ", ".join(chosen.storage_zones) or "no recorded zone"
    return f"dataset {chosen.name} is stored in {where}; "


def _node_reason(
    index: NodeIndex,
    policy: CompiledPolicy,
    check: _NodeCheck,
    workload: WorkloadView,
    excluded: int,
    scope: str,
) -> Reason:
    context = _data_context(policy, workload) if check.rule == "compute_location" else ""
    values = _named_values(index, check.breakdown, excluded)
    message = (
        f"{_PREFIX[policy.action]}{context}policy {policy.name} {_VERB[policy.action]} "
        f"{check.violation}{values} ({scope}; {check.requirement})"
    )
    return Reason(policy.name, check.rule, policy.action, message)


def _inside(zone: str | None, policy: CompiledPolicy, index: NodeIndex) -> bool:
    if zone is None:
        return False
    if not policy.compute_zones.isdisjoint(index.ancestors(zone)):
        return True
    return index.country_of(zone) in policy.compute_countries


def _residency_subjects(
    policy: CompiledPolicy, workload: WorkloadView, index: NodeIndex
) -> list[str]:
    """Each dataset, model and output outside the policy's places, said in words."""
    subjects: list[str] = []
    assets: list[tuple[str, DataAssetView | ModelView]] = [
        *(("dataset", d) for d in workload.datasets),
        *(("model", m) for m in workload.models),
    ]
    for kind, asset in assets:
        if not asset.storage_zones:
            subjects.append(f"{kind} {asset.name} has no recorded storage zone")
            continue
        outside = [z for z in asset.storage_zones if not _inside(z, policy, index)]
        if outside:
            subjects.append(f"{kind} {asset.name} is stored in {', '.join(outside)}")
    output = workload.output
    if output is not None and not _inside(output.zone, policy, index):
        where = f"is in {output.zone}" if output.zone else "has no recorded zone"
        subjects.append(f"output destination {output.name} {where}")
    return subjects


def _workload_findings(
    policy: CompiledPolicy, workload: WorkloadView, index: NodeIndex, scope: _CelScope
) -> list[Reason]:
    """What the policy finds wrong with the workload itself, whatever node it runs on."""
    found: list[Reason] = []
    action = policy.action
    if policy.data_residency:
        found += [
            Reason(
                policy.name,
                "data_residency",
                action,
                f"{_PREFIX[action]}{subject}; policy {policy.name} {_VERB[action]} data and"
                f" weights outside {policy.compute_places}",
            )
            for subject in _residency_subjects(policy, workload, index)
        ]
    for condition in policy.workload_cel:
        verdict = _run_workload_condition(condition, scope)
        if not verdict.passed:
            broke = f"could not evaluate: {verdict.error}; " if verdict.error else ""
            found.append(
                Reason(
                    policy.name,
                    condition.rule,
                    action,
                    f"{_PREFIX[action]}policy {policy.name} {_VERB[action]} workloads failing"
                    f" cel {condition.name} ({broke}{condition.requirement})",
                )
            )
    return found


def _gpu_request(workload: WorkloadView) -> str:
    qualifiers = []
    if workload.gpu_model:
        qualifiers.append(f"model {workload.gpu_model}")
    if workload.min_gpu_memory_bytes:
        qualifiers.append(f"at least {workload.min_gpu_memory_bytes / _GIB:g} GiB")
    qualifiers.append(
        f"MIG enabled for {workload.mig_profile}" if workload.mig_profile else "MIG off"
    )
    return f"{_plural(workload.gpu_count, 'GPU')} ({', '.join(qualifiers)})"


def _baseline_reasons(index: NodeIndex, workload: WorkloadView) -> list[Reason]:
    """Why nodes were out before any policy: none at all, not active, or not enough GPUs."""
    deny = EnforcementAction.DENY
    if not index.nodes:
        return [Reason(None, "nodes", deny, "no nodes to place on: the node set is empty")]
    reasons: list[Reason] = []
    active = index.active()
    inactive = index.all & ~active
    if inactive:
        states = sorted(
            f"{status}: {(mask & inactive).bit_count()}"
            for status, mask in index.by_status.items()
            if mask & inactive
        )
        message = f"{_plural(inactive.bit_count())} excluded: not active ({', '.join(states)})"
        reasons.append(Reason(None, "node_status", deny, message))
    lacking = active & ~index.capacity(workload)
    if lacking:
        message = f"{_plural(lacking.bit_count(), 'active node')} lack {_gpu_request(workload)}"
        reasons.append(Reason(None, "capacity", deny, message))
    return reasons


def _carries(
    label_sets: list[frozenset[tuple[str, str]]], wanted: frozenset[tuple[str, str]]
) -> bool:
    """Whether one of ``label_sets`` has every label in ``wanted``."""
    # A plain loop: any() over a generator costs more than the comparison, per policy.
    for labels in label_sets:  # noqa: SIM110
        if wanted <= labels:
            return True
    return False


def selected_policies(workload: WorkloadView, policy_set: PolicySet) -> list[CompiledPolicy]:
    """The policies whose selectors match ``workload``, in evaluation order (by name)."""
    classes: set[str] | None = None
    dataset_labels: list[frozenset[tuple[str, str]]] | None = None
    model_labels: list[frozenset[tuple[str, str]]] | None = None
    selected = []
    for policy in policy_set.policies:
        if not policy.selects_all:
            if policy.tenants and workload.tenant not in policy.tenants:
                continue
            if policy.classifications:
                if classes is None:
                    classes = {str(d.classification) for d in workload.datasets}
                    classes.update(str(m.classification) for m in workload.models)
                if policy.classifications.isdisjoint(classes):
                    continue
            if policy.dataset_labels:
                if dataset_labels is None:
                    dataset_labels = [frozenset(d.labels.items()) for d in workload.datasets]
                if not _carries(dataset_labels, policy.dataset_labels):
                    continue
            if policy.model_labels:
                if model_labels is None:
                    model_labels = [frozenset(m.labels.items()) for m in workload.models]
                if not _carries(model_labels, policy.model_labels):
                    continue
        selected.append(policy)
    return selected


# -- what a decision works out from the workload alone ------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a decision works out from the workload and the policy set, reading no node.

    The selected policies, each with what it finds wrong with the workload itself (data
    residency, workload CEL), and the fingerprints CEL node conditions that also read the
    workload look their answers up by. Kept per index (whose zone tree the residency
    rules read) under the set's content hash and the workload's content (``_content``),
    so a workload seen before skips selection, residency and fingerprinting; the node
    filters still run on every decision.
    """

    policies: tuple[tuple[CompiledPolicy, tuple[Reason, ...]], ...]
    slot_keys: list[bytes] | None


def _asset_content(asset: DataAssetView) -> tuple[Any, ...]:
    return (asset.name, asset.classification, tuple(asset.storage_zones), *asset.labels.items())


def _model_content(model: ModelView) -> tuple[Any, ...]:
    return (
        model.name,
        model.classification,
        model.supplier,
        model.origin_country,
        model.license,
        tuple(model.storage_zones),
        *model.labels.items(),
    )


def _content(workload: WorkloadView) -> tuple[Any, ...]:
    """Every field of ``workload`` as one hashable value: equal only for equal workloads.

    Label order is kept, so the same labels in another order only miss the memory.
    """
    output = workload.output
    return (
        workload.tenant,
        tuple(map(_asset_content, workload.datasets)),
        tuple(map(_model_content, workload.models)),
        None if output is None else (output.name, output.zone),
        workload.gpu_count,
        workload.gpu_model,
        workload.min_gpu_memory_bytes,
        workload.mig_profile,
        *workload.labels.items(),
    )


def _plan(
    workload: WorkloadView, index: NodeIndex, policy_set: PolicySet
) -> tuple[_Plan, _CelScope]:
    """The decision's plan, remembered per workload content, and a CEL scope for it."""
    key: tuple[str, Any] | None = (policy_set.content_hash, _content(workload))
    try:
        plan = index._plan_memo.get(key)  # type: ignore[arg-type]
    except TypeError:  # a label value that cannot be hashed: work it out every time
        plan, key = None, None
    if plan is not None:
        return plan, _CelScope(workload, index, policy_set, plan.slot_keys)
    scope = _CelScope(workload, index, policy_set)
    selected = selected_policies(workload, policy_set)
    plan = _Plan(
        tuple(
            (
                policy,
                tuple(_workload_findings(policy, workload, index, scope))
                if policy.judges_workload
                else (),
            )
            for policy in selected
        ),
        scope.slot_keys() if any(p.workload_node_cel for p in selected) else None,
    )
    if key is not None:
        _remember(index._plan_memo, key, plan)
    return plan, scope


def _outcome(denied: bool, reasons: Sequence[Reason]) -> DecisionOutcome:
    if denied:
        return DecisionOutcome.DENIED
    if any(reason.action is EnforcementAction.WARN for reason in reasons):
        return DecisionOutcome.ADMITTED_WITH_WARNINGS
    return DecisionOutcome.ADMITTED


def decide(
    workload: WorkloadView,
    index: NodeIndex,
    policy_set: PolicySet,
    *,
    point: EnforcementPoint,
) -> Decision:
    """Decide whether ``workload`` may run, and on which of the indexed nodes.

    See ``decide_with_mask``, which this calls, for the rules.
    """
    return decide_with_mask(workload, index, policy_set, point=point)[0]


def decide_with_mask(
    workload: WorkloadView,
    index: NodeIndex,
    policy_set: PolicySet,
    *,
    point: EnforcementPoint,
) -> tuple[Decision, int]:
    """Decide whether ``workload`` may run, and on which of the indexed nodes.

    Denied when a deny policy's workload rule fails, or when no node is left after the
    baseline (active, enough free GPUs) and every deny policy's node rules; then each
    policy and rule that excluded nodes says how many and where. Warn and dryrun policies
    add reasons but never change which nodes are eligible; their node rules are reported
    against the eligible nodes (how many of them they would have excluded).

    Also returns the eligible nodes as a bitmask over ``index`` (bit ``i`` is
    ``index.nodes[i]``; 0 when denied), for callers that keep working with the index, such
    as placement, without turning thousands of ids back into positions.
    """
    plan, scope = _plan(workload, index, policy_set)
    candidates = index.active() & index.capacity(workload)
    eligible = candidates
    denials: list[Reason] = []
    deny_checks: list[tuple[CompiledPolicy, Sequence[_NodeCheck]]] = []
    soft: list[tuple[CompiledPolicy, Sequence[Reason], Sequence[_NodeCheck]]] = []
    policy_memo = index._policy_memo
    for policy, found in plan.policies:
        static = policy_memo.get(policy.node_key) or _policy_checks(index, policy)
        checks: Sequence[_NodeCheck] = static.checks
        if policy.action is _DENY:
            if found:
                denials += found
            eligible &= static.allowed
            if policy.workload_node_cel:
                dynamic = [_dynamic_cel_check(index, c, scope) for c in policy.workload_node_cel]
                for check in dynamic:
                    eligible &= check.allowed
                checks = (*checks, *dynamic)
            deny_checks.append((policy, checks))
        else:
            if policy.workload_node_cel:
                checks = (
                    *checks,
                    *(_dynamic_cel_check(index, c, scope) for c in policy.workload_node_cel),
                )
            soft.append((policy, found, checks))

    reasons = denials
    denied = bool(denials) or not eligible
    if not eligible:
        reasons += _baseline_reasons(index, workload)
        for policy, checks in deny_checks:
            for check in checks:
                excluded = candidates & ~check.allowed
                if excluded:
                    scope_text = (
                        f"{_plural(excluded.bit_count())} excluded{_hosts(index, excluded)}"
                    )
                    reasons.append(
                        _node_reason(index, policy, check, workload, excluded, scope_text)
                    )
    total = 0 if denied else eligible.bit_count()
    for policy, findings, checks in soft:
        reasons += findings
        for check in checks if total else ():
            violating = eligible & ~check.allowed
            if violating:
                scope_text = (
                    f"{violating.bit_count()} of {_plural(total, 'eligible node')}"
                    f"{_hosts(index, violating)}"
                )
                reasons.append(_node_reason(index, policy, check, workload, violating, scope_text))
    return Decision(
        outcome=_outcome(denied, reasons),
        reasons=reasons,
        eligible_node_ids=[] if denied else index.ids_of(eligible),
        policy_set_version=policy_set.version,
        policy_set_hash=policy_set.content_hash,
        point=point,
    ), (0 if denied else eligible)


def evaluate_node(
    workload: WorkloadView,
    node_id: str,
    index: NodeIndex,
    policy_set: PolicySet,
    *,
    point: EnforcementPoint = EnforcementPoint.SWEEP,
) -> Decision:
    """Whether a workload already placed on ``node_id`` is still compliant, and why not.

    For the re-evaluation sweep: the same policies and rules as ``decide``, applied to one
    node of the index, without the placement baseline (the workload already holds its
    GPUs, and a status such as ``maintenance`` is not itself a policy violation;
    ``exclude_quarantined`` still is). ``denied`` means the placement breaks a deny policy
    now; ``eligible_node_ids`` is ``[node_id]`` otherwise.
    """
    position = index.position(node_id)
    bit = 1 << position
    hostname = index.nodes[position].hostname
    plan, scope = _plan(workload, index, policy_set)
    reasons: list[Reason] = []
    for policy, found in plan.policies:
        reasons += found
        checks = [
            *_policy_checks(index, policy).checks,
            *(_dynamic_cel_check(index, c, scope) for c in policy.workload_node_cel),
        ]
        reasons += [
            _node_reason(index, policy, check, workload, bit, f"node {hostname}")
            for check in checks
            if not check.allowed & bit
        ]
    denied = any(reason.action is EnforcementAction.DENY for reason in reasons)
    return Decision(
        outcome=_outcome(denied, reasons),
        reasons=reasons,
        eligible_node_ids=[] if denied else [node_id],
        policy_set_version=policy_set.version,
        policy_set_hash=policy_set.content_hash,
        point=point,
    )
