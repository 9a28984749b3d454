"""One ordered list of stages: every way of running a cycle takes its stages from `FULL_CYCLE`, so a cron or
Kubernetes-job deployment (`healthbeat run --once`) does exactly what the scheduler does, retention included."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.sandboxes.world import World
from tests.worker.test_cli import RULES_DIR
from worker.cycle import FULL_CYCLE, stages_named
from worker.demo.harness import Sandboxes, sandbox_environment


def test_the_full_cycle_runs_sync_score_evaluate_writeback_notify_prune_in_that_order() -> None:
    assert [stage.name for stage in FULL_CYCLE] == ["sync", "score", "evaluate", "writeback", "notify", "prune"]


def test_stages_picked_by_name_keep_the_full_cycle_s_order() -> None:
    assert [stage.name for stage in stages_named("notify", "evaluate")] == ["evaluate", "notify"]


def test_an_unknown_stage_name_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no such stage: scroe \(stages: sync, score"):
        stages_named("scroe")


def test_run_once_prunes_old_email_text_as_the_scheduler_does(
        world: World, sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "hb.db"
    env = {**os.environ, **{k: str(v) for k, v in sandbox_environment(sandboxes, db, usage_dir, RULES_DIR).items()},
           "HEALTHBEAT_RETENTION_TEXT": "30d"}

    result = subprocess.run([sys.executable, "-c", "from worker.cli import main; main()", "run", "--once"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120)

    assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as conn:
        old = conn.execute("SELECT count(*), count(text) FROM activities WHERE kind = 'email' "
                           "AND sentiment IS NOT NULL "
                           "AND occurred_at < strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-31 days')").fetchone()
        recent_text = conn.execute("SELECT count(text) FROM activities WHERE kind = 'email' "
                                   "AND occurred_at > strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-29 days')").fetchone()
    assert old[0] > 0, "the world should hold emails older than the retention"
    assert old[1] == 0, f"{old[1]} of {old[0]} old emails still hold their text after run --once"
    assert recent_text[0] > 0, "recent email text is kept"
