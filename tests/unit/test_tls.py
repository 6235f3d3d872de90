"""The API's certificate and key are checked before the server starts, one sentence per fault.

Real files from a throwaway CA (``make_tls_files``), loaded by the real ``ssl`` module; each
refusal names the one setting to fix, so ``sovctl serve`` can print it as its only line.
"""

import shutil
import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr

from control_plane.core import tls
from control_plane.core.errors import ConfigurationError
from control_plane.core.settings import Settings
from tests.certificates import TlsFiles, make_tls_files


@pytest.fixture
def files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


def _settings(cert: Path, key: Path, password: str | None = None) -> Settings:
    return Settings(
        tls_cert_file=cert,
        tls_key_file=key,
        tls_key_password=None if password is None else SecretStr(password),
    )


def _refusal(settings: Settings) -> str:
    with pytest.raises(ConfigurationError) as raised:
        tls.check(settings)
    assert "\n" not in raised.value.message
    return raised.value.message


def test_a_matching_pair_passes_and_goes_to_uvicorn(files: TlsFiles) -> None:
    settings = _settings(files.cert, files.key)
    tls.check(settings)
    assert tls.scheme(settings) == "https"
    assert tls.uvicorn_options(settings) == {
        "ssl_certfile": str(files.cert),
        "ssl_keyfile": str(files.key),
        "ssl_keyfile_password": None,
        "ssl_context_factory": tls.reloading_context,
    }


def test_without_tls_settings_nothing_is_checked_and_the_api_is_plain_http() -> None:
    settings = Settings()
    tls.check(settings)
    assert tls.scheme(settings) == "http"
    assert tls.uvicorn_options(settings) == {}


def test_a_missing_key_file_names_the_setting(files: TlsFiles, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.key"
    assert _refusal(_settings(files.cert, missing)) == (
        f"SOVEREIGN_TLS_KEY_FILE: cannot read {missing} (No such file or directory)"
    )


def test_a_missing_certificate_names_the_setting(files: TlsFiles, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.crt"
    assert _refusal(_settings(missing, files.key)) == (
        f"SOVEREIGN_TLS_CERT_FILE: cannot read {missing} (No such file or directory)"
    )


def test_files_that_are_not_pem_are_refused(files: TlsFiles, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_text("not a certificate\n")
    assert _refusal(_settings(junk, files.key)).startswith(
        f"SOVEREIGN_TLS_CERT_FILE: {junk} is not a PEM certificate"
    )
    assert _refusal(_settings(files.cert, junk)).startswith(
        f"SOVEREIGN_TLS_KEY_FILE: {junk} is not a PEM private key"
    )
    # The certificate where the key belongs, and the reverse.
    assert _refusal(_settings(files.cert, files.cert)).startswith("SOVEREIGN_TLS_KEY_FILE:")
    assert _refusal(_settings(files.key, files.key)).startswith("SOVEREIGN_TLS_CERT_FILE:")


def test_a_broken_pem_certificate_is_refused(files: TlsFiles, tmp_path: Path) -> None:
    broken = tmp_path / "broken.crt"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert _refusal(_settings(broken, files.key)).startswith(
        f"SOVEREIGN_TLS_CERT_FILE: {broken} holds no readable certificate"
    )


def test_the_key_of_another_certificate_is_refused(files: TlsFiles, tmp_path: Path) -> None:
    other = make_tls_files(tmp_path / "other", name="other")
    assert _refusal(_settings(files.cert, other.key)) == (
        f"SOVEREIGN_TLS_KEY_FILE: {other.key} is not the key of the certificate in {files.cert}"
    )


def test_an_encrypted_key_needs_its_password(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "tls", key_password="correct horse")
    # Without the password OpenSSL would prompt on the terminal; the check says what to set.
    assert _refusal(_settings(files.cert, files.key)) == (
        f"SOVEREIGN_TLS_KEY_FILE: {files.key} is encrypted; set SOVEREIGN_TLS_KEY_PASSWORD "
        "to its passphrase"
    )
    assert _refusal(_settings(files.cert, files.key, "wrong")).startswith(
        f"SOVEREIGN_TLS_KEY_FILE: cannot load {files.key} with SOVEREIGN_TLS_KEY_PASSWORD"
    )
    settings = _settings(files.cert, files.key, "correct horse")
    tls.check(settings)
    assert tls.uvicorn_options(settings)["ssl_keyfile_password"] == "correct horse"


def test_a_half_replaced_pair_keeps_the_previous_certificate_until_it_loads(
    tmp_path: Path,
) -> None:
    """A certificate copied by hand before its key: serve the old pair, then the new."""
    first = make_tls_files(tmp_path / "first", name="first")
    second = make_tls_files(tmp_path / "second", name="second")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)

    def factory() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        return context

    class Config:
        ssl_certfile, ssl_keyfile = str(cert), str(key)

    listening = tls.reloading_context(Config(), factory)
    callback = listening.sni_callback
    assert callback is not None

    class Connection:
        context = listening

    def served() -> ssl.SSLContext:
        connection = Connection()
        callback(connection, None, listening)  # type: ignore[arg-type]
        return connection.context

    assert served() is listening
    shutil.copy(second.cert, cert)  # the key does not match it yet
    assert served() is listening
    shutil.copy(second.key, key)
    renewed = served()
    assert renewed is not listening
    assert served() is renewed  # loaded once, not per connection
