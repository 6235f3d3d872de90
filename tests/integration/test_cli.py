"""``sovctl``: token management and audit verification against the database, and the
zone and node commands against a live API."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.access.models import Role
from control_plane.core.db import DbConnection
from tests.support import Run, bearer, registration, tamper

pytestmark = pytest.mark.integration


def test_token_lifecycle(sovctl: Run, live_server: str) -> None:
    code, out, _ = sovctl(
        "tokens", "create", "--role", "admin", "--name", "alice", "--output", "json"
    )
    assert code == 0
    created = json.loads(out)
    assert created["token"].startswith("sov_")
    assert created["role"] == "admin"
    headers = bearer(created["token"])
    assert httpx.get(f"{live_server}/v1/zones", headers=headers).status_code == 200

    code, out, _ = sovctl("tokens", "list", "-o", "json")
    listed = json.loads(out)
    assert [t["name"] for t in listed] == ["alice"]
    assert "token" not in listed[0]
    assert created["token"] not in out

    code, out, _ = sovctl("tokens", "list")
    assert "alice" in out
    assert "ROLE" in out

    assert sovctl("tokens", "revoke", "alice")[0] == 0
    assert httpx.get(f"{live_server}/v1/zones", headers=headers).status_code == 401
    code, _, err = sovctl("tokens", "revoke", "alice")
    assert code == 1
    assert "no active token" in err


def test_token_roles_are_checked(sovctl: Run) -> None:
    code, _, err = sovctl("tokens", "create", "--role", "superuser", "--name", "x")
    assert code == 2
    assert "superuser" in err
    code, _, err = sovctl("tokens", "create", "--role", "agent", "--name", "x")
    assert code == 1
    assert "registering" in err


def test_duplicate_active_token_name_is_refused(sovctl: Run) -> None:
    assert sovctl("tokens", "create", "--role", "auditor", "--name", "eve")[0] == 0
    code, _, err = sovctl("tokens", "create", "--role", "auditor", "--name", "eve")
    assert code == 1
    assert "name" in err


def test_zone_and_node_commands_through_the_api(
    admin_sovctl: Run, live_server: str, make_token: Callable[[Role], str]
) -> None:
    sovctl = admin_sovctl
    assert sovctl("zones", "create", "jp", "--name", "Japan", "--country", "JP")[0] == 0
    code, out, _ = sovctl(
        "zones",
        "create",
        "jp-east",
        "--name",
        "Japan East",
        "--country",
        "jp",
        "--parent",
        "jp",
        "-o",
        "json",
    )
    assert json.loads(out)["parent"] == "jp"
    code, out, _ = sovctl("zones", "list")
    assert out.splitlines()[0].split() == ["SLUG", "NAME", "COUNTRY", "PARENT", "DESCRIPTION"]
    assert len(out.splitlines()) == 3

    code, _, err = sovctl("zones", "create", "xx", "--name", "Nowhere", "--country", "XX")
    assert code == 1
    assert "HTTP 422" in err
    assert "country" in err

    body = registration(hostname="gpu-7", zone="jp-east", origin_country="TW")
    response = httpx.post(
        f"{live_server}/v1/agents/register", json=body, headers=bearer(make_token(Role.BOOTSTRAP))
    )
    assert response.status_code == 201
    assert sovctl("nodes", "tag", "gpu-7", "team=ml", "rack=a1")[0] == 0
    code, out, _ = sovctl("nodes", "tag", "gpu-7", "rack-", "-o", "json")
    assert json.loads(out)["labels"] == {"team": "ml"}

    code, out, _ = sovctl("nodes", "list", "--zone", "jp", "-o", "json")
    assert [n["hostname"] for n in json.loads(out)["items"]] == ["gpu-7"]
    code, out, _ = sovctl("nodes", "list", "--origin", "US", "-o", "json")
    assert json.loads(out)["items"] == []
    code, out, _ = sovctl("nodes", "list", "--origin", "TW")
    assert "gpu-7" in out
    assert "(1 of 1)" in out
    code, out, _ = sovctl("nodes", "show", "gpu-7")
    assert code == 0
    assert "NVIDIA H100 80GB HBM3" in out
    code, _, err = sovctl("nodes", "tag", "gpu-7", "oops")
    assert code == 2
    assert "key=value" in err

    code, out, err = sovctl("nodes", "update", "gpu-7", "--status", "maintenance", "-o", "json")
    assert code == 0, err
    assert (json.loads(out)["status"], json.loads(out)["zone"]) == ("maintenance", "jp-east")
    code, out, err = sovctl("nodes", "update", "gpu-7", "--no-zone")
    assert code == 0, err
    assert json.loads(sovctl("nodes", "show", "gpu-7", "-o", "json")[1])["zone"] is None
    code, _, err = sovctl("nodes", "update", "gpu-7")
    assert code == 2
    assert "nothing to change" in err
    code, _, err = sovctl("nodes", "update", "gpu-7", "--zone", "jp", "--no-zone")
    assert code == 2


def test_zone_show_update_delete(admin_sovctl: Run) -> None:
    sovctl = admin_sovctl
    assert sovctl("zones", "create", "jp", "--name", "Japan", "--country", "JP")[0] == 0
    assert sovctl("zones", "create", "osaka", "--name", "Osaka", "--country", "JP")[0] == 0
    code, out, err = sovctl("zones", "update", "osaka", "--parent", "jp", "--name", "Osaka DC")
    assert code == 0, err
    assert "Osaka DC" in out
    code, out, err = sovctl("zones", "show", "osaka", "-o", "json")
    assert code == 0, err
    assert (json.loads(out)["parent"], json.loads(out)["name"]) == ("jp", "Osaka DC")
    code, _, err = sovctl("zones", "delete", "jp")
    assert code == 1
    assert "HTTP 409" in err
    code, out, err = sovctl("zones", "update", "osaka", "--no-parent", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["parent"] is None
    code, _, err = sovctl("zones", "update", "osaka")
    assert code == 2
    assert "nothing to change" in err

    code, out, err = sovctl("zones", "delete", "jp")
    assert (code, out) == (0, "deleted zone jp\n"), err
    code, _, err = sovctl("zones", "show", "jp")
    assert code == 1
    assert "HTTP 404" in err


def test_api_commands_need_a_reachable_server_and_token(
    sovctl: Run, live_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOVCTL_URL", live_server)
    code, _, err = sovctl("zones", "list")
    assert code == 1
    assert "HTTP 401" in err
    monkeypatch.setenv("SOVCTL_URL", "http://127.0.0.1:9")
    code, _, err = sovctl("zones", "list")
    assert code == 1
    assert "not reachable" in err


def test_config_file_supplies_url_and_token(
    sovctl: Run,
    live_server: str,
    make_token: Callable[[Role], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "sovctl.yaml"
    config.write_text(f"url: {live_server}\ntoken: {make_token(Role.AUDITOR)}\n")
    monkeypatch.setenv("SOVCTL_CONFIG", str(config))
    code, out, _ = sovctl("zones", "list", "-o", "json")
    assert code == 0
    assert json.loads(out) == []
    config.write_text("url: [not, a, url]\nextra: 1\n")
    code, _, err = sovctl("zones", "list")
    assert code == 1
    assert "not a valid sovctl config" in err


@pytest.mark.tampers_audit
def test_audit_verify_names_the_first_broken_seq(
    sovctl: Run, owner_conn: DbConnection, sovctl_as: Callable[[Role], Run]
) -> None:
    for name in ("a", "b", "c"):
        sovctl("tokens", "create", "--role", "operator", "--name", name)
    code, out, _ = sovctl("audit", "verify")
    assert code == 0
    assert "intact" in out
    tamper(owner_conn, "UPDATE audit_event SET actor_name = 'mallory' WHERE seq = 2")
    code, out, _ = sovctl("audit", "verify")
    assert code == 1
    assert "BROKEN at seq 2" in out
    code, out, _ = sovctl_as(Role.AUDITOR)("audit", "verify", "--api", "-o", "json")
    result: dict[str, Any] = json.loads(out)
    assert code == 1
    assert result["first_broken_seq"] == 2


def test_db_upgrade_reports_up_to_date(sovctl: Run) -> None:
    code, out, _ = sovctl("db", "upgrade")
    assert code == 0
    assert "up to date" in out


def test_unknown_setting_is_one_clear_line(sovctl: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVEREIGN_DATABSE_URL", "postgresql://typo")
    code, _, err = sovctl("tokens", "list")
    assert code == 1
    assert "SOVEREIGN_DATABSE_URL" in err
    assert "Traceback" not in err
