"""Reports on real Celery workers: a worker killed mid-report, and ``sovctl reports create``.

The kill is real: ``sovctl worker`` runs as its own process group (the main process and
its pool child), builds a slowed-down report, and the whole group gets SIGKILL halfway,
as a node that loses power would. A second worker then finishes the job: beat's
dispatcher finds it running with a builder silent for the lease and sends it again.
"""

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient

from control_plane.celery_app import create_celery
from control_plane.core.db import DbConnection
from control_plane.core.settings import ReportSettings, Settings
from control_plane.reports.tasks import DISPATCH_TASK
from tests.support import SOVCTL, Run, subprocess_env

pytestmark = pytest.mark.integration

PERIOD = {"period_from": "2026-01-01T00:00:00Z", "period_to": "2026-01-02T00:00:00Z"}


def _job(conn: DbConnection, job_id: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT status, percent, step, attempts FROM report_job WHERE id = %s", (job_id,)
    ).fetchone()
    assert row is not None
    return dict(row)


def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not {what} within {timeout} s")


def _worker(settings: Settings, tmp_path: Path, name: str, **env: str) -> subprocess.Popen[bytes]:
    with (tmp_path / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [*SOVCTL, "worker", "--concurrency", "1"],
            env=subprocess_env(
                settings,
                SOVEREIGN_STATE_DIR=str(tmp_path / "state"),
                SOVEREIGN_REPORTS__LEASE_SECONDS="3",
                **env,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group, so one signal reaches the pool child too.
            start_new_session=True,
        )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def test_a_worker_killed_mid_report_leaves_a_job_another_worker_completes(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    celery_app: Celery,
    conn: DbConnection,
    tmp_path: Path,
) -> None:
    job = client.post(
        "/v1/reports", json={"kind": "sovereignty", "format": "json", **PERIOD}, headers=admin
    ).json()
    first = _worker(settings, tmp_path, "first", SOVEREIGN_REPORTS__STEP_DELAY_SECONDS="1")
    try:
        celery_app.send_task(DISPATCH_TASK)
        _until(lambda: _job(conn, job["id"])["percent"] >= 20, 60, "halfway")
    finally:
        _kill_group(first)
    halfway = _job(conn, job["id"])
    assert halfway["status"] == "running", halfway
    assert halfway["attempts"] == 1
    second = _worker(settings, tmp_path, "second")
    try:
        # What beat does every SOVEREIGN_REPORTS__DISPATCH_SECONDS.
        def done() -> bool:
            celery_app.send_task(DISPATCH_TASK)
            return bool(_job(conn, job["id"])["status"] == "done")

        _until(done, 90, "done")
    finally:
        second.terminate()
        second.wait(timeout=20)
    finished = _job(conn, job["id"])
    assert finished["attempts"] == 2, finished
    download = client.get(f"/v1/reports/{job['id']}/download", headers=admin)
    assert download.status_code == 200
    assert json.loads(download.content)["header"]["kind"] == "sovereignty"


@pytest.fixture
def report_worker(settings: Settings, tmp_path: Path) -> Iterator[Celery]:
    """A real worker in a thread, its dev signing key under the test's directory."""
    app = create_celery(
        settings.model_copy(
            update={
                "state_dir": tmp_path / "state",
                "reports": ReportSettings(step_delay_seconds=0.2),
            }
        )
    )
    with start_worker(
        app,
        pool="solo",
        perform_ping_check=False,
        queues=[settings.celery_queue],
        shutdown_timeout=20,
    ):
        yield app


def test_sovctl_reports_create_follows_the_build_and_downloads_it(
    admin_sovctl: Run, report_worker: Celery, tmp_path: Path
) -> None:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(0.5):
            report_worker.send_task(DISPATCH_TASK)

    dispatcher = threading.Thread(target=beat, daemon=True)
    dispatcher.start()
    try:
        code, out, err = admin_sovctl(
            "reports",
            "create",
            "--kind",
            "compliance",
            "--format",
            "csv",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-02",
            "--out",
            str(tmp_path),
        )
    finally:
        stop.set()
        dispatcher.join()
    assert code == 0, err
    [written] = [
        line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("report:")
    ]
    assert Path(written).name.startswith("sovereign-compliance-20260101T000000Z-20260102T000000Z")
    assert Path(written).suffix == ".zip"
    assert Path(written).stat().st_size > 0
    # Asked again: the stored report, at once, the same file.
    code, _again, err = admin_sovctl(
        "reports",
        "create",
        "--kind",
        "compliance",
        "--format",
        "csv",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-02",
        "--out",
        str(tmp_path / "again.zip"),
    )
    assert code == 0, err
    assert (tmp_path / "again.zip").read_bytes() == Path(written).read_bytes()
    code, listed, _ = admin_sovctl("reports", "list", "-o", "json")
    assert code == 0
    assert [item["status"] for item in json.loads(listed)["items"]] == ["done"]


def test_sovctl_reports_create_refuses_a_bad_kind(admin_sovctl: Run) -> None:
    code, _, err = admin_sovctl(
        "reports", "create", "--kind", "board", "--from", "2026-01-01", "--to", "2026-01-02"
    )
    assert code == 2
    assert "board" in err


def test_beat_dispatches_reports_on_its_interval(settings: Settings) -> None:
    app = create_celery(settings.model_copy(update={"reports": ReportSettings(dispatch_seconds=5)}))
    assert app.conf.beat_schedule["dispatch-reports"] == {"task": DISPATCH_TASK, "schedule": 5.0}
