"""HTTP route for the cluster: what the node label sync last found.

Thin: authorize, call. Reading it needs ``inventory:read`` (admins, operators, auditors):
it says which Kubernetes Nodes the inventory does not know.
"""

from typing import Annotated

from fastapi import APIRouter, Depends

from control_plane.access.http import SecuredRoute, require
from control_plane.access.models import Permission, Principal
from control_plane.cluster import service
from control_plane.cluster.models import LabelSyncStatus
from control_plane.core.http import Conn, SettingsDep

Reader = Annotated[Principal, Depends(require(Permission.INVENTORY_READ))]

router = APIRouter(prefix="/v1", route_class=SecuredRoute)


@router.get("/cluster/label-sync", tags=["cluster"])
def get_label_sync(conn: Conn, settings: SettingsDep, _: Reader) -> LabelSyncStatus:
    """The node label sync: whether it runs, and the latest run's report.

    The report's `unknown` are Kubernetes Nodes no inventory node answers to (by the name
    its agent reported, else its hostname), or two do: they get no `sovereign.io/*` labels,
    so no governed GPU pod lands there. Register their agents, or set their Kubernetes node
    names (docs/kubernetes.md, "Node label sync").
    """
    return service.sync_status(conn, settings.kubernetes)
