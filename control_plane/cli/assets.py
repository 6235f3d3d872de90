"""``sovctl datasets|models create|list|show|update|delete``: the data registry, via the API.

Datasets and models are both assets: an owning tenant, a classification, storage zones and
labels. Models add their provenance (supplier, country of origin) and license. Another
tenant uses one only through a grant: ``grant``, ``grants`` and ``revoke``. As in the
registry service, the two share one implementation here; each command only adds what
models have on top.
"""

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from control_plane.cli.client import api
from control_plane.cli.options import (
    Description,
    Labels,
    Limit,
    NewDescription,
    Offset,
    changes,
    parse_labels,
)
from control_plane.cli.output import Output, OutputFormat, emit, emit_page
from control_plane.domain.classification import Classification

datasets_app = typer.Typer(no_args_is_help=True, help="Datasets (via the API).")
models_app = typer.Typer(no_args_is_help=True, help="Models (via the API).")

Name = Annotated[str, typer.Argument(help="Its registered name.")]
Zones = Annotated[
    str, typer.Option("--zones", help="Storage zones, comma-separated, e.g. jp-east,jp-west.")
]
NewZones = Annotated[
    str | None, typer.Option("--zones", help="New storage zones (replace the list).")
]
RemovedLabels = Annotated[
    list[str] | None, typer.Option("--remove-label", help="Label key to remove; repeat.")
]
TenantOption = Annotated[str, typer.Option("--tenant", help="Owning tenant's slug.")]
NewTenant = Annotated[str | None, typer.Option("--tenant", help="New owning tenant's slug.")]
ClassificationOption = Annotated[
    Classification, typer.Option(help="public, internal, confidential or restricted.")
]
NewClassification = Annotated[
    Classification | None, typer.Option("--classification", help="New classification.")
]
TenantFilter = Annotated[str | None, typer.Option("--tenant", help="Owning tenant's slug.")]
ClassificationFilter = Annotated[Classification | None, typer.Option("--classification")]
ZoneFilter = Annotated[str | None, typer.Option("--zone", help="Storage zone (nested zones too).")]
Origin = Annotated[str, typer.Option("--origin", help="Supplier's country, ISO alpha-2.")]
NewOrigin = Annotated[str | None, typer.Option("--origin", help="New country of origin.")]

_DATASET_COLUMNS = ["name", "tenant", "classification", "zones", "labels"]
_MODEL_COLUMNS = [*_DATASET_COLUMNS[:4], "supplier", "origin_country", "license", "labels"]


def _zones(text: str) -> list[str]:
    return [zone.strip() for zone in text.split(",") if zone.strip()]


def _body(
    name: str,
    tenant: str,
    classification: Classification,
    zones: str,
    label: list[str] | None,
    description: str,
) -> dict[str, Any]:
    """What datasets and models have in common in a create request."""
    return {
        "name": name,
        "tenant": tenant,
        "classification": classification.value,
        "zones": _zones(zones),
        "labels": parse_labels(label),
        "description": description,
    }


def _changes(
    tenant: str | None,
    classification: Classification | None,
    zones: str | None,
    label: list[str] | None,
    remove_label: list[str] | None,
    description: str | None,
    **more: Any,
) -> dict[str, Any]:
    """An update's PATCH body; labels are merged (``--remove-label`` sends the key as null)."""
    labels: dict[str, str | None] = {**parse_labels(label), **dict.fromkeys(remove_label or [])}
    return changes(
        {
            "tenant": tenant,
            "classification": classification,
            "zones": None if zones is None else _zones(zones),
            "labels": labels or None,
            "description": description,
            **more,
        }
    )


def _filters(
    tenant: str | None, classification: Classification | None, zone: str | None, **more: Any
) -> dict[str, Any]:
    """A listing's query parameters (those left None are not sent)."""
    return {"tenant": tenant, "classification": classification, "zone": zone, **more}


def _add_show(app: typer.Typer, collection: str, noun: str, columns: list[str]) -> None:
    """``show`` of datasets or models, which differ only in the path and the columns."""

    @app.command("show", help=f"Show a {noun}.")
    def show(name: Name, output: Output = OutputFormat.TABLE) -> None:
        emit(api("GET", f"/v1/{collection}/{name}"), output, [*columns, "description"])


def _add_delete(app: typer.Typer, collection: str, noun: str) -> None:
    """``delete`` of datasets or models, which differ only in the path."""

    @app.command("delete", help=f"Delete a {noun} from the registry.")
    def delete(name: Name) -> None:
        api("DELETE", f"/v1/{collection}/{name}")
        typer.echo(f"deleted {noun} {name}")


_GRANT_COLUMNS = ["id", "tenant", "in_force", "expires_at", "granted_by", "reason", "revoked_at"]


def _add_grants(app: typer.Typer, collection: str, noun: str) -> None:
    """``grant``, ``grants`` and ``revoke`` of datasets or models, which differ in the path."""

    @app.command("grant", help=f"Grant a tenant other than the owner the use of a {noun}.")
    def grant(
        name: Name,
        tenant: Annotated[str, typer.Option("--tenant", help="The tenant granted use.")],
        reason: Annotated[str, typer.Option("--reason", help="Why, e.g. a ticket.")],
        expires_at: Annotated[
            str | None,
            typer.Option(
                "--expires-at", help="When it ends, ISO 8601 with a time zone; default: never."
            ),
        ] = None,
        output: Output = OutputFormat.TABLE,
    ) -> None:
        body = {"tenant": tenant, "reason": reason, "expires_at": expires_at}
        emit(api("POST", f"/v1/{collection}/{name}/grants", json=body), output, _GRANT_COLUMNS)

    @app.command("grants", help=f"List a {noun}'s grants, revoked and expired ones too.")
    def grants(name: Name, output: Output = OutputFormat.TABLE) -> None:
        emit(api("GET", f"/v1/{collection}/{name}/grants"), output, _GRANT_COLUMNS)

    @app.command("revoke", help=f"Revoke a grant of a {noun} (it is kept, revoked).")
    def revoke(
        name: Name,
        grant_id: Annotated[str, typer.Argument(help="The grant's id.")],
        output: Output = OutputFormat.TABLE,
    ) -> None:
        revoked = api("DELETE", f"/v1/{collection}/{name}/grants/{grant_id}")
        emit(revoked, output, [*_GRANT_COLUMNS, "revoked_by"])


def _page(collection: str, params: Mapping[str, Any], limit: int, offset: int) -> Any:
    return api("GET", f"/v1/{collection}", params={**params, "limit": limit, "offset": offset})


# -- datasets --------------------------------------------------------------------------


@datasets_app.command("create")
def datasets_create(
    name: Annotated[str, typer.Argument(help="Short id, e.g. support-tickets.")],
    tenant: TenantOption,
    classification: ClassificationOption,
    zones: Zones,
    label: Labels = None,
    description: Description = "",
    output: Output = OutputFormat.TABLE,
) -> None:
    """Register a dataset: owner, classification, storage zones and labels."""
    body = _body(name, tenant, classification, zones, label, description)
    emit(api("POST", "/v1/datasets", json=body), output, _DATASET_COLUMNS)


@datasets_app.command("list")
def datasets_list(
    tenant: TenantFilter = None,
    classification: ClassificationFilter = None,
    zone: ZoneFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List datasets."""
    page = _page("datasets", _filters(tenant, classification, zone), limit, offset)
    emit_page(page, output, _DATASET_COLUMNS)


_add_show(datasets_app, "datasets", "dataset", _DATASET_COLUMNS)


@datasets_app.command("update")
def datasets_update(
    name: Name,
    tenant: NewTenant = None,
    classification: NewClassification = None,
    zones: NewZones = None,
    label: Labels = None,
    remove_label: RemovedLabels = None,
    description: NewDescription = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Change a dataset's owner, classification, zones, labels or description."""
    body = _changes(tenant, classification, zones, label, remove_label, description)
    emit(api("PATCH", f"/v1/datasets/{name}", json=body), output, _DATASET_COLUMNS)


_add_delete(datasets_app, "datasets", "dataset")
_add_grants(datasets_app, "datasets", "dataset")


# -- models ----------------------------------------------------------------------------


@models_app.command("create")
def models_create(
    name: Annotated[str, typer.Argument(help="Short id, e.g. llama-3-8b.")],
    tenant: TenantOption,
    classification: ClassificationOption,
    zones: Zones,
    supplier: Annotated[str, typer.Option(help="Who supplied the weights.")],
    origin_country: Origin,
    license_: Annotated[str, typer.Option("--license", help="E.g. apache-2.0.")],
    label: Labels = None,
    description: Description = "",
    output: Output = OutputFormat.TABLE,
) -> None:
    """Register a model with its provenance (supplier, country of origin) and license."""
    body = {
        **_body(name, tenant, classification, zones, label, description),
        "supplier": supplier,
        "origin_country": origin_country,
        "license": license_,
    }
    emit(api("POST", "/v1/models", json=body), output, _MODEL_COLUMNS)


@models_app.command("list")
def models_list(
    tenant: TenantFilter = None,
    classification: ClassificationFilter = None,
    zone: ZoneFilter = None,
    origin_country: Annotated[
        str | None, typer.Option("--origin", help="Country of origin.")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List models."""
    params = _filters(tenant, classification, zone, origin_country=origin_country)
    emit_page(_page("models", params, limit, offset), output, _MODEL_COLUMNS)


_add_show(models_app, "models", "model", _MODEL_COLUMNS)


@models_app.command("update")
def models_update(
    name: Name,
    tenant: NewTenant = None,
    classification: NewClassification = None,
    zones: NewZones = None,
    supplier: Annotated[str | None, typer.Option(help="New supplier.")] = None,
    origin_country: NewOrigin = None,
    license_: Annotated[str | None, typer.Option("--license", help="New license.")] = None,
    label: Labels = None,
    remove_label: RemovedLabels = None,
    description: NewDescription = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Change a model's owner, classification, zones, provenance, license, labels or text."""
    body = _changes(
        tenant,
        classification,
        zones,
        label,
        remove_label,
        description,
        supplier=supplier,
        origin_country=origin_country,
        license=license_,
    )
    emit(api("PATCH", f"/v1/models/{name}", json=body), output, _MODEL_COLUMNS)


_add_delete(models_app, "models", "model")
_add_grants(models_app, "models", "model")
