"""Comparing one BOM server with what is known about its node. Pure code, no I/O.

Two kinds of facts meet here. Readings (the system serial from DMI, GPU serials from
NVML) are what the hardware says about itself: only they can verify a BOM. Declarations
(countries of origin) are what someone stated: they can contradict a BOM, and where the
node has none the BOM's are adopted, but they never verify anything.
"""

from dataclasses import dataclass

from control_plane.domain.fleet import ComponentClass
from control_plane.provenance.bom import BomServer
from control_plane.provenance.models import (
    BomComponent,
    CheckResult,
    EvidenceCheck,
    ServerStatus,
)

#: Checks whose ``match`` is a reading agreeing with the BOM, i.e. that can verify it.
READING_CHECKS = frozenset({"system_serial", "gpu_serial"})


@dataclass(frozen=True)
class NodeFacts:
    """What the control plane knows about a node: agent readings and declared origins."""

    system_serial: str | None
    gpu_serials: tuple[str | None, ...]
    origin_country: str | None
    component_origins: dict[str, str]


@dataclass(frozen=True)
class Assessment:
    """The verdict on one BOM server and the origins the node should have afterwards."""

    status: ServerStatus
    checks: list[EvidenceCheck]
    origin_country: str | None
    component_origins: dict[str, str]


def _compare(check: str, expected: str, observed: str | None) -> EvidenceCheck:
    if observed is None:
        result = CheckResult.UNVERIFIABLE
    else:
        result = CheckResult.MATCH if observed == expected else CheckResult.MISMATCH
    return EvidenceCheck(check=check, expected=expected, observed=observed, result=result)


def _gpu_checks(server: BomServer, node: NodeFacts) -> list[EvidenceCheck]:
    """GPU count, then every BOM serial among those read, then every serial read in the BOM.

    A serial missing on one side is only a mismatch when the other side has no GPU
    without a serial that it could belong to.
    """
    listed_rows = server.components(BomComponent.GPU)
    listed = [r.serial for r in listed_rows if r.serial is not None]
    read = [s for s in node.gpu_serials if s is not None]
    checks = [
        EvidenceCheck(
            check="gpu_count",
            expected=len(listed_rows),
            observed=len(node.gpu_serials),
            result=CheckResult.MATCH
            if len(listed_rows) == len(node.gpu_serials)
            else CheckResult.MISMATCH,
        )
    ]
    unread_on_node = len(read) < len(node.gpu_serials)
    unlisted_in_bom = len(listed) < len(listed_rows)
    for serial in listed:
        if serial in read:
            result = CheckResult.MATCH
        else:
            result = CheckResult.UNVERIFIABLE if unread_on_node else CheckResult.MISMATCH
        checks.append(
            EvidenceCheck(
                check="gpu_serial",
                expected=serial,
                observed=serial if serial in read else None,
                result=result,
            )
        )
    checks.extend(
        EvidenceCheck(
            check="gpu_serial",
            expected=None,
            observed=serial,
            result=CheckResult.UNVERIFIABLE if unlisted_in_bom else CheckResult.MISMATCH,
        )
        for serial in read
        if serial not in listed
    )
    return checks


def assess(server: BomServer, node: NodeFacts) -> Assessment:
    """Compare a BOM server with its node; say whether the BOM is verified or contradicted.

    Any mismatch makes it ``mismatch``; otherwise one reading that matches makes it
    ``verified``; otherwise it is ``unverifiable``. Origins the node lacks are taken from
    the BOM (a class with parts from several countries cannot be one value and is left out).
    """
    checks = []
    if server.system_serial is not None:
        checks.append(_compare("system_serial", server.system_serial, node.system_serial))
    checks.extend(_gpu_checks(server, node))
    origin_country = node.origin_country
    system = server.system
    if system is not None:
        checks.append(_compare("origin_country", system.origin_country, node.origin_country))
        origin_country = origin_country or system.origin_country
    component_origins = dict(node.component_origins)
    for component in ComponentClass:
        countries = sorted({r.origin_country for r in server.components(BomComponent(component))})
        if not countries:
            continue
        declared = node.component_origins.get(component.value)
        checks.append(
            _compare(f"component_origins.{component.value}", ",".join(countries), declared)
        )
        if declared is None and len(countries) == 1:
            component_origins[component.value] = countries[0]
    if any(c.result is CheckResult.MISMATCH for c in checks):
        status = ServerStatus.MISMATCH
    elif any(c.result is CheckResult.MATCH and c.check in READING_CHECKS for c in checks):
        status = ServerStatus.VERIFIED
    else:
        status = ServerStatus.UNVERIFIABLE
    return Assessment(status, checks, origin_country, component_origins)
