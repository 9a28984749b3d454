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
from typing import Annotated, Any

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import ConfigError

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


class Settings(BaseSettings):
    """Everything the worker needs to know about its deployment."""

    # A blank value (`USAGE_DIR=` as .env.example has it) means unset: the default, not "" or the current folder.
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      populate_by_name=True, env_ignore_empty=True)

    db: Path = Field(default=Path("healthbeat.db"), validation_alias="HEALTHBEAT_DB")
    rules_dir: Path = Field(default=Path("rules"), validation_alias="HEALTHBEAT_RULES_DIR")
    interval: Duration = Field(default=timedelta(minutes=15), validation_alias="HEALTHBEAT_INTERVAL")
    http_port: int = Field(default=8080, ge=0, le=65535, validation_alias="HEALTHBEAT_HTTP_PORT")

    salesforce_login_url: str = Field(default="https://login.salesforce.com",
                                      validation_alias="SALESFORCE_LOGIN_URL")
    salesforce_client_id: str | None = Field(default=None, validation_alias="SALESFORCE_CLIENT_ID")
    salesforce_client_secret: SecretStr | None = Field(default=None,
                                                       validation_alias="SALESFORCE_CLIENT_SECRET")
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

    usage_dir: Path | None = Field(default=None, validation_alias="USAGE_DIR")

    retention_text: Duration = Field(default=timedelta(days=365), validation_alias="HEALTHBEAT_RETENTION_TEXT")
    retention_history: Duration = Field(default=timedelta(days=730),
                                        validation_alias="HEALTHBEAT_RETENTION_HISTORY")

    ca_bundle: str | None = Field(default=None,
                                  validation_alias=AliasChoices("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"))

    @field_validator("salesforce_login_url", "zendesk_url", "slack_api_url", mode="before")
    @classmethod
    def _url(cls, value: object) -> object:
        if value is None or value == "":
            return None
        if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"expected a URL like https://example.com, got {value!r}")
        return value

    @field_validator("zendesk_email", "slack_fallback_channel", "salesforce_client_id", "usage_dir", "ca_bundle",
                     mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

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

    def secret_values(self) -> list[str]:
        """Every credential's plain value, so logging can mask each one wherever it appears."""
        secrets = (self.salesforce_client_secret, self.zendesk_api_token, self.slack_bot_token,
                   self.slack_signing_secret)
        return [s.get_secret_value() for s in secrets if s is not None and s.get_secret_value()]

    def require_salesforce(self) -> None:
        """Salesforce is the one required source: name every missing setting at once."""
        missing = [name for name, value in (("SALESFORCE_CLIENT_ID", self.salesforce_client_id),
                                            ("SALESFORCE_CLIENT_SECRET", self.salesforce_client_secret))
                   if not value]
        if missing:
            raise ConfigError(f"Salesforce is not configured: set {' and '.join(missing)} "
                              f"(an External Client App's consumer key and secret, client-credentials flow)")

    def partial_sources(self) -> list[str]:
        """Optional sources that are half configured: almost always a typo worth refusing to start for."""
        problems = []
        zendesk = {"ZENDESK_URL": self.zendesk_url, "ZENDESK_EMAIL": self.zendesk_email,
                   "ZENDESK_API_TOKEN": self.zendesk_api_token}
        if any(zendesk.values()) and not all(zendesk.values()):
            missing = ", ".join(k for k, v in zendesk.items() if not v)
            problems.append(f"Zendesk is partly configured: also set {missing} (or unset all three)")
        return problems


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
