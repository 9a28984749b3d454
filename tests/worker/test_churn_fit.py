"""Learning churn risk from the org's own history (`worker.analysis.churn_fit`, `worker.analysis.folds`).

Synthetic labelled pairs (`churn_history.drawn_pairs`) know which measure predicts churn; the store-level cases
replay a two-year history written straight into a store once for the module (`churn_history.build_history`),
on a three-measure scorecard so that a replay costs a second or two.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.root_powers import without_root_powers
from tests.worker.churn_history import (
    PAIRS_HORIZON,
    UNTIL,
    VARIED_DAY,
    account_id,
    build_history,
    build_varied,
    copy_store,
    drawn_pairs,
    small_rules,
)
from tests.worker.test_cli import healthbeat
from worker.analysis import churn_fit
from worker.analysis.backtest import Observation, Plan, leaking_measures, opportunities_as_of
from worker.analysis.churn_fit import (
    MIN_HOLDOUT_LOST,
    MIN_LOST,
    REFIT_CURSOR,
    fit_churn_model,
    fit_from_store,
    model_text,
    scheduled_refit,
)
from worker.analysis.folds import Pair, Shortfall, Split, churn_events, holdout_split, rolling_folds
from worker.analysis.outcomes import read_outcomes
from worker.cli import app
from worker.config import load_settings
from worker.cycle import Cycle, build_clients
from worker.rulebook.in_force import RuleBook
from worker.rulebook.preview import snapshot
from worker.scoring.churn_model import MODEL_FILE, PROPOSED_FILE, read_churn_model
from worker.scoring.measures import LIBRARY, Measure
from worker.scoring.scorecard import LoadedScorecard, Scorecard, load_scorecard
from worker.store import Store, iso

SHIPPED_RULES = Path(__file__).resolve().parents[2] / "rules"
FITTED_AT = datetime(2025, 4, 1, 8, tzinfo=UTC)


@dataclass
class History:
    store: Store
    rules: Path
    scorecard: LoadedScorecard
    folder: Path


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    folder = tmp_path_factory.mktemp("churn-history")
    store = Store(folder / "history.db")
    build_history(store)
    rules = small_rules(folder / "rules")
    yield History(store, rules, load_scorecard(rules), folder)
    store.close()


@pytest.fixture(scope="module")
def fitted(history: History) -> churn_fit.ChurnFit:
    """The fit on the store's whole history, once for the module."""
    return fit_from_store(history.store, history.scorecard, read_outcomes(history.store), Plan(until=UNTIL),
                          fitted_at=FITTED_AT)


def _scorecard(rules: Path) -> Scorecard:
    return load_scorecard(rules).scorecard


@pytest.fixture(scope="module")
def small_card(tmp_path_factory: pytest.TempPathFactory) -> Scorecard:
    return _scorecard(small_rules(tmp_path_factory.mktemp("small-rules")))


def _weights(fit: churn_fit.ChurnFit) -> dict[str, float]:
    assert fit.model is not None, fit.reason
    return {f.label: f.weight for f in fit.model.features}


# -- the fit, on pairs drawn by hand ------------------------------------------------------------------------

def test_a_measure_that_falls_before_churn_gets_a_negative_weight_and_the_noise_little(small_card: Scorecard
                                                                                      ) -> None:
    pairs, outcomes = drawn_pairs(1)

    weights = _weights(fit_churn_model(pairs, outcomes, small_card, PAIRS_HORIZON, fitted_at=FITTED_AT))

    assert weights["usage.usage_frequency"] < -1
    assert abs(weights["usage.days_since_last_active"]) < 0.3 and abs(weights["engagement.meetings"]) < 0.3


def test_the_fit_ranks_the_later_churn_it_never_saw_well_above_chance(small_card: Scorecard) -> None:
    pairs, outcomes = drawn_pairs(2)

    fit = fit_churn_model(pairs, outcomes, small_card, PAIRS_HORIZON, fitted_at=FITTED_AT)

    assert fit.model is not None and fit.judged is not None and fit.model.validation is not None
    assert fit.judged.auc is not None and fit.judged.auc > 0.85
    assert fit.model.validation.auc == fit.judged.auc
    assert fit.judged.judged_on[0] > fit.judged.fitted_on[1]


def test_the_same_history_gives_the_same_file_text(small_card: Scorecard) -> None:
    pairs, outcomes = drawn_pairs(3)

    texts = []
    for _ in range(2):
        fit = fit_churn_model(list(pairs), outcomes, small_card, PAIRS_HORIZON, fitted_at=FITTED_AT)
        assert fit.model is not None
        texts.append(model_text(fit.model, source="test", proposed=False))

    assert texts[0] == texts[1]


def test_the_l2_strength_is_chosen_on_folds_without_looking_at_the_holdout(small_card: Scorecard) -> None:
    pairs, outcomes = drawn_pairs(4)
    fit = fit_churn_model(pairs, outcomes, small_card, PAIRS_HORIZON, fitted_at=FITTED_AT)
    assert fit.judged is not None
    held_from = fit.judged.judged_on[0]
    # The holdout's measures turned upside down: its figures change, what was learned before it must not.
    turned = [(_with_raw(o, (1 - (o.raw[0] or 0.0), *o.raw[1:])), y) if o.day >= held_from else (o, y)
              for o, y in pairs]

    again = fit_churn_model(turned, outcomes, small_card, PAIRS_HORIZON, fitted_at=FITTED_AT)

    assert fit.folds >= 2 and f"chosen on {fit.folds} time-ordered folds" in fit.reason
    assert (again.l2, again.folds) == (fit.l2, fit.folds)
    assert again.judged is not None and again.judged.auc is not None and again.judged.auc < 0.5


def _with_raw(obs: Observation, raw: tuple[float | None, ...]) -> Observation:
    return Observation(obs.account_id, obs.owner_id, obs.day, obs.score, obs.band, obs.coverage, obs.churn_risk,
                       obs.segment, obs.points, obs.signals, raw)


# -- time-ordered splits -------------------------------------------------------------------------------------

def _last_day(pairs: list[Pair]) -> date:
    return max(o.day for o, _ in pairs)


def _first_day(pairs: list[Pair]) -> date:
    return min(o.day for o, _ in pairs)


def test_the_holdout_starts_a_whole_horizon_after_the_last_snapshot_fitted_on() -> None:
    pairs, _ = drawn_pairs(5)

    split = holdout_split(pairs, PAIRS_HORIZON, min_train=30, min_holdout=10)

    assert isinstance(split, Split)
    assert _first_day(split.holdout) - _last_day(split.train) >= timedelta(days=PAIRS_HORIZON)
    assert {o.day for o, _ in split.holdout} == {o.day for o, _ in pairs if o.day >= _first_day(split.holdout)}


def test_the_holdout_holds_a_third_of_the_churn_while_training_keeps_what_it_needs() -> None:
    pairs, _ = drawn_pairs(5)

    split = holdout_split(pairs, PAIRS_HORIZON, min_train=30, min_holdout=10)

    assert isinstance(split, Split)
    assert churn_events(split.holdout) >= churn_events(pairs) / 3 and churn_events(split.train) >= 30


def test_the_holdout_shrinks_to_its_minimum_to_leave_training_enough() -> None:
    pairs, _ = drawn_pairs(5)
    total = churn_events(pairs)

    split = holdout_split(pairs, PAIRS_HORIZON, min_train=total - 14, min_holdout=10)

    assert isinstance(split, Split)
    assert 10 <= churn_events(split.holdout) < total / 3 and churn_events(split.train) >= total - 14


def test_each_rolling_fold_is_judged_a_whole_horizon_after_what_it_learns_from() -> None:
    pairs, _ = drawn_pairs(6)

    folds = rolling_folds(pairs, PAIRS_HORIZON, min_events=10)

    assert len(folds) >= 2
    for fold in folds:
        assert _first_day(fold.holdout) - _last_day(fold.train) >= timedelta(days=PAIRS_HORIZON)
        assert churn_events(fold.holdout) >= 10 and churn_events(fold.train) >= 10


def test_rolling_folds_come_oldest_first_and_judge_stretches_that_never_overlap() -> None:
    pairs, _ = drawn_pairs(6)

    folds = rolling_folds(pairs, PAIRS_HORIZON, min_events=10, max_folds=4)

    assert len(folds) == 4
    for earlier, later in pairwise(folds):
        assert _last_day(earlier.holdout) < _first_day(later.holdout)
    assert _last_day(folds[-1].holdout) == _last_day(pairs)


def test_too_few_churn_events_for_a_split_are_counted_with_how_many_more_are_needed() -> None:
    pairs, _ = drawn_pairs(7, churners=25)

    found = holdout_split(pairs, PAIRS_HORIZON, min_train=30, min_holdout=10)

    assert isinstance(found, Shortfall)
    assert "labels 25 churn events" in str(found)
    assert "at least 30 to fit on and 10 later ones to judge on, a horizon apart: 15 more" in str(found)


def test_churn_too_bunched_for_a_horizon_apart_split_says_so() -> None:
    pairs, _ = drawn_pairs(7, churners=50, weeks=30)

    found = holdout_split(pairs, 120, min_train=30, min_holdout=10)

    assert isinstance(found, Shortfall)
    assert "labels 50 churn events" in str(found) and "events are too close together" in str(found)


def test_a_fitting_period_with_too_few_won_renewals_gives_no_model(small_card: Scorecard) -> None:
    pairs, outcomes = drawn_pairs(8, accounts=80, churners=72)

    fit = fit_churn_model(pairs, outcomes, small_card, PAIRS_HORIZON, fitted_at=FITTED_AT)

    assert fit.model is None and "not enough renewals won to learn from" in fit.reason
    assert "a fit needs 30" in fit.reason


# -- too little history in a store -----------------------------------------------------------------------------

def _few_lost(path: Path, lost: int) -> None:
    """A store that records `lost` lost renewals (and as many won), with a little usage."""
    with Store(path) as store, store.transaction():
        store.upsert("accounts", [{"id": account_id(n), "name": f"Account {n}", "is_deleted": 0}
                                  for n in range(2 * lost)], ("id",))
        store.upsert("opportunities", [{
            "id": f"006F{n:014d}", "account_id": account_id(n), "name": "Renewal", "type": "Renewal",
            "stage": "Closed", "amount": 1.0, "close_date": (date(2024, 6, 1) + timedelta(days=9 * n)).isoformat(),
            "is_closed": 1, "is_won": int(n >= lost), "is_deleted": 0, "created_at": "2024-01-01T00:00:00Z"}
            for n in range(2 * lost)], ("id",))
        store.upsert("usage_daily", [{"account_id": account_id(n), "day": f"2024-0{m}-01", "active_users": 1,
                                      "events": 1, "features_used": "[]", "seats": 5}
                                     for n in range(2 * lost) for m in range(1, 10)], ("account_id", "day"))


def test_a_store_with_too_few_lost_renewals_gives_no_model_and_says_how_many_more(tmp_path: Path) -> None:
    _few_lost(tmp_path / "few.db", 5)
    with Store(tmp_path / "few.db") as store:
        fit = fit_from_store(store, load_scorecard(SHIPPED_RULES), read_outcomes(store), Plan(until=UNTIL),
                             fitted_at=FITTED_AT)

    assert fit.model is None
    assert (f"the store records 5 lost renewals and a fit needs at least {MIN_LOST} to fit on and "
            f"{MIN_HOLDOUT_LOST} later ones to judge on ({MIN_LOST + MIN_HOLDOUT_LOST - 5} more)") in fit.reason
    assert "churn risk stays the scorecard's rule" in fit.reason


def test_churn_model_fit_with_too_little_history_exits_1_writes_nothing_and_the_rule_stays(
        tmp_path: Path, rules_dir: Path) -> None:
    _few_lost(tmp_path / "few.db", 5)
    before = sorted(p.name for p in rules_dir.iterdir())

    result = healthbeat("churn-model", "fit", "--db", str(tmp_path / "few.db"), "--rules-dir", str(rules_dir),
                        "--until", "2025-03-31", cwd=tmp_path)

    assert result.returncode == 1, result.stderr
    assert f"no churn model written to {rules_dir / PROPOSED_FILE}" in result.stderr
    assert "records 5 lost renewals" in result.stderr and "(35 more)" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in rules_dir.iterdir()) == before
    book = RuleBook(rules_dir)
    book.reload()
    assert book.churn_model is None and book.problems == []


# -- the fit on a replayed history -----------------------------------------------------------------------------

def test_on_the_replayed_history_the_usage_that_fades_before_churn_weighs_against_it(
        fitted: churn_fit.ChurnFit) -> None:
    weights = _weights(fitted)

    assert weights["usage.usage_frequency"] < 0 and weights["renewal within 90d"] > 0
    assert fitted.judged is not None and fitted.judged.auc is not None and fitted.judged.auc > 0.8


def test_the_model_fitted_on_the_history_is_judged_beside_the_hand_set_churn_risk(
        fitted: churn_fit.ChurnFit) -> None:
    assert fitted.judged is not None
    baselines = fitted.judged.baselines

    assert {"hand_set_churn_risk", "health", "recency", "support_volume", "renewal_proximity"} <= set(baselines)
    assert fitted.judged.lost >= MIN_HOLDOUT_LOST
    assert fitted.judged.calibration and sum(n for _, _, n in fitted.judged.calibration) == fitted.judged.snapshots


def test_churn_model_fit_writes_a_proposal_by_default_that_loads(history: History, tmp_path: Path) -> None:
    rules = small_rules(tmp_path / "rules")

    result = CliRunner().invoke(app, ["churn-model", "fit", "--db", str(history.folder / "history.db"),
                                      "--rules-dir", str(rules), "--until", "2025-03-31"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert not (rules / MODEL_FILE).exists()
    proposed = read_churn_model(rules / PROPOSED_FILE, load_scorecard(rules).scorecard).model
    assert proposed.training.lost_renewals == 60
    assert "NOT IN FORCE" in (rules / PROPOSED_FILE).read_text()


# -- no leakage -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def varied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(tmp_path_factory.mktemp("varied") / "varied.db")
    build_varied(store)
    yield store
    store.close()


def test_no_measure_of_the_shipped_scorecard_reads_data_from_after_the_snapshot_day(varied: Store) -> None:
    later = varied.scalar("SELECT count(*) FROM activities WHERE occurred_at > ?", (VARIED_DAY.isoformat(),))
    assert later > 100

    leaks = leaking_measures(varied, load_scorecard(SHIPPED_RULES).scorecard, VARIED_DAY,
                             datetime(2024, 12, 31, tzinfo=UTC))

    assert leaks == []


FUTURE_MEETINGS = Measure(
    "future_meetings", "Meetings in the window AFTER as_of (a deliberate leak)", {"window": timedelta(days=30)},
    """SELECT acc.id, count(a.occurred_at) FROM accounts acc
       LEFT JOIN activities a ON a.account_id = acc.id AND a.kind = 'meeting' AND a.is_deleted = 0
            AND a.occurred_at > :as_of AND julianday(a.occurred_at) - julianday(:as_of) <= :window
       WHERE acc.is_deleted = 0 AND SCOPE(acc.id) GROUP BY acc.id""",
    lambda v, p: f"{v:g} meetings to come")


@pytest.fixture
def leaking_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LoadedScorecard:
    monkeypatch.setitem(LIBRARY, "future_meetings", FUTURE_MEETINGS)
    rules = small_rules(tmp_path / "rules")
    text = (rules / "scorecard.yaml").read_text()
    (rules / "scorecard.yaml").write_text(text.replace(
        "      meetings: {window: 90d, weight: 100, points: [[0, 0], [3, 100]]}\n",
        "      meetings: {window: 90d, weight: 100, points: [[0, 0], [3, 100]]}\n"
        "      future_meetings: {window: 30d, weight: 50, points: [[0, 0], [3, 100]]}\n"))
    return load_scorecard(rules)


def test_a_measure_that_reads_past_its_as_of_is_named(varied: Store, leaking_rules: LoadedScorecard) -> None:
    leaks = leaking_measures(varied, leaking_rules.scorecard, VARIED_DAY, datetime(2024, 12, 31, tzinfo=UTC))

    assert len(leaks) == 1 and leaks[0].startswith("engagement.future_meetings moves for ")


def test_a_fit_on_a_scorecard_with_a_leaking_measure_is_refused(history: History,
                                                                leaking_rules: LoadedScorecard) -> None:
    fit = fit_from_store(history.store, leaking_rules, read_outcomes(history.store), Plan(until=UNTIL),
                         fitted_at=FITTED_AT)

    assert fit.model is None
    assert fit.reason.startswith("refused: these measures read data from after the snapshot day")
    assert "engagement.future_meetings" in fit.reason and "usage.usage_frequency" not in fit.reason


def _days_to_renewal(copy: Store, day: date) -> dict[str, float]:
    opportunities_as_of(copy, day)
    return LIBRARY["days_to_renewal"].query(copy, {}, datetime.combine(day, datetime.max.time(), UTC))


def test_a_renewal_created_after_a_snapshot_day_is_not_seen_on_that_day(varied: Store) -> None:
    late = account_id(900)  # its renewal was created ten days after VARIED_DAY

    with snapshot(varied) as copy:
        then = _days_to_renewal(copy, VARIED_DAY)
        after = _days_to_renewal(copy, VARIED_DAY + timedelta(days=10))

    assert late not in then and account_id(901) in then
    assert after[late] == 30


def test_an_opportunity_without_a_creation_date_counts_as_known_all_along(varied: Store) -> None:
    late = account_id(900)

    with snapshot(varied) as copy:
        copy.conn.execute("UPDATE opportunities SET created_at = NULL")
        then = _days_to_renewal(copy, VARIED_DAY)

    assert then[late] == 40


# -- the scheduled refit ------------------------------------------------------------------------------------

@pytest.fixture
def copied(history: History, tmp_path: Path) -> Iterator[Store]:
    store = copy_store(history.store, tmp_path / "copy.db")
    yield store
    store.close()


def _never() -> bool:
    return False


def test_a_refit_that_is_not_due_does_nothing(history: History, copied: Store, tmp_path: Path) -> None:
    rules = small_rules(tmp_path / "rules")
    copied.save_cursor(REFIT_CURSOR, iso(UNTIL - timedelta(days=2)), 0, UNTIL)

    said = scheduled_refit(copied, history.scorecard, rules, UNTIL, timedelta(days=7), _never)

    assert said is None and not (rules / PROPOSED_FILE).exists()


def test_a_due_refit_writes_a_proposal_the_rules_in_force_do_not_load(history: History, copied: Store,
                                                                       tmp_path: Path) -> None:
    rules = small_rules(tmp_path / "rules")
    copied.save_cursor(REFIT_CURSOR, iso(UNTIL - timedelta(days=8)), 0, UNTIL)

    said = scheduled_refit(copied, history.scorecard, rules, UNTIL, timedelta(days=7), _never)

    assert said == f"proposal written to {rules / PROPOSED_FILE}"
    assert not (rules / MODEL_FILE).exists()
    assert read_churn_model(rules / PROPOSED_FILE, history.scorecard.scorecard).model.training.lost_renewals == 60
    book = RuleBook(rules)
    book.reload()
    assert book.churn_model is None
    assert copied.cursor(REFIT_CURSOR) == iso(UNTIL)


def test_a_refit_with_too_little_history_says_why_and_waits_for_the_next_turn(tmp_path: Path) -> None:
    _few_lost(tmp_path / "few.db", 5)
    rules = small_rules(tmp_path / "rules")
    with Store(tmp_path / "few.db") as store:
        said = scheduled_refit(store, load_scorecard(rules), rules, UNTIL, timedelta(days=7), _never)
        again = scheduled_refit(store, load_scorecard(rules), rules, UNTIL + timedelta(days=1), timedelta(days=7),
                                _never)

    assert said is not None and said.startswith("not enough churn to learn from")
    assert again is None and not (rules / PROPOSED_FILE).exists()


REFIT_IN_A_CHILD = """
import logging, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from worker.analysis.churn_fit import scheduled_refit
from worker.scoring.scorecard import load_scorecard
from worker.store import Store
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
rules = Path(sys.argv[2])
with Store(sys.argv[1]) as store:
    print(scheduled_refit(store, load_scorecard(rules), rules, datetime(2025, 3, 31, 12, tzinfo=UTC),
                          timedelta(days=7), lambda: False))
"""


def test_a_refit_beside_rules_in_a_read_only_folder_writes_nothing_and_says_so(copied: Store,
                                                                               tmp_path: Path) -> None:
    rules = small_rules(tmp_path / "rules")
    rules.chmod(0o555)
    copied.close()
    try:
        result = subprocess.run([sys.executable, "-c", REFIT_IN_A_CHILD, str(tmp_path / "copy.db"), str(rules)],
                                capture_output=True, text=True, timeout=120, check=False,
                                preexec_fn=without_root_powers)
    finally:
        rules.chmod(0o755)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "proposed, not written (the rules folder is read-only)"
    assert f"{rules} is not writable" in result.stderr and "held-out AUC" in result.stderr
    assert sorted(p.name for p in rules.iterdir()) == ["alerts.yaml", "scorecard.yaml"]


def _cycle(store: Store, rules: Path, *, dry_run: bool = False, **env: Any) -> Cycle:
    settings = load_settings(HEALTHBEAT_DB=store.path, HEALTHBEAT_RULES_DIR=rules,
                             SALESFORCE_LOGIN_URL="https://acme.my.salesforce.com", SALESFORCE_CLIENT_ID="id",
                             SALESFORCE_CLIENT_SECRET="secret", **env)
    return Cycle(store, settings, RuleBook(rules), build_clients(settings), clock=lambda: UNTIL,
                 dry_run=dry_run, stop=threading.Event(), refit=scheduled_refit)


def _recording(calls: list[timedelta]) -> Callable[..., str | None]:
    def job(store: Store, loaded: LoadedScorecard, rules_dir: Path, now: datetime, every: timedelta,
            stop: Callable[[], bool]) -> str | None:
        calls.append(every)
        return "ran"
    return job


def test_a_cycle_refits_in_its_last_stage_at_the_interval_the_setting_gives(copied: Store, tmp_path: Path) -> None:
    calls: list[timedelta] = []
    cycle = _cycle(copied, small_rules(tmp_path / "rules"), HEALTHBEAT_CHURN_REFIT="3d")
    cycle.refit = _recording(calls)

    report = cycle.run(("prune",))

    assert calls == [timedelta(days=3)] and report.refit == "ran"


def test_a_dry_run_cycle_never_refits(copied: Store, tmp_path: Path) -> None:
    rules = small_rules(tmp_path / "rules")

    report = _cycle(copied, rules, dry_run=True).run(("prune",))

    assert report.ok and report.refit is None
    assert copied.cursor(REFIT_CURSOR) is None and not (rules / PROPOSED_FILE).exists()


def test_churn_refit_off_never_refits(copied: Store, tmp_path: Path) -> None:
    rules = small_rules(tmp_path / "rules")

    report = _cycle(copied, rules, HEALTHBEAT_CHURN_REFIT="off").run(("prune",))

    assert report.ok and report.refit is None
    assert copied.cursor(REFIT_CURSOR) is None and not (rules / PROPOSED_FILE).exists()


def test_a_refit_that_fails_is_logged_the_cycle_goes_on_and_it_waits_for_its_next_turn(
        copied: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise MemoryError("the replay's copy of the store")
    monkeypatch.setattr(churn_fit, "replay", out_of_memory)
    rules = small_rules(tmp_path / "rules")

    report = _cycle(copied, rules).run(("prune",))

    assert report.ok and report.error is None
    assert report.refit == "failed (MemoryError: the replay's copy of the store); the next try is in 7d"
    assert scheduled_refit(copied, load_scorecard(rules), rules, UNTIL + timedelta(hours=1), timedelta(days=7),
                           _never) is None


def test_a_worker_killed_during_a_refit_does_not_start_it_again_at_its_restart(
        history: History, copied: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of memory, the kernel kills the worker mid-replay: no exception reaches Python. Were the attempt
    recorded only after the fit, every restart would run the same replay and be killed the same way."""
    rules = small_rules(tmp_path / "rules")

    def killed(*args: object, **kwargs: object) -> None:
        raise SystemExit("SIGKILL stands in here: nothing after this line of the refit runs")
    monkeypatch.setattr(churn_fit, "replay", killed)
    with pytest.raises(SystemExit):
        scheduled_refit(copied, history.scorecard, rules, UNTIL, timedelta(days=7), _never)
    monkeypatch.undo()

    restarted = scheduled_refit(copied, history.scorecard, rules, UNTIL + timedelta(minutes=15), timedelta(days=7),
                                _never)

    assert restarted is None and not (rules / PROPOSED_FILE).exists()


def test_a_refit_stopped_on_request_runs_again_at_the_next_cycle(history: History, copied: Store,
                                                                 tmp_path: Path) -> None:
    rules = small_rules(tmp_path / "rules")
    last = iso(UNTIL - timedelta(days=8))
    copied.save_cursor(REFIT_CURSOR, last, 0, UNTIL)

    said = scheduled_refit(copied, history.scorecard, rules, UNTIL, timedelta(days=7), lambda: True)

    assert said == "stopped on request (it runs again next cycle)"
    assert copied.cursor(REFIT_CURSOR) == last
    assert scheduled_refit(copied, history.scorecard, rules, UNTIL + timedelta(minutes=15), timedelta(days=7),
                           _never) == f"proposal written to {rules / PROPOSED_FILE}"
