"""The audit actions: one closed list, documented in docs/audit.md as the code records them."""

import json
import re
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from control_plane.cli.main import main
from control_plane.core.audit_log import AuditContext, record_change
from control_plane.domain.audit import AUDIT_ACTIONS, AuditAction, actions_table

DOC = Path(__file__).resolve().parents[2] / "docs/audit.md"


def test_every_action_is_documented_in_order() -> None:
    assert list(AUDIT_ACTIONS) == list(AuditAction)
    assert all(action.object_type for action in AuditAction)


def test_the_doc_shows_the_table_the_code_holds() -> None:
    text = DOC.read_text(encoding="utf-8")
    shown = text.split("<!-- actions:begin -->\n", 1)[1].split("\n<!-- actions:end -->", 1)[0]
    assert shown == actions_table()


class Elsewhere(BaseModel):
    """A snapshot no action documents."""

    anything: str = "x"


def test_a_snapshot_the_table_does_not_name_is_refused() -> None:
    # Refused before anything is written, so no connection is needed.
    ctx = AuditContext(actor_id="test", actor_name="test")
    with pytest.raises(TypeError, match=r"zone\.created: after must be ZonePublic, not Elsewhere"):
        record_change(None, ctx, AuditAction.ZONE_CREATED, "z", after=Elsewhere())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="before must be None, not Elsewhere"):
        record_change(None, ctx, AuditAction.ZONE_CREATED, "z", before=Elsewhere())  # type: ignore[arg-type]


def sovctl(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["sovctl", *args])
    code = main()
    return code, capsys.readouterr().out


def test_sovctl_lists_the_actions_with_no_server_or_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = sovctl(monkeypatch, capsys, "audit", "actions", "-o", "json")
    assert code == 0
    listed = json.loads(out)
    assert [item["action"] for item in listed] == [action.value for action in AuditAction]
    assert listed[0] == {
        "action": "token.created",
        "object_type": "token",
        "when": "a token is created (an agent's too, at registration)",
        "before": "null",
        "after": "TokenPublic",
    }
    code, out = sovctl(monkeypatch, capsys, "audit", "actions")
    assert code == 0
    assert re.search(r"^tenant\.quota_set +tenant +QuotaPublic or null +QuotaPublic$", out, re.M)
