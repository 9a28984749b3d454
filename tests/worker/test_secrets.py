"""Secrets come from the environment and go nowhere else: not into logs, not into the database."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.sandboxes.world import World
from tests.connectors.salesforce_keys import make_signing_identity
from tests.worker.test_cli import RULES_DIR
from worker.config import load_settings
from worker.demo.harness import (
    SANDBOX_CLIENT_SECRET,
    SANDBOX_SLACK_TOKEN,
    SANDBOX_ZENDESK_TOKEN,
    Sandboxes,
    sandbox_environment,
)
from worker.logs import RedactingFilter

SIGNING_SECRET = "0123456789abcdef-signing-secret"
JWT_USER = "healthbeat-integration@acme.example"


def test_a_verbose_cycle_leaves_no_secret_in_its_logs_or_its_database(
        world: World, sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, **{k: str(v) for k, v in
                            sandbox_environment(sandboxes, tmp_path / "hb.db", usage_dir, RULES_DIR).items()},
           "SLACK_SIGNING_SECRET": SIGNING_SECRET}
    sandboxes.slack.fail_next("users.lookupByEmail", "invalid_auth")  # an error path too
    runs = [subprocess.run([sys.executable, "-c", "from worker.cli import main; main()", "run", "--once", "-v"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120)
            for _ in range(2)]
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("hb.db*") if p.is_file())

    secrets = [SANDBOX_CLIENT_SECRET, SANDBOX_ZENDESK_TOKEN, SANDBOX_SLACK_TOKEN, SIGNING_SECRET]
    logs = "".join(r.stdout + r.stderr for r in runs)
    assert "cycle" in logs
    for secret in secrets:
        assert secret not in logs, f"{secret[:6]}… in the logs"
        assert secret.encode() not in stored, f"{secret[:6]}… in the database"


def test_redaction_masks_tokens_inside_exceptions_and_urls() -> None:
    redact = RedactingFilter(["s3cr3t-value"])
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "call failed: %s", (
        "https://h/services/oauth2/token?client_secret=abc123&x=1 Authorization: Bearer 00Dxx!AQ.long.token "
        "xoxb-1234567890-abcdef s3cr3t-value",), None)
    try:
        raise RuntimeError("token=abcdefghijk and s3cr3t-value")
    except RuntimeError:
        record.exc_info = sys.exc_info()

    redact.filter(record)

    text = record.getMessage()
    for leaked in ("abc123", "00Dxx!AQ.long.token", "xoxb-1234567890-abcdef", "s3cr3t-value", "abcdefghijk"):
        assert leaked not in text
    assert "client_secret=***" in text and "Bearer ***" in text


def test_a_socket_mode_ticket_and_a_proxy_password_are_masked_in_urls() -> None:
    text = RedactingFilter().redact("connecting to wss://wss-primary.slack.com/link/?ticket=4f2c-e9a1&app_id=A01 "
                                    "through http://ops:pr0xy-pass@proxy.internal:3128")

    assert "4f2c-e9a1" not in text and "pr0xy-pass" not in text
    assert "ticket=***&app_id=A01" in text and "http://ops:***@proxy.internal:3128" in text


def test_an_app_level_token_read_from_a_dotenv_file_is_masked(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SLACK_APP_TOKEN=dotenv-only-app-token-456\n")

    assert "dotenv-only-app-token-456" in load_settings(_env_file=tmp_path / ".env").secret_values()


def test_secrets_read_from_a_dotenv_file_are_masked_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SLACK_BOT_TOKEN=dotenv-only-token-123\nHEALTHBEAT_INTERVAL=bogus\n")
    result = subprocess.run([sys.executable, "-c", "from worker.cli import main; main()", "run", "--once"],
                            env={k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "HEALTHBEAT_"))},
                            cwd=tmp_path, capture_output=True, text=True, check=False, timeout=60)

    assert result.returncode == 2 and "HEALTHBEAT_INTERVAL" in result.stderr
    assert "dotenv-only-token-123" not in result.stderr + result.stdout


def test_a_jwt_cycle_leaves_no_private_key_in_its_logs_or_its_database(
        world: World, sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    identity = make_signing_identity()
    sandboxes.salesforce.app.certificate = identity.certificate
    sandboxes.salesforce.app.preauthorized_users = frozenset({JWT_USER})
    settings = sandbox_environment(sandboxes, tmp_path / "hb.db", usage_dir, RULES_DIR)
    del settings["SALESFORCE_CLIENT_SECRET"]
    env = {**os.environ, **{k: str(v) for k, v in settings.items()}, "SALESFORCE_USERNAME": JWT_USER,
           "SALESFORCE_PRIVATE_KEY_FILE": str(identity.write_key(tmp_path))}

    run = subprocess.run([sys.executable, "-c", "from worker.cli import main; main()", "run", "--once", "-v"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120)
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("hb.db*") if p.is_file())

    assert run.returncode == 0, run.stderr[-2000:]
    logs = run.stdout + run.stderr
    for line in identity.key_body_lines():
        assert line not in logs, f"{line[:6]}… in the logs"
        assert line.encode() not in stored, f"{line[:6]}… in the database"


def test_the_private_key_is_masked_wherever_a_line_of_it_appears(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    identity = make_signing_identity()
    monkeypatch.chdir(tmp_path)
    settings = load_settings(SALESFORCE_CLIENT_ID="consumer-key", SALESFORCE_USERNAME=JWT_USER,
                             SALESFORCE_PRIVATE_KEY_FILE=identity.write_key(tmp_path))
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "signing failed near %s", (
        identity.key_body_lines()[3],), None)

    RedactingFilter(settings.secret_values()).filter(record)

    assert record.getMessage() == "signing failed near ***"
    assert identity.private_key not in repr(settings) and identity.private_key not in str(settings)
