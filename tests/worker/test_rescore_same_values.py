"""A whole re-score stores the same bytes since its Python side was restructured (issue 22): the measures' JSON
written a column at a time, a score's values as a tuple, reasons said once per raw value. The engine as it was
before (`BEFORE`, read from git) and the working tree's score copies of one generated world through the same
days, with overrides, a segment, trends, a churn model and a re-score of changed accounts; every stored value of
`scores`, `score_history` and the change marks its triggers leave must match, type and bits.

Its job is to prove that a restructuring changed nothing. A change to the score made on purpose (or to the
modules the old engine imports) moves `BEFORE` to the commit just before it, or retires this file. It needs the
clone's git history (CI's fresh clone has it); without, it says so and skips.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bench.generate import FIXED_NOW, WorldSpec, fill_store
from tests.worker.conftest import SHIPPED_RULES
from tests.worker.test_churn_model_in_use import hand_model, put_model
from worker.scoring import engine
from worker.scoring.scorecard import LoadedScorecard, load_scorecard
from worker.store import Store, changes, iso

BEFORE = "94db8bc52ccb3ba227968ff44fbbaec439e47b14"  # the last commit with the engine's Python side as it was
ROOT = Path(__file__).resolve().parents[2]
DAYS = [FIXED_NOW - timedelta(days=40), FIXED_NOW - timedelta(days=12), FIXED_NOW]
SEGMENT = """
segments:
  - name: partners
    match: {type: ["Partner"]}
    groups:
      usage: {weight: 20}
    measures:
      engagement.meetings: {weight: 50, points: [[0, 10], [2, 60], [6, 100]]}
"""


@pytest.fixture(scope="module")
def before() -> ModuleType:
    """The engine at `BEFORE`, imported beside the working tree's (the rest of `worker` is the working tree's:
    the measures' values are proven the same by their own tests)."""
    try:
        source = subprocess.run(["git", "show", f"{BEFORE}:worker/scoring/engine.py"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:  # not a clone with its history
        pytest.skip(f"the engine at {BEFORE} is not readable from git: {error}")
    spec = importlib.util.spec_from_loader("engine_before_issue22", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{BEFORE}:worker/scoring/engine.py", "exec"), module.__dict__)  # noqa: S102 - our history
    return module


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 accounts with 420 days of activity and 120 of usage; a tenth of them partners (the segment), pins of
    every kind (in force, expired, out of range, from Salesforce), deleted accounts and activities, new
    accounts with no data."""
    folder = tmp_path_factory.mktemp("rescore")
    with Store(folder / "world.db") as store:
        fill_store(store, WorldSpec(300, history_days=420, usage_days=120, zendesk_share=0.3))
        ids = [str(a) for (a,) in store.conn.execute("SELECT id FROM accounts ORDER BY id")]
        with store.transaction() as conn:
            conn.executemany("UPDATE accounts SET type = 'Partner' WHERE id = ?", [(a,) for a in ids[::10]])
            conn.executemany("INSERT INTO accounts (id, name, type, is_deleted) VALUES (?, 'New', 'Customer', 0)",
                             [(f"0015b00000NEW{n}AAA",) for n in range(3)])  # no data at all yet
            conn.executemany("UPDATE accounts SET is_deleted = 1 WHERE id = ?", [(a,) for a in ids[5::37]])
            conn.execute("UPDATE activities SET is_deleted = 1 WHERE rowid % 19 = 0")
            conn.executemany(
                "INSERT INTO overrides (account_id, value, reason, until, set_by, set_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(ids[1], 80.0, "Exec sponsor engaged", "2025-12-31", "csm", iso(DAYS[0])),
                 (ids[2], 20.5, "Budget cut", "2025-01-01", "csm", iso(DAYS[0])),  # expired by the last day
                 (ids[3], 140.0, "Typo", "2025-12-31", "csm", iso(DAYS[0]))])  # out of range: ignored
            conn.execute("UPDATE accounts SET override_value = 65, override_reason = NULL, override_until = NULL "
                         "WHERE id = ?", (ids[4],))
    return folder / "world.db"


@pytest.fixture
def rules(rules_dir: Path) -> Path:
    """The shipped rules (the conftest's private copy) with a segment added."""
    with (rules_dir / "scorecard.yaml").open("a") as card:
        card.write(SEGMENT)
    return rules_dir


def _stored(db: Path) -> dict[str, list[tuple[str, ...]]]:
    """Every row of the tables a re-score writes, each value as its type and its exact text (`repr` tells
    0.0 from -0.0 and keeps every bit of a float)."""
    with Store(db) as store:
        return {table: [tuple(f"{type(v).__name__}:{v!r}" for v in row)
                        for row in store.conn.execute(f"SELECT * FROM {table} ORDER BY {order}")]
                for table, order in (("scores", "account_id"), ("score_history", "account_id, day"),
                                     ("account_changes", "stage, account_id"))}


Rescore = Callable[[Store, LoadedScorecard, datetime], Any]


def _both(world: Path, tmp_path: Path, old: Rescore, new: Rescore, loaded: LoadedScorecard
          ) -> tuple[dict[str, list[tuple[str, ...]]], dict[str, list[tuple[str, ...]]]]:
    stored = []
    for name, rescore in (("old", old), ("new", new)):
        db = tmp_path / f"{name}.db"
        shutil.copyfile(world, db)
        with Store(db) as store:
            for day in DAYS:
                rescore(store, loaded, day)
        stored.append(_stored(db))
    return stored[0], stored[1]


def test_a_whole_rescore_stores_what_it_stored_before(before: ModuleType, world: Path, tmp_path: Path,
                                                      rules: Path) -> None:
    loaded = load_scorecard(rules)
    old, new = _both(world, tmp_path, lambda s, c, at: before.score_accounts(s, c, at, processes=1),
                     lambda s, c, at: engine.score_accounts(s, c, at, processes=1), loaded)
    assert old == new
    scores = new["scores"]
    assert len(scores) > 250
    assert {r[13] for r in scores} == {"NoneType:None", "str:'partners'"}
    assert any("Pinned by CSM" in r[6] for r in scores) and any("↓" in r[4] for r in scores)
    assert any("little data" in r[6] for r in scores)


def test_a_whole_rescore_in_parts_over_processes_stores_what_one_process_stored_before(
        before: ModuleType, world: Path, tmp_path: Path, rules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "MIN_CHUNK_ACCOUNTS", 25)  # a dozen chunks: both processes take several
    loaded = load_scorecard(rules)
    old, new = _both(world, tmp_path, lambda s, c, at: before.score_accounts(s, c, at, processes=1),
                     lambda s, c, at: engine.score_accounts(s, c, at, processes=2, parallel_from=2), loaded)
    assert old == new


def test_scores_with_a_churn_model_store_what_they_stored_before(before: ModuleType, world: Path,
                                                                  tmp_path: Path, rules: Path) -> None:
    loaded = load_scorecard(rules)
    model = put_model(rules, hand_model(loaded.scorecard))
    old, new = _both(world, tmp_path, lambda s, c, at: before.score_accounts(s, c, at, churn_model=model),
                     lambda s, c, at: engine.score_accounts(s, c, at, churn_model=model), loaded)
    assert old == new
    assert all(r[16].startswith("str:'[") for r in new["scores"])


def test_a_rescore_of_changed_accounts_stores_what_it_stored_before(before: ModuleType, world: Path,
                                                                     tmp_path: Path, rules: Path) -> None:
    def changed(module: ModuleType) -> Rescore:
        def rescore(store: Store, loaded: LoadedScorecard, at: datetime) -> None:
            module.score_changed_accounts(store, loaded, at)
            moved = [str(a) for (a,) in store.conn.execute("SELECT id FROM accounts ORDER BY id")][::9]
            with store.transaction() as conn:
                conn.executemany(
                    "INSERT INTO activities (source, source_id, kind, account_id, occurred_at, direction, text, "
                    "sentiment, is_deleted, modstamp) VALUES ('salesforce', ?, 'email', ?, ?, 'in', 'Broken.', "
                    "-0.8, 0, ?)", [(f"moved-{at:%j}-{a}", a, iso(at), iso(at)) for a in moved])
            module.score_changed_accounts(store, loaded, at + timedelta(minutes=15))
            assert changes.pending(store, changes.SCORE, at + timedelta(minutes=15)).marks == ()
        return rescore

    old, new = _both(world, tmp_path, changed(before), changed(engine), load_scorecard(rules))
    assert old == new


def test_the_measures_json_is_what_json_dumps_writes_for_any_number() -> None:
    odd: list[float | None] = [None, 0.0, -0.0, 1e-300, 1e300, 0.1 + 0.2, float("inf"), float("-inf"),
                               float("nan"), 2.5e-7]
    few = [0.0, 1.0, None, 0.5] * 50  # written once per distinct value
    for column in (odd, few, [*few, -0.0], [-0.0, *few], [*few, *[float("nan")] * 3], []):
        assert engine._json_numbers(column) == [json.dumps(v) for v in column]


def test_a_reason_says_minus_zero_and_zero_apart() -> None:
    usual = engine._plan(load_scorecard(SHIPPED_RULES).scorecard)[1].measures  # sentiment: its tone is signed
    tones: list[float | None] = [-0.0, 0.0, -0.0]
    found = engine._Columns(scores=[50.0] * 3, coverage=[1.0] * 3, groups={}, measures=usual,
                            raw=[[0.1] * 3, tones], points=[[10.0] * 3, [10.0] * 3], shares=[[0.1] * 3, [0.9] * 3])
    said = engine._Explainer(usual, 3).reasons(found, [False] * 3)
    assert [s.split("; ")[0] for s in said] == [f"Customer messages sound as usual ({v}, 60 days)"
                                                for v in ("-0.00", "+0.00", "-0.00")]
