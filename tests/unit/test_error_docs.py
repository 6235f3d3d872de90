"""docs/api.md lists every error code the API sends, with its status and an example body."""

import re
from pathlib import Path

from control_plane.core import errors, http

API_DOC = Path(__file__).parents[2] / "docs" / "api.md"


def _hierarchy(root: type[errors.SovereignError]) -> list[type[errors.SovereignError]]:
    found = [root]
    for sub in root.__subclasses__():
        found.extend(_hierarchy(sub))
    return found


def test_every_code_is_in_the_table_with_its_status_and_an_example() -> None:
    text = API_DOC.read_text()
    table = dict(re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", text, re.MULTILINE))
    statuses = {
        cls.code: cls.status_code
        for cls in _hierarchy(errors.SovereignError)
        if cls.__module__ == errors.__name__
    }
    # Starlette's own errors in our shape, and the fallback for the statuses not named.
    statuses.update({code: status for status, code in http._HTTP_CODES.items()})
    statuses["http_error"] = 400
    for code, status in statuses.items():
        assert table.get(code) == str(status), code
        assert f'"code": "{code}"' in text, f"no example body for {code}"
