"""Registry use cases: tenants and their quotas, datasets, models and artifact destinations.

Each mutation runs through ``core.audit_log.audited``, so a change without evidence (or
evidence without a change) cannot be stored. Datasets and models share one
implementation, parametrised by ``AssetKind``, and so do their grants (another tenant's
use of one). A change to what policies read of a dataset, model or destination, grants
included, asks for a compliance evaluation in the same transaction.
"""

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from uuid import UUID

from control_plane.core.audit_log import AuditContext, audited, record_change
from control_plane.core.db import DbConnection
from control_plane.core.errors import ConflictError, InvalidInputError, NotFoundError
from control_plane.core.filters import check_references
from control_plane.core.labels import merge_labels
from control_plane.core.outbox import request_evaluation
from control_plane.domain.audit import AuditAction
from control_plane.domain.compliance import EvaluationTrigger
from control_plane.domain.types import MAX_GRANTEES
from control_plane.registry import repository
from control_plane.registry.models import (
    AssetFilters,
    AssetKind,
    AssetPublic,
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
    TenantRow,
)

AssetT = TypeVar("AssetT", bound=AssetPublic)

# -- tenants and quotas ----------------------------------------------------------------


def _tenant_public(
    row: TenantRow,
    quotas: list[QuotaPublic],
    origin_quotas: list[OriginQuotaPublic] | None = None,
) -> TenantPublic:
    return TenantPublic(**row.model_dump(), quotas=quotas, origin_quotas=origin_quotas or [])


def _existing_tenant(conn: DbConnection, slug: str, *, for_update: bool = False) -> TenantRow:
    row = repository.get_tenant(conn, slug, for_update=for_update)
    if row is None:
        raise NotFoundError(f"tenant {slug!r} does not exist")
    return row


def _lock_quotas(conn: DbConnection, tenant: str) -> None:
    """Serialize quota changes of ``tenant`` until commit, or 404 if it does not exist."""
    if not repository.lock_tenant_quotas(conn, tenant):
        raise NotFoundError(f"tenant {tenant!r} does not exist")


def create_tenant(conn: DbConnection, ctx: AuditContext, tenant: TenantCreate) -> TenantPublic:
    """Store a tenant (with no quotas yet) and audit it."""
    with audited(conn, ctx, AuditAction.TENANT_CREATED, tenant.slug) as change:
        created = _tenant_public(repository.insert_tenant(conn, tenant.model_dump()), [])
        change.after = created
    return created


def list_tenants(conn: DbConnection) -> list[TenantPublic]:
    """Every tenant with its quotas."""
    quotas: defaultdict[str, list[QuotaPublic]] = defaultdict(list)
    for quota in repository.list_quotas(conn):
        quotas[quota.tenant].append(quota)
    by_origin: defaultdict[str, list[OriginQuotaPublic]] = defaultdict(list)
    for origin_quota in repository.list_origin_quotas(conn):
        by_origin[origin_quota.tenant].append(origin_quota)
    return [
        _tenant_public(row, quotas[row.slug], by_origin[row.slug])
        for row in repository.list_tenants(conn)
    ]


def tenant_slugs(conn: DbConnection) -> list[str]:
    """Every tenant's slug, in order (what-if places each tenant's probe)."""
    return [row.slug for row in repository.list_tenants(conn)]


def get_tenant(conn: DbConnection, slug: str) -> TenantPublic:
    """One tenant with its quotas, or 404."""
    return _tenant_public(
        _existing_tenant(conn, slug),
        repository.tenant_quotas(conn, slug),
        repository.tenant_origin_quotas(conn, slug),
    )


def delete_tenant(conn: DbConnection, ctx: AuditContext, slug: str) -> None:
    """Delete a tenant that owns no dataset or model (else 409), with its quotas."""
    with audited(conn, ctx, AuditAction.TENANT_DELETED, slug) as change:
        row = _existing_tenant(conn, slug, for_update=True)
        change.before = _tenant_public(
            row, repository.tenant_quotas(conn, slug), repository.tenant_origin_quotas(conn, slug)
        )
        repository.delete_tenant(conn, slug)


def set_quota(
    conn: DbConnection, ctx: AuditContext, tenant: str, zone: str, quota: QuotaSet
) -> QuotaPublic:
    """Set a tenant's GPU quota in a zone (an unknown zone is 422); audit old and new."""
    with audited(conn, ctx, AuditAction.TENANT_QUOTA_SET, tenant) as change:
        _lock_quotas(conn, tenant)
        change.before = repository.get_quota(conn, tenant, zone)
        values = {**quota.model_dump(mode="json"), "tenant": tenant, "zone": zone}
        change.after = after = repository.upsert_quota(conn, values)
    return after


def remove_quota(conn: DbConnection, ctx: AuditContext, tenant: str, zone: str) -> None:
    """Remove a tenant's quota in a zone (404 if it has none there); audit it."""
    with audited(conn, ctx, AuditAction.TENANT_QUOTA_REMOVED, tenant) as change:
        _lock_quotas(conn, tenant)
        change.before = repository.get_quota(conn, tenant, zone)
        if change.before is None:
            raise NotFoundError(f"tenant {tenant!r} has no quota in zone {zone!r}")
        repository.delete_quota(conn, tenant, zone)


def set_origin_quota(
    conn: DbConnection, ctx: AuditContext, tenant: str, country: str, quota: OriginQuotaSet
) -> OriginQuotaPublic:
    """Set a tenant's GPU-hour quota on servers made in ``country``; audit old and new."""
    with audited(conn, ctx, AuditAction.TENANT_ORIGIN_QUOTA_SET, tenant) as change:
        _lock_quotas(conn, tenant)
        change.before = repository.get_origin_quota(conn, tenant, country)
        values = {**quota.model_dump(mode="json"), "tenant": tenant, "origin_country": country}
        change.after = after = repository.upsert_origin_quota(conn, values)
    return after


def remove_origin_quota(conn: DbConnection, ctx: AuditContext, tenant: str, country: str) -> None:
    """Remove a tenant's GPU-hour quota on servers of an origin (404 if none); audit it."""
    with audited(conn, ctx, AuditAction.TENANT_ORIGIN_QUOTA_REMOVED, tenant) as change:
        _lock_quotas(conn, tenant)
        change.before = repository.get_origin_quota(conn, tenant, country)
        if change.before is None:
            raise NotFoundError(f"tenant {tenant!r} has no quota on servers made in {country}")
        repository.delete_origin_quota(conn, tenant, country)


# -- datasets and models (one implementation, by kind) ----------------------------------


@dataclass(frozen=True)
class _Assets(Generic[AssetT]):
    """One kind of asset: its tables (through ``kind``), its public model, its actions."""

    kind: AssetKind
    public: type[AssetT]
    registered: AuditAction
    updated: AuditAction
    deleted: AuditAction

    def existing(self, conn: DbConnection, name: str, *, for_update: bool = False) -> AssetT:
        """The asset with its storage zones, or 404."""
        found = repository.get_asset(conn, self.kind, self.public, name, for_update=for_update)
        if found is None:
            raise NotFoundError(f"{self.kind} {name!r} does not exist")
        return found


_DATASETS = _Assets(
    AssetKind.DATASET,
    DatasetPublic,
    AuditAction.DATASET_REGISTERED,
    AuditAction.DATASET_UPDATED,
    AuditAction.DATASET_DELETED,
)
_MODELS = _Assets(
    AssetKind.MODEL,
    ModelPublic,
    AuditAction.MODEL_REGISTERED,
    AuditAction.MODEL_UPDATED,
    AuditAction.MODEL_DELETED,
)


def _register(
    conn: DbConnection,
    ctx: AuditContext,
    assets: _Assets[AssetT],
    asset: DatasetCreate | ModelCreate,
) -> AssetT:
    """Store a dataset or model with its storage zones and audit it."""
    kind = assets.kind
    with audited(conn, ctx, assets.registered, asset.name) as change:
        repository.insert_asset(conn, kind, asset.model_dump(mode="json", exclude={"zones"}))
        repository.set_storage_zones(conn, kind, asset.name, asset.zones)
        change.after = created = assets.existing(conn, asset.name)
    return created


def _judged(asset: AssetPublic) -> dict[str, Any]:
    """What the policy engine reads of a dataset or model: a change here can break residency."""
    return asset.model_dump(mode="json", exclude={"description", "created_at", "updated_at"})


def _update(
    conn: DbConnection,
    ctx: AuditContext,
    assets: _Assets[AssetT],
    name: str,
    change: DatasetUpdate | ModelUpdate,
) -> AssetT:
    """Apply a change to a dataset or model; audit it with before and after."""
    kind = assets.kind
    with audited(conn, ctx, assets.updated, name) as event:
        event.before = before = assets.existing(conn, name, for_update=True)
        values = before.model_dump(mode="json", exclude={"zones", "created_at", "updated_at"})
        values.update(
            change.model_dump(mode="json", exclude_unset=True, exclude={"labels", "zones"})
        )
        values["labels"] = merge_labels(values["labels"], change.labels)
        repository.update_asset(conn, kind, values)
        if change.zones is not None:
            repository.set_storage_zones(conn, kind, name, change.zones)
        event.after = after = assets.existing(conn, name)
        if _judged(before) != _judged(after):
            request_evaluation(
                conn,
                EvaluationTrigger.REGISTRY_CHANGED,
                {"kind": kind.value, "name": name, "change": "updated"},
            )
    return after


def _delete(conn: DbConnection, ctx: AuditContext, assets: _Assets[AssetT], name: str) -> None:
    """Delete a dataset or model with its storage zones; audit what it was.

    Refused (409) while a grant on it is in force: grants have no foreign key to the asset,
    and one left in force would hand the name to its grantee if registered again.
    """
    kind = assets.kind
    with audited(conn, ctx, assets.deleted, name) as change:
        change.before = assets.existing(conn, name, for_update=True)
        in_force = [g for g in repository.list_grants(conn, kind, name) if g.in_force]
        if in_force:
            raise ConflictError(
                f"{kind} {name!r} has grants in force ({_tenants(in_force)}); revoke them first",
                details={"grants": [str(g.id) for g in in_force]},
            )
        repository.delete_asset(conn, kind, name)
        request_evaluation(
            conn,
            EvaluationTrigger.REGISTRY_CHANGED,
            {"kind": kind.value, "name": name, "change": "deleted"},
        )


def _search(
    conn: DbConnection, assets: _Assets[AssetT], filters: AssetFilters, limit: int, offset: int
) -> tuple[list[AssetT], int]:
    """One page of datasets or models matching ``filters``, and how many match in all."""
    return repository.search_assets(
        conn, assets.kind, assets.public, filters.model_dump(mode="json"), limit, offset
    )


def register_dataset(
    conn: DbConnection, ctx: AuditContext, dataset: DatasetCreate
) -> DatasetPublic:
    """Register a dataset of an existing tenant, stored in existing zones; audit it."""
    return _register(conn, ctx, _DATASETS, dataset)


def list_datasets(
    conn: DbConnection, filters: AssetFilters, limit: int, offset: int
) -> DatasetPage:
    """A page of datasets matching ``filters`` (a zone includes its nested zones).

    A tenant or zone that does not exist is a 422, not an empty page.
    """
    check_references(conn, filters)
    items, total = _search(conn, _DATASETS, filters, limit, offset)
    return DatasetPage(items=items, total=total, limit=limit, offset=offset)


def get_dataset(conn: DbConnection, name: str) -> DatasetPublic:
    """One dataset with its storage zones, or 404."""
    return _DATASETS.existing(conn, name)


def update_dataset(
    conn: DbConnection, ctx: AuditContext, name: str, change: DatasetUpdate
) -> DatasetPublic:
    """Change a dataset's owner, classification, storage zones, labels or description."""
    return _update(conn, ctx, _DATASETS, name, change)


def delete_dataset(conn: DbConnection, ctx: AuditContext, name: str) -> None:
    """Delete a dataset from the registry; audit it."""
    _delete(conn, ctx, _DATASETS, name)


def register_model(conn: DbConnection, ctx: AuditContext, model: ModelCreate) -> ModelPublic:
    """Register a model with its provenance and license; audit it."""
    return _register(conn, ctx, _MODELS, model)


def list_models(conn: DbConnection, filters: ModelFilters, limit: int, offset: int) -> ModelPage:
    """A page of models matching ``filters``; an unknown tenant or zone is a 422."""
    check_references(conn, filters)
    items, total = _search(conn, _MODELS, filters, limit, offset)
    return ModelPage(items=items, total=total, limit=limit, offset=offset)


def get_model(conn: DbConnection, name: str) -> ModelPublic:
    """One model with its storage zones, or 404."""
    return _MODELS.existing(conn, name)


def update_model(
    conn: DbConnection, ctx: AuditContext, name: str, change: ModelUpdate
) -> ModelPublic:
    """Change a model's owner, classification, zones, labels, provenance or license."""
    return _update(conn, ctx, _MODELS, name, change)


def delete_model(conn: DbConnection, ctx: AuditContext, name: str) -> None:
    """Delete a model from the registry; audit it."""
    _delete(conn, ctx, _MODELS, name)


# -- grants ----------------------------------------------------------------------------


def _tenants(grants: list[GrantPublic]) -> str:
    return ", ".join(sorted({grant.tenant for grant in grants}))


def _grant_subject(grant: GrantPublic, change: str) -> dict[str, Any]:
    """What a compliance request says of a grant that changed."""
    return {
        "kind": grant.kind.value,
        "name": grant.asset,
        "change": change,
        "grant": str(grant.id),
        "tenant": grant.tenant,
    }


def _grant(
    conn: DbConnection,
    ctx: AuditContext,
    assets: _Assets[AssetT],
    name: str,
    grant: GrantCreate,
) -> GrantPublic:
    """Grant a tenant other than the owner the use of a dataset or model; audit it.

    The asset is locked until commit, so two grants of it cannot both pass the checks:
    a tenant holds at most one grant in force per asset, and an asset is granted to at
    most ``MAX_GRANTEES`` tenants at once (the bound CEL's cost estimate counts on).
    """
    kind = assets.kind
    with audited(conn, ctx, AuditAction.ASSET_GRANT_CREATED) as change:
        asset = assets.existing(conn, name, for_update=True)
        if grant.tenant == asset.tenant:
            raise InvalidInputError.for_field(
                "tenant",
                f"tenant {grant.tenant!r} owns {kind} {name!r}; an owner needs no grant",
                grant.tenant,
            )
        in_force = [g for g in repository.list_grants(conn, kind, name) if g.in_force]
        held = [g for g in in_force if g.tenant == grant.tenant]
        if held:
            raise ConflictError(
                f"tenant {grant.tenant!r} already holds grant {held[0].id} on {kind} {name!r};"
                " revoke it first to change it",
                details={"grant": str(held[0].id)},
            )
        if len(in_force) >= MAX_GRANTEES:
            raise ConflictError(
                f"{kind} {name!r} is granted to {MAX_GRANTEES} tenants already, the most at"
                " once; revoke one first"
            )
        created = repository.insert_grant(
            conn,
            {
                "kind": kind.value,
                "asset": name,
                "owner": asset.tenant,
                "tenant": grant.tenant,
                "reason": grant.reason,
                "granted_by_id": ctx.actor_id,
                "granted_by": ctx.actor_name,
                "expires_at": grant.expires_at,
            },
        )
        change.object_id = str(created.id)
        change.after = created
        # CEL sees ``granted_to``: a policy may read it, so running workloads are judged again.
        request_evaluation(
            conn, EvaluationTrigger.REGISTRY_CHANGED, _grant_subject(created, "granted")
        )
    return created


def _grants(conn: DbConnection, assets: _Assets[AssetT], name: str) -> list[GrantPublic]:
    """Every grant of a dataset or model, oldest first (404 if the asset does not exist)."""
    assets.existing(conn, name)
    return repository.list_grants(conn, assets.kind, name)


def _revoke(
    conn: DbConnection, ctx: AuditContext, assets: _Assets[AssetT], name: str, grant_id: UUID
) -> GrantPublic:
    """Revoke a grant (the row is kept, with who revoked it and when); audit it.

    Running workloads that depend on it become violations at the evaluation this asks for.
    """
    kind = assets.kind
    with audited(conn, ctx, AuditAction.ASSET_GRANT_REVOKED, str(grant_id)) as change:
        assets.existing(conn, name)
        before = repository.lock_grant(conn, kind, name, grant_id)
        if before is None:
            raise NotFoundError(f"{kind} {name!r} has no grant {grant_id}")
        if before.revoked_at is not None:
            raise ConflictError(
                f"grant {grant_id} was revoked at {before.revoked_at.isoformat()} already"
            )
        change.before = before
        change.after = after = repository.revoke_grant(conn, grant_id, ctx.actor_name, ctx.actor_id)
        request_evaluation(
            conn, EvaluationTrigger.REGISTRY_CHANGED, _grant_subject(after, "grant_revoked")
        )
    return after


def grant_dataset(
    conn: DbConnection, ctx: AuditContext, name: str, grant: GrantCreate
) -> GrantPublic:
    """Grant a tenant the use of a dataset it does not own; audit it."""
    return _grant(conn, ctx, _DATASETS, name, grant)


def dataset_grants(conn: DbConnection, name: str) -> list[GrantPublic]:
    """Every grant of a dataset, revoked and expired ones too."""
    return _grants(conn, _DATASETS, name)


def revoke_dataset_grant(
    conn: DbConnection, ctx: AuditContext, name: str, grant_id: UUID
) -> GrantPublic:
    """Revoke a grant of a dataset; audit it."""
    return _revoke(conn, ctx, _DATASETS, name, grant_id)


def grant_model(
    conn: DbConnection, ctx: AuditContext, name: str, grant: GrantCreate
) -> GrantPublic:
    """Grant a tenant the use of a model it does not own; audit it."""
    return _grant(conn, ctx, _MODELS, name, grant)


def model_grants(conn: DbConnection, name: str) -> list[GrantPublic]:
    """Every grant of a model, revoked and expired ones too."""
    return _grants(conn, _MODELS, name)


def revoke_model_grant(
    conn: DbConnection, ctx: AuditContext, name: str, grant_id: UUID
) -> GrantPublic:
    """Revoke a grant of a model; audit it."""
    return _revoke(conn, ctx, _MODELS, name, grant_id)


def notice_expired_grants(conn: DbConnection, ctx: AuditContext) -> list[GrantPublic]:
    """Mark the grants that expired unnoticed, audit each and ask for an evaluation.

    The compliance task calls it in its transaction before it claims the pending
    requests, so an expiry is judged by the evaluation of the same beat. Each expiry is
    noticed once (``expiry_noticed_at``); a revoked grant's end was noticed when revoked.
    """
    expired = repository.notice_expired_grants(conn)
    for grant in expired:
        request_evaluation(
            conn, EvaluationTrigger.REGISTRY_CHANGED, _grant_subject(grant, "grant_expired")
        )
        record_change(conn, ctx, AuditAction.ASSET_GRANT_EXPIRED, str(grant.id), after=grant)
    return expired


# -- artifact destinations -------------------------------------------------------------


def create_destination(
    conn: DbConnection, ctx: AuditContext, destination: DestinationCreate
) -> DestinationPublic:
    """Store an artifact destination in an existing zone and audit it."""
    with audited(conn, ctx, AuditAction.DESTINATION_CREATED, destination.name) as change:
        change.after = created = repository.insert_destination(conn, destination.model_dump())
    return created


def list_destinations(conn: DbConnection) -> list[DestinationPublic]:
    """Every artifact destination."""
    return repository.list_destinations(conn)


def _existing_destination(
    conn: DbConnection, name: str, *, for_update: bool = False
) -> DestinationPublic:
    found = repository.get_destination(conn, name, for_update=for_update)
    if found is None:
        raise NotFoundError(f"destination {name!r} does not exist")
    return found


def get_destination(conn: DbConnection, name: str) -> DestinationPublic:
    """One artifact destination, or 404."""
    return _existing_destination(conn, name)


def delete_destination(conn: DbConnection, ctx: AuditContext, name: str) -> None:
    """Delete an artifact destination; audit what it was."""
    with audited(conn, ctx, AuditAction.DESTINATION_DELETED, name) as change:
        change.before = _existing_destination(conn, name, for_update=True)
        repository.delete_destination(conn, name)
        request_evaluation(
            conn,
            EvaluationTrigger.REGISTRY_CHANGED,
            {"kind": "destination", "name": name, "change": "deleted"},
        )
