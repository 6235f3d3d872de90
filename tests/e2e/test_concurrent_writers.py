"""Two API processes writing at once never fork the audit chain."""

import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from control_plane.access.models import Role
from control_plane.audit import service as audit
from control_plane.core.db import DbConnection
from control_plane.core.settings import Settings
from tests.support import SOVCTL, bearer, free_port, subprocess_env, wait_until_ready

pytestmark = pytest.mark.e2e

WRITES_PER_PROCESS = 40


@pytest.fixture
def two_api_processes(settings: Settings) -> Iterator[list[str]]:
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [*SOVCTL, "serve", "--port", str(port)],
            env=subprocess_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, process in zip(urls, processes, strict=True):
            wait_until_ready(f"{url}/readyz", process=process)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=15)


def test_concurrent_writes_through_two_processes_keep_one_chain(
    two_api_processes: list[str], make_token: Callable[[Role], str], conn: DbConnection
) -> None:
    headers = bearer(make_token(Role.ADMIN))
    events_before = audit.list_events(conn).total

    def create_zone(job: tuple[str, int]) -> int:
        url, n = job
        body = {"slug": f"zone-{n}", "name": f"Zone {n}", "country": "JP"}
        return httpx.post(f"{url}/v1/zones", json=body, headers=headers, timeout=30).status_code

    jobs = [
        (url, n * 2 + i)
        for n in range(WRITES_PER_PROCESS)
        for i, url in enumerate(two_api_processes)
    ]
    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(create_zone, jobs))

    assert codes == [201] * len(jobs)
    result = audit.verify_chain(conn)
    assert result.ok, result
    assert result.events_checked == events_before + len(jobs)
    seqs = [e.seq for e in audit.list_events(conn, limit=1000).items]
    assert seqs == list(range(1, len(seqs) + 1))
