"""Hostile request bodies, sent as a hostile client would (issue 10, items 3-6, 12, 14, 15).

The stall and memory cases run against ``sovctl serve`` as its own process, so a crash
would show as a dead server rather than a dead test run, and ``/healthz`` is timed while
the hostile request is in flight: it must answer within 0.5 s throughout.
"""

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from control_plane.access.models import Role
from control_plane.core.bodies import (
    DEFAULT_BODY_BYTES,
    MAX_DEPTH,
    MAX_VALUES,
    POLICY_BODY_BYTES,
)
from control_plane.core.db import DbConnection
from control_plane.core.settings import Settings
from control_plane.domain.types import MAX_LABELS
from tests.support import ApiProcess, Run, api_process, bearer, registration

pytestmark = pytest.mark.integration

#: What the issue allows /healthz while a hostile request is in flight.
HEALTHZ_BUDGET_SECONDS = 0.5


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[ApiProcess]:
    with api_process(settings, tmp_path) as running:
        yield running


def while_in_flight(server: ApiProcess, hostile: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``hostile`` in a thread; time /healthz meanwhile; its result and the slowest."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = hostile()
        except Exception as exc:  # the server may close the connection mid-upload
            outcome["result"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    slowest = 0.0
    time.sleep(0.05)
    while thread.is_alive():
        slowest = max(slowest, server.healthz_seconds())
        time.sleep(0.05)
    thread.join()
    slowest = max(slowest, server.healthz_seconds())
    assert server.alive()
    return outcome["result"], slowest


def error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


def fields(response: httpx.Response) -> list[str]:
    return [f["field"] for f in error(response)["details"]["fields"]]


def flow_mapping(size: int) -> bytes:
    """A YAML flow mapping of about ``size`` bytes: slow for a pure-Python parser."""
    pairs: list[str] = []
    total = 2
    while total < size:
        pair = f"k{len(pairs)}: v{len(pairs)}"
        pairs.append(pair)
        total += len(pair) + 2
    return ("{" + ", ".join(pairs) + "}").encode()


# -- item 3: bodies are bounded, and read only after the token --------------------------


@pytest.mark.parametrize(
    "size", [618 * 1024, POLICY_BODY_BYTES - 1024], ids=["beyond-the-route-limit", "within-it"]
)
def test_an_anonymous_yaml_bomb_is_refused_before_it_is_read(server: ApiProcess, size: int) -> None:
    big_yaml = flow_mapping(size)

    def send() -> httpx.Response:
        return httpx.post(
            f"{server.url}/v1/policies",
            content=big_yaml,
            headers={"Content-Type": "application/yaml"},
            timeout=30,
        )

    started = time.monotonic()
    response, slowest = while_in_flight(server, send)
    assert isinstance(response, httpx.Response)
    assert response.status_code == 401
    assert error(response)["code"] == "not_authenticated"
    assert time.monotonic() - started < 1
    assert slowest < HEALTHZ_BUDGET_SECONDS


def test_a_huge_anonymous_body_costs_no_memory(server: ApiProcess) -> None:
    before = server.rss_bytes()
    chunk = b"[" + b"1," * (512 * 1024) + b"1]"

    def upload() -> Iterator[bytes]:
        for _ in range(110):  # about 111 MB in all
            yield chunk

    def send() -> httpx.Response:
        return httpx.post(
            f"{server.url}/v1/zones",
            content=upload(),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )

    result, slowest = while_in_flight(server, send)
    if isinstance(result, httpx.Response):
        assert result.status_code == 401
    else:  # answered before the upload ended, and the connection closed under it
        assert isinstance(result, httpx.TransportError)
    assert server.rss_bytes() - before < 50 * 1024 * 1024
    assert slowest < HEALTHZ_BUDGET_SECONDS


def test_an_authenticated_body_beyond_the_route_limit_is_413(
    server: ApiProcess, make_token: Callable[[Role], str]
) -> None:
    admin = bearer(make_token(Role.ADMIN))
    too_big = b'{"slug": "z", "name": "' + b"x" * DEFAULT_BODY_BYTES + b'", "country": "JP"}'

    def send() -> httpx.Response:
        return httpx.post(
            f"{server.url}/v1/zones",
            content=too_big,
            headers={**admin, "Content-Type": "application/json"},
            timeout=30,
        )

    response, slowest = while_in_flight(server, send)
    assert isinstance(response, httpx.Response)
    assert response.status_code == 413
    assert error(response)["code"] == "payload_too_large"
    assert error(response)["details"] == {"field": "body", "max_bytes": DEFAULT_BODY_BYTES}
    # Policy documents have a lower bound: YAML is parsed in pure Python.
    big_yaml = flow_mapping(618 * 1024)
    response = httpx.post(
        f"{server.url}/v1/policies",
        content=big_yaml,
        headers={**admin, "Content-Type": "application/yaml"},
        timeout=30,
    )
    assert response.status_code == 413
    assert slowest < HEALTHZ_BUDGET_SECONDS


@pytest.mark.parametrize("media_type", ["application/json", "application/yaml"])
def test_deep_nesting_is_a_422_naming_the_body_not_a_traceback(
    server: ApiProcess, make_token: Callable[[Role], str], media_type: str
) -> None:
    admin = bearer(make_token(Role.ADMIN))

    def send() -> httpx.Response:
        return httpx.post(
            f"{server.url}/v1/policies",
            content=b"[" * 50_000,
            headers={**admin, "Content-Type": media_type},
            timeout=30,
        )

    response, slowest = while_in_flight(server, send)
    assert isinstance(response, httpx.Response)
    assert response.status_code == 422, response.text
    assert fields(response) == ["body"]
    assert "RecursionError" not in server.log.read_text()
    assert slowest < HEALTHZ_BUDGET_SECONDS


# -- item 4: labels are bounded ---------------------------------------------------------


def test_registering_with_too_many_labels_is_refused(
    client: TestClient, make_token: Callable[[Role], str]
) -> None:
    bootstrap = bearer(make_token(Role.BOOTSTRAP))
    body = registration(labels={f"k{i}": "v" for i in range(200_000)})
    response = client.post("/v1/agents/register", json=body, headers=bootstrap)
    assert response.status_code == 413
    body = registration(labels={f"k{i}": "v" for i in range(MAX_LABELS + 1)})
    response = client.post("/v1/agents/register", json=body, headers=bootstrap)
    assert response.status_code == 422
    assert [f["field"] for f in response.json()["error"]["details"]["fields"]] == ["labels"]
    body = registration(labels={f"k{i}": "v" for i in range(MAX_LABELS)})
    assert client.post("/v1/agents/register", json=body, headers=bootstrap).status_code == 201


def test_a_label_patch_cannot_grow_labels_past_the_bound(
    client: TestClient, make_token: Callable[[Role], str]
) -> None:
    admin = bearer(make_token(Role.ADMIN))
    body = registration(labels={f"k{i}": "v" for i in range(MAX_LABELS)})
    node = client.post("/v1/agents/register", json=body, headers=admin).json()["node_id"]
    response = client.patch(f"/v1/nodes/{node}", json={"labels": {"one": "more"}}, headers=admin)
    assert response.status_code == 422
    assert response.json()["error"]["details"]["fields"][0]["field"] == "labels"


# -- item 5: YAML aliases cannot expand a small body ------------------------------------


def test_nested_yaml_aliases_are_refused_quickly_with_a_small_answer(
    client: TestClient, admin: dict[str, str]
) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdef", "bcdefg", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    text = "\n".join(lines) + "\n"
    assert len(text) < 400
    started = time.monotonic()
    response = client.post(
        "/v1/policies", content=text, headers={**admin, "Content-Type": "application/yaml"}
    )
    assert time.monotonic() - started < 1
    assert response.status_code == 422
    assert f"more than {MAX_VALUES} values" in response.json()["error"]["message"]
    assert len(response.content) < 2000


# -- item 6: values JSON cannot carry are 422, never 500 ---------------------------------

_YAML_ODDITIES = [
    "name: 2024-01-01",
    "name: p\nrequirements: {compute_countries: [.nan]}",
    "name: p\nrequirements: {compute_zones: !!set {a, b}}",
    "name: p\nselector: {dataset_labels: {since: 2024-01-01}}",
    "name: !!timestamp 2024-01-01",
    "name: !!binary aGVsbG8=",
]
_JSON_ODDITIES = [
    b'{"name": NaN}',
    b'{"name": "p", "description": Infinity}',
    b'{"name": "\\ud800"}',
]


@pytest.mark.parametrize("text", _YAML_ODDITIES)
def test_yaml_values_json_cannot_carry_are_422(
    client: TestClient, admin: dict[str, str], text: str
) -> None:
    for path in ("/v1/policies", "/v1/policies/whatif"):
        response = client.post(
            path, content=text, headers={**admin, "Content-Type": "application/yaml"}
        )
        assert response.status_code in (200, 201, 422), response.text
        json.dumps(response.json(), allow_nan=False)  # the answer itself is valid JSON


@pytest.mark.parametrize("body", _JSON_ODDITIES)
def test_json_values_json_cannot_carry_are_422(
    client: TestClient, admin: dict[str, str], body: bytes
) -> None:
    for path in ("/v1/policies", "/v1/policies/whatif", "/v1/zones"):
        response = client.post(
            path, content=body, headers={**admin, "Content-Type": "application/json"}
        )
        assert response.status_code == 422, (path, response.text)
        json.dumps(response.json(), allow_nan=False)


# -- item 12: random tokens are throttled ------------------------------------------------


def test_random_tokens_are_answered_429_after_the_limit(settings: Settings) -> None:
    from control_plane.app import create_app

    limited = settings.model_copy(update={"auth_failure_limit": 20})
    with TestClient(create_app(limited), raise_server_exceptions=False) as client:
        answers = [
            client.get("/v1/zones", headers=bearer(f"sov_random{i}")).status_code
            for i in range(500)
        ]
        assert answers[:20] == [401] * 20
        assert set(answers[20:]) == {429}
        refused = client.get("/v1/zones", headers=bearer("sov_once-more"))
        assert refused.json()["error"]["code"] == "too_many_requests"
        assert 1 <= int(refused.headers["Retry-After"]) <= 61


# -- item 14: every unreadable body is a 422 naming the body -----------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"slug": "\xff\xfe"}',
        b"[" * 1_100 + b"]" * 1_100,
        b'{"slug": "z", "name": "z", "country": "JP", "n": ' + b"9" * 5_000 + b"}",
        b'{"slug": "a", "slug": "b", "name": "z", "country": "JP"}',
        b'{"slug": "z", "name": "z", "country": "JP", "description": "' + b"x" * 10 + b'"',
    ],
    ids=["not-utf-8", "nested-1100", "5000-digits", "duplicate-key", "truncated"],
)
def test_unreadable_bodies_are_422_naming_the_body(
    client: TestClient, admin: dict[str, str], body: bytes
) -> None:
    response = client.post(
        "/v1/zones", content=body, headers={**admin, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["fields"][0]["field"] == "body"


def test_nesting_within_the_bound_is_read(client: TestClient, admin: dict[str, str]) -> None:
    nested: Any = "x"
    for _ in range(MAX_DEPTH - 3):
        nested = {"k": nested}
    body = {"slug": "z", "name": "z", "country": "JP", "description": "", "extra": nested}
    response = client.post("/v1/zones", json=body, headers=admin)
    assert response.status_code == 422
    assert response.json()["error"]["details"]["fields"][0]["field"] == "extra"  # unknown field


@pytest.mark.parametrize("value", [False, "85520809984"], ids=["boolean", "numeric-string"])
def test_a_number_must_be_a_json_number(
    client: TestClient, make_token: Callable[[Role], str], value: Any
) -> None:
    """Pydantic's lax mode would store ``false`` as 0 and ``"8…"`` as a number: refused."""
    body = registration()
    body["inventory"]["gpus"][0]["memory_total_bytes"] = value
    response = client.post(
        "/v1/agents/register", json=body, headers=bearer(make_token(Role.BOOTSTRAP))
    )
    assert response.status_code == 422, response.text
    [problem] = response.json()["error"]["details"]["fields"]
    assert problem["field"] == "inventory.gpus.0.memory_total_bytes"


# -- item 15: text a person reads back cannot forge what they see ------------------------


@pytest.mark.parametrize("hostname", ["gpu-1\nfake-node  active", "gpu\x1b[31m", "gpu\u202egnp"])
def test_hostnames_refuse_control_and_bidi_characters(
    client: TestClient, make_token: Callable[[Role], str], hostname: str
) -> None:
    response = client.post(
        "/v1/agents/register",
        json=registration(hostname=hostname),
        headers=bearer(make_token(Role.BOOTSTRAP)),
    )
    assert response.status_code == 422
    [problem] = response.json()["error"]["details"]["fields"]
    assert problem["field"] == "inventory.host.hostname"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "\u212ae-zone", "name": "K", "country": "DE"}, "slug"),
        ({"slug": "it-zone", "name": "I", "country": "\u0131t"}, "country"),
        ({"slug": "z", "name": "line\nbreak", "country": "JP"}, "name"),
        ({"slug": "z", "name": "z", "country": "JP", "description": "rtl \u202e"}, "description"),
    ],
)
def test_identifiers_are_ascii_and_names_printable(
    client: TestClient, admin: dict[str, str], body: dict[str, str], field: str
) -> None:
    response = client.post("/v1/zones", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert [f["field"] for f in response.json()["error"]["details"]["fields"]] == [field]


def test_descriptions_keep_their_line_breaks(client: TestClient, admin: dict[str, str]) -> None:
    body = {"slug": "z", "name": "z", "country": "JP", "description": "one\n\ttwo"}
    response = client.post("/v1/zones", json=body, headers=admin)
    assert response.status_code == 201
    assert response.json()["description"] == "one\n\ttwo"


def test_sovctl_tables_escape_what_was_stored_before_the_rules(
    admin_sovctl: Run, admin: dict[str, str], client: TestClient, owner_conn: DbConnection
) -> None:
    node = client.post("/v1/agents/register", json=registration(), headers=admin).json()
    owner_conn.execute(
        "UPDATE node SET hostname = %s WHERE id = %s",
        ("gpu-1\nforged-node  active", node["node_id"]),
    )
    code, out, _ = admin_sovctl("nodes", "list")
    assert code == 0
    assert "forged-node" in out
    assert not any(line.startswith("forged-node") for line in out.splitlines())
    assert "gpu-1\\u000aforged-node" in out
