"""``/docs`` and ``/redoc`` work on an air-gapped network: every asset comes from the API.

No database is needed: the pages and their assets are served without the lifespan.
"""

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from control_plane.app import create_app
from control_plane.core.settings import Settings

SETTINGS = Settings(
    database_url="postgresql://unused@127.0.0.1:1/unused", secret_key="test-secret-key-0123456789"
)


class _References(HTMLParser):
    """Every URL a page makes the browser load: ``src`` and ``href``, and ReDoc's spec."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls.extend(
            value for name, value in attrs if name in {"src", "href", "spec-url"} and value
        )


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(SETTINGS))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_page_loads_only_what_the_api_serves(client: TestClient, page: str) -> None:
    html = client.get(page).text
    # No other host anywhere in the page: not in a tag, not in the script that starts the UI.
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html), html
    parser = _References()
    parser.feed(html)
    # Swagger UI reads the document's URL from its script, ReDoc from its tag.
    urls = [*parser.urls, *re.findall(r"url: '([^']+)'", html)]
    assert any(url.endswith(".js") for url in urls), urls
    assert "/openapi.json" in urls
    for url in urls:
        assert url.startswith("/"), url
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.content, url
