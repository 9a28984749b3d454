"""`healthbeat backtest --tune`: weights fitted on an earlier period, judged on a later one, proposed in a file.

Synthetic cases know the weights their churn was drawn with; the end-to-end case tunes on the generated
history (the module fixture of `test_backtest`) through the same function the command runs.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.worker.test_backtest import DAY0, RULES_DIR, Generated, generated_history
from worker.analysis.backtest import Observation, labelled
from worker.analysis.command import run_command
from worker.analysis.tuning import Fit, Period, Weights, rescore, tune, write_proposal
from worker.rulebook.in_force import load_rules
from worker.scoring.scorecard import Scorecard, load_scorecard


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    yield from generated_history(tmp_path_factory)


MADE_AT = datetime(2025, 6, 1, tzinfo=UTC)
TRUE_GROUPS = {"usage": 80.0, "support": 20.0}
TRUE_USAGE = {"usage_frequency": 90.0, "days_since_last_active": 10.0}


def _even_scorecard() -> Scorecard:
    """Two groups, three measures, every weight equal: the starting point the truth is hidden from."""
    return Scorecard.model_validate({"bands": {"red": 40, "yellow": 70}, "groups": {
        "usage": {"weight": 50, "measures": {
            "usage_frequency": {"weight": 50, "points": [[0, 0], [1, 100]]},
            "days_since_last_active": {"weight": 50, "points": [[0, 100], [30, 0]]}}},
        "support": {"weight": 50, "measures": {"open_tickets": {"weight": 100, "points": [[0, 100], [10, 0]]}}}}})


def _drawn_with_true_weights(seed: int, *, signal: bool = True) -> list[tuple[Observation, bool]]:
    """60 accounts over 40 weeks: random points, churn drawn from the score the true weights give."""
    rng = random.Random(seed)
    pairs = []
    for account in range(60):
        for week in range(40):
            frequency, last_active, tickets = (rng.uniform(0, 100) for _ in range(3))
            usage = (TRUE_USAGE["usage_frequency"] * frequency
                     + TRUE_USAGE["days_since_last_active"] * last_active) / 100
            truth = (TRUE_GROUPS["usage"] * usage + TRUE_GROUPS["support"] * tickets) / 100
            odds = 1 / (1 + math.exp((truth - 30) / 6)) if signal else 0.1
            observed = (frequency + last_active + 2 * tickets) / 4  # what the even weights score
            pairs.append((Observation(f"acc{account:03d}", None, DAY0 + timedelta(weeks=week), observed, "green",
                                      1.0, None, None, (frequency, last_active, tickets)), rng.random() < odds))
    return pairs


def test_tuning_recovers_the_weights_the_churn_was_drawn_with() -> None:
    fit = tune(_even_scorecard(), _drawn_with_true_weights(1), horizon_days=7)

    assert fit.new.groups["usage"] > fit.new.groups["support"]
    assert fit.new.measures["usage"]["usage_frequency"] > fit.new.measures["usage"]["days_since_last_active"]


def test_recovered_weights_do_better_on_the_holdout_and_are_proposed() -> None:
    fit = tune(_even_scorecard(), _drawn_with_true_weights(2), horizon_days=7)

    assert fit.proposed
    assert fit.holdout_auc[1] > fit.holdout_auc[0]  # type: ignore[operator]


def test_proposed_weights_are_whole_numbers_of_at_least_one() -> None:
    fit = tune(_even_scorecard(), _drawn_with_true_weights(3), horizon_days=7)
    weights = [*fit.new.groups.values(), *(w for group in fit.new.measures.values() for w in group.values())]

    assert all(w >= 1 and w == int(w) for w in weights)


def test_the_holdout_is_later_than_the_training_period_by_a_whole_horizon() -> None:
    fit = tune(_even_scorecard(), _drawn_with_true_weights(4), horizon_days=28)

    assert fit.train.last is not None and fit.holdout.first is not None
    assert fit.holdout.first - fit.train.last >= timedelta(days=28)


def test_without_signal_no_weights_are_proposed() -> None:
    fit = tune(_even_scorecard(), _drawn_with_true_weights(5, signal=False), horizon_days=7)

    assert not fit.proposed and fit.reason


def test_without_churn_tuning_says_it_has_nothing_to_learn_from() -> None:
    pairs = [(obs, False) for obs, _ in _drawn_with_true_weights(6)]

    fit = tune(_even_scorecard(), pairs, horizon_days=7)

    assert not fit.proposed and "not enough churn" in fit.reason


def test_the_current_weights_rescore_the_replayed_snapshots_exactly(generated: Generated) -> None:
    card = load_scorecard(RULES_DIR).scorecard
    observations = generated.replay.observations

    scores = rescore(card, Weights.of(card), observations)

    assert scores == pytest.approx([o.score for o in observations], abs=0.01)


def test_tuning_on_the_history_never_proposes_weights_that_do_worse_on_the_holdout(
        generated: Generated, tmp_path: Path) -> None:
    out = tmp_path / "proposed" / "scorecard.yaml"

    result = run_command(generated.store, load_scorecard(RULES_DIR), None, generated.outcomes, generated.plan,
                         fmt="json", tune_out=out)
    tuning = json.loads(result.output)["tuning"]

    holdout = tuning["auc"]["holdout"]
    if tuning["proposed"]:
        assert holdout["proposed"] >= holdout["current"]
        assert (result.exit_code, out.exists()) == (0, True)
    else:
        assert (result.exit_code, out.exists()) == (1, False)


def _detuned(card: Scorecard) -> Scorecard:
    """The shipped scorecard with product use all but ignored and support load dominant: weights a backtest
    should find wanting (the shipped ones were chosen by backtest, and tuning rightly keeps them)."""
    groups = {name: group.model_copy(update={"weight": {"usage": 1.0, "support": 100.0}.get(name, group.weight)})
              for name, group in card.groups.items()}
    return card.model_copy(update={"groups": groups})


def test_on_the_history_tuning_finds_weights_that_rank_churn_better_later(generated: Generated) -> None:
    card = _detuned(load_scorecard(RULES_DIR).scorecard)
    pairs = labelled(generated.replay.observations, generated.outcomes, generated.plan.horizon_days,
                     generated.plan.until.date())

    fit = tune(card, pairs, generated.plan.horizon_days)

    assert fit.proposed, fit.reason
    assert fit.holdout_auc[1] >= fit.holdout_auc[0] and fit.train_auc[1] > fit.train_auc[0]  # type: ignore[operator]


def test_the_tuned_history_churn_pairs_exclude_snapshots_whose_horizon_is_open(generated: Generated) -> None:
    pairs = labelled(generated.replay.observations, generated.outcomes, generated.plan.horizon_days,
                     generated.plan.until.date())
    last = generated.plan.until.date() - timedelta(days=generated.plan.horizon_days)

    assert pairs and all(obs.day <= last for obs, _ in pairs)


# -- the proposed file ------------------------------------------------------------------------------------

def _fit_moving_usage_and_meetings() -> Fit:
    old = Weights.of(load_scorecard(RULES_DIR).scorecard)
    new = Weights({**old.groups, "usage": 70.0},
                  {**old.measures, "engagement": {**old.measures["engagement"], "meetings": 15.0}})
    period = Period(DAY0, DAY0 + timedelta(days=90), 900, 40)
    return Fit(old, new, period, period, (0.81, 0.86), (0.8, 0.83), 0, True, "better")


def test_the_proposed_file_passes_rules_check(tmp_path: Path) -> None:
    write_proposal(RULES_DIR / "scorecard.yaml", _fit_moving_usage_and_meetings(), tmp_path / "scorecard.yaml",
                   made_at=MADE_AT)
    shutil.copy(RULES_DIR / "alerts.yaml", tmp_path / "alerts.yaml")

    scorecard, _, problems = load_rules(tmp_path)

    assert problems == []
    assert scorecard is not None and scorecard.scorecard.groups["usage"].weight == 70
    assert scorecard.scorecard.groups["engagement"].measures["meetings"].weight == 15


def test_the_proposed_file_keeps_the_comments_and_says_old_to_new_with_both_aucs(tmp_path: Path) -> None:
    out = tmp_path / "scorecard.yaml"

    write_proposal(RULES_DIR / "scorecard.yaml", _fit_moving_usage_and_meetings(), out, made_at=MADE_AT)
    text = out.read_text()

    assert "# Healthbeat scorecard: measures -> groups -> overall" in text
    assert "#   usage: 50 → 70" in text and "#   engagement.meetings: 5 → 15" in text
    assert "AUC 0.81 → 0.86" in text and "AUC 0.8 → 0.83" in text
    assert "weight: 70  # was 50" in text
