"""`healthbeat doctor` against the sandboxes: all green on the demo setup, and each fault named in plain words."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.salesforce.sandbox import SalesforceSandbox
from connectors.sandboxes.world import World
from connectors.slack.sandbox import SlackSandbox
from tests.connectors.salesforce_keys import SigningIdentity, make_signing_identity
from tests.worker.test_cli import healthbeat
from worker.config import Settings, load_settings
from worker.cycle import Cycle
from worker.demo.harness import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_SLACK_TOKEN,
    SANDBOX_ZENDESK_TOKEN,
    Sandboxes,
    sandbox_environment,
)
from worker.ops.doctor import SLACK_SCOPES, Check, checks_from_environment, field_problems, format_checks, run_doctor
from worker.ops.salesforce_fields import ACCOUNT_FIELDS
from worker.store import Store

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
SECRETS = (SANDBOX_CLIENT_SECRET, SANDBOX_ZENDESK_TOKEN, SANDBOX_SLACK_TOKEN)


@pytest.fixture
def env(sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> dict[str, object]:
    return sandbox_environment(sandboxes, tmp_path / "healthbeat.db", usage_dir, RULES_DIR)


def _doctor(env: dict[str, object], **changes: object) -> dict[str, Check]:
    checks = run_doctor(load_settings(**{**env, **changes}))
    return {check.name: check for check in checks}


def _failed(checks: dict[str, Check]) -> set[str]:
    return {name for name, check in checks.items() if not check.ok}


@pytest.fixture
def salesforce_without_fields(request: pytest.FixtureRequest) -> Iterator[SalesforceSandbox]:
    server = SalesforceSandbox(client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET,
                               missing_fields={"Account": set(request.param)})
    server.start()
    yield server
    server.stop()


def _pointed_at(env: dict[str, object], salesforce: SalesforceSandbox) -> dict[str, object]:
    return {**env, "SALESFORCE_LOGIN_URL": salesforce.url, "REQUESTS_CA_BUNDLE": salesforce.ca_cert_path}


# -- all green ------------------------------------------------------------------------------------------------

def test_every_check_passes_on_the_demo_setup(world: World, settings: Settings, cycle: Cycle) -> None:
    cycle.run(("sync",))  # the emails check reads the synced activity

    checks = run_doctor(settings)

    assert [c.name for c in checks if not c.ok] == []
    assert not any(c.skipped for c in checks)
    assert format_checks(checks).endswith(f"All {len(checks)} checks passed.")


def test_the_demo_setup_checks_every_system(world: World, settings: Settings) -> None:
    names = {c.name for c in run_doctor(settings)}

    assert names == {"settings", "database", "rule files", "Salesforce login", "Salesforce API usage",
                     "Salesforce fields (written)", "Salesforce fields (CSM overrides)", "Salesforce field access",
                     "Salesforce emails", "Zendesk", "Slack token and scopes", "Slack fallback channel",
                     "usage files"}


def test_unconfigured_optional_sources_are_skipped_not_failed(env: dict[str, object]) -> None:
    checks = _doctor(env, ZENDESK_URL="", ZENDESK_EMAIL="", ZENDESK_API_TOKEN="", SLACK_BOT_TOKEN="",
                     USAGE_DIR=None)

    assert _failed(checks) == set()
    assert {name for name, c in checks.items() if c.skipped} == {"Zendesk", "Slack", "usage files",
                                                                  "Salesforce emails"}  # no database yet
    assert "SLACK_BOT_TOKEN is not set" in checks["Slack"].detail


# -- Salesforce fields --------------------------------------------------------------------------------------

@pytest.mark.parametrize("salesforce_without_fields", [["Health_Score__c"]], indirect=True)
def test_a_missing_written_field_is_named(env: dict[str, object], world: World,
                                          salesforce_without_fields: SalesforceSandbox) -> None:
    checks = _doctor(_pointed_at(env, salesforce_without_fields))

    assert _failed(checks) == {"Salesforce fields (written)"}
    assert "Account lacks Health_Score__c" in checks["Salesforce fields (written)"].detail
    assert "Fields & Relationships" in checks["Salesforce fields (written)"].fix


@pytest.mark.parametrize("salesforce_without_fields", [["Health_Override_Until__c"]], indirect=True)
def test_a_missing_override_field_is_named(env: dict[str, object], world: World,
                                           salesforce_without_fields: SalesforceSandbox) -> None:
    checks = _doctor(_pointed_at(env, salesforce_without_fields))

    assert _failed(checks) == {"Salesforce fields (CSM overrides)"}
    assert "Health_Override_Until__c" in checks["Salesforce fields (CSM overrides)"].detail


def test_a_field_of_the_wrong_type_is_named_with_the_type_it_should_have() -> None:
    described = {f.name: f.describe_type for f in ACCOUNT_FIELDS} | {"Health_Score__c": "string"}

    missing, wrong = field_problems(ACCOUNT_FIELDS, described)

    assert missing == []
    assert wrong == ["Health_Score__c is string, should be Number(5,2) (double)"]


def test_field_names_are_matched_without_regard_to_case_as_salesforce_does() -> None:
    described = {f.name.lower(): f.describe_type for f in ACCOUNT_FIELDS}

    assert field_problems(ACCOUNT_FIELDS, described) == ([], [])


def test_an_org_near_its_daily_api_limit_fails_the_usage_check(env: dict[str, object], world: World) -> None:
    with SalesforceSandbox(client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET,
                           daily_api_limit=1) as salesforce:
        checks = _doctor(_pointed_at(env, salesforce))

    assert _failed(checks) == {"Salesforce API usage"}
    assert "1 of 1 daily API requests used (100.0%)" in checks["Salesforce API usage"].detail


# -- Slack scopes -------------------------------------------------------------------------------------------

def test_a_missing_slack_scope_is_named_with_what_it_is_for(env: dict[str, object]) -> None:
    scopes = [s for s in (*SLACK_SCOPES, "channels:read") if s != "im:history"]
    with SlackSandbox(token=SANDBOX_SLACK_TOKEN, scopes=scopes) as slack:
        slack.add_channel("cs-alerts")
        checks = _doctor(env, SLACK_API_URL=slack.url)

    assert _failed(checks) == {"Slack token and scopes"}
    detail = checks["Slack token and scopes"].detail
    assert "lacks im:history" in detail
    assert "never sent twice" in detail
    assert "Bot Token Scopes" in checks["Slack token and scopes"].fix


def test_an_app_level_token_slack_accepts_passes_the_socket_mode_check(env: dict[str, object],
                                                                      sandboxes: Sandboxes) -> None:
    checks = _doctor(env, SLACK_APP_TOKEN=sandboxes.slack.app_token)

    assert checks["Slack Socket Mode"].ok and not checks["Slack Socket Mode"].warning
    assert "no public port" in checks["Slack Socket Mode"].detail


def test_a_bot_token_given_as_the_app_level_token_fails_the_socket_mode_check_naming_the_setting(
        env: dict[str, object], world: World) -> None:
    checks = _doctor(env, SLACK_APP_TOKEN=SANDBOX_SLACK_TOKEN)

    assert _failed(checks) == {"Slack Socket Mode"}
    assert "not_allowed_token_type" in checks["Slack Socket Mode"].detail
    assert "SLACK_APP_TOKEN" in checks["Slack Socket Mode"].fix


def test_without_an_app_level_token_there_is_no_socket_mode_check(env: dict[str, object]) -> None:
    assert "Slack Socket Mode" not in _doctor(env)


def test_a_fallback_channel_given_by_name_needs_the_channel_list_scope(env: dict[str, object]) -> None:
    with SlackSandbox(token=SANDBOX_SLACK_TOKEN, scopes=list(SLACK_SCOPES)) as slack:
        slack.add_channel("cs-alerts")
        checks = _doctor(env, SLACK_API_URL=slack.url)

    assert _failed(checks) == {"Slack token and scopes", "Slack fallback channel"}
    assert "lacks channels:read" in checks["Slack token and scopes"].detail


def test_a_fallback_channel_that_does_not_exist_is_named(env: dict[str, object], world: World) -> None:
    checks = _doctor(env, SLACK_FALLBACK_CHANNEL="#no-such-channel")

    assert _failed(checks) == {"Slack fallback channel"}
    assert "#no-such-channel" in checks["Slack fallback channel"].detail


# -- credentials --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("setting", "check", "system"), [
    ("SALESFORCE_CLIENT_SECRET", "Salesforce login", "Salesforce"),
    ("ZENDESK_API_TOKEN", "Zendesk", "Zendesk"),
    ("SLACK_BOT_TOKEN", "Slack token and scopes", "Slack"),
])
def test_wrong_credentials_fail_only_that_systems_check(env: dict[str, object], world: World, setting: str,
                                                         check: str, system: str) -> None:
    checks = _doctor(env, **{setting: "xoxb-wrong-credential-0123456789"})

    assert _failed(checks) == {check}
    assert checks[check].detail.startswith(system)
    assert setting in checks[check].fix


def test_no_secret_is_ever_printed_right_or_wrong(env: dict[str, object], world: World) -> None:
    wrong = {"SALESFORCE_CLIENT_SECRET": "wrong-sf-secret-0123", "ZENDESK_API_TOKEN": "wrong-zd-token-0123",
             "SLACK_BOT_TOKEN": "xoxb-wrong-slack-0123"}

    right = format_checks(run_doctor(load_settings(**env)))
    refused = format_checks(run_doctor(load_settings(**{**env, **wrong})))

    for secret in (*SECRETS, *wrong.values()):
        assert secret not in right
        assert secret not in refused


def test_missing_salesforce_credentials_fail_settings_and_login_without_trying(env: dict[str, object]) -> None:
    checks = _doctor(env, SALESFORCE_CLIENT_ID="", SALESFORCE_CLIENT_SECRET=None)

    assert {"settings", "Salesforce login"} <= _failed(checks)
    assert "SALESFORCE_CLIENT_ID" in checks["settings"].detail
    assert checks["Salesforce fields (written)"].skipped


def test_settings_that_do_not_load_are_the_one_failed_check(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env

    checks = checks_from_environment(HEALTHBEAT_INTERVAL="soon")

    assert [(c.name, c.ok) for c in checks] == [("settings", False)]
    assert "HEALTHBEAT_INTERVAL" in checks[0].detail


# -- database and rules -------------------------------------------------------------------------------------

def test_a_database_that_cannot_be_created_is_named(env: dict[str, object], tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")

    checks = _doctor(env, HEALTHBEAT_DB=blocker / "healthbeat.db")

    assert "database" in _failed(checks)
    assert f"{blocker} is not a folder" in checks["database"].detail
    assert "HEALTHBEAT_DB" in checks["database"].fix


def test_a_file_that_is_not_a_database_is_named(env: dict[str, object], tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not SQLite" * 100)

    checks = _doctor(env, HEALTHBEAT_DB=junk)

    assert "database" in _failed(checks)
    assert "not writable as a SQLite database" in checks["database"].detail


def test_an_existing_database_reports_its_schema_version(env: dict[str, object], tmp_path: Path) -> None:
    with Store(tmp_path / "healthbeat.db") as store:
        version = store.schema_version

    checks = _doctor(env)

    assert checks["database"].ok
    assert f"schema version {version} of {version}" in checks["database"].detail


def test_doctor_does_not_create_the_database(env: dict[str, object], tmp_path: Path) -> None:
    checks = _doctor(env)

    assert checks["database"].ok
    assert "does not exist yet" in checks["database"].detail
    assert not (tmp_path / "healthbeat.db").exists()


def test_broken_rule_files_are_reported_with_file_and_line(env: dict[str, object], tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    (rules / "alerts.yaml").write_text("rules:\n  - name: x\n    unknown_key: 1\n")

    checks = _doctor(env, HEALTHBEAT_RULES_DIR=rules)

    assert "rule files" in _failed(checks)
    assert "alerts.yaml" in checks["rule files"].detail
    assert "rules check" in checks["rule files"].fix


# -- the terminal report ------------------------------------------------------------------------------------

def test_format_marks_each_check_and_shows_the_fix_under_a_failure() -> None:
    text = format_checks([Check("database", True, "fine"), Check("Slack", False, "token refused", "set it"),
                          Check("Zendesk", True, "skipped: not set", skipped=True)])

    assert text.splitlines() == ["✓ database: fine", "✗ Slack: token refused", "    fix: set it",
                                 "- Zendesk: skipped: not set", "1 of 3 checks failed: Slack"]


# -- the login flow, over the command line ------------------------------------------------------------------

JWT_USER = "healthbeat-integration@acme.example"


@pytest.fixture(scope="module")
def identity() -> SigningIdentity:
    return make_signing_identity()


def _jwt_environment(env: dict[str, object], salesforce: SalesforceSandbox, identity: SigningIdentity,
                     folder: Path) -> dict[str, object]:
    """The sandbox org's app set up for the JWT bearer flow, and the settings of a deployment that uses it."""
    salesforce.app.certificate = identity.certificate
    salesforce.app.preauthorized_users = frozenset({JWT_USER})
    settings = {**env, "SALESFORCE_USERNAME": JWT_USER, "SALESFORCE_PRIVATE_KEY_FILE": identity.write_key(folder),
                "SLACK_FALLBACK_CHANNEL": ""}  # no world here, so no channel to find
    del settings["SALESFORCE_CLIENT_SECRET"]
    return settings


def test_doctor_logs_in_with_the_jwt_bearer_flow_and_says_so(env: dict[str, object], sandboxes: Sandboxes,
                                                            identity: SigningIdentity, tmp_path: Path) -> None:
    result = healthbeat("doctor", env=_jwt_environment(env, sandboxes.salesforce, identity, tmp_path), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"with the JWT bearer flow as {JWT_USER}" in result.stdout
    assert f"✓ Salesforce login: logged in to {sandboxes.salesforce.url} as {JWT_USER} (JWT bearer flow" \
        in result.stdout
    assert not [line for line in identity.key_body_lines() if line in result.stdout + result.stderr]


def test_doctor_refuses_a_shared_login_host_for_client_credentials_without_connecting(
        env: dict[str, object], sandboxes: Sandboxes, tmp_path: Path) -> None:
    before = len(sandboxes.salesforce.calls)

    result = healthbeat("doctor", env={**env, "SALESFORCE_LOGIN_URL": "https://login.salesforce.com"}, cwd=tmp_path)

    assert result.returncode == 1
    settings_line = next(line for line in result.stdout.splitlines() if line.startswith("✗ settings"))
    assert "My Domain" in settings_line and "https://MyDomainName.my.salesforce.com" in settings_line
    assert "✗ Salesforce login: not attempted with the client-credentials flow" in result.stdout
    assert len(sandboxes.salesforce.calls) == before


def test_doctor_names_what_the_jwt_flow_in_use_lacks(env: dict[str, object]) -> None:
    checks = _doctor(env, SALESFORCE_CLIENT_SECRET=None, SALESFORCE_USERNAME=JWT_USER)

    assert {"settings", "Salesforce login"} <= _failed(checks)
    login = checks["Salesforce login"].detail
    assert login.startswith(f"not attempted with the JWT bearer flow as {JWT_USER}")
    assert "set SALESFORCE_PRIVATE_KEY_FILE (" in login


def test_doctor_explains_a_refused_jwt_login_with_the_settings_to_check(
        env: dict[str, object], sandboxes: Sandboxes, identity: SigningIdentity, tmp_path: Path) -> None:
    settings = _jwt_environment(env, sandboxes.salesforce, identity, tmp_path)
    sandboxes.salesforce.app.preauthorized_users = frozenset()

    checks = _doctor(settings)

    assert "Salesforce login" in _failed(checks)
    assert "user hasn't approved this consumer" in checks["Salesforce login"].detail
    assert "SALESFORCE_USERNAME" in checks["Salesforce login"].fix


def test_a_client_credentials_login_refused_with_invalid_grant_points_the_fix_at_the_login_url(
        env: dict[str, object], sandboxes: Sandboxes) -> None:
    sandboxes.salesforce.app.generic_host = True  # the org answers as login.salesforce.com does

    checks = _doctor(env)

    login = checks["Salesforce login"]
    assert not login.ok and "request not supported on this domain" in login.detail
    assert login.fix.startswith("set SALESFORCE_LOGIN_URL to your org's My Domain URL")
    assert "SALESFORCE_CLIENT_SECRET" not in login.detail + login.fix
