"""Settings and places a deployment gets wrong: each is refused in one line naming the setting or the path, never
with a traceback, and a blank value in `.env` (as `.env.example` ships them) means unset."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.worker.test_cli import RULES_DIR, healthbeat
from worker.config import load_settings
from worker.demo.harness import Sandboxes, sandbox_environment
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


def _without_root_powers() -> None:
    """Root writes anywhere: in the child, drop the capabilities that let it, so a read-only folder is one."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _as_an_ordinary_user(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEALTHBEAT_", "SALESFORCE_"))}
    return subprocess.run([sys.executable, "-c", "from worker.cli import main; main()", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=60, check=False,
                          preexec_fn=_without_root_powers)


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
