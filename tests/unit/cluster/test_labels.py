"""The label scheme: what the sync writes is what the webhook selects on, and valid keys."""

import re

import pytest

from control_plane.admission import pods
from control_plane.cluster.service import desired_labels, label_changes
from control_plane.domain import kubernetes
from control_plane.domain.fleet import DriftStatus, NodeStatus
from control_plane.policy.engine import NodeIndex
from control_plane.policy.models import ZoneView
from tests.unit.policy.builders import ZONES, node

#: A Kubernetes label key's name part and a label value (both at most 63 characters).
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def test_a_placeable_node_carries_every_label_the_webhook_judges_and_its_ancestors() -> None:
    gpu = node("gpu-1", "tokyo-dc1", origin="US")
    index = NodeIndex.build([gpu], ZONES)
    labels = desired_labels(gpu, index)
    assert pods.node_labels(gpu, index).items() <= labels.items()
    in_zones = {key for key in labels if key.startswith(kubernetes.IN_ZONE_PREFIX)}
    assert in_zones == {
        "sovereign.io/zone.tokyo-dc1",
        "sovereign.io/zone.jp-east",
        "sovereign.io/zone.jp",
    }
    for key, value in labels.items():
        prefix, _, name = key.partition("/")
        assert prefix == "sovereign.io"
        assert LABEL_NAME.match(name), key
        assert LABEL_NAME.match(value), value


@pytest.mark.parametrize(
    ("status", "drift"),
    [
        (NodeStatus.PLANNED, DriftStatus.NONE),
        (NodeStatus.QUARANTINED, DriftStatus.DRIFTED),
        (NodeStatus.MAINTENANCE, DriftStatus.NONE),
        (NodeStatus.OFFLINE, DriftStatus.NONE),
        (NodeStatus.ACTIVE, DriftStatus.DRIFTED),
    ],
)
def test_a_node_nothing_may_be_placed_on_carries_none(
    status: NodeStatus, drift: DriftStatus
) -> None:
    gpu = node("gpu-1", status=status, drift=drift)
    assert desired_labels(gpu, NodeIndex.build([gpu], ZONES)) == {}


def test_a_slug_too_long_for_a_label_name_gets_no_zone_label() -> None:
    longest = "z" * 63
    gpu = node("gpu-1", longest)
    labels = desired_labels(gpu, NodeIndex.build([gpu], {longest: ZoneView(longest, None, "JP")}))
    assert labels[kubernetes.ZONE_LABEL] == longest
    assert not any(key.startswith(kubernetes.IN_ZONE_PREFIX) for key in labels)


def test_changes_touch_only_ours_and_are_empty_when_equal() -> None:
    current = {"team": "ml", "sovereign.io/zone": "de", "sovereign.io/zone.de": "true"}
    desired = {"sovereign.io/zone": "jp", "sovereign.io/zone.jp": "true"}
    assert label_changes(current, desired) == {
        "sovereign.io/zone": "jp",
        "sovereign.io/zone.jp": "true",
        "sovereign.io/zone.de": None,
    }
    assert label_changes({**desired, "team": "ml"}, desired) == {}
