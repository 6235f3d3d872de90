"""``sovctl tenant|dataset|model|destination`` against a live API."""

import json

import pytest

from tests.support import Run

pytestmark = pytest.mark.integration


@pytest.fixture
def api(admin_sovctl: Run) -> Run:
    """``sovctl`` pointed at the live API with an admin token, with two zones in place."""
    sovctl = admin_sovctl
    assert sovctl("zones", "create", "jp", "--name", "Japan", "--country", "JP")[0] == 0
    for slug in ("jp-east", "jp-west"):
        code, _, err = sovctl(
            "zones", "create", slug, "--name", slug, "--country", "JP", "--parent", "jp"
        )
        assert code == 0, err
    return sovctl


def test_tenants_and_quotas(api: Run) -> None:
    code, out, err = api("tenant", "create", "research", "--name", "Research")
    assert code == 0, err
    assert "Research" in out
    code, out, err = api(
        "tenant", "quota", "research", "jp-east", "--max-gpus", "16", "--gpu-hours", "2000"
    )
    assert code == 0, err
    assert "2000" in out
    assert "month" in out
    code, out, _ = api("tenant", "list")
    assert "research" in out
    assert "jp-east=16" in out
    code, out, _ = api("tenant", "list", "-o", "json")
    [tenant] = json.loads(out)
    assert tenant["quotas"][0] == {
        **tenant["quotas"][0],
        "zone": "jp-east",
        "max_gpus": 16,
        "gpu_hours_per_period": 2000,
        "period": "month",
    }

    assert api("tenant", "quota", "research", "jp-east", "--remove")[0] == 0
    assert json.loads(api("tenant", "list", "-o", "json")[1])[0]["quotas"] == []
    code, _, err = api("tenant", "quota", "research", "jp-east", "--remove")
    assert code == 1
    assert "HTTP 404" in err


def test_quota_usage_errors(api: Run) -> None:
    assert api("tenant", "create", "research", "--name", "Research")[0] == 0
    code, _, err = api("tenant", "quota", "research", "jp-east")
    assert code == 2
    assert "--max-gpus" in err
    code, _, err = api("tenant", "quota", "research", "jp-east", "--max-gpus", "1", "--remove")
    assert code == 2
    code, _, err = api("tenant", "quota", "research", "jp-east", "--max-gpus", "-1")
    assert code == 2
    code, _, err = api(
        "tenant", "quota", "research", "jp-east", "--max-gpus", "1", "--period", "year"
    )
    assert code == 2
    code, _, err = api("tenant", "quota", "research", "mars", "--max-gpus", "1")
    assert code == 1
    assert "zone: unknown zone 'mars'" in err


def test_datasets(api: Run) -> None:
    assert api("tenant", "create", "research", "--name", "Research")[0] == 0
    code, out, err = api(
        "dataset",
        "register",
        "support-tickets",
        "--tenant",
        "research",
        "--classification",
        "confidential",
        "--zones",
        "jp-east, jp-west",
        "--label",
        "pii=yes",
        "--label",
        "source=crm",
        "-o",
        "json",
    )
    assert code == 0, err
    registered = json.loads(out)
    assert registered["zones"] == ["jp-east", "jp-west"]
    assert registered["labels"] == {"pii": "yes", "source": "crm"}
    assert registered["classification"] == "confidential"
    assert (
        api(
            "dataset",
            "register",
            "web-crawl",
            "--tenant",
            "research",
            "--classification",
            "public",
            "--zones",
            "jp-west",
        )[0]
        == 0
    )

    code, out, _ = api("dataset", "list")
    assert "CLASSIFICATION" in out
    assert "jp-east,jp-west" in out
    assert "(2 of 2)" in out
    code, out, _ = api("dataset", "list", "--zone", "jp-east", "-o", "json")
    assert [d["name"] for d in json.loads(out)["items"]] == ["support-tickets"]
    code, out, _ = api("dataset", "list", "--classification", "public", "--zone", "jp")
    assert "web-crawl" in out
    assert "support-tickets" not in out


def test_dataset_errors(api: Run) -> None:
    assert api("tenant", "create", "research", "--name", "Research")[0] == 0
    base = ["dataset", "register", "d1", "--tenant", "research", "--zones", "jp"]
    code, _, err = api(*base, "--classification", "secret")
    assert code == 2
    assert "secret" in err
    code, _, err = api(*base, "--classification", "public", "--label", "no-equals")
    assert code == 2
    assert "key=value" in err
    code, _, err = api(
        "dataset", "register", "d1", "--tenant", "nobody", "--zones", "jp",
        "--classification", "public",
    )  # fmt: skip
    assert code == 1
    assert "tenant: unknown tenant 'nobody'" in err
    code, _, err = api(*base[:-1], "jp,mars", "--classification", "public")
    assert code == 1
    assert "zones: unknown zone 'mars'" in err


def test_models(api: Run) -> None:
    assert api("tenant", "create", "research", "--name", "Research")[0] == 0
    model = [
        "model",
        "register",
        "llama-3-8b",
        "--tenant",
        "research",
        "--classification",
        "internal",
        "--zones",
        "jp-east",
        "--supplier",
        "Meta",
        "--license",
        "llama3",
    ]
    code, _, err = api(*model, "--origin", "XX")
    assert code == 1
    assert "origin_country" in err
    code, out, err = api(*model, "--origin", "us")
    assert code == 0, err
    assert "US" in out
    code, out, _ = api("model", "list")
    assert "SUPPLIER" in out
    assert "Meta" in out
    code, out, _ = api("model", "list", "--origin", "US", "-o", "json")
    assert json.loads(out)["items"][0]["license"] == "llama3"
    assert json.loads(api("model", "list", "--origin", "CN", "-o", "json")[1])["total"] == 0
    code, _, err = api(*model, "--origin", "us")
    assert code == 1
    assert "HTTP 409" in err


def test_destinations(api: Run) -> None:
    code, out, err = api(
        "destination", "create", "results-jp", "--zone", "jp-east", "--description", "s3://r"
    )
    assert code == 0, err
    code, out, _ = api("destination", "list")
    assert "results-jp" in out
    assert "s3://r" in out
    code, _, err = api("destination", "create", "results-x", "--zone", "mars")
    assert code == 1
    assert "zone: unknown zone 'mars'" in err
