"""One typed settings object, read from the environment and `.env`, validated at start.

The names are a contract with deployments (README "Configuration", .env.example): keep them exactly. Secrets
are `SecretStr` so that printing the settings, or an exception that carries them, never shows a credential.
"""

from __future__ import annotations

import re
import shutil
from datetime import timedelta
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import ConfigError

if TYPE_CHECKING:
    from connectors.salesforce.client import SalesforceCredentials

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: object) -> timedelta:
    """Read `15m`, `2h`, `30d`, `90s` or `1w` (also a timedelta or a number of seconds)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    raise ValueError(f"expected a duration like 90s, 15m, 2h, 30d or 1w, got {value!r}")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

SHARED_LOGIN_URL: Final = "https://login.salesforce.com"
"""Where the JWT bearer flow logs in when SALESFORCE_LOGIN_URL is not set (the client-credentials flow has no
default: it needs the org's own My Domain URL)."""
MAX_KEY_FILE: Final = 64 * 1024  # an RSA key in PEM is a few KiB: anything larger is not one


class Settings(BaseSettings):
    """Everything the worker needs to know about its deployment."""

    # A blank value (`USAGE_DIR=` as .env.example has it) means unset: the default, not "" or the current folder.
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      populate_by_name=True, env_ignore_empty=True)

    db: Path = Field(default=Path("healthbeat.db"), validation_alias="HEALTHBEAT_DB")
    rules_dir: Path = Field(default=Path("rules"), validation_alias="HEALTHBEAT_RULES_DIR")
    interval: Duration = Field(default=timedelta(minutes=15), validation_alias="HEALTHBEAT_INTERVAL")
    http_port: int = Field(default=8080, ge=0, le=65535, validation_alias="HEALTHBEAT_HTTP_PORT")
    # The org this worker serves, on every log line and metric series, so that one log pipeline and one
    # Prometheus can serve a worker per org (README "Scale"). A short name: letters, digits, `.`, `_`, `-`.
    org: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
                            validation_alias="HEALTHBEAT_ORG")

    # As given: `salesforce_login_url` is the URL in use (the JWT bearer flow has a default, client credentials none).
    salesforce_login_url_given: str | None = Field(default=None, validation_alias="SALESFORCE_LOGIN_URL")
    salesforce_client_id: str | None = Field(default=None, validation_alias="SALESFORCE_CLIENT_ID")
    salesforce_client_secret: SecretStr | None = Field(default=None,
                                                       validation_alias="SALESFORCE_CLIENT_SECRET")
    salesforce_username: str | None = Field(default=None, validation_alias="SALESFORCE_USERNAME")
    salesforce_private_key_file: Path | None = Field(default=None, validation_alias="SALESFORCE_PRIVATE_KEY_FILE")
    salesforce_api_version: str = Field(default="59.0", pattern=r"^\d{2,3}\.0$",
                                        validation_alias="SALESFORCE_API_VERSION")
    salesforce_overlap: Duration = Field(default=timedelta(minutes=5),
                                         validation_alias="HEALTHBEAT_SALESFORCE_OVERLAP")
    salesforce_api_share: float = Field(default=0.5, gt=0, le=1,
                                        validation_alias="HEALTHBEAT_SALESFORCE_API_SHARE")
    # The scorecard's longest window (180 days) plus the backtest's default period (365) and horizon (90),
    # rounded up: the history that the churn model and `backtest --tune` learn from.
    salesforce_backfill: Duration = Field(default=timedelta(days=730),
                                          validation_alias="HEALTHBEAT_SALESFORCE_BACKFILL")
    # A daily row per account in the custom object Health_Snapshot__c (README "Salesforce fields"): on or off.
    salesforce_snapshots: bool = Field(default=False, validation_alias="HEALTHBEAT_SALESFORCE_SNAPSHOTS")
    # A backfill (or a catch-up after long downtime) of an object with more rows than this in its window runs as
    # a Bulk API 2.0 query job instead of REST pages; incremental cycles stay on REST. 0: never Bulk.
    salesforce_bulk_threshold: int = Field(default=1_000_000, ge=0,
                                           validation_alias="HEALTHBEAT_SALESFORCE_BULK_THRESHOLD")

    zendesk_url: str | None = Field(default=None, validation_alias="ZENDESK_URL")
    zendesk_email: str | None = Field(default=None, validation_alias="ZENDESK_EMAIL")
    zendesk_api_token: SecretStr | None = Field(default=None, validation_alias="ZENDESK_API_TOKEN")
    zendesk_requests_per_minute: int = Field(default=10, ge=1,
                                             validation_alias="HEALTHBEAT_ZENDESK_REQUESTS_PER_MINUTE")
    zendesk_api_requests_per_minute: int = Field(default=100, ge=1,
                                                 validation_alias="HEALTHBEAT_ZENDESK_API_REQUESTS_PER_MINUTE")
    zendesk_backfill: Duration = Field(default=timedelta(days=365), validation_alias="HEALTHBEAT_ZENDESK_BACKFILL")

    slack_bot_token: SecretStr | None = Field(default=None, validation_alias="SLACK_BOT_TOKEN")
    slack_api_url: str = Field(default="https://slack.com/api/", validation_alias="SLACK_API_URL")
    slack_fallback_channel: str | None = Field(default=None, validation_alias="SLACK_FALLBACK_CHANNEL")
    slack_signing_secret: SecretStr | None = Field(default=None, validation_alias="SLACK_SIGNING_SECRET")
    # An app-level token (xapp-…, scope connections:write): buttons, modals and the Home tab arrive over Socket
    # Mode, with no public port, instead of /slack/actions and /slack/events.
    slack_app_token: SecretStr | None = Field(default=None, validation_alias="SLACK_APP_TOKEN")

    usage_dir: Path | None = Field(default=None, validation_alias="USAGE_DIR")

    retention_text: Duration = Field(default=timedelta(days=365), validation_alias="HEALTHBEAT_RETENTION_TEXT")
    retention_history: Duration = Field(default=timedelta(days=730),
                                        validation_alias="HEALTHBEAT_RETENTION_HISTORY")

    # How often the worker fits the churn model again on the store's history, as a proposal beside the rules
    # (`churn_model.proposed.yaml`); `off` (or 0) never.
    churn_refit: Duration = Field(default=timedelta(days=7), validation_alias="HEALTHBEAT_CHURN_REFIT")

    ca_bundle: str | None = Field(default=None,
                                  validation_alias=AliasChoices("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"))

    @field_validator("salesforce_login_url_given", "zendesk_url", "slack_api_url", mode="before")
    @classmethod
    def _url(cls, value: object) -> object:
        if value is None or value == "":
            return None
        if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"expected a URL like https://example.com, got {value!r}")
        return value

    @field_validator("org", "zendesk_email", "slack_fallback_channel", "salesforce_client_id", "salesforce_username",
                     "salesforce_private_key_file", "usage_dir", "ca_bundle", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("churn_refit", mode="before")
    @classmethod
    def _off(cls, value: object) -> object:
        return timedelta(0) if isinstance(value, str) and value.strip().lower() in ("off", "0", "never") else value

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(f"the time between cycles must be at least 1s, e.g. 90s, 15m or 1h "
                             f"(got {value.total_seconds():g}s)")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _existing_bundle(cls, value: str | None) -> str | None:
        """A CA bundle that is not there would fail every TLS connection later, each with a vaguer message."""
        if value is not None and not Path(value).exists():
            raise ValueError(f"{value} does not exist: give the PEM file of the CA certificates to trust, or unset "
                             "it to use the default ones")
        return value

    @property
    def zendesk_configured(self) -> bool:
        return bool(self.zendesk_url and self.zendesk_email and self.zendesk_api_token)

    @property
    def slack_configured(self) -> bool:
        return self.slack_bot_token is not None and bool(self.slack_bot_token.get_secret_value())

    @property
    def salesforce_login_url(self) -> str:
        """The login URL in use: SALESFORCE_LOGIN_URL, else (only the JWT bearer flow may do without it)
        Salesforce's shared login host."""
        return self.salesforce_login_url_given or SHARED_LOGIN_URL

    @property
    def salesforce_flow(self) -> Literal["client_credentials", "jwt_bearer"]:
        """The rule the README states: a username or a private key file means the JWT bearer flow; otherwise
        the client-credentials flow."""
        return "jwt_bearer" if self.salesforce_username or self.salesforce_private_key_file else "client_credentials"

    def secret_values(self) -> list[str]:
        """Every credential's plain value, so logging can mask each one wherever it appears (the private key's
        text whole and line by line, should a library ever quote part of it)."""
        secrets = (self.salesforce_client_secret, self.zendesk_api_token, self.slack_bot_token,
                   self.slack_signing_secret, self.slack_app_token)
        values = [s.get_secret_value() for s in secrets if s is not None and s.get_secret_value()]
        try:
            key = self.salesforce_private_key() if self.salesforce_private_key_file else None
        except ConfigError:
            key = None
        if key:
            values += [key, *(line for line in key.splitlines() if len(line) >= 16 and not line.startswith("-----"))]
        return values

    def require_salesforce(self) -> None:
        """Salesforce is the one required source: name every setting missing for the login flow in use, refuse
        settings of both flows at once, a private key that cannot be used, and (client credentials) a login URL
        that is not the org's My Domain."""
        from connectors.salesforce.client import lightning_host_problem, my_domain_problem

        secret = self.salesforce_client_secret is not None and bool(self.salesforce_client_secret.get_secret_value())
        jwt_given = [name for name, value in (("SALESFORCE_USERNAME", self.salesforce_username),
                                              ("SALESFORCE_PRIVATE_KEY_FILE", self.salesforce_private_key_file))
                     if value]
        if secret and jwt_given:
            raise ConfigError(f"Salesforce has settings of two login flows: SALESFORCE_CLIENT_SECRET (client-"
                              f"credentials flow) and {_and(jwt_given)} (JWT bearer flow); remove "
                              f"SALESFORCE_CLIENT_SECRET to log in with the JWT bearer flow, or remove "
                              f"{_and(jwt_given)} to log in with client credentials")
        if self.salesforce_flow == "jwt_bearer":
            missing = [name for name, value in (("SALESFORCE_CLIENT_ID", self.salesforce_client_id),
                                                ("SALESFORCE_USERNAME", self.salesforce_username),
                                                ("SALESFORCE_PRIVATE_KEY_FILE", self.salesforce_private_key_file))
                       if not value]
            if missing:
                raise ConfigError(f"Salesforce's JWT bearer login is not configured: set {_and(missing)} (the "
                                  "connected app's consumer key, the integration user's username, and the private "
                                  "key whose certificate the connected app holds)")
            self.salesforce_private_key()
            lightning = lightning_host_problem(self.salesforce_login_url)
            if lightning is not None:
                raise ConfigError(lightning)
            return
        missing = [f"{name} ({meaning})" for name, value, meaning in (
            ("SALESFORCE_LOGIN_URL", self.salesforce_login_url_given,
             "your org's My Domain URL, e.g. https://acme.my.salesforce.com"),
            ("SALESFORCE_CLIENT_ID", self.salesforce_client_id, "the External Client App's consumer key"),
            ("SALESFORCE_CLIENT_SECRET", secret, "its consumer secret")) if not value]
        if missing:
            other = ("; or, for the JWT bearer flow, SALESFORCE_CLIENT_ID, SALESFORCE_USERNAME and "
                     "SALESFORCE_PRIVATE_KEY_FILE") if not secret else ""
            raise ConfigError(f"Salesforce is not configured for the client-credentials flow: set {_and(missing)}"
                              f"{other}")
        problem = my_domain_problem(self.salesforce_login_url)
        if problem is not None:
            raise ConfigError(problem)

    def salesforce_private_key(self) -> str:
        """The text of SALESFORCE_PRIVATE_KEY_FILE once it proves to be an unencrypted PEM RSA private key; a
        `ConfigError` naming the setting and the path (never the file's contents) when it is not."""
        path = self.salesforce_private_key_file
        if path is None:
            raise ConfigError("SALESFORCE_PRIVATE_KEY_FILE is not set")
        where = f"SALESFORCE_PRIVATE_KEY_FILE {path}"
        if not path.exists():
            raise ConfigError(f"{where} does not exist: give the private key file whose certificate the connected "
                              "app holds")
        if not path.is_file():  # a folder, a pipe or a device is never a key (and a pipe would block the read)
            raise ConfigError(f"{where} is not a file: give the private key file (PEM)")
        try:
            with path.open("rb") as file:
                data = file.read(MAX_KEY_FILE + 1)
        except OSError as exc:
            raise ConfigError(f"{where} cannot be read ({exc.strerror or exc}): make it readable by the worker's "
                              "user (and by no one else: chmod 600)") from None
        if b"CERTIFICATE-----" in data and b"PRIVATE KEY-----" not in data:
            raise ConfigError(f"{where} holds a certificate, not the private key: the certificate goes to the "
                              "connected app, the key stays here")
        try:
            key = serialization.load_pem_private_key(data, password=None) if len(data) <= MAX_KEY_FILE else None
        except TypeError:  # cryptography's word for a key that needs a passphrase
            raise ConfigError(f"{where} is encrypted with a passphrase: give it unencrypted (openssl rsa -in "
                              "encrypted.key -out private.key) and readable by the worker's user alone") from None
        except (ValueError, UnsupportedAlgorithm):
            key = None
        if key is None:
            raise ConfigError(f"{where} is not a PEM private key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA "
                              "PRIVATE KEY-----)")
        if not isinstance(key, RSAPrivateKey):
            raise ConfigError(f"{where} is not an RSA key: Salesforce's JWT bearer flow signs with RS256 (make one "
                              "with openssl req -x509 -newkey rsa:2048 ...)")
        return data.decode("ascii")

    def salesforce_credentials(self) -> SalesforceCredentials:
        """The credentials of the login flow in use, once `require_salesforce` found them complete."""
        from connectors.salesforce.client import SalesforceCredentials

        self.require_salesforce()
        assert self.salesforce_client_id  # checked just above
        if self.salesforce_flow == "jwt_bearer":
            return SalesforceCredentials(self.salesforce_login_url, self.salesforce_client_id,
                                         api_version=self.salesforce_api_version, ca_bundle=self.ca_bundle,
                                         username=self.salesforce_username,
                                         private_key=self.salesforce_private_key())
        assert self.salesforce_client_secret is not None
        return SalesforceCredentials(self.salesforce_login_url, self.salesforce_client_id,
                                     self.salesforce_client_secret.get_secret_value(),
                                     api_version=self.salesforce_api_version, ca_bundle=self.ca_bundle)

    def partial_sources(self) -> list[str]:
        """Optional sources that are half configured: almost always a typo worth refusing to start for."""
        problems = []
        zendesk = {"ZENDESK_URL": self.zendesk_url, "ZENDESK_EMAIL": self.zendesk_email,
                   "ZENDESK_API_TOKEN": self.zendesk_api_token}
        if any(zendesk.values()) and not all(zendesk.values()):
            missing = ", ".join(k for k, v in zendesk.items() if not v)
            problems.append(f"Zendesk is partly configured: also set {missing} (or unset all three)")
        return problems


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _setting_name(first: str) -> str:
    """pydantic names a setting with two names by the first: say both, since either may be the one set."""
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices) and first in alias.choices:
            return " / ".join(str(choice) for choice in alias.choices)
    return first


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning pydantic's report into one message that names each bad setting."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = _setting_name(str(error["loc"][0])) if error["loc"] else "?"
            lines.append(f"{name}: {error['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    problems = settings.partial_sources()
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return settings


def shipped_rules() -> Path:
    """The default rule files installed with Healthbeat: the repository's `rules/`, packaged as
    `worker/default_rules`. What `healthbeat init` copies for ops to edit, and what the demo runs on outside
    a clone."""
    return Path(str(files("worker") / "default_rules"))


def copy_shipped_rules(folder: Path) -> list[Path]:
    """Write the shipped rule files (scorecard.yaml, alerts.yaml, tests/*.yaml) into `folder`, creating it.
    Never overwrites: a file already there is a `ConfigError` naming it, and nothing is written."""
    source = shipped_rules()
    names = sorted(p.relative_to(source) for p in [*source.glob("*.yaml"), *source.glob("tests/*.yaml")])
    if not names:
        raise ConfigError(f"this installation of Healthbeat has no default rules ({source} is empty): reinstall it")
    there = [folder / name for name in names if (folder / name).exists()]
    if there:
        raise ConfigError(f"{there[0]} exists: init writes only new files (give an empty or new folder, or edit "
                          "the files in place)")
    written = []
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        written.append(Path(shutil.copyfile(source / name, folder / name)))
    return written
