"""Residency zones and sites: the places nodes, data and outputs are in.

Each mutation runs through ``core.audit_log.audited``, so the change and its event commit
together. Moving a zone (a new parent or country) asks for a compliance evaluation in the
same transaction: every node inside it now lies in other places.
"""

from control_plane.core.audit_log import AuditContext, audited
from control_plane.core.db import DbConnection
from control_plane.core.errors import InvalidInputError, NotFoundError
from control_plane.core.outbox import request_evaluation
from control_plane.domain.audit import AuditAction
from control_plane.domain.compliance import EvaluationTrigger
from control_plane.inventory import repository
from control_plane.inventory.models import (
    SiteCreate,
    SitePublic,
    ZoneCreate,
    ZonePublic,
    ZoneUpdate,
)

#: The fields of a zone that say where its nodes are.
_PLACEMENT = {"parent", "country"}


def create_zone(conn: DbConnection, ctx: AuditContext, zone: ZoneCreate) -> ZonePublic:
    """Store a residency zone (its parent must exist) and audit it."""
    with audited(conn, ctx, AuditAction.ZONE_CREATED, zone.slug) as change:
        change.after = created = repository.insert_zone(conn, zone.model_dump())
    return created


def list_zones(conn: DbConnection) -> list[ZonePublic]:
    """Every residency zone."""
    return repository.list_zones(conn)


def _existing(conn: DbConnection, slug: str, *, for_update: bool = False) -> ZonePublic:
    zone = repository.get_zone(conn, slug, for_update=for_update)
    if zone is None:
        raise NotFoundError(f"zone {slug!r} does not exist")
    return zone


def get_zone(conn: DbConnection, slug: str) -> ZonePublic:
    """One residency zone, or 404."""
    return _existing(conn, slug)


def update_zone(conn: DbConnection, ctx: AuditContext, slug: str, change: ZoneUpdate) -> ZonePublic:
    """Change a zone; refuse a parent that would put the zone inside itself."""
    with audited(conn, ctx, AuditAction.ZONE_UPDATED, slug) as event:
        event.before = before = _existing(conn, slug, for_update=True)
        values = before.model_dump(include={"slug", "name", "country", "parent", "description"})
        values.update(change.model_dump(exclude_unset=True))
        parent = values["parent"]
        if parent is not None and slug in repository.zone_ancestors(conn, parent):
            raise InvalidInputError.for_field(
                "parent", f"zone {parent!r} is inside {slug!r}; that would make a cycle", parent
            )
        event.after = after = repository.update_zone(conn, values)
        if before.model_dump(include=_PLACEMENT) != after.model_dump(include=_PLACEMENT):
            # Every node in the zone (or inside it) now lies in other places.
            request_evaluation(
                conn,
                EvaluationTrigger.ZONE_CHANGED,
                {
                    "zone": slug,
                    "before": before.model_dump(mode="json", include=_PLACEMENT),
                    "after": after.model_dump(mode="json", include=_PLACEMENT),
                },
            )
    return after


def delete_zone(conn: DbConnection, ctx: AuditContext, slug: str) -> None:
    """Delete a zone that no node, site or child zone uses (else 409)."""
    with audited(conn, ctx, AuditAction.ZONE_DELETED, slug) as change:
        change.before = _existing(conn, slug, for_update=True)
        repository.delete_zone(conn, slug)


def create_site(conn: DbConnection, ctx: AuditContext, site: SiteCreate) -> SitePublic:
    """Store a site inside an existing zone and audit it."""
    with audited(conn, ctx, AuditAction.SITE_CREATED, site.slug) as change:
        change.after = created = repository.insert_site(conn, site.model_dump())
    return created


def list_sites(conn: DbConnection) -> list[SitePublic]:
    """Every site."""
    return repository.list_sites(conn)


def check_site_in_zone(conn: DbConnection, site: str | None, zone: str | None) -> None:
    """A node's site and zone must not contradict: one zone must enclose the other.

    An unknown site or zone is left to the foreign keys, which name the field.
    """
    if site is None or zone is None:
        return
    found = repository.get_site(conn, site)
    if found is None or found.zone == zone:
        return
    if zone in repository.zone_ancestors(conn, found.zone) or found.zone in (
        repository.zone_ancestors(conn, zone)
    ):
        return
    raise InvalidInputError.for_field(
        "site",
        f"site {site!r} is in zone {found.zone!r}, which neither encloses nor lies "
        f"inside zone {zone!r}",
        site,
    )
