"""Logging, configured once by the CLI: readable on a terminal, JSON lines elsewhere, secrets redacted.

Redaction works on the final text of every record (message, arguments and exception alike), so a token
that slips into an exception from a client library, or into a URL, is masked before it reaches any handler.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable

_SECRET_ENV = ("SALESFORCE_CLIENT_SECRET", "ZENDESK_API_TOKEN", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET")
_PATTERNS = (
    re.compile(r"xox[abposr]-[0-9A-Za-z-]{6,}"),                       # Slack tokens
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/!=-]{8,}"),               # Authorization headers
    re.compile(r"(?i)((?:access_token|client_secret|api_token|password|token)=)[^&\s]+"),  # URL/form fields
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
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
                           "logger": record.name, "message": record.getMessage()}, ensure_ascii=False)


def configure_logging(verbose: bool = False, *, quiet_below: int | None = None,
                      secrets: Iterable[str] = ()) -> None:
    level = logging.DEBUG if verbose else (quiet_below or logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    if sys.stderr.isatty():
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    else:
        handler.setFormatter(JsonFormatter())
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
