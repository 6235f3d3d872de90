"""SQL access for tenants, quotas, datasets, models and artifact destinations.

Functions take the caller's connection. Datasets and models live in tables of the same
shape (``dataset``/``model``, each with a ``*_storage_zone`` join table), so their
functions take an ``AssetKind`` and run that kind's named queries. Constraint violations
become domain errors here, named after the API field they concern.
"""

from collections.abc import Sequence
from typing import Any, LiteralString, TypeVar
from uuid import UUID

from psycopg.types.json import Jsonb

from control_plane.core.db import (
    DbConnection,
    ErrorFactory,
    fetch_all_as,
    fetch_one,
    fetch_one_as,
    fetch_page_as,
    fetch_returning_as,
    in_use,
    load_queries,
    references,
    refused,
    translate_integrity_errors,
    unique,
)
from control_plane.domain.classification import Classification
from control_plane.registry.models import (
    AssetKind,
    AssetPublic,
    DatasetFacts,
    DestinationFacts,
    DestinationPublic,
    GrantPublic,
    Lookup,
    ModelFacts,
    OriginQuotaPublic,
    QuotaPublic,
    TenantRow,
)

#: A dataset's or model's public model: what that kind's queries return.
AssetT = TypeVar("AssetT", bound=AssetPublic)

_TENANT_WRITE: dict[str, ErrorFactory] = {
    "tenant_pkey": unique("slug", "a tenant with this slug already exists"),
}


def _still_owns(what: str) -> ErrorFactory:
    return in_use(f"tenant still owns {what}; delete them or move them to another tenant first")


_TENANT_DELETE: dict[str, ErrorFactory] = {
    "dataset_owner_tenant_fkey": _still_owns("datasets"),
    "model_owner_tenant_fkey": _still_owns("models"),
    # Workloads are decisions on record and are never deleted, so neither is their tenant.
    "workload_tenant_fkey": in_use(
        "tenant has workloads on record; their history keeps the tenant"
    ),
    # So are grants, revoked ones included.
    "asset_grant_grantee_fkey": in_use(
        "tenant holds grants on record; their history keeps the tenant"
    ),
}
_QUOTA_WRITE: dict[str, ErrorFactory] = {
    "tenant_quota_zone_fkey": references("zone", "unknown zone"),
}
_ASSET_WRITE: dict[str, ErrorFactory] = {
    "dataset_pkey": unique("name", "a dataset with this name already exists"),
    "dataset_owner_tenant_fkey": references("tenant", "unknown tenant"),
    "dataset_storage_zone_zone_fkey": references("zones", "unknown zone"),
    "model_pkey": unique("name", "a model with this name already exists"),
    "model_owner_tenant_fkey": references("tenant", "unknown tenant"),
    "model_storage_zone_zone_fkey": references("zones", "unknown zone"),
}
_GRANT_WRITE: dict[str, ErrorFactory] = {
    "asset_grant_grantee_fkey": references("tenant", "unknown tenant"),
    "asset_grant_not_to_owner": refused("tenant", "the owner needs no grant"),
    "asset_grant_expires_after_creation": refused("expires_at", "must lie in the future"),
}
_DESTINATION_WRITE: dict[str, ErrorFactory] = {
    "artifact_destination_pkey": unique("name", "a destination with this name already exists"),
    "artifact_destination_zone_fkey": references("zone", "unknown zone"),
}


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.registry")[name]


# -- tenants and quotas ----------------------------------------------------------------


def insert_tenant(conn: DbConnection, values: dict[str, Any]) -> TenantRow:
    """Store a new tenant."""
    return fetch_returning_as(conn, TenantRow, _q("insert_tenant"), values, _TENANT_WRITE)


def list_tenants(conn: DbConnection) -> list[TenantRow]:
    """Every tenant, by slug."""
    return fetch_all_as(conn, TenantRow, _q("list_tenants"), {})


def get_tenant(conn: DbConnection, slug: str, *, for_update: bool = False) -> TenantRow | None:
    """One tenant, optionally locked for the rest of the transaction."""
    query = _q("lock_tenant" if for_update else "get_tenant")
    return fetch_one_as(conn, TenantRow, query, {"slug": slug})


def lock_tenant_quotas(conn: DbConnection, slug: str) -> bool:
    """Hold the tenant's quotas still until commit; False if the tenant does not exist."""
    return fetch_one(conn, _q("lock_tenant_quotas"), {"slug": slug}) is not None


def delete_tenant(conn: DbConnection, slug: str) -> None:
    """Delete a tenant that owns no dataset or model (else 409); its quotas go with it."""
    with translate_integrity_errors(_TENANT_DELETE):
        conn.execute(_q("delete_tenant"), {"slug": slug})


def list_quotas(conn: DbConnection) -> list[QuotaPublic]:
    """Every quota, by tenant and zone."""
    return fetch_all_as(conn, QuotaPublic, _q("list_quotas"), {})


def tenant_quotas(conn: DbConnection, tenant: str) -> list[QuotaPublic]:
    """One tenant's quotas, by zone."""
    return fetch_all_as(conn, QuotaPublic, _q("tenant_quotas"), {"tenant": tenant})


def get_quota(conn: DbConnection, tenant: str, zone: str) -> QuotaPublic | None:
    """A tenant's quota in one zone, or None."""
    return fetch_one_as(conn, QuotaPublic, _q("get_quota"), {"tenant": tenant, "zone": zone})


def upsert_quota(conn: DbConnection, values: dict[str, Any]) -> QuotaPublic:
    """Set a tenant's quota in a zone, replacing any quota it had there."""
    return fetch_returning_as(conn, QuotaPublic, _q("upsert_quota"), values, _QUOTA_WRITE)


def delete_quota(conn: DbConnection, tenant: str, zone: str) -> None:
    """Remove a tenant's quota in a zone."""
    conn.execute(_q("delete_quota"), {"tenant": tenant, "zone": zone})


def list_origin_quotas(conn: DbConnection) -> list[OriginQuotaPublic]:
    """Every GPU-hour quota by server origin, by tenant and country."""
    return fetch_all_as(conn, OriginQuotaPublic, _q("list_origin_quotas"), {})


def tenant_origin_quotas(conn: DbConnection, tenant: str) -> list[OriginQuotaPublic]:
    """One tenant's GPU-hour quotas by server origin, by country."""
    return fetch_all_as(conn, OriginQuotaPublic, _q("tenant_origin_quotas"), {"tenant": tenant})


def get_origin_quota(conn: DbConnection, tenant: str, country: str) -> OriginQuotaPublic | None:
    """A tenant's GPU-hour quota on servers made in ``country``, or None."""
    params = {"tenant": tenant, "origin_country": country}
    return fetch_one_as(conn, OriginQuotaPublic, _q("get_origin_quota"), params)


def upsert_origin_quota(conn: DbConnection, values: dict[str, Any]) -> OriginQuotaPublic:
    """Set a tenant's GPU-hour quota on servers of an origin, replacing any it had."""
    return fetch_returning_as(conn, OriginQuotaPublic, _q("upsert_origin_quota"), values)


def delete_origin_quota(conn: DbConnection, tenant: str, country: str) -> None:
    """Remove a tenant's GPU-hour quota on servers of an origin."""
    conn.execute(_q("delete_origin_quota"), {"tenant": tenant, "origin_country": country})


# -- datasets and models ---------------------------------------------------------------


def insert_asset(conn: DbConnection, kind: AssetKind, values: dict[str, Any]) -> None:
    """Store a new dataset or model (without its storage zones)."""
    with translate_integrity_errors(_ASSET_WRITE):
        conn.execute(_q(f"insert_{kind}"), {**values, "labels": Jsonb(values["labels"])})


def get_asset(
    conn: DbConnection,
    kind: AssetKind,
    public: type[AssetT],
    name: str,
    *,
    for_update: bool = False,
) -> AssetT | None:
    """One dataset or model (as ``public``, its kind's model) with its storage zones."""
    query = f"lock_{kind}" if for_update else f"get_{kind}"
    return fetch_one_as(conn, public, _q(query), {"name": name})


def search_assets(
    conn: DbConnection,
    kind: AssetKind,
    public: type[AssetT],
    filters: dict[str, Any],
    limit: int,
    offset: int,
) -> tuple[list[AssetT], int]:
    """One page of datasets or models matching ``filters`` and the number that match."""
    return fetch_page_as(
        conn, public, _q(f"search_{kind}s"), _q(f"count_{kind}s"), filters, limit, offset
    )


def update_asset(conn: DbConnection, kind: AssetKind, values: dict[str, Any]) -> None:
    """Overwrite the editable fields of a dataset or model."""
    with translate_integrity_errors(_ASSET_WRITE):
        conn.execute(_q(f"update_{kind}"), {**values, "labels": Jsonb(values["labels"])})


def delete_asset(conn: DbConnection, kind: AssetKind, name: str) -> None:
    """Delete a dataset or model and its storage zones."""
    conn.execute(_q(f"delete_{kind}"), {"name": name})


def set_storage_zones(conn: DbConnection, kind: AssetKind, name: str, zones: Sequence[str]) -> None:
    """Make ``zones`` the zones a dataset or model is stored in."""
    conn.execute(_q(f"clear_{kind}_zones"), {"name": name})
    with translate_integrity_errors(_ASSET_WRITE):
        conn.execute(_q(f"add_{kind}_zones"), {"name": name, "zones": list(zones)})


# -- grants ----------------------------------------------------------------------------


def insert_grant(conn: DbConnection, values: dict[str, Any]) -> GrantPublic:
    """Store a grant (an unknown grantee or an expiry not in the future: 422)."""
    return fetch_returning_as(conn, GrantPublic, _q("insert_grant"), values, _GRANT_WRITE)


def list_grants(conn: DbConnection, kind: AssetKind, asset: str) -> list[GrantPublic]:
    """Every grant of one dataset or model, revoked and expired ones too, oldest first."""
    return fetch_all_as(conn, GrantPublic, _q("list_grants"), {"kind": kind, "asset": asset})


def lock_grant(
    conn: DbConnection, kind: AssetKind, asset: str, grant_id: UUID
) -> GrantPublic | None:
    """One grant of the asset, locked until commit; None if the asset has no such grant."""
    params = {"id": grant_id, "kind": kind, "asset": asset}
    return fetch_one_as(conn, GrantPublic, _q("lock_grant"), params)


def revoke_grant(
    conn: DbConnection, grant_id: UUID, revoked_by: str, revoked_by_id: str
) -> GrantPublic:
    """Mark a grant revoked now, by the actor named; the row is kept."""
    params = {"id": grant_id, "revoked_by": revoked_by, "revoked_by_id": revoked_by_id}
    return fetch_returning_as(conn, GrantPublic, _q("revoke_grant"), params, {})


def notice_expired_grants(conn: DbConnection) -> list[GrantPublic]:
    """The grants that expired unnoticed, now marked noticed, by expiry then id."""
    found = fetch_all_as(conn, GrantPublic, _q("notice_expired_grants"), {})
    return sorted(found, key=lambda grant: (grant.expires_at or grant.created_at, str(grant.id)))


# -- artifact destinations -------------------------------------------------------------


def insert_destination(conn: DbConnection, values: dict[str, Any]) -> DestinationPublic:
    """Store a new artifact destination."""
    return fetch_returning_as(
        conn, DestinationPublic, _q("insert_destination"), values, _DESTINATION_WRITE
    )


def list_destinations(conn: DbConnection) -> list[DestinationPublic]:
    """Every artifact destination, by name."""
    return fetch_all_as(conn, DestinationPublic, _q("list_destinations"), {})


def get_destination(
    conn: DbConnection, name: str, *, for_update: bool = False
) -> DestinationPublic | None:
    """One artifact destination, optionally locked for the rest of the transaction."""
    query = "lock_destination" if for_update else "get_destination"
    return fetch_one_as(conn, DestinationPublic, _q(query), {"name": name})


def delete_destination(conn: DbConnection, name: str) -> None:
    """Delete an artifact destination."""
    conn.execute(_q("delete_destination"), {"name": name})


def lookup(
    conn: DbConnection,
    tenant: str,
    datasets: Sequence[str],
    models: Sequence[str],
    output: str | None,
) -> Lookup:
    """What a workload request names, in one query (see ``lookup`` in queries.sql).

    Admission runs it for every request; the caller decides what a missing name means.
    """
    params = {"tenant": tenant, "datasets": list(datasets), "models": list(models)}
    row = fetch_one(conn, _q("lookup"), {**params, "output": output})
    assert row is not None
    destination = row["destination"]
    return Lookup(
        tenant_exists=row["tenant_exists"],
        datasets={
            item["name"]: DatasetFacts(
                item["name"],
                Classification(item["classification"]),
                item["labels"],
                tuple(item["zones"]),
                item["tenant"],
                tuple(item["granted_to"]),
            )
            for item in row["datasets"]
        },
        models={
            item["name"]: ModelFacts(
                item["name"],
                Classification(item["classification"]),
                item["labels"],
                tuple(item["zones"]),
                item["supplier"],
                item["origin_country"],
                item["license"],
                item["tenant"],
                tuple(item["granted_to"]),
            )
            for item in row["models"]
        },
        destination=None
        if destination is None
        else DestinationFacts(destination["name"], destination["zone"]),
    )
