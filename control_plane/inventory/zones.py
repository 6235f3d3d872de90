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


def _check_parent_country(
    conn: DbConnection, country: str, parent: str | None, field: str, value: str | None
) -> None:
    """A zone inside another lies in its country: refuse a parent of another country.

    The parent is share-locked, so its country cannot change before this zone is stored.
    ``field`` is the request field to name (``country`` or ``parent``), ``value`` its
    value. An unknown parent is left to the foreign key, which names ``parent``.
    """
    if parent is None:
        return
    found = repository.share_zone(conn, parent)
    if found is None or found.country == country:
        return
    raise InvalidInputError.for_field(
        field,
        f"zone {parent!r} is in {found.country}; a zone inside it lies in {found.country} "
        f"too, not {country}",
        value,
    )


def _check_children_country(conn: DbConnection, slug: str, country: str) -> None:
    """A zone with child zones keeps their country: refuse a change that would strand them.

    Refused rather than carried down the tree: moving every zone below, and every node in
    them, to another country is a residency change an admin makes one zone at a time
    (detach the children, change the country, move them back with theirs).
    """
    stranded = [
        child.slug for child in repository.zone_children(conn, slug) if child.country != country
    ]
    if stranded:
        raise InvalidInputError.for_field(
            "country",
            f"zone {slug!r} has child zones in another country than {country} "
            f"({', '.join(stranded)}); a child zone lies in its parent's country: detach "
            "or move them first",
            country,
        )


def create_zone(conn: DbConnection, ctx: AuditContext, zone: ZoneCreate) -> ZonePublic:
    """Store a residency zone (its parent must exist, in its country) and audit it."""
    with audited(conn, ctx, AuditAction.ZONE_CREATED, zone.slug) as change:
        if zone.parent != zone.slug:  # a zone as its own parent: the constraint names it
            _check_parent_country(conn, zone.country, zone.parent, "country", zone.country)
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
    """Change a zone; refuse a cycle, and a zone in another country than its parent.

    A country or parent that would put the zone in another country than the zone it is
    in, or leave its child zones in another country than it, is a 422.
    """
    with audited(conn, ctx, AuditAction.ZONE_UPDATED, slug) as event:
        event.before = before = _existing(conn, slug, for_update=True)
        values = before.model_dump(include={"slug", "name", "country", "parent", "description"})
        changed = change.model_dump(exclude_unset=True)
        values.update(changed)
        parent = values["parent"]
        if parent is not None and slug in repository.zone_ancestors(conn, parent):
            raise InvalidInputError.for_field(
                "parent", f"zone {parent!r} is inside {slug!r}; that would make a cycle", parent
            )
        if changed.keys() & _PLACEMENT:
            # Name the field the request got wrong: the country it sent, else the parent.
            field = "country" if "country" in changed else "parent"
            _check_parent_country(conn, values["country"], parent, field, values[field])
        if values["country"] != before.country:
            _check_children_country(conn, slug, values["country"])
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
