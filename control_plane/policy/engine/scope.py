"""What CEL sees: the fields of nodes and workloads handed to conditions, and fingerprints.

Handing values to CEL is the expensive part of a condition (about a microsecond per
string), so a condition is handed only what it reads (``conditions.projection``), and
its answer is remembered under a fingerprint of exactly those values. Node conditions
see node *profiles*: the nodes grouped by the fields the expression reads, built from
the index's per-attribute groups, so a condition runs once per distinct profile rather
than once per node. Workload conditions see the projected workload, datasets and models
of one decision, through ``CelScope``.
"""

import marshal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cel

from control_plane.domain.classification import Classification
from control_plane.policy import conditions
from control_plane.policy.documents import CelCondition, PolicySet
from control_plane.policy.engine.index import NodeIndex
from control_plane.policy.models import WorkloadView

# -- what CEL sees of nodes ------------------------------------------------------------

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

#: Nodes grouped by what a condition sees of them: (the node as it sees it, those nodes).
#: The dicts are handed to CEL and never changed.
Profiles = tuple[tuple[dict[str, Any], int], ...]


def _field_groups(index: NodeIndex, name: str) -> list[tuple[Any, int]]:
    """Every value the CEL-visible node field ``name`` takes, with the nodes that have it."""
    if name == "zone":
        return list(index.by_zone.items())
    if name == "zones":
        return [(list(index.ancestors(z)), m) for z, m in index.by_zone.items()]
    if name == "country":
        return list(index.by_country.items())
    if name == "origin_country":
        return list(index.by_origin.items())
    if name in ("status", "drift_status", "provenance_status"):
        table = {
            "status": index.by_status,
            "drift_status": index.by_drift,
            "provenance_status": index.by_provenance,
        }[name]
        return [(str(value), mask) for value, mask in table.items()]
    if name == "labels":
        return [(dict(items), mask) for items, mask in index.by_labels.items()]
    if name == "component_origins":
        return [(dict(items), mask) for items, mask in index.by_components.items()]
    if name == "gpu_models":
        return [(sorted({k[0] for k, _ in s}), m) for s, m in index.by_shape.items()]
    if name == "gpu_count":
        return [(sum(n for _, n in s), m) for s, m in index.by_shape.items()]
    return []


def node_profiles(index: NodeIndex, fields: conditions.Projection) -> Profiles:
    """The nodes of ``index`` grouped by what a condition reading ``fields`` sees.

    Built from the per-attribute groups, so the cost grows with the number of distinct
    values, not with the number of nodes.
    """
    names = list(NODE_FIELDS) if fields is None else [f for f in fields if f in NODE_FIELDS]
    current: list[tuple[dict[str, Any], int]] = [({}, index.all)] if index.nodes else []
    for name in names:
        keys = None if fields is None else fields[name]
        merged: dict[Any, tuple[Any, int]] = {}
        for value, mask in _field_groups(index, name):
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
    return tuple(current)


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
    "tenant": lambda a, _: a.tenant,
    "granted_to": lambda a, _: list(a.granted_to),
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


class CelScope:
    """What one decision's conditions read of the workload: fingerprints, and the CEL context.

    A condition's answer is remembered per tuple of fingerprints of exactly the values it
    reads (its slots), so a new cost center does not make a rule about GPU counts run
    again. The context is built only when some condition has to run, and then only with
    the variables that condition reads. One scope serves one decision in one thread.
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

    def __init__(self, workload: WorkloadView, index: NodeIndex, policy_set: PolicySet) -> None:
        self._workload = workload
        self._index = index
        self._policy_set = policy_set
        self._values: dict[str, Any] = {}
        self._slot_keys: list[bytes] | None = None
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
        keys = self._slot_keys
        if keys is None:
            keys = self._slot_keys = [self._slot_fingerprint(s) for s in self._policy_set.slots]
        return condition.key(keys)

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
