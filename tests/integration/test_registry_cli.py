"""``sovctl tenants|datasets|models|destinations`` against a live API."""

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
    code, out, err = api("tenants", "create", "research", "--name", "Research")
    assert code == 0, err
    assert "Research" in out
    code, out, err = api(
        "tenants", "quota", "research", "jp-east", "--max-gpus", "16", "--gpu-hours", "2000"
    )
    assert code == 0, err
    assert "2000" in out
    assert "month" in out
    code, out, _ = api("tenants", "list")
    assert "research" in out
    assert "jp-east=16" in out
    code, out, _ = api("tenants", "list", "-o", "json")
    [tenant] = json.loads(out)
    assert tenant["quotas"][0] == {
        **tenant["quotas"][0],
        "zone": "jp-east",
        "max_gpus": 16,
        "gpu_hours_per_period": 2000,
        "period": "month",
    }

    assert api("tenants", "quota", "research", "jp-east", "--remove")[0] == 0
    assert json.loads(api("tenants", "list", "-o", "json")[1])[0]["quotas"] == []
    code, _, err = api("tenants", "quota", "research", "jp-east", "--remove")
    assert code == 1
    assert "HTTP 404" in err


def test_quota_usage_errors(api: Run) -> None:
    assert api("tenants", "create", "research", "--name", "Research")[0] == 0
    code, _, err = api("tenants", "quota", "research", "jp-east")
    assert code == 2
    assert "--max-gpus" in err
    code, _, err = api("tenants", "quota", "research", "jp-east", "--max-gpus", "1", "--remove")
    assert code == 2
    code, _, err = api("tenants", "quota", "research", "jp-east", "--max-gpus", "-1")
    assert code == 2
    code, _, err = api(
        "tenants", "quota", "research", "jp-east", "--max-gpus", "1", "--period", "year"
    )
    assert code == 2
    code, _, err = api("tenants", "quota", "research", "mars", "--max-gpus", "1")
    assert code == 1
    assert "zone: unknown zone 'mars'" in err


def test_datasets(api: Run) -> None:
    assert api("tenants", "create", "research", "--name", "Research")[0] == 0
    code, out, err = api(
        "datasets",
        "create",
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
            "datasets",
            "create",
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

    code, out, _ = api("datasets", "list")
    assert "CLASSIFICATION" in out
    assert "jp-east,jp-west" in out
    assert "(2 of 2)" in out
    code, out, _ = api("datasets", "list", "--zone", "jp-east", "-o", "json")
    assert [d["name"] for d in json.loads(out)["items"]] == ["support-tickets"]
    code, out, _ = api("datasets", "list", "--classification", "public", "--zone", "jp")
    assert "web-crawl" in out
    assert "support-tickets" not in out


def test_dataset_errors(api: Run) -> None:
    assert api("tenants", "create", "research", "--name", "Research")[0] == 0
    base = ["datasets", "create", "d1", "--tenant", "research", "--zones", "jp"]
    code, _, err = api(*base, "--classification", "secret")
    assert code == 2
    assert "secret" in err
    code, _, err = api(*base, "--classification", "public", "--label", "no-equals")
    assert code == 2
    assert "key=value" in err
    code, _, err = api(
        "datasets", "create", "d1", "--tenant", "nobody", "--zones", "jp",
        "--classification", "public",
    )  # fmt: skip
    assert code == 1
    assert "tenant: unknown tenant 'nobody'" in err
    code, _, err = api(*base[:-1], "jp,mars", "--classification", "public")
    assert code == 1
    assert "zones: unknown zone 'mars'" in err


def test_models(api: Run) -> None:
    assert api("tenants", "create", "research", "--name", "Research")[0] == 0
    model = [
        "models",
        "create",
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
    code, out, _ = api("models", "list")
    assert "SUPPLIER" in out
    assert "Meta" in out
    code, out, _ = api("models", "list", "--origin", "US", "-o", "json")
    assert json.loads(out)["items"][0]["license"] == "llama3"
    assert json.loads(api("models", "list", "--origin", "CN", "-o", "json")[1])["total"] == 0
    code, _, err = api(*model, "--origin", "us")
    assert code == 1
    assert "HTTP 409" in err


def test_destinations(api: Run) -> None:
    code, out, err = api(
        "destinations", "create", "results-jp", "--zone", "jp-east", "--description", "s3://r"
    )
    assert code == 0, err
    code, out, _ = api("destinations", "list")
    assert "results-jp" in out
    assert "s3://r" in out
    code, _, err = api("destinations", "create", "results-x", "--zone", "mars")
    assert code == 1
    assert "zone: unknown zone 'mars'" in err


def test_tenant_show_and_delete(api: Run) -> None:
    assert api("tenants", "create", "research", "--name", "Research")[0] == 0
    assert api("tenants", "quota", "research", "jp-east", "--max-gpus", "4")[0] == 0
    code, out, err = api("tenants", "show", "research")
    assert code == 0, err
    assert "jp-east=4" in out
    assert "MAX_GPUS" in out
    code, out, _ = api("tenants", "show", "research", "-o", "json")
    assert json.loads(out)["quotas"][0]["max_gpus"] == 4
    base = ["datasets", "create", "d1", "--tenant", "research", "--zones", "jp"]
    assert api(*base, "--classification", "public")[0] == 0
    code, _, err = api("tenants", "delete", "research")
    assert code == 1
    assert "HTTP 409" in err
    assert api("datasets", "delete", "d1")[0] == 0
    code, out, err = api("tenants", "delete", "research")
    assert (code, out) == (0, "deleted tenant research\n"), err
    code, _, err = api("tenants", "show", "research")
    assert code == 1
    assert "HTTP 404" in err


def test_dataset_and_model_show_update_delete(api: Run) -> None:
    assert api("tenants", "create", "research", "--name", "Research")[0] == 0
    assert api("tenants", "create", "legal", "--name", "Legal")[0] == 0
    dataset = ["d1", "--tenant", "research", "--zones", "jp-east", "--classification", "public"]
    assert api("datasets", "create", *dataset, "--label", "pii=no", "--label", "src=crm")[0] == 0
    code, out, err = api(
        "datasets", "update", "d1", "--tenant", "legal", "--zones", "jp-east,jp-west",
        "--classification", "restricted", "--label", "pii=yes", "--remove-label", "src",
        "-o", "json",
    )  # fmt: skip
    assert code == 0, err
    changed = json.loads(out)
    assert (changed["tenant"], changed["classification"]) == ("legal", "restricted")
    assert (changed["zones"], changed["labels"]) == (["jp-east", "jp-west"], {"pii": "yes"})
    code, out, err = api("datasets", "show", "d1")
    assert code == 0, err
    assert "restricted" in out
    code, _, err = api("datasets", "update", "d1")
    assert code == 2
    assert "nothing to change" in err

    model = ["m1", "--tenant", "research", "--zones", "jp-east", "--classification", "internal"]
    provenance = ["--supplier", "Meta", "--origin", "US", "--license", "llama3"]
    assert api("models", "create", *model, *provenance)[0] == 0
    code, out, err = api("models", "update", "m1", "--origin", "fr", "--license", "mit")
    assert code == 0, err
    assert "FR" in out
    code, out, _ = api("models", "show", "m1", "-o", "json")
    assert (json.loads(out)["origin_country"], json.loads(out)["license"]) == ("FR", "mit")

    for kind, name in [("datasets", "d1"), ("models", "m1")]:
        code, out, err = api(kind, "delete", name)
        assert (code, out) == (0, f"deleted {kind[:-1]} {name}\n"), err
        code, _, err = api(kind, "show", name)
        assert code == 1
        assert "HTTP 404" in err


def test_destination_show_and_delete(api: Run) -> None:
    assert api("destinations", "create", "results-jp", "--zone", "jp-east")[0] == 0
    code, out, err = api("destinations", "show", "results-jp", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["zone"] == "jp-east"
    code, out, err = api("destinations", "delete", "results-jp")
    assert (code, out) == (0, "deleted destination results-jp\n"), err
    assert api("destinations", "list")[1] == "(none)\n"


@pytest.mark.parametrize(("collection", "extra"), [("datasets", []), ("models", ["model"])])
def test_grant_grants_and_revoke(api: Run, collection: str, extra: list[str]) -> None:
    for slug in ("research", "retail"):
        assert api("tenants", "create", slug, "--name", slug)[0] == 0
    create = [collection, "create", "pii", "--tenant", "research", "--zones", "jp-east"]
    create += ["--classification", "restricted"]
    if extra:
        create += ["--supplier", "acme", "--origin", "JP", "--license", "mit"]
    assert api(*create)[0] == 0, create
    code, out, err = api(
        collection, "grant", "pii", "--tenant", "retail", "--reason", "CHG-7 study",
        "--expires-at", "2999-01-01T00:00:00Z", "-o", "json",
    )  # fmt: skip
    assert code == 0, err
    granted = json.loads(out)
    assert (granted["tenant"], granted["in_force"]) == ("retail", True)
    assert granted["expires_at"].startswith("2999-01-01")
    code, out, _ = api(collection, "grants", "pii")
    assert code == 0
    assert out.splitlines()[0].split() == [
        "ID", "TENANT", "IN_FORCE", "EXPIRES_AT", "GRANTED_BY", "REASON", "REVOKED_AT"
    ]  # fmt: skip
    assert granted["id"] in out
    assert "CHG-7 study" in out
    code, out, err = api(collection, "revoke", "pii", granted["id"], "-o", "json")
    assert code == 0, err
    assert json.loads(out)["in_force"] is False
    code, _, err = api(collection, "revoke", "pii", granted["id"])
    assert code == 1
    assert "HTTP 409" in err
    code, _, err = api(collection, "grant", "pii", "--tenant", "research", "--reason", "x")
    assert code == 1
    assert "HTTP 422" in err
    assert "tenant" in err
    code, _, err = api(collection, "grant", "pii", "--tenant", "retail")
    assert code == 2
    assert "--reason" in err
