"""`healthbeat run` as a deployment runs it: a real process, its health endpoints, its lock, its stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from connectors.sandboxes.world import World
from tests.worker.test_cli import RULES_DIR
from worker.demo.harness import Sandboxes, sandbox_environment


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(env: dict[str, object], cwd: Path) -> subprocess.Popen[str]:
    full = {**os.environ, **{k: str(v) for k, v in env.items()}}
    return subprocess.Popen([sys.executable, "-c", "from worker.cli import main; main()", "run"], env=full,
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own loopback server
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _wait_for(check: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_run_serves_health_and_metrics_and_stops_cleanly_on_sigterm(
        world: World, sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {**sandbox_environment(sandboxes, tmp_path / "hb.db", usage_dir, RULES_DIR),
           "HEALTHBEAT_INTERVAL": "2s", "HEALTHBEAT_HTTP_PORT": port}
    worker = _start(env, tmp_path)
    try:
        _wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
                  and json.loads(_get(f"http://127.0.0.1:{port}/healthz")[1]).get("last_success"), 60)
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        metrics_status, metrics = _get(f"http://127.0.0.1:{port}/metrics")

        assert status == 200, body
        assert metrics_status == 200
        assert "healthbeat_cycle_duration_seconds" in metrics
        assert 'healthbeat_records_synced_total{stream="salesforce.Account"}' in metrics

        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
        assert code == 0
        assert time.monotonic() - started < 30
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.communicate()


def test_run_serves_slack_events_and_publishes_the_home_tab_an_owner_opens(
        world: World, sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {**sandbox_environment(sandboxes, tmp_path / "hb.db", usage_dir, RULES_DIR),
           "HEALTHBEAT_INTERVAL": "1h", "HEALTHBEAT_HTTP_PORT": port, "SLACK_SIGNING_SECRET": "s3cr3t-signing"}
    owner, user = sorted(world.slack_user_ids.items())[0]
    worker = _start(env, tmp_path)
    try:
        _wait_for(lambda: json.loads(_get(f"http://127.0.0.1:{port}/healthz")[1] or "{}").get("last_success"), 60)

        answer = sandboxes.slack.app_home_opened(f"http://127.0.0.1:{port}/slack/events", user, "s3cr3t-signing")
        _wait_for(lambda: user in sandboxes.slack.home_views, 20)

        assert answer.status == 200
        shown = json.dumps(sandboxes.slack.home_views[user])
        owned = sum(1 for a in world.accounts if a.owner_id == owner)
        assert f"{owned} scored accounts" in shown  # the tab is this owner's, from the store the cycle wrote
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)


def test_a_second_worker_on_the_same_database_refuses_to_start(
        world: World, sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    env = {**sandbox_environment(sandboxes, tmp_path / "hb.db", usage_dir, RULES_DIR),
           "HEALTHBEAT_INTERVAL": "1h", "HEALTHBEAT_HTTP_PORT": _free_port()}
    first = _start(env, tmp_path)
    try:
        _wait_for(lambda: (tmp_path / "hb.db.lock").exists(), 30)
        second = _start({**env, "HEALTHBEAT_HTTP_PORT": _free_port()}, tmp_path)
        _, stderr = second.communicate(timeout=60)

        assert second.returncode != 0
        assert "in use by another Healthbeat worker" in stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
