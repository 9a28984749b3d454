"""Settings and places a deployment gets wrong: each is refused in one line naming the setting or the path, never
with a traceback, and a blank value in `.env` (as `.env.example` ships them) means unset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.salesforce.client import MY_DOMAIN_FORM
from tests.connectors.salesforce_keys import SigningIdentity, make_signing_identity
from tests.root_powers import without_root_powers
from tests.worker.test_cli import RULES_DIR, healthbeat
from worker.config import load_settings
from worker.demo.harness import Sandboxes, sandbox_environment
from worker.errors import ConfigError
from worker.store import Store


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode != 0
    return result.stderr


@pytest.mark.parametrize("interval", ["0s", "0m", "-5m"])
def test_an_interval_that_is_not_positive_is_refused_naming_the_setting(interval: str, tmp_path: Path) -> None:
    result = healthbeat("run", "--once", env={"HEALTHBEAT_INTERVAL": interval, "HEALTHBEAT_RULES_DIR": RULES_DIR},
                        cwd=tmp_path)

    assert result.returncode == 2
    assert "HEALTHBEAT_INTERVAL" in _one_line_error(result)


@pytest.mark.parametrize("name", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_a_ca_bundle_that_does_not_exist_is_refused_naming_the_setting_and_the_path(name: str,
                                                                                     tmp_path: Path) -> None:
    missing = tmp_path / "corp-ca.pem"
    settings = {"REQUESTS_CA_BUNDLE": "", "SSL_CERT_FILE": "", name: missing}

    result = healthbeat("scores", env=settings, cwd=tmp_path)

    assert result.returncode == 2
    stderr = _one_line_error(result)
    assert name in stderr and str(missing) in stderr


def _as_an_ordinary_user(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEALTHBEAT_", "SALESFORCE_"))}
    return subprocess.run([sys.executable, "-c", "from worker.cli import main; main()", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=60, check=False,
                          preexec_fn=without_root_powers)


def test_a_database_in_a_folder_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)

    result = _as_an_ordinary_user("db", "migrate", "--db", str(folder / "hb.db"), cwd=tmp_path)

    assert result.returncode == 2
    stderr = _one_line_error(result)
    assert str(folder / "hb.db") in stderr and "HEALTHBEAT_DB" in stderr


def test_an_existing_database_in_a_folder_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "readonly"
    Store(folder / "hb.db").close()
    folder.chmod(0o555)

    result = _as_an_ordinary_user("scores", "--db", str(folder / "hb.db"), cwd=tmp_path)

    assert result.returncode == 2
    stderr = _one_line_error(result)
    assert str(folder / "hb.db") in stderr and "HEALTHBEAT_DB" in stderr


def test_a_backup_into_a_folder_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    Store(tmp_path / "hb.db").close()

    result = healthbeat("db", "backup", str(tmp_path / "backups" / "hb.db"), "--db", str(tmp_path / "hb.db"),
                        cwd=tmp_path)

    assert result.returncode == 2
    assert len(_one_line_error(result).strip().splitlines()) == 1


def test_a_blank_usage_dir_means_no_usage_files_not_the_current_folder(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("USAGE_DIR=\nHEALTHBEAT_DB=\nREQUESTS_CA_BUNDLE=\n")
    (tmp_path / "usage.csv").write_text("account_id,date,active_users,events,features_used\n")
    for name in ("USAGE_DIR", "HEALTHBEAT_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)

    settings = load_settings()

    assert settings.usage_dir is None
    assert settings.db == Path("healthbeat.db")


def test_doctor_names_the_ca_bundle_in_use_and_the_setting_that_chose_it(sandboxes: Sandboxes, usage_dir: Path,
                                                                         tmp_path: Path) -> None:
    env = sandbox_environment(sandboxes, tmp_path / "hb.db", usage_dir, RULES_DIR)

    result = healthbeat("doctor", env=env, cwd=tmp_path)

    assert f"CA bundle {sandboxes.salesforce.ca_cert_path} (from REQUESTS_CA_BUNDLE)" in result.stdout, result.stdout


# -- Salesforce login settings --------------------------------------------------------------------------------

MY_DOMAIN = "https://acme.my.salesforce.com"
USERNAME = "healthbeat-integration@acme.example"


@pytest.fixture(scope="module")
def identity() -> SigningIdentity:
    return make_signing_identity()


@pytest.fixture
def no_salesforce_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Only the settings a test gives: none from the environment, no `.env`."""
    for name in [k for k in os.environ if k.startswith("SALESFORCE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _refusal(**settings: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**settings).require_salesforce()
    return str(caught.value)


def test_client_credentials_without_a_login_url_ask_for_the_my_domain_url(no_salesforce_settings: Path) -> None:
    message = _refusal(SALESFORCE_CLIENT_ID="consumer-key", SALESFORCE_CLIENT_SECRET="consumer-secret")

    assert message == ("Salesforce is not configured for the client-credentials flow: set SALESFORCE_LOGIN_URL "
                       "(your org's My Domain URL, e.g. https://acme.my.salesforce.com)")


@pytest.mark.parametrize("login_url", ["https://login.salesforce.com", "https://test.salesforce.com"])
def test_a_shared_login_host_for_client_credentials_is_refused_in_one_line_naming_my_domain(
        login_url: str, tmp_path: Path) -> None:
    env = {"SALESFORCE_LOGIN_URL": login_url, "SALESFORCE_CLIENT_ID": "consumer-key",
           "SALESFORCE_CLIENT_SECRET": "consumer-secret", "HEALTHBEAT_RULES_DIR": RULES_DIR}

    result = healthbeat("run", "--once", env=env, cwd=tmp_path)

    assert result.returncode == 2
    stderr = _one_line_error(result)
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "My Domain" in stderr and MY_DOMAIN_FORM in stderr and "SALESFORCE_LOGIN_URL" in stderr
    assert "consumer-secret" not in stderr


def test_settings_of_both_login_flows_are_refused_saying_which_to_remove(no_salesforce_settings: Path,
                                                                         identity: SigningIdentity) -> None:
    key = identity.write_key(no_salesforce_settings)

    message = _refusal(SALESFORCE_LOGIN_URL=MY_DOMAIN, SALESFORCE_CLIENT_ID="consumer-key",
                       SALESFORCE_CLIENT_SECRET="consumer-secret", SALESFORCE_USERNAME=USERNAME,
                       SALESFORCE_PRIVATE_KEY_FILE=key)

    assert "two login flows" in message
    assert "remove SALESFORCE_CLIENT_SECRET to log in with the JWT bearer flow" in message
    assert "remove SALESFORCE_USERNAME and SALESFORCE_PRIVATE_KEY_FILE to log in with client credentials" in message


@pytest.mark.parametrize(("given", "missing"), [
    ({"SALESFORCE_USERNAME": USERNAME}, "SALESFORCE_CLIENT_ID and SALESFORCE_PRIVATE_KEY_FILE"),
    ({"SALESFORCE_CLIENT_ID": "consumer-key", "SALESFORCE_USERNAME": USERNAME}, "SALESFORCE_PRIVATE_KEY_FILE"),
    ({"SALESFORCE_CLIENT_ID": "consumer-key", "SALESFORCE_PRIVATE_KEY_FILE": "k.pem"}, "SALESFORCE_USERNAME"),
])
def test_a_half_configured_jwt_login_names_exactly_what_is_missing(no_salesforce_settings: Path,
                                                                   given: dict[str, str], missing: str) -> None:
    message = _refusal(**given)

    assert f"JWT bearer login is not configured: set {missing} (" in message


def test_nothing_configured_names_the_settings_of_either_flow(no_salesforce_settings: Path) -> None:
    message = _refusal()

    assert "client-credentials flow: set SALESFORCE_LOGIN_URL (" in message
    assert "SALESFORCE_CLIENT_ID (" in message and "SALESFORCE_CLIENT_SECRET (" in message
    assert "or, for the JWT bearer flow, SALESFORCE_CLIENT_ID, SALESFORCE_USERNAME and SALESFORCE_PRIVATE_KEY_FILE" \
        in message


@pytest.mark.parametrize(("given", "flow"), [
    ({"SALESFORCE_CLIENT_SECRET": "consumer-secret"}, "client_credentials"),
    ({}, "client_credentials"),
    ({"SALESFORCE_USERNAME": USERNAME}, "jwt_bearer"),
    ({"SALESFORCE_PRIVATE_KEY_FILE": "k.pem"}, "jwt_bearer"),
    ({"SALESFORCE_USERNAME": "", "SALESFORCE_PRIVATE_KEY_FILE": " "}, "client_credentials"),  # blank is unset
])
def test_the_login_flow_is_chosen_by_the_settings_present(no_salesforce_settings: Path, given: dict[str, str],
                                                          flow: str) -> None:
    assert load_settings(**given).salesforce_flow == flow


def test_the_jwt_flow_logs_in_at_the_shared_login_host_unless_told_otherwise(no_salesforce_settings: Path,
                                                                             identity: SigningIdentity) -> None:
    settings = load_settings(SALESFORCE_CLIENT_ID="consumer-key", SALESFORCE_USERNAME=USERNAME,
                             SALESFORCE_PRIVATE_KEY_FILE=identity.write_key(no_salesforce_settings))

    credentials = settings.salesforce_credentials()

    assert (credentials.flow, credentials.login_url, credentials.username) == (
        "jwt_bearer", "https://login.salesforce.com", USERNAME)
    assert credentials.private_key == identity.private_key and credentials.client_secret == ""


def _key_file(kind: str, folder: Path, identity: SigningIdentity) -> Path:
    path = folder / "healthbeat.key"
    if kind == "a folder":
        path.mkdir()
    elif kind == "a pipe":
        os.mkfifo(path)
    elif kind == "empty":
        path.write_text("")
    elif kind == "not PEM":
        path.write_text("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ not pem at all\n")
    elif kind == "the certificate":
        path.write_text(identity.certificate)
    elif kind == "too large":
        path.write_text(identity.private_key + "#" * 70_000)
    elif kind == "encrypted":
        key = serialization.load_pem_private_key(identity.private_key.encode(), password=None)
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.BestAvailableEncryption(b"passphrase")))
    elif kind == "an EC key":
        path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


@pytest.mark.parametrize(("kind", "says"), [
    ("absent", "does not exist"), ("a folder", "is not a file"), ("a pipe", "is not a file"),
    ("empty", "is not a PEM private key"), ("not PEM", "is not a PEM private key"),
    ("too large", "is not a PEM private key"), ("the certificate", "holds a certificate, not the private key"),
    ("encrypted", "is encrypted with a passphrase"), ("an EC key", "is not an RSA key"),
])
def test_a_private_key_file_that_cannot_sign_is_named_with_the_setting_and_the_path(
        no_salesforce_settings: Path, identity: SigningIdentity, kind: str, says: str) -> None:
    path = _key_file(kind, no_salesforce_settings, identity)

    message = _refusal(SALESFORCE_CLIENT_ID="consumer-key", SALESFORCE_USERNAME=USERNAME,
                       SALESFORCE_PRIVATE_KEY_FILE=path)

    assert f"SALESFORCE_PRIVATE_KEY_FILE {path} {says}" in message
    assert not [line for line in identity.key_body_lines() + identity.certificate.splitlines()[1:-1]
                if line in message]


def test_a_certificate_given_as_the_key_stops_the_worker_in_one_line(tmp_path: Path,
                                                                      identity: SigningIdentity) -> None:
    certificate = tmp_path / "healthbeat.crt"
    certificate.write_text(identity.certificate)
    env = {"SALESFORCE_CLIENT_ID": "consumer-key", "SALESFORCE_USERNAME": USERNAME,
           "SALESFORCE_PRIVATE_KEY_FILE": certificate, "HEALTHBEAT_RULES_DIR": RULES_DIR}

    result = healthbeat("run", "--once", env=env, cwd=tmp_path)

    assert result.returncode == 2
    stderr = _one_line_error(result)
    assert len(stderr.strip().splitlines()) == 1 and f"SALESFORCE_PRIVATE_KEY_FILE {certificate}" in stderr


@pytest.mark.parametrize("flow", ["client_credentials", "jwt_bearer"])
def test_the_lightning_address_copied_from_the_browser_is_refused_naming_the_my_domain_url(
        flow: str, no_salesforce_settings: Path, identity: SigningIdentity) -> None:
    login = {"SALESFORCE_CLIENT_SECRET": "consumer-secret"} if flow == "client_credentials" else {
        "SALESFORCE_USERNAME": USERNAME, "SALESFORCE_PRIVATE_KEY_FILE": identity.write_key(no_salesforce_settings)}

    message = _refusal(SALESFORCE_LOGIN_URL="https://acme.lightning.force.com", SALESFORCE_CLIENT_ID="consumer-key",
                       **login)

    assert "not a login URL" in message and "https://acme.my.salesforce.com" in message
