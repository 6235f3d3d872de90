"""The OpenAPI document: every error answer with the real body, and the rules fields obey.

Built from ``create_app`` without a database: the document needs none.
"""

import re
from typing import Any

import pytest
from fastapi import FastAPI

from control_plane.app import create_app, create_webhook_app
from control_plane.core.errors import InvalidInputError, NotFoundError
from control_plane.core.openapi import (
    EXACT_ERRORS_KEY,
    UUID_PATTERN,
    ErrorBody,
    answers,
    document_errors,
    error_responses,
    exact_errors,
)
from control_plane.core.settings import Settings

SETTINGS = Settings(
    database_url="postgresql://unused@127.0.0.1:1/unused", secret_key="test-secret-key-0123456789"
)
ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
#: What every operation that asks for a token can answer besides its success.
AUTHENTICATED = {"401", "403", "413", "422", "429", "503"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(SETTINGS).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def test_every_error_answer_has_the_real_body(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if status.startswith("4") or (path.startswith("/v1") and status.startswith("5")):
                content = response["content"]["application/json"]
                assert content["schema"] == ERROR_BODY, (method, path, status)
                ErrorBody.model_validate(content["example"])


def test_every_v1_operation_documents_what_it_can_answer(document: dict[str, Any]) -> None:
    v1 = [op for op in operations(document) if op[1].startswith("/v1")]
    assert len(v1) == 74
    for method, path, operation in v1:
        documented = set(operation["responses"])
        assert documented >= AUTHENTICATED, (method, path)
        assert ("404" in documented) == ("{" in path or path.endswith("/latest")), (method, path)
        writes = method in {"POST", "PUT", "PATCH", "DELETE"}
        # A GET that answers 409: a hostname two nodes share, a report not built yet.
        conflicting_reads = {"/v1/nodes/{node}", "/v1/reports/{report_id}/download"}
        assert ("409" in documented) == (writes or path in conflicting_reads), (method, path)
        for status in ("429", "503"):
            assert operation["responses"][status]["headers"]["Retry-After"]["required"]


def test_the_rules_come_from_the_operation() -> None:
    read = {"security": [{"HTTPBearer": []}], "parameters": [{"in": "path", "name": "slug"}]}
    assert answers("get", read) == {401, 403, 404, 413, 422, 429, 503}
    assert answers("post", {"requestBody": {}}) == {409, 422}
    assert answers("get", {}) == frozenset()


def test_the_webhooks_document_exactly_what_they_answer(document: dict[str, Any]) -> None:
    # A caller without the required client certificate (403), a body too large (413), a
    # malformed review (422), no database (503): never 409, though they are POSTs, nor
    # 401/429, since they take no token. They are the webhook listener's, not the API's.
    assert not [path for path in document["paths"] if path.startswith("/k8s")]
    listener = create_webhook_app(SETTINGS).openapi()
    assert set(listener["paths"]) == {
        "/healthz",
        "/readyz",
        "/k8s/mutate",
        "/k8s/validate",
        "/k8s/validate-node",
    }
    for path in ("/k8s/mutate", "/k8s/validate", "/k8s/validate-node"):
        operation = listener["paths"][path]["post"]
        assert set(operation["responses"]) == {"200", "403", "413", "422", "503"}, path
        assert EXACT_ERRORS_KEY not in operation
        assert operation["responses"]["503"]["headers"]["Retry-After"]["required"]


def test_exact_errors_replace_the_rules_and_must_be_whole() -> None:
    assert answers("post", {"requestBody": {}, **exact_errors(413, 422)}) == {413, 422}
    with pytest.raises(ValueError, match=r"\[418\]"):
        exact_errors(418)
    app = FastAPI()

    @app.post("/x", responses=error_responses(409), openapi_extra=exact_errors(422))
    async def route() -> None:
        """A route that documents a status beyond its exact list."""

    document_errors(app)
    with pytest.raises(ValueError, match=r"documents \['409'\] beyond its exact_errors"):
        app.openapi()


def test_examples_are_what_the_errors_say() -> None:
    # The examples are made by the error classes, so they cannot drift from the handler.
    assert ErrorBody.model_validate(NotFoundError("zone 'x' does not exist").to_body())
    field = InvalidInputError.for_field("country", "not a country", "XX").to_body()
    assert ErrorBody.model_validate(field).error.details.fields


def schema_of(document: dict[str, Any], name: str) -> dict[str, Any]:
    properties: dict[str, Any] = document["components"]["schemas"][name]["properties"]
    return properties


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        ("ZoneUpdate", ["name", "country", "description"]),
        ("DatasetUpdate", ["tenant", "classification", "zones", "description"]),
        ("ModelUpdate", ["tenant", "zones", "supplier", "origin_country", "license"]),
    ],
)
def test_update_fields_that_refuse_null_do_not_offer_it(
    document: dict[str, Any], model: str, fields: list[str]
) -> None:
    properties = schema_of(document, model)
    for field in fields:
        assert "null" not in str(properties[field]), (model, field, properties[field])
        assert "default" not in properties[field]
    # ``parent: null`` detaches a zone, and a label set to null is removed: both stay.
    assert {"type": "null"} in schema_of(document, "ZoneUpdate")["parent"]["anyOf"]


def test_fields_show_the_patterns_the_server_applies(document: dict[str, Any]) -> None:
    zone = schema_of(document, "ZoneCreate")
    slug, country = re.compile(zone["slug"]["pattern"]), re.compile(zone["country"]["pattern"])
    for accepted in ("jp-east", "JP-East", " jp ", "a", "0" * 63):
        assert slug.match(accepted), accepted
    for refused in ("-jp", "jp-", "jp_east", "", "a" * 64, "jp east"):
        assert not slug.match(refused), refused
    assert country.match("jp")
    assert country.match(" JP ")
    assert not country.match("JPN")
    # Label keys: any key the pattern refuses is refused, not merely unchecked.
    labels = schema_of(document, "NodeRegister")["labels"]
    assert labels["patternProperties"]
    assert labels["additionalProperties"] is False


def test_numbers_are_bounded_as_validation_bounds_them(document: dict[str, Any]) -> None:
    [offset] = [
        p["schema"]
        for p in document["paths"]["/v1/nodes"]["get"]["parameters"]
        if p["name"] == "offset"
    ]
    assert offset["minimum"] == 0
    assert offset["exclusiveMaximum"] == 2**63
    assert isinstance(offset["exclusiveMaximum"], int)
    [workload_id] = document["paths"]["/v1/workloads/{workload_id}"]["get"]["parameters"]
    assert workload_id["schema"]["pattern"] == UUID_PATTERN
