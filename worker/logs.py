"""Logging, configured once by the CLI: readable on a terminal, JSON lines elsewhere, secrets redacted.

Redaction works on the final text of every record (message, arguments and exception alike), so a token
that slips into an exception from a client library, or into a URL, is masked before it reaches any handler.

With HEALTHBEAT_ORG set, every line names the org (`"org"` in JSON, `org=NAME` on a terminal), so that one log
pipeline can take the lines of a worker per org and still tell them apart (README "Scale").
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable

_SECRET_ENV = ("SALESFORCE_CLIENT_SECRET", "ZENDESK_API_TOKEN", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET",
               "SLACK_APP_TOKEN")
_ORG_ENV = "HEALTHBEAT_ORG"
TERMINAL_FORMAT = "%(asctime)s %(levelname)-7s %(org)s%(name)s: %(message)s"
_PATTERNS = (
    re.compile(r"xox[abposr]-[0-9A-Za-z-]{6,}"),                       # Slack tokens
    re.compile(r"xapp-[0-9A-Za-z-]{6,}"),                              # Slack app-level tokens (Socket Mode)
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/!=-]{8,}"),               # Authorization headers
    re.compile(r"(?i)((?:access_token|client_secret|api_token|password|token|ticket)=)[^&\s]+"),  # URL/form fields
    re.compile(r"(://[^:/\s@]+:)[^@\s]+(?=@)"),                            # a password in a URL (a proxy's)
)


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg = self.redact(message)
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log pipelines; with `org`, each names the org it came from."""

    def __init__(self, org: str | None = None) -> None:
        super().__init__()
        self.org = org

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname}
        if self.org:
            line["org"] = self.org
        line.update({"logger": record.name, "message": record.getMessage()})
        return json.dumps(line, ensure_ascii=False)


class TerminalFormatter(logging.Formatter):
    """Short lines for a person at a terminal; with `org`, `org=NAME` after the level."""

    def __init__(self, org: str | None = None) -> None:
        super().__init__(TERMINAL_FORMAT, "%H:%M:%S")
        self.org = org

    def formatMessage(self, record: logging.LogRecord) -> str:
        return TERMINAL_FORMAT % {**record.__dict__, "org": f"org={self.org} " if self.org else ""}


def _org_from_environment() -> str | None:
    """The org as the environment names it, for the lines logged before the settings are read (a Kubernetes
    deployment sets it there); `set_org` gives the setting itself once read (it may come from `.env`)."""
    return os.environ.get(_ORG_ENV, "").strip() or None


def configure_logging(verbose: bool = False, *, quiet_below: int | None = None,
                      secrets: Iterable[str] = ()) -> None:
    level = logging.DEBUG if verbose else (quiet_below or logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    org = _org_from_environment()
    if sys.stderr.isatty():
        handler.setFormatter(TerminalFormatter(org))
    else:
        handler.setFormatter(JsonFormatter(org))
    handler.addFilter(RedactingFilter([*secrets, *(os.environ.get(name, "") for name in _SECRET_ENV)]))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "httpx", "httpcore", "slack_sdk", "apscheduler.executors", "simple_salesforce"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_secrets(values: Iterable[str]) -> None:
    """Mask these too (settings read from a `.env` file are not in the environment)."""
    for handler in logging.getLogger().handlers:
        for found in handler.filters:
            if isinstance(found, RedactingFilter):
                found.secrets = sorted({*found.secrets, *(v for v in values if v and len(v) >= 4)},
                                       key=len, reverse=True)


def set_org(org: str | None) -> None:
    """Name the org on every line from now on (HEALTHBEAT_ORG as the settings read it; None: no org)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, JsonFormatter | TerminalFormatter):
            handler.formatter.org = org or None
