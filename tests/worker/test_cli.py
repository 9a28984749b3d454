"""The `healthbeat` command as a user runs it: a real process, its exit code, stdout and stderr apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from worker.cli import app
from worker.demo.harness import SANDBOX_CLIENT_SECRET, Sandboxes, sandbox_environment

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"


def healthbeat(*args: str, env: dict[str, object] | None = None, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the console script's entry point in a fresh process, with only the given settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HEALTHBEAT_", "SALESFORCE_", "ZENDESK_",
                                                                       "SLACK_", "USAGE_"))}
    clean.update({"COLUMNS": "200", **{k: str(v) for k, v in (env or {}).items()}})
    return subprocess.run([sys.executable, "-c", "from worker.cli import main; main()", *args],
                          capture_output=True, text=True, env=clean, cwd=cwd, timeout=120, check=False)


def _commands() -> list[list[str]]:
    root = typer.main.get_command(app)
    found = []
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        subcommands = getattr(command, "commands", None)
        if subcommands:
            found += [[name, sub] for sub in subcommands]
            if getattr(command, "invoke_without_command", False):
                found.append([name])
        else:
            found.append([name])
    return found


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c))
def test_every_command_has_help_text(command: list[str], tmp_path: Path) -> None:
    result = healthbeat(*command, "--help", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert len(result.stdout.split("Usage:")[1].strip().splitlines()) > 2


def test_the_contract_commands_exist() -> None:
    names = {" ".join(c) for c in _commands()}

    assert {"run", "sync", "score", "writeback", "notify", "scores", "demo", "rules check", "doctor"} <= names


def test_run_once_with_wrong_salesforce_credentials_names_salesforce_without_a_traceback(
        sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    env = sandbox_environment(sandboxes, tmp_path / "hb.db", usage_dir, RULES_DIR)
    env["SALESFORCE_CLIENT_SECRET"] = "not-the-secret"

    result = healthbeat("run", "--once", env=env, cwd=tmp_path)

    assert result.returncode != 0
    assert "Salesforce" in result.stderr
    assert "Traceback" not in result.stderr
    assert "not-the-secret" not in result.stderr + result.stdout


def test_missing_salesforce_settings_are_named(tmp_path: Path) -> None:
    result = healthbeat("run", "--once", env={"HEALTHBEAT_RULES_DIR": RULES_DIR}, cwd=tmp_path)

    assert result.returncode == 2
    assert "SALESFORCE_CLIENT_ID" in result.stderr and "SALESFORCE_CLIENT_SECRET" in result.stderr


def test_a_malformed_setting_is_named_with_what_it_should_look_like(tmp_path: Path) -> None:
    result = healthbeat("scores", env={"HEALTHBEAT_INTERVAL": "every now and then"}, cwd=tmp_path)

    assert result.returncode == 2
    assert "HEALTHBEAT_INTERVAL" in result.stderr and "15m" in result.stderr


def test_run_once_then_scores_as_json_puts_only_json_on_stdout(
        world: object, sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    env = sandbox_environment(sandboxes, tmp_path / "hb.db", usage_dir, RULES_DIR)
    ran = healthbeat("run", "--once", env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr

    result = healthbeat("scores", "--format", "json", env=env, cwd=tmp_path)

    rows = json.loads(result.stdout)
    assert len(rows) == len(sandboxes.salesforce.records("Account"))
    assert {"account_id", "score", "band", "trend", "reason"} <= set(rows[0])
    assert SANDBOX_CLIENT_SECRET not in ran.stderr + result.stdout + result.stderr


def test_scores_as_csv_has_a_header_and_one_row_per_account(
        world: object, sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    env = sandbox_environment(sandboxes, tmp_path / "hb.db", usage_dir, RULES_DIR)
    healthbeat("run", "--once", env=env, cwd=tmp_path)

    result = healthbeat("scores", "--format", "csv", env=env, cwd=tmp_path)

    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("account_id,name,owner,segment,score,band")
    assert len(lines) == 1 + len(sandboxes.salesforce.records("Account"))


def test_rules_check_names_file_line_and_field_of_each_problem(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    scorecard = (RULES_DIR / "scorecard.yaml").read_text().replace(
        "  engagement:\n    weight: 25", "  engagement:\n    weight: -25", 1)
    (rules / "scorecard.yaml").write_text(scorecard)
    (rules / "alerts.yaml").write_text((RULES_DIR / "alerts.yaml").read_text().replace("    when:", "    wehn:", 1))
    line = next(i for i, text in enumerate(scorecard.splitlines(), 1) if "weight: -25" in text)

    result = healthbeat("rules", "check", "--rules-dir", str(rules), cwd=tmp_path)

    assert result.returncode == 1
    assert f"scorecard.yaml:{line}: groups.engagement.weight" in result.stderr
    assert "alerts.yaml" in result.stderr and "wehn" in result.stderr


def test_rules_check_passes_on_the_shipped_rules(tmp_path: Path) -> None:
    result = healthbeat("rules", "check", "--rules-dir", str(RULES_DIR), cwd=tmp_path)

    assert result.returncode == 0, result.stderr


def test_sync_ends_with_a_table_per_stream_and_quarantine_ls_lists_bad_rows(
        world: object, sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    (usage_dir / "zz-bad.csv").write_text("account_id,date,active_users,events\nnot-an-id,2026-01-01,1,1\n")
    env = sandbox_environment(sandboxes, tmp_path / "hb.db", usage_dir, RULES_DIR)

    synced = healthbeat("sync", env=env, cwd=tmp_path)
    listed = healthbeat("quarantine", "ls", "--format", "json", env=env, cwd=tmp_path)

    assert synced.returncode == 0, synced.stderr
    assert "Sync by stream" in synced.stderr and "salesforce.Account" in synced.stderr
    assert "Storing" in synced.stderr, "the table says how much of each stream's time went to storing"
    [row] = json.loads(listed.stdout)
    assert row["source"] == "usage" and row["reason"].startswith("zz-bad.csv line 2: account_id")


def test_db_backup_copies_a_database_a_worker_holds_and_db_migrate_reports_the_schema(
        world: object, sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    env = sandbox_environment(sandboxes, tmp_path / "hb.db", usage_dir, RULES_DIR)
    healthbeat("run", "--once", env=env, cwd=tmp_path)

    backup = healthbeat("db", "backup", str(tmp_path / "copy.db"), env=env, cwd=tmp_path)
    migrated = healthbeat("db", "migrate", "--db", str(tmp_path / "copy.db"), env=env, cwd=tmp_path)

    assert backup.returncode == 0, backup.stderr
    assert "schema version" in migrated.stdout
    copied = json.loads(healthbeat("scores", "--format", "json", "--db", str(tmp_path / "copy.db"),
                                   env=env, cwd=tmp_path).stdout)
    assert len(copied) == len(sandboxes.salesforce.records("Account"))
