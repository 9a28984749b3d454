"""Each branch of the error tree (`worker.errors`) reads the same and exits the same from every command."""

from __future__ import annotations

from pathlib import Path

from tests.worker.test_cli import RULES_DIR, healthbeat
from worker.store import Store


def test_a_database_held_by_a_running_worker_exits_3_naming_the_lock(tmp_path: Path) -> None:
    db = tmp_path / "hb.db"
    with Store(db, lock=True):
        result = healthbeat("db", "prune", "--db", str(db), env={"HEALTHBEAT_RULES_DIR": RULES_DIR}, cwd=tmp_path)

    assert result.returncode == 3, result.stderr
    assert "lock" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_an_account_the_store_does_not_hold_exits_1_with_what_was_typed(tmp_path: Path) -> None:
    db = tmp_path / "hb.db"
    Store(db).close()

    result = healthbeat("explain", "[bold]Nobody Inc", "--db", str(db), env={"HEALTHBEAT_RULES_DIR": RULES_DIR},
                        cwd=tmp_path)

    assert result.returncode == 1
    assert "[bold]Nobody Inc" in result.stderr, "the name is shown as typed, not read as terminal markup"
    assert "Traceback" not in result.stderr


def test_a_malformed_setting_exits_2_under_configuration(tmp_path: Path) -> None:
    result = healthbeat("scores", env={"HEALTHBEAT_RETENTION_TEXT": "soon"}, cwd=tmp_path)

    assert result.returncode == 2
    assert "Configuration:" in result.stderr and "HEALTHBEAT_RETENTION_TEXT" in result.stderr


def test_a_read_command_on_a_database_that_does_not_exist_says_so_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "hb.db"

    result = healthbeat("scores", "--db", str(missing), env={"HEALTHBEAT_RULES_DIR": RULES_DIR}, cwd=tmp_path)

    assert result.returncode == 2
    assert "no database at" in result.stderr and str(missing) in result.stderr
    assert not missing.parent.exists()
