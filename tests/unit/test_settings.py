"""Settings: typos fail loudly, prod refuses placeholder secrets, agent variables are left alone."""

import pytest

from control_plane.core.errors import ConfigurationError
from control_plane.core.settings import Environment, load_settings


def test_defaults_are_for_local_development() -> None:
    settings = load_settings()
    assert settings.env is Environment.DEV
    assert settings.database_url.startswith("postgresql://")
    assert settings.api.port == 8080


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVEREIGN_DATABASE_URL", "postgresql://app@db.internal/sov")
    monkeypatch.setenv("SOVEREIGN_REDIS_URL", "redis://cache.internal:6379/2")
    monkeypatch.setenv("SOVEREIGN_API__PORT", "9000")
    settings = load_settings()
    assert settings.database_url == "postgresql://app@db.internal/sov"
    assert settings.redis_url == "redis://cache.internal:6379/2"
    assert settings.api.port == 9000


@pytest.mark.parametrize("name", ["SOVEREIGN_DATABSE_URL", "SOVEREIGN_API__PROT", "sovereign_foo"])
def test_unknown_settings_are_an_error(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "x")
    with pytest.raises(ConfigurationError, match=name.split("__")[0]):
        load_settings()


def test_agent_variables_are_not_ours_to_reject(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVEREIGN_AGENT_CONTROL_PLANE_URL", "https://cp.internal")
    load_settings()


@pytest.mark.parametrize("secret", ["dev-insecure-secret", "change-me", ""])
def test_prod_refuses_a_placeholder_secret(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    monkeypatch.setenv("SOVEREIGN_ENV", "prod")
    monkeypatch.setenv("SOVEREIGN_SECRET_KEY", secret)
    with pytest.raises(ConfigurationError, match="SOVEREIGN_SECRET_KEY"):
        load_settings()


def test_prod_starts_with_a_real_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVEREIGN_ENV", "prod")
    monkeypatch.setenv("SOVEREIGN_SECRET_KEY", "b5f0c1e4a7d2" * 4)
    assert load_settings().env is Environment.PROD


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVEREIGN_ENV", "staging")
    monkeypatch.setenv("SOVEREIGN_API__PORT", "99999")
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert "SOVEREIGN_ENV" in raised.value.message
    assert "SOVEREIGN_API__PORT" in raised.value.message


def test_prod_refuses_a_short_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVEREIGN_ENV", "prod")
    monkeypatch.setenv("SOVEREIGN_SECRET_KEY", "x")
    with pytest.raises(ConfigurationError, match="32 characters") as raised:
        load_settings()
    assert not raised.value.message.startswith("SOVEREIGN_:")


def test_pool_bounds_and_log_level_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVEREIGN_DB_POOL_MIN_SIZE", "20")
    monkeypatch.setenv("SOVEREIGN_DB_POOL_MAX_SIZE", "5")
    with pytest.raises(ConfigurationError, match="MIN_SIZE"):
        load_settings()
    monkeypatch.delenv("SOVEREIGN_DB_POOL_MIN_SIZE")
    monkeypatch.setenv("SOVEREIGN_LOG_LEVEL", "LOUD")
    with pytest.raises(ConfigurationError, match="SOVEREIGN_LOG_LEVEL"):
        load_settings()


def test_the_violation_webhook_must_be_http_and_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    for url in ("file:///etc/passwd", "gopher://siem/", "https://", "siem.example:443"):
        monkeypatch.setenv("SOVEREIGN_VIOLATION_WEBHOOK_URL", url)
        monkeypatch.setenv("SOVEREIGN_VIOLATION_WEBHOOK_SECRET", "s" * 32)
        with pytest.raises(ConfigurationError, match="SOVEREIGN_VIOLATION_WEBHOOK_URL"):
            load_settings()
    monkeypatch.setenv("SOVEREIGN_VIOLATION_WEBHOOK_URL", "https://siem.example/hooks")
    monkeypatch.delenv("SOVEREIGN_VIOLATION_WEBHOOK_SECRET")
    with pytest.raises(ConfigurationError, match="SOVEREIGN_VIOLATION_WEBHOOK_SECRET"):
        load_settings()
    monkeypatch.setenv("SOVEREIGN_VIOLATION_WEBHOOK_SECRET", "short")
    with pytest.raises(ConfigurationError, match="at least 16 characters"):
        load_settings()
    monkeypatch.setenv("SOVEREIGN_VIOLATION_WEBHOOK_SECRET", "s" * 32)
    monkeypatch.setenv("SOVEREIGN_VIOLATION_WEBHOOK_TIMEOUT_SECONDS", "600")
    with pytest.raises(ConfigurationError, match="SOVEREIGN_VIOLATION_WEBHOOK_TIMEOUT_SECONDS"):
        load_settings()
    monkeypatch.delenv("SOVEREIGN_VIOLATION_WEBHOOK_TIMEOUT_SECONDS")
    loaded = load_settings()
    assert loaded.violation_webhook_url == "https://siem.example/hooks"
    assert loaded.violation_webhook_timeout_seconds == 5.0


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ("SOVEREIGN_TLS_CERT_FILE", "SOVEREIGN_TLS_KEY_FILE"),
        ("SOVEREIGN_TLS_KEY_FILE", "SOVEREIGN_TLS_CERT_FILE"),
    ],
)
def test_tls_files_come_in_pairs(monkeypatch: pytest.MonkeyPatch, given: str, missing: str) -> None:
    monkeypatch.setenv(given, "/etc/sovereign/tls/file")
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert raised.value.message == (
        f"{given} is set but {missing} is not; set both (HTTPS) or neither (plain HTTP)"
    )


def test_tls_settings_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVEREIGN_TLS_CERT_FILE", "/etc/sovereign/tls/tls.crt")
    monkeypatch.setenv("SOVEREIGN_TLS_KEY_FILE", "/etc/sovereign/tls/tls.key")
    settings = load_settings()
    assert str(settings.tls_cert_file) == "/etc/sovereign/tls/tls.crt"
    assert str(settings.tls_key_file) == "/etc/sovereign/tls/tls.key"
    assert settings.tls_key_password is None


def test_a_key_password_without_a_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVEREIGN_TLS_KEY_PASSWORD", "hunter2")
    with pytest.raises(ConfigurationError, match="SOVEREIGN_TLS_KEY_PASSWORD is set"):
        load_settings()
