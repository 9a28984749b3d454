"""The churn model's file (`rules/churn_model.yaml`): written readable, read back exactly, refused with file, line
and field when broken or no longer in step with the scorecard, and compared by `rules diff`."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.worker.churn_history import PAIRS_HORIZON, SMALL_SCORECARD, drawn_pairs, small_rules
from tests.worker.test_cli import healthbeat
from worker.analysis.churn_fit import fit_churn_model, model_text, write_model
from worker.cli import app
from worker.rulebook.diff import diff_rules
from worker.rulefile import RuleFileError
from worker.scoring.churn_model import (
    MODEL_FILE,
    ChurnModel,
    Feature,
    Training,
    load_churn_model,
    measure_uses,
    read_churn_model,
    semantic_problems,
)
from worker.scoring.scorecard import Scorecard, load_scorecard

FITTED_AT = datetime(2025, 4, 1, 8, 30, 15, 123456, tzinfo=UTC)  # a clock's time, to the microsecond


@pytest.fixture(scope="module")
def models() -> Iterator[tuple[ChurnModel, ChurnModel]]:
    """Two fits of the same recipe on different draws: a model and its refit a month later."""
    card = Scorecard.model_validate(yaml.safe_load(SMALL_SCORECARD))
    found = []
    for seed, at in ((1, FITTED_AT), (2, FITTED_AT + timedelta(days=30))):
        pairs, outcomes = drawn_pairs(seed)
        fit = fit_churn_model(pairs, outcomes, card, PAIRS_HORIZON, fitted_at=at)
        assert fit.model is not None, fit.reason
        found.append(fit.model)
    yield found[0], found[1]


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    return small_rules(tmp_path / "rules")


def _write(model: ChurnModel, rules: Path) -> Path:
    write_model(model, rules / MODEL_FILE, load_scorecard(rules).scorecard, source="test", proposed=False)
    return rules / MODEL_FILE


# -- written and read back -------------------------------------------------------------------------------------

def test_a_fitted_model_written_to_its_file_loads_back_exactly(models: tuple[ChurnModel, ChurnModel],
                                                              rules: Path) -> None:
    model = models[0]

    loaded = read_churn_model(_write(model, rules), load_scorecard(rules).scorecard)

    assert loaded.model == model


def test_the_file_reads_as_a_review_of_what_was_learned(models: tuple[ChurnModel, ChurnModel], rules: Path
                                                       ) -> None:
    text = _write(models[0], rules).read_text()

    assert "# Churn risk = the probability (0-100) that an account churns" in text
    assert "  auc: 0.97" in text and "calibration:" in text and "baselines:" in text
    assert '  - {measure: usage.usage_frequency, uses: "usage_frequency(window=30d)", mean: ' in text


ODD_SCORECARD = """\
version: 1
bands: {red: 40, yellow: 70}
groups:
  "health #1":
    weight: 50
    measures:
      meetings: {window: 90d, weight: 100, points: [[0, 0], [3, 100]]}
  support:
    weight: 50
    measures:
      urgent_tickets: {window: 30d, priorities: ['P1 "sev"', high], weight: 100, points: [[0, 100], [3, 0]]}
"""


def test_a_model_with_large_numbers_and_names_yaml_would_misread_loads_back_exactly(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "scorecard.yaml").write_text(ODD_SCORECARD)
    card = load_scorecard(rules).scorecard
    uses = measure_uses(card)
    model = ChurnModel(
        horizon=timedelta(days=90), fitted_at=datetime(2025, 4, 1, tzinfo=UTC),
        training=Training.model_validate({"from": "2024-01-01", "to": "2025-01-01", "snapshots": 9000,
                                          "lost_renewals": 45, "won_renewals": 300}),
        l2=0.0001, intercept=-123.456789,
        features=[Feature(measure="health #1.meetings", uses=uses["health #1.meetings"], mean=1234567.891,
                          scale=0.000123456789, weight=345.6789),
                  Feature(measure="support.urgent_tickets", uses=uses["support.urgent_tickets"], mean=1e-7,
                          scale=2.5, weight=-1e-5)])

    write_model(model, rules / MODEL_FILE, card, source="test", proposed=False)

    assert read_churn_model(rules / MODEL_FILE, card).model == model


def test_a_model_that_cannot_be_written_is_a_rule_file_error_naming_the_path(
        models: tuple[ChurnModel, ChurnModel], rules: Path) -> None:
    (rules / "not-a-folder").write_text("")
    out = rules / "not-a-folder" / MODEL_FILE

    with pytest.raises(RuleFileError) as raised:
        write_model(models[0], out, load_scorecard(rules).scorecard, source="test", proposed=False)

    assert raised.value.problems[0].file == str(out) and "cannot write" in raised.value.problems[0].message


def test_a_proposal_says_it_is_not_in_force_and_how_to_adopt_it(models: tuple[ChurnModel, ChurnModel]) -> None:
    text = model_text(models[0], source="healthbeat run (scheduled refit)", proposed=True)

    assert "NOT IN FORCE" in text.splitlines()[0]
    assert f"adopt it by renaming it to {MODEL_FILE}" in text


# -- refused when broken -----------------------------------------------------------------------------------------

def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def _edit_line(text: str, needle: str, pattern: str, replacement: str) -> str:
    """`pattern` replaced on the one line holding `needle`."""
    lines = text.splitlines()
    line = _line_of(text, needle) - 1
    lines[line] = re.sub(pattern, replacement, lines[line], count=1)
    return "\n".join(lines) + "\n"


# What is done to the model file, the scorecard's edit, the needle on the line named, the field, the message.
BROKEN: dict[str, tuple[Callable[[str], str], tuple[str, str] | None, str, str, str]] = {
    "wrong type": (lambda t: _edit_line(t, "usage.usage_frequency", r"weight: [^}]+", "weight: lots"), None,
                   "usage.usage_frequency", "features.2.weight", "valid number"),
    "unknown key": (lambda t: t.replace("intercept: ", "intercep: 1\nintercept: "), None, "intercep:", "intercep",
                    "unknown key"),
    "measure the scorecard lacks": (lambda t: t.replace("engagement.meetings", "engagement.calls"), None,
                                    "engagement.calls", "features.4.measure",
                                    "scorecard.yaml has no measure engagement.calls: the model was fitted on another "
                                    "scorecard; fit it again (healthbeat churn-model fit)"),
    "horizon under a day": (lambda t: t.replace("horizon: 28d", "horizon: 0d"), None, "horizon:", "horizon",
                            "the horizon is a day or more"),
    "uses no longer matching": (lambda t: t, ("meetings: {window: 90d", "meetings: {window: 60d"),
                                "engagement.meetings", "features.4.uses",
                                "scorecard.yaml now computes engagement.meetings as meetings(window=60d), the model "
                                "was fitted on meetings(window=90d)"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_model_file_is_refused_with_file_line_and_field(
        models: tuple[ChurnModel, ChurnModel], rules: Path, case: str) -> None:
    edit, scorecard_edit, needle, field, says = BROKEN[case]
    path = _write(models[0], rules)
    path.write_text(edit(path.read_text()))
    if scorecard_edit is not None:
        card = rules / "scorecard.yaml"
        card.write_text(card.read_text().replace(*scorecard_edit))

    with pytest.raises(RuleFileError) as raised:
        read_churn_model(path, load_scorecard(rules).scorecard)

    problem = raised.value.problems[0]
    assert (problem.file, problem.line, problem.field) == (str(path), _line_of(path.read_text(), needle), field)
    assert says in problem.message


def test_a_days_to_renewal_feature_needs_either_a_within_or_a_cap() -> None:
    with pytest.raises(ValueError, match="either `within`"):
        Feature(measure="days_to_renewal", mean=0, scale=1, weight=1)


def test_a_model_fitted_on_other_adoption_features_no_longer_fits_the_scorecard() -> None:
    def card(features: str) -> Scorecard:
        return Scorecard.model_validate(yaml.safe_load(f"""
bands: {{red: 40, yellow: 70}}
features: [{features}]
groups:
  usage:
    weight: 1
    measures:
      feature_adoption: {{window: 30d, weight: 1, points: [[0, 0], [1, 100]]}}
"""))
    fitted_on = card("dashboards, alerts")
    model = ChurnModel(
        horizon=timedelta(days=90), fitted_at=FITTED_AT, l2=0.01, intercept=-2,
        training=Training.model_validate({"from": "2024-01-01", "to": "2025-01-01", "snapshots": 1,
                                          "lost_renewals": 40, "won_renewals": 30}),
        features=[Feature(measure="usage.feature_adoption", uses=measure_uses(fitted_on)["usage.feature_adoption"],
                          mean=0.5, scale=0.2, weight=-1)])

    problems = semantic_problems(model, card("dashboards, alerts, api"))

    assert [loc for loc, _ in problems] == [("features", 0, "uses")]
    assert semantic_problems(model, fitted_on) == []


def test_a_measure_may_be_a_feature_only_once_whatever_its_uses_say(models: tuple[ChurnModel, ChurnModel]) -> None:
    model = models[0]
    meetings = next(f for f in model.features if f.measure == "engagement.meetings")
    twice = model.model_copy(update={"features": [*model.features, meetings.model_copy(update={"uses": None})]})
    card = Scorecard.model_validate(yaml.safe_load(SMALL_SCORECARD))

    problems = semantic_problems(twice, card)

    assert problems == [(("features", len(model.features), "measure"), "engagement.meetings is a feature twice")]


def test_rules_check_names_a_broken_model_and_exits_1(models: tuple[ChurnModel, ChurnModel], rules: Path,
                                                      tmp_path: Path) -> None:
    path = _write(models[0], rules)
    path.write_text(path.read_text().replace("measure: engagement.meetings", "measure: engagement.calls"))

    result = healthbeat("rules", "check", "--rules-dir", str(rules), cwd=tmp_path)

    assert result.returncode == 1
    line = _line_of(path.read_text(), "engagement.calls")
    assert f"{path}:{line}: features.4.measure: scorecard.yaml has no measure engagement.calls" in result.stderr
    assert "Traceback" not in result.stderr


def test_rules_check_counts_a_good_model_among_the_valid_files(models: tuple[ChurnModel, ChurnModel], rules: Path
                                                               ) -> None:
    _write(models[0], rules)

    result = CliRunner().invoke(app, ["rules", "check", "--rules-dir", str(rules)], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert f"scorecard.yaml, alerts.yaml and {MODEL_FILE} are valid" in result.output


# -- rules diff ------------------------------------------------------------------------------------------------

@pytest.fixture
def old_and_new(tmp_path: Path) -> tuple[Path, Path]:
    return small_rules(tmp_path / "old"), small_rules(tmp_path / "new")


def test_rules_diff_says_a_churn_model_was_added(models: tuple[ChurnModel, ChurnModel],
                                                 old_and_new: tuple[Path, Path]) -> None:
    old, new = old_and_new
    _write(models[0], new)

    result = CliRunner().invoke(app, ["rules", "diff", str(new), "--rules-dir", str(old)], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"churn model added: churn risk becomes the learned probability of churn within "
                                    f"{PAIRS_HORIZON} days (fitted 2025-04-01 on 2024-01-01 to ")


def test_rules_diff_says_a_churn_model_was_removed(models: tuple[ChurnModel, ChurnModel],
                                                   old_and_new: tuple[Path, Path]) -> None:
    old, new = old_and_new
    _write(models[0], old)

    assert diff_rules(old, new) == ["churn model removed: churn risk goes back to the scorecard's derived.churn_risk "
                                    "rule"]


def test_rules_diff_of_a_refit_gives_its_figures_and_the_weights_that_moved(
        models: tuple[ChurnModel, ChurnModel], old_and_new: tuple[Path, Path]) -> None:
    old, new = old_and_new
    _write(models[0], old)
    _write(models[1], new)

    changes = diff_rules(old, new)

    refit = next(c for c in changes if c.startswith("churn model refitted: "))
    assert "fitted 2025-04-01" in refit and "fitted 2025-05-01" in refit and "held-out AUC" in refit
    frequency = next(c for c in changes if c.startswith("churn model feature usage.usage_frequency: "))
    old_weight = next(f.weight for f in models[0].features if f.measure == "usage.usage_frequency")
    assert f"weight {old_weight:g} → " in frequency


def test_rules_diff_names_a_feature_weight_edited_by_hand(models: tuple[ChurnModel, ChurnModel],
                                                          old_and_new: tuple[Path, Path]) -> None:
    old, new = old_and_new
    _write(models[0], old)
    path = _write(models[0], new)
    lines = path.read_text().splitlines()
    line = _line_of(path.read_text(), "engagement.meetings") - 1
    before = lines[line].split("weight: ")[1].rstrip("}")
    lines[line] = lines[line].replace(f"weight: {before}", "weight: 0.75")
    path.write_text("\n".join(lines) + "\n")

    assert diff_rules(old, new) == [f"churn model feature engagement.meetings: weight {float(before):g} → 0.75"]


def test_rules_diff_refuses_a_broken_model_naming_its_line(models: tuple[ChurnModel, ChurnModel],
                                                           old_and_new: tuple[Path, Path]) -> None:
    old, new = old_and_new
    path = _write(models[0], new)
    path.write_text(path.read_text().replace("horizon: 28d", "horizon: soon"))

    with pytest.raises(RuleFileError) as raised:
        diff_rules(old, new)

    assert [(p.file, p.field) for p in raised.value.problems] == [(str(path), "horizon")]
    assert load_churn_model(old, None) is None
