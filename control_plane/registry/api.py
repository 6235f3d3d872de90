"""HTTP routes for tenants, quotas, datasets, models and artifact destinations.

Thin: parse, authorize, call. Reading needs ``inventory:read``; changes need
``registry:write`` (admins only), granting another tenant the use of a dataset or model
and revoking it included.
"""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response, status

from control_plane.access.http import SecuredRoute, require
from control_plane.access.models import Permission, Principal
from control_plane.core.http import Conn, Limit, Offset, RequestId
from control_plane.domain.countries import CountryCode
from control_plane.domain.types import Lookup
from control_plane.registry import service
from control_plane.registry.models import (
    AssetFilters,
    DatasetCreate,
    DatasetPage,
    DatasetPublic,
    DatasetUpdate,
    DestinationCreate,
    DestinationPublic,
    GrantCreate,
    GrantPublic,
    ModelCreate,
    ModelFilters,
    ModelPage,
    ModelPublic,
    ModelUpdate,
    OriginQuotaPublic,
    OriginQuotaSet,
    QuotaPublic,
    QuotaSet,
    TenantCreate,
    TenantPublic,
)

Reader = Annotated[Principal, Depends(require(Permission.INVENTORY_READ))]
Admin = Annotated[Principal, Depends(require(Permission.REGISTRY_WRITE))]
router = APIRouter(prefix="/v1", route_class=SecuredRoute)


# -- tenants and quotas ----------------------------------------------------------------


@router.post("/tenants", status_code=status.HTTP_201_CREATED, tags=["tenants"])
def create_tenant(
    tenant: TenantCreate, conn: Conn, who: Admin, request_id: RequestId
) -> TenantPublic:
    """Create a tenant (a department or project)."""
    return service.create_tenant(conn, who.audit_context(request_id), tenant)


@router.get("/tenants", tags=["tenants"])
def list_tenants(conn: Conn, _: Reader) -> list[TenantPublic]:
    """List every tenant with its quotas."""
    return service.list_tenants(conn)


@router.get("/tenants/{tenant}", tags=["tenants"])
def get_tenant(tenant: Lookup, conn: Conn, _: Reader) -> TenantPublic:
    """Show one tenant with its quotas."""
    return service.get_tenant(conn, tenant)


@router.delete("/tenants/{tenant}", status_code=status.HTTP_204_NO_CONTENT, tags=["tenants"])
def delete_tenant(tenant: Lookup, conn: Conn, who: Admin, request_id: RequestId) -> Response:
    """Delete a tenant that owns no dataset or model, with its quotas."""
    service.delete_tenant(conn, who.audit_context(request_id), tenant)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/tenants/{tenant}/quotas/{zone}", tags=["tenants"])
def set_quota(
    tenant: Lookup, zone: Lookup, quota: QuotaSet, conn: Conn, who: Admin, request_id: RequestId
) -> QuotaPublic:
    """Set a tenant's GPU quota in a zone, replacing the one it had there."""
    return service.set_quota(conn, who.audit_context(request_id), tenant, zone, quota)


@router.delete(
    "/tenants/{tenant}/quotas/{zone}", status_code=status.HTTP_204_NO_CONTENT, tags=["tenants"]
)
def remove_quota(
    tenant: Lookup, zone: Lookup, conn: Conn, who: Admin, request_id: RequestId
) -> Response:
    """Remove a tenant's GPU quota in a zone."""
    service.remove_quota(conn, who.audit_context(request_id), tenant, zone)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/tenants/{tenant}/origin-quotas/{country}", tags=["tenants"])
def set_origin_quota(
    tenant: Lookup,
    country: CountryCode,
    quota: OriginQuotaSet,
    conn: Conn,
    who: Admin,
    request_id: RequestId,
) -> OriginQuotaPublic:
    """Set a tenant's GPU-hour quota on servers made in a country, replacing the old one."""
    return service.set_origin_quota(conn, who.audit_context(request_id), tenant, country, quota)


@router.delete(
    "/tenants/{tenant}/origin-quotas/{country}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["tenants"],
)
def remove_origin_quota(
    tenant: Lookup, country: CountryCode, conn: Conn, who: Admin, request_id: RequestId
) -> Response:
    """Remove a tenant's GPU-hour quota on servers made in a country."""
    service.remove_origin_quota(conn, who.audit_context(request_id), tenant, country)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- datasets --------------------------------------------------------------------------


@router.post("/datasets", status_code=status.HTTP_201_CREATED, tags=["datasets"])
def register_dataset(
    dataset: DatasetCreate, conn: Conn, who: Admin, request_id: RequestId
) -> DatasetPublic:
    """Register a dataset: owner, classification, storage zones and labels."""
    return service.register_dataset(conn, who.audit_context(request_id), dataset)


@router.get("/datasets", tags=["datasets"])
def list_datasets(
    conn: Conn,
    _: Reader,
    filters: Annotated[AssetFilters, Query()],
    limit: Limit = 100,
    offset: Offset = 0,
) -> DatasetPage:
    """List datasets, filtered and paginated."""
    return service.list_datasets(conn, filters, limit, offset)


@router.get("/datasets/{dataset}", tags=["datasets"])
def get_dataset(dataset: Lookup, conn: Conn, _: Reader) -> DatasetPublic:
    """Show one dataset."""
    return service.get_dataset(conn, dataset)


@router.patch("/datasets/{dataset}", tags=["datasets"])
def update_dataset(
    dataset: Lookup, change: DatasetUpdate, conn: Conn, who: Admin, request_id: RequestId
) -> DatasetPublic:
    """Change a dataset's owner, classification, storage zones, labels or description."""
    return service.update_dataset(conn, who.audit_context(request_id), dataset, change)


@router.delete("/datasets/{dataset}", status_code=status.HTTP_204_NO_CONTENT, tags=["datasets"])
def delete_dataset(dataset: Lookup, conn: Conn, who: Admin, request_id: RequestId) -> Response:
    """Delete a dataset from the registry."""
    service.delete_dataset(conn, who.audit_context(request_id), dataset)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/datasets/{dataset}/grants", status_code=status.HTTP_201_CREATED, tags=["datasets"])
def grant_dataset(
    dataset: Lookup, grant: GrantCreate, conn: Conn, who: Admin, request_id: RequestId
) -> GrantPublic:
    """Grant a tenant other than the owner the use of a dataset: why, and until when."""
    return service.grant_dataset(conn, who.audit_context(request_id), dataset, grant)


@router.get("/datasets/{dataset}/grants", tags=["datasets"])
def list_dataset_grants(dataset: Lookup, conn: Conn, _: Reader) -> list[GrantPublic]:
    """List a dataset's grants, revoked and expired ones too, oldest first."""
    return service.dataset_grants(conn, dataset)


@router.delete("/datasets/{dataset}/grants/{grant}", tags=["datasets"])
def revoke_dataset_grant(
    dataset: Lookup, grant: UUID, conn: Conn, who: Admin, request_id: RequestId
) -> GrantPublic:
    """Revoke a dataset's grant; the grant is kept, revoked, and workloads using it violate."""
    return service.revoke_dataset_grant(conn, who.audit_context(request_id), dataset, grant)


# -- models ----------------------------------------------------------------------------


@router.post("/models", status_code=status.HTTP_201_CREATED, tags=["models"])
def register_model(
    model: ModelCreate, conn: Conn, who: Admin, request_id: RequestId
) -> ModelPublic:
    """Register a model: owner, classification, storage zones, labels, provenance, license."""
    return service.register_model(conn, who.audit_context(request_id), model)


@router.get("/models", tags=["models"])
def list_models(
    conn: Conn,
    _: Reader,
    filters: Annotated[ModelFilters, Query()],
    limit: Limit = 100,
    offset: Offset = 0,
) -> ModelPage:
    """List models, filtered and paginated."""
    return service.list_models(conn, filters, limit, offset)


@router.get("/models/{model}", tags=["models"])
def get_model(model: Lookup, conn: Conn, _: Reader) -> ModelPublic:
    """Show one model."""
    return service.get_model(conn, model)


@router.patch("/models/{model}", tags=["models"])
def update_model(
    model: Lookup, change: ModelUpdate, conn: Conn, who: Admin, request_id: RequestId
) -> ModelPublic:
    """Change a model's owner, classification, zones, labels, provenance or license."""
    return service.update_model(conn, who.audit_context(request_id), model, change)


@router.delete("/models/{model}", status_code=status.HTTP_204_NO_CONTENT, tags=["models"])
def delete_model(model: Lookup, conn: Conn, who: Admin, request_id: RequestId) -> Response:
    """Delete a model from the registry."""
    service.delete_model(conn, who.audit_context(request_id), model)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/models/{model}/grants", status_code=status.HTTP_201_CREATED, tags=["models"])
def grant_model(
    model: Lookup, grant: GrantCreate, conn: Conn, who: Admin, request_id: RequestId
) -> GrantPublic:
    """Grant a tenant other than the owner the use of a model: why, and until when."""
    return service.grant_model(conn, who.audit_context(request_id), model, grant)


@router.get("/models/{model}/grants", tags=["models"])
def list_model_grants(model: Lookup, conn: Conn, _: Reader) -> list[GrantPublic]:
    """List a model's grants, revoked and expired ones too, oldest first."""
    return service.model_grants(conn, model)


@router.delete("/models/{model}/grants/{grant}", tags=["models"])
def revoke_model_grant(
    model: Lookup, grant: UUID, conn: Conn, who: Admin, request_id: RequestId
) -> GrantPublic:
    """Revoke a model's grant; the grant is kept, revoked, and workloads using it violate."""
    return service.revoke_model_grant(conn, who.audit_context(request_id), model, grant)


# -- artifact destinations -------------------------------------------------------------


@router.post("/destinations", status_code=status.HTTP_201_CREATED, tags=["destinations"])
def create_destination(
    destination: DestinationCreate, conn: Conn, who: Admin, request_id: RequestId
) -> DestinationPublic:
    """Create an artifact destination (where workloads write outputs) in a zone."""
    return service.create_destination(conn, who.audit_context(request_id), destination)


@router.get("/destinations", tags=["destinations"])
def list_destinations(conn: Conn, _: Reader) -> list[DestinationPublic]:
    """List every artifact destination."""
    return service.list_destinations(conn)


@router.get("/destinations/{destination}", tags=["destinations"])
def get_destination(destination: Lookup, conn: Conn, _: Reader) -> DestinationPublic:
    """Show one artifact destination."""
    return service.get_destination(conn, destination)


@router.delete(
    "/destinations/{destination}", status_code=status.HTTP_204_NO_CONTENT, tags=["destinations"]
)
def delete_destination(
    destination: Lookup, conn: Conn, who: Admin, request_id: RequestId
) -> Response:
    """Delete an artifact destination."""
    service.delete_destination(conn, who.audit_context(request_id), destination)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
