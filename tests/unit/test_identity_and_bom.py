"""Pure comparisons: a node's hardware identity against its baseline, a BOM against a node."""

import pytest

from control_plane.core.errors import InvalidInputError
from control_plane.inventory.identity import identity_differences
from control_plane.inventory.models import GpuIdentity, NodeIdentity
from control_plane.provenance.bom import group_servers, parse_csv
from control_plane.provenance.checks import NodeFacts, assess
from control_plane.provenance.models import BomRow, ServerStatus

HEADER = "system_serial,asset_tag,component,serial,part_number,origin_country"


def identity(system_serial: str | None, *gpus: tuple[str, str | None]) -> NodeIdentity:
    return NodeIdentity(
        system_serial=system_serial, gpus=[GpuIdentity(uuid=u, serial=s) for u, s in gpus]
    )


def test_identities_compare_regardless_of_gpu_order() -> None:
    first = identity("S1", ("GPU-b", "2"), ("GPU-a", "1"))
    assert first == identity("S1", ("GPU-a", "1"), ("GPU-b", "2"))
    assert [g.uuid for g in first.gpus] == ["GPU-a", "GPU-b"]
    assert identity_differences(first, identity("S1", ("GPU-a", "1"), ("GPU-b", "2"))) == []


def test_differences_are_said_in_words() -> None:
    before = identity("S1", ("GPU-a", "1"), ("GPU-b", "2"))
    after = identity(None, ("GPU-a", "9"), ("GPU-c", None))
    assert identity_differences(before, after) == [
        "system serial changed from S1 to unread",
        "GPU GPU-a serial changed from 1 to 9",
        "GPU GPU-b (serial 2) is no longer reported",
        "new GPU GPU-c (serial unread)",
    ]


def rows(*lines: str) -> list[BomRow]:
    return parse_csv("\n".join([HEADER, *lines]))


def test_csv_columns_may_come_in_any_order_and_cells_may_be_blank() -> None:
    header = "origin_country,component,asset_tag,system_serial,serial,part_number"
    [row] = parse_csv(f"{header}\ntw, gpu ,,S1,123,\n")
    assert (row.system_serial, row.asset_tag, row.serial, row.origin_country) == (
        "S1",
        None,
        "123",
        "TW",
    )


def test_rows_group_into_servers_in_order() -> None:
    servers = group_servers(rows("S2,,gpu,1,,TW", "S1,A1,system,,,US", "S2,,gpu,2,,TW"))
    assert [(s.system_serial, s.asset_tag, len(s.rows)) for s in servers] == [
        ("S2", None, 2),
        ("S1", "A1", 1),
    ]


def test_a_serial_with_two_asset_tags_is_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"^rows\.1\.asset_tag: system serial S1 has"):
        group_servers(
            [
                BomRow(system_serial="S1", asset_tag="A1", component="gpu", origin_country="TW"),
                BomRow(system_serial="S1", asset_tag="A2", component="gpu", origin_country="TW"),
            ]
        )


def facts(*gpu_serials: str | None, origin: str | None = None) -> NodeFacts:
    return NodeFacts(
        system_serial="S1", gpu_serials=gpu_serials, origin_country=origin, component_origins={}
    )


@pytest.mark.parametrize(
    ("lines", "node", "status"),
    [
        (["S1,,gpu,1,,TW"], facts("1"), ServerStatus.VERIFIED),
        (["S1,,gpu,1,,TW"], facts("2"), ServerStatus.MISMATCH),
        (["S1,,gpu,1,,TW", "S1,,gpu,2,,TW"], facts("1"), ServerStatus.MISMATCH),
        # A serial the agent could not read may be the one the BOM lists: no verdict on it.
        (["S1,,gpu,1,,TW", "S1,,gpu,2,,TW"], facts("1", None), ServerStatus.VERIFIED),
        (["S1,,system,,,US", "S1,,gpu,1,,TW"], facts("1", origin="CN"), ServerStatus.MISMATCH),
        ([",A1,gpu,,,TW"], facts(None), ServerStatus.UNVERIFIABLE),
    ],
)
def test_verdicts(lines: list[str], node: NodeFacts, status: ServerStatus) -> None:
    [server] = group_servers(rows(*lines))
    assert assess(server, node).status is status


def test_origins_are_adopted_only_where_nothing_was_declared() -> None:
    [server] = group_servers(
        rows("S1,,system,,,US", "S1,,gpu,1,,TW", "S1,,nic,,,IL", "S1,,nic,,,US", "S1,,cpu,,,MY")
    )
    node = NodeFacts(
        system_serial="S1", gpu_serials=("1",), origin_country=None, component_origins={"cpu": "MY"}
    )
    assessment = assess(server, node)
    assert assessment.origin_country == "US"
    # NICs from two countries cannot be one value; the declared CPU origin stays.
    assert assessment.component_origins == {"cpu": "MY", "gpu": "TW"}
