"""Hardware identity of a node, and how a reported identity differs from the accepted one.

Pure functions over plain values: no database, no clock. The service compares what an
agent reports with the node's baseline and stores the differences, in words, as evidence;
a BOM verdict records the identity it was checked on, so a later change of hardware can be
told from the hardware the BOM verified.
"""

from typing import Any

from control_plane.inventory.models import GpuIdentity, Inventory, NodeIdentity


def reported_identity(inventory: Inventory) -> NodeIdentity:
    """The identity an inventory report claims: system serial and (GPU UUID, serial) pairs."""
    return NodeIdentity(
        system_serial=inventory.host.system_serial,
        gpus=[GpuIdentity(uuid=gpu.uuid, serial=gpu.serial) for gpu in inventory.gpus],
    )


def _serial(serial: str | None) -> str:
    return serial if serial is not None else "unread"


def identity_differences(baseline: NodeIdentity, reported: NodeIdentity) -> list[str]:
    """Say in words how ``reported`` differs from ``baseline``; empty when they are equal."""
    before = {gpu.uuid: gpu.serial for gpu in baseline.gpus}
    after = {gpu.uuid: gpu.serial for gpu in reported.gpus}
    differences = []
    if baseline.system_serial != reported.system_serial:
        differences.append(
            f"system serial changed from {_serial(baseline.system_serial)} "
            f"to {_serial(reported.system_serial)}"
        )
    for uuid, serial in before.items():
        if uuid not in after:
            differences.append(f"GPU {uuid} (serial {_serial(serial)}) is no longer reported")
        elif after[uuid] != serial:
            differences.append(
                f"GPU {uuid} serial changed from {_serial(serial)} to {_serial(after[uuid])}"
            )
    differences.extend(
        f"new GPU {uuid} (serial {_serial(serial)})"
        for uuid, serial in after.items()
        if uuid not in before
    )
    return differences


#: The key of a BOM verdict's evidence (``provenance_evidence``) that holds the identity
#: the BOM was checked against: what the agent had read when the import ran.
CHECKED_IDENTITY = "identity"


def checked_identity(evidence: dict[str, Any], baseline: NodeIdentity) -> NodeIdentity:
    """The hardware identity a BOM verdict was reached on.

    Verdicts record it under ``CHECKED_IDENTITY``; one stored before they did was reached
    on the node's baseline of the time, which nothing but drift changes, so the baseline
    stands in for it.
    """
    recorded = evidence.get(CHECKED_IDENTITY)
    return baseline if recorded is None else NodeIdentity.model_validate(recorded)
