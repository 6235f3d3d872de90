"""Hostile CEL sent to a real API process: refused by name, the process alive and answering.

The expressions are those of issue 10: chained selections that segfaulted the process,
nested calls that made it panic, and nested comprehensions that held the GIL for
minutes. They go to a ``sovctl serve`` child process, so a crash would show as a dead
child rather than kill pytest.
"""

import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from control_plane.access.models import Role
from control_plane.core.settings import Settings
from tests.support import SOVCTL, bearer, free_port, subprocess_env, wait_until_ready

pytestmark = pytest.mark.e2e

TEN = "[0,0,0,0,0,0,0,0,0,0]"


def nested(*macros: str) -> str:
    """Eight comprehensions over ten elements each, taking ``macros`` in turn."""
    text = "true"
    for level in reversed(range(8)):
        macro = macros[level % len(macros)]
        inner = f"{TEN}.{macro}(v{level}, {text})"
        text = f"size({inner}) > 0" if macro in ("map", "filter") else inner
    return text


HOSTILE = {
    "chained selections (segfault)": "workload" + ".a" * 20000 + " == 1",
    "nested calls (panic)": "size(" * 20000 + "[]" + ")" * 20000 + " == 0",
    "eight nested comprehensions": nested("all"),
    "the same through map, filter and exists": nested("map", "filter", "exists"),
    "datasets in models in labels": (
        "datasets.all(d, models.all(m, workload.labels.all(k, d.labels[k] == m.labels[k])))"
    ),
}


@pytest.fixture
def api(settings: Settings) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    process = subprocess.Popen(
        [*SOVCTL, "serve", "--port", str(port)],
        env=subprocess_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/readyz", process=process)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=15)


def _document(expression: str) -> dict[str, Any]:
    return {"name": "hostile", "requirements": {"cel": [{"name": "x", "expression": expression}]}}


@pytest.mark.parametrize("path", ["/v1/policies", "/v1/policies/whatif"])
def test_hostile_expressions_are_422_and_the_process_keeps_answering(
    api: tuple[str, subprocess.Popen[bytes]], make_token: Callable[[Role], str], path: str
) -> None:
    url, process = api
    headers = bearer(make_token(Role.ADMIN))

    def post(expression: str) -> httpx.Response:
        return httpx.post(url + path, json=[_document(expression)], headers=headers, timeout=60)

    def health() -> float:
        started = time.monotonic()
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        return time.monotonic() - started

    with ThreadPoolExecutor(max_workers=2) as pool:
        for name, expression in HOSTILE.items():
            answer = pool.submit(post, expression)
            assert health() < 0.5, name
            response = answer.result()
            assert response.status_code == 422, (name, response.text)
            [problem] = response.json()["error"]["details"]["fields"]
            assert problem["field"] == "policies[0].requirements.cel[0].expression", name
            assert process.poll() is None, name
            if len(expression) > 4000:
                assert problem["message"] == "String should have at most 4000 characters"
            else:
                assert problem["message"].startswith("estimated cost "), name
                assert "exceeds the limit of 300,000" in problem["message"]
    assert health() < 0.5
    # Nothing was stored, and an ordinary rule is still accepted.
    assert httpx.get(f"{url}/v1/policies", headers=headers, timeout=5).json() == []
    fine = httpx.post(
        f"{url}/v1/policies",
        json=[_document('"cost-center" in workload.labels')],
        headers=headers,
        timeout=30,
    )
    assert fine.status_code == 201, fine.text
