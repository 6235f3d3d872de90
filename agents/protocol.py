"""The agent ↔ control plane wire protocol, written once: what registration and heartbeats carry.

These dataclasses are the bodies of ``POST /v1/agents/register`` (``NodeRegister``)
and ``POST /v1/nodes/{node_id}/heartbeat`` (``Heartbeat``), down to each GPU's facts and
readings. The backends produce ``GpuInventory`` and ``GpuTelemetry`` directly, the agent
assembles the rest, and ``to_wire`` turns any of them into the JSON object sent. The
module uses the standard library only, so the agent installs without the control plane's
dependencies.

The control plane validates the same shapes with pydantic models
(``control_plane/inventory/models.py``), which add limits, NUL refusal and ISO country
codes. A contract test (``tests/unit/test_agent_contract.py``) keeps the two field for
field, and checks real bodies built by the agent against the server's models.

``inventory_hash`` is the one digest of an inventory: the agent uses it to decide whether
a heartbeat must carry the inventory, the control plane to decide whether a reported one
changed anything.
"""

import dataclasses
import functools
import hashlib
import json
import operator
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# -- what the agent reports -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MigDevice:
    """One MIG device of a GPU: a compute instance inside a GPU instance.

    What a workload is actually given on a MIG-enabled GPU, so placement and evidence need
    its profile and size. ``None`` where the backend cannot read a field: ``nvidia-smi -q
    -x`` gives no profile and no UUID.
    """

    index: int
    uuid: str | None = None  # "MIG-..."
    profile: str | None = None  # e.g. "1g.10gb"
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    memory_total_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class GpuInventory:
    """One GPU's static facts, read once at start, and the agent's verdict on its health.

    A field the board or backend does not report is ``None``, never an exception. The
    backends leave ``health`` as ``"unknown"``; the agent sets it from telemetry (``"ok"``,
    or ``"ecc-errors"`` while the volatile uncorrected ECC count is non-zero).
    """

    uuid: str
    index: int  # NVML's index: the order the driver lists the GPUs in
    model: str
    serial: str | None = None
    board_part_number: str | None = None
    vbios_version: str | None = None
    pci_bus_id: str | None = None
    memory_total_bytes: int | None = None
    mig_mode: str | None = None  # "enabled" | "disabled"; None where MIG is unsupported
    mig_devices: tuple[MigDevice, ...] = ()
    driver_version: str | None = None
    cuda_version: str | None = None  # e.g. "13.0"
    ecc_mode: str | None = None  # "enabled" | "disabled"; None where unsupported
    compute_capability: str | None = None  # e.g. "9.0"
    power_limit_w: float | None = None
    confidential_compute: str | None = None  # "on" | "off"; None where not exposed
    health: str = "unknown"


@dataclass(frozen=True, slots=True)
class GpuTelemetry:
    """One sweep's readings of a GPU; ``None`` where the board does not report it."""

    uuid: str
    utilization_pct: float | None = None
    memory_used_bytes: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    ecc_uncorrected_errors: int | None = None
    process_count: int | None = None
    fan_speed_pct: float | None = None


@dataclass(frozen=True, slots=True)
class HostFacts:
    """Who the host is and what it is, as the filesystem tells (DMI is absent on many VMs)."""

    hostname: str
    machine_id: str  # /etc/machine-id, DMI product_uuid, or an id derived once
    agent_version: str | None = None
    os_name: str | None = None
    kernel_version: str | None = None
    cpu_model: str | None = None
    cpu_count: int | None = None
    memory_bytes: int | None = None
    system_manufacturer: str | None = None
    system_model: str | None = None
    system_serial: str | None = None
    board_vendor: str | None = None
    board_name: str | None = None
    asset_tag: str | None = None


@dataclass(frozen=True, slots=True)
class Inventory:
    """Everything static the agent knows about its host: sent at registration and on change."""

    host: HostFacts
    gpus: tuple[GpuInventory, ...] = ()


@dataclass(frozen=True, slots=True)
class DeclaredProvenance:
    """What the operator declares in the agent's configuration: where the server comes from."""

    origin_country: str | None = None  # ISO 3166-1 alpha-2, country of final assembly
    component_origins: Mapping[str, str] = field(default_factory=dict)  # "gpu" -> "TW"
    asset_tag: str | None = None


@dataclass(frozen=True, slots=True)
class NodeRegister:
    """The registration body: the inventory and the node's declared placement and origin."""

    inventory: Inventory
    zone: str | None = None
    site: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    provenance: DeclaredProvenance = field(default_factory=DeclaredProvenance)
    kubernetes_node_name: str | None = None  # the Kubernetes Node it is (spec.nodeName)


@dataclass(slots=True)
class Heartbeat:
    """One sweep's report: telemetry always, the inventory only when it changed.

    Without an inventory the key is left out of the body altogether, which the control
    plane reads as "unchanged". Not frozen, unlike the other types: the daemon builds one
    every sweep, and a frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``, about five times the cost of a plain one's (0.6 against 0.13 µs
    for this one on the development VM; docs/benchmarks.md has what it did to the sweep).
    """

    seq: int  # strictly increasing per node; the control plane drops repeats
    telemetry: tuple[GpuTelemetry, ...] = ()
    inventory: Inventory | None = None


# -- bodies and the inventory hash --------------------------------------------------------


def to_wire(value: "DataclassInstance") -> dict[str, Any]:
    """The JSON object for a protocol value: nested values become dicts, tuples lists.

    A ``Heartbeat`` without an inventory has no ``inventory`` key. Built for the daemon's
    every sweep, so it costs less than building the dicts by hand (and much less than
    ``dataclasses.asdict``): see ``_converter``.
    """
    return _converter(type(value))(value)


def canonical_json(value: Any) -> str:
    """Serialise JSON-safe ``value`` one way only: sorted keys, no spaces, UTF-8 as is.

    The one canonical form Sovereign hashes: inventories here, and in the control plane the
    audit chain's events (which PostgreSQL completes in the same form at commit) and the
    content hashes of policy sets. It lives in this module because the agent, installed
    on its own, must hash the way the control plane does.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def inventory_hash(inventory: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of an inventory's JSON object, written one way only.

    Canonical JSON: sorted keys, no spaces, UTF-8 as is, the GPUs in UUID order (the order
    a backend lists them in is not a change). The agent hashes the body it sends; the
    control plane hashes the validated ``Inventory`` model's ``model_dump(mode="json")``,
    which is the same object when the agent's values are already in the server's normal
    form (the contract test checks that they are, for every recorded GPU).
    """
    document = {**inventory, "gpus": sorted(inventory["gpus"], key=operator.itemgetter("uuid"))}
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


#: How far one heartbeat's ``seq`` may run ahead of the last one the control plane took.
#: An agent steps by one per sweep (2**32 sweeps are centuries), so a larger jump is not
#: a lost counter but a hostile or broken one: 2**63 - 1 would make every later heartbeat
#: of the node a repeat, forever. The control plane answers 422 naming ``seq``.
MAX_SEQ_STEP = 2**32

#: Field types sent as they are.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _is_scalar(hint: Any) -> bool:
    """Whether values of this field type are JSON values already (``str | None``, say)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return all(_is_scalar(arg) for arg in typing.get_args(hint))
    return hint in _SCALARS


def _optional_dataclass(hint: Any) -> type | None:
    """The dataclass ``D`` of a field typed ``D | None``; ``None`` for any other type."""
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return None
    present = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if len(present) == 1 and dataclasses.is_dataclass(present[0]):
        return typing.cast(type, present[0])
    return None


def _json_expression(hint: Any, source: str, namespace: dict[str, Any]) -> str | None:
    """Python source turning ``source``, of field type ``hint``, into JSON; ``None`` if none.

    Converters of nested types the expression calls go into ``namespace``.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_scalar(hint):
        return source
    if dataclasses.is_dataclass(hint):
        return _object_expression(typing.cast(type, hint), source, namespace)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _json_expression(args[0], "item", namespace)
        if item is None:
            return None
        return f"list({source})" if item == "item" else f"[{item} for item in {source}]"
    if origin in (Mapping, dict) and all(_is_scalar(arg) for arg in args):
        return f"dict({source})"
    return None


def _object_expression(cls: type, source: str, namespace: dict[str, Any]) -> str:
    """Python source turning the dataclass value ``source`` into its JSON object.

    A type of scalar fields only (``GpuTelemetry``, ``HostFacts``) is written out in place,
    as a dict display, rather than called: a heartbeat's readings then cost no function
    call each. Any other type calls its own converter.
    """
    names = [spec.name for spec in dataclasses.fields(cls)]
    hints = typing.get_type_hints(cls)
    if all(_is_scalar(hints[name]) for name in names):
        return "{" + ", ".join(f"{name!r}: {source}.{name}" for name in names) + "}"
    namespace[f"_{cls.__name__}"] = _converter(cls)
    return f"_{cls.__name__}({source})"


@functools.cache
def _converter(cls: type) -> Callable[[Any], dict[str, Any]]:
    """Write, compile and keep the function that turns one ``cls`` into its JSON object.

    The function is generated from ``dataclasses.fields(cls)`` and the field types, as
    ``dataclasses`` generates ``__init__``: one dict display of plain attribute reads, the
    fastest way CPython has to build it (about half the cost of a comprehension over field
    names, a fifth of ``asdict``). So every field is sent without a list of field names to
    keep by hand. A field typed ``D | None``, ``D`` a dataclass, is left out when ``None``.
    A field type it does not know is a ``TypeError`` here, at first use.
    """
    hints = typing.get_type_hints(cls)
    namespace: dict[str, Any] = {}
    entries: list[str] = []
    optional: list[str] = []
    for spec in dataclasses.fields(cls):
        name, hint = spec.name, hints[spec.name]
        attribute = f"value.{name}"
        expression = _json_expression(hint, attribute, namespace)
        if expression is not None:
            entries.append(f"{name!r}: {expression}")
        elif (part := _optional_dataclass(hint)) is not None:
            expression = _object_expression(part, attribute, namespace)
            optional.append(
                f"    if {attribute} is not None:\n        body[{name!r}] = {expression}\n"
            )
        else:
            raise TypeError(f"{cls.__name__}.{name}: no JSON form for {hint!r}")
    source = (
        "def to_wire(value):\n"
        f"    body = {{{', '.join(entries)}}}\n" + "".join(optional) + "    return body\n"
    )
    # The source is built from this module's own field names, never from input.
    exec(compile(source, f"<to_wire {cls.__name__}>", "exec"), namespace)  # noqa: S102
    converter: Callable[[Any], dict[str, Any]] = namespace["to_wire"]
    return converter
