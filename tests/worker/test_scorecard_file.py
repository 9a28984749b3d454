"""Loading `rules/scorecard.yaml`: every problem is named with its file, line and dotted field.

Each test copies the shipped rule files into a temporary directory, changes one thing in the text, and
states what `load_scorecard` must say about it. Lines are found in the edited text, never hard-coded, so
the shipped file may change without breaking these specifications.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.worker.rule_files import edit, line_with, lines_with, problems_from
from worker.rulefile import Problem
from worker.scoring.measures import DERIVED_ONLY, LIBRARY
from worker.scoring.scorecard import LoadedScorecard, load_scorecard


@pytest.fixture
def scorecard_file(rules_dir: Path) -> Path:
    return rules_dir / "scorecard.yaml"








def problems(rules_dir: Path) -> list[Problem]:
    return problems_from(load_scorecard, rules_dir)


def only_problem(rules_dir: Path) -> Problem:
    found = problems(rules_dir)
    assert len(found) == 1, found
    return found[0]


# --- the shipped file ---------------------------------------------------------------------------------------

def test_the_shipped_scorecard_loads(rules_dir: Path) -> None:
    loaded = load_scorecard(rules_dir)

    assert isinstance(loaded, LoadedScorecard)
    assert set(loaded.scorecard.groups) == {"engagement", "sentiment", "support", "usage", "value"}
    assert loaded.scorecard.groups["engagement"].measures["meetings"].window == timedelta(days=90)


def test_the_digest_follows_the_text_and_nothing_else(rules_dir: Path, scorecard_file: Path) -> None:
    first = load_scorecard(rules_dir).digest
    again = load_scorecard(rules_dir).digest
    edit(scorecard_file, "max_reasons: 3", "max_reasons: 2")

    assert first == again
    assert load_scorecard(rules_dir).digest != first


def test_a_problem_reads_file_line_field_then_message(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "max_reasons: 3", "max_reasons: 9")

    problem = only_problem(rules_dir)

    assert str(problem) == f"{scorecard_file}:{line_with(scorecard_file, 'max_reasons')}: max_reasons: " \
                           f"{problem.message}"
    assert "5" in problem.message


# --- unknown and missing keys -------------------------------------------------------------------------------

def test_a_misspelt_measure_key_is_rejected_at_its_line_with_its_dotted_field(
        rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "        window: 90d\n        weight: 5\n        points: [[0, 0], [1, 50]",
         "        window: 90d\n        wieght: 5\n        points: [[0, 0], [1, 50]")

    found = {p.field: p for p in problems(rules_dir)}

    unknown = found["groups.engagement.measures.meetings.wieght"]
    assert unknown.message.startswith("unknown key")
    assert unknown.line == line_with(scorecard_file, "wieght")
    assert unknown.file == str(scorecard_file)


def test_a_misspelt_key_does_not_stand_in_for_the_required_one(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "        window: 90d\n        weight: 5\n        points: [[0, 0], [1, 50]",
         "        window: 90d\n        wieght: 5\n        points: [[0, 0], [1, 50]")

    found = {p.field: p.message for p in problems(rules_dir)}

    assert found["groups.engagement.measures.meetings.weight"] == "Field required"


def test_an_unknown_top_level_key_is_rejected(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "max_reasons: 3", "max_reasons: 3\nmax_reason: 2")

    problem = only_problem(rules_dir)

    assert (problem.field, problem.line) == ("max_reason", line_with(scorecard_file, "max_reason: 2"))
    assert problem.message.startswith("unknown key")


def test_an_unknown_key_in_bands_is_rejected(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "bands: {red: 55, yellow: 75,", "bands: {red: 55, yellow: 75, amber: 60,")

    problem = only_problem(rules_dir)

    assert problem.field == "bands.amber"
    assert problem.line == line_with(scorecard_file, "amber")


def test_a_measure_without_weight_names_the_missing_field(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "        window: 90d\n        weight: 5\n        points: [[0, 0], [1, 50]",
         "        window: 90d\n        points: [[0, 0], [1, 50]")

    problem = only_problem(rules_dir)

    assert problem.field == "groups.engagement.measures.meetings.weight"
    assert problem.message == "Field required"
    # The key is absent, so the line is that of the measure it belongs to.
    assert problem.line == line_with(scorecard_file, "      meetings:")


def test_every_problem_in_the_file_is_reported_not_only_the_first(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "max_reasons: 3", "max_reasons: 0")
    edit(scorecard_file, "[[0, 100], [2, 75], [5, 30], [8, 0]]", "[[0, 100], [2, 75], [5, 130], [8, 0]]")
    edit(scorecard_file, "      days_since_last_active:\n        weight: 30",
         "      days_since_last_active:\n        weight: 30\n        colour: blue")

    fields = {p.field for p in problems(rules_dir)}

    assert fields == {"max_reasons", "groups.support.measures.open_tickets.points",
                      "groups.usage.measures.days_since_last_active.colour"}


def test_a_version_other_than_1_is_rejected(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "version: 1", "version: 2")

    assert only_problem(rules_dir).field == "version"


# --- points, weights, bands ---------------------------------------------------------------------------------

@pytest.mark.parametrize("points", ["[[0, 0], [3, 50], [3, 90], [5, 100]]", "[[0, 0], [4, 50], [3, 90], [5, 100]]"],
                         ids=["repeated raw", "decreasing raw"])
def test_points_must_increase_strictly_in_raw_value(rules_dir: Path, scorecard_file: Path, points: str) -> None:
    edit(scorecard_file, "[[0, 0], [1, 50], [3, 90], [5, 100]]", points)

    problem = only_problem(rules_dir)

    assert problem.field == "groups.engagement.measures.meetings.points"
    assert problem.line == line_with(scorecard_file, points)
    assert "raw values must increase strictly" in problem.message
    assert "then 3.0" in problem.message


def test_points_may_decrease_in_score_because_direction_is_explicit(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "[[0, 0], [1, 50], [3, 90], [5, 100]]", "[[0, 100], [1, 50], [3, 10], [5, 0]]")

    load_scorecard(rules_dir)


@pytest.mark.parametrize("bad", ["101", "-1"])
def test_point_scores_must_stay_within_0_and_100(rules_dir: Path, scorecard_file: Path, bad: str) -> None:
    edit(scorecard_file, "[[0, 0], [1, 50], [3, 90], [5, 100]]", f"[[0, 0], [1, 50], [3, 90], [5, {bad}]]")

    problem = only_problem(rules_dir)

    assert problem.field == "groups.engagement.measures.meetings.points"
    assert "within 0..100" in problem.message
    assert bad in problem.message


def test_a_single_point_is_not_a_mapping(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "[[0, 0], [1, 50], [3, 90], [5, 100]]", "[[0, 0]]")

    assert only_problem(rules_dir).field == "groups.engagement.measures.meetings.points"


def test_a_point_must_be_a_raw_score_pair(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "[[0, 0], [1, 50], [3, 90], [5, 100]]", "[[0, 0], [1, 50, 7], [5, 100]]")

    assert all(p.field.startswith("groups.engagement.measures.meetings.points") for p in problems(rules_dir))


@pytest.mark.parametrize("weight", ["0", "-5"])
def test_a_measure_weight_must_be_positive(rules_dir: Path, scorecard_file: Path, weight: str) -> None:
    edit(scorecard_file, "        window: 90d\n        weight: 5\n        points: [[0, 0], [1, 50]",
         f"        window: 90d\n        weight: {weight}\n        points: [[0, 0], [1, 50]")

    problem = only_problem(rules_dir)

    assert problem.field == "groups.engagement.measures.meetings.weight"
    assert problem.line == line_with(scorecard_file, f"weight: {weight}")


def test_a_group_weight_must_be_a_number(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "  support:\n    weight: 5", "  support:\n    weight: lots")

    problem = only_problem(rules_dir)

    assert problem.field == "groups.support.weight"
    assert problem.line == line_with(scorecard_file, "weight: lots")


@pytest.mark.parametrize("bands", ["{red: 80, yellow: 75}", "{red: 75, yellow: 75}"], ids=["inverted", "equal"])
def test_red_must_be_below_yellow(rules_dir: Path, scorecard_file: Path, bands: str) -> None:
    edit(scorecard_file, "bands: {red: 55, yellow: 75, min_coverage: 0.3}", f"bands: {bands}")

    problem = only_problem(rules_dir)

    assert (problem.field, problem.line) == ("bands", line_with(scorecard_file, "bands:"))
    assert "must be below yellow" in problem.message


def test_a_band_threshold_must_be_within_0_and_100(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "bands: {red: 55, yellow: 75,", "bands: {red: 55, yellow: 175,")

    assert only_problem(rules_dir).field == "bands.yellow"


def test_an_unknown_missing_policy_is_rejected(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "        missing: zero            #", "        missing: ignore            #")

    problem = only_problem(rules_dir)

    assert problem.field == "groups.engagement.measures.days_since_two_way_touch.missing"
    assert "skip" in problem.message and "neutral" in problem.message and "zero" in problem.message


def test_a_window_that_is_not_a_duration_is_rejected(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "      meetings:\n        window: 90d", "      meetings:\n        window: 90 days")

    problem = only_problem(rules_dir)

    assert problem.field == "groups.engagement.measures.meetings.window"
    assert "30d" in problem.message


def test_a_window_without_a_unit_is_rejected(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "      meetings:\n        window: 90d", "      meetings:\n        window: 90")

    assert only_problem(rules_dir).field == "groups.engagement.measures.meetings.window"


# --- measures and their parameters --------------------------------------------------------------------------

def test_an_unknown_measure_is_named_and_the_known_ones_listed(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "      meetings:\n", "      meetingz:\n")

    problem = only_problem(rules_dir)

    assert problem.field.startswith("groups.engagement")
    assert "meetingz" in problem.message
    assert "unknown measure" in problem.message
    assert all(name in problem.message for name in LIBRARY)


def test_an_unknown_measure_is_reported_at_its_own_line(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "      meetings:\n", "      meetingz:\n")

    assert only_problem(rules_dir).line == line_with(scorecard_file, "meetingz")


def test_two_unknown_measures_in_one_group_are_both_reported(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "      meetings:\n", "      meetingz:\n")
    edit(scorecard_file, "      days_since_two_way_touch:\n        weight: 30",
         "      days_since_twoway:\n        weight: 40")

    messages = " ".join(p.message for p in problems(rules_dir))

    assert "meetingz" in messages
    assert "days_since_twoway" in messages


def test_a_measure_key_may_name_a_library_measure_through_measure(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "      feature_adoption:\n", "      usage_frequency_7d:\n"
         "        measure: usage_frequency\n        window: 7d\n        weight: 10\n"
         "        points: [[0, 0], [1, 100]]\n      feature_adoption:\n")

    spec = load_scorecard(rules_dir).scorecard.groups["usage"].measures["usage_frequency_7d"]

    assert (spec.measure, spec.window) == ("usage_frequency", timedelta(days=7))


def test_an_alias_to_an_unknown_measure_names_the_measure(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "      feature_adoption:\n", "      frequency_7d:\n"
         "        measure: usage_frequenzy\n        weight: 10\n"
         "        points: [[0, 0], [1, 100]]\n      feature_adoption:\n")

    problem = only_problem(rules_dir)

    assert "usage_frequenzy" in problem.message
    assert problem.field == "groups.usage.measures.frequency_7d"


def test_a_parameter_the_measure_does_not_take_is_named(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "      open_tickets:\n        weight: 30",
         "      open_tickets:\n        window: 30d\n        weight: 30")

    problem = only_problem(rules_dir)

    assert problem.field == "groups.support.measures.open_tickets.window"
    assert problem.line == line_with(scorecard_file, "      open_tickets:") + 1
    assert "takes no 'window'" in problem.message
    assert "no parameters" in problem.message


def test_a_refused_parameter_lists_the_ones_the_measure_takes(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "      meetings:\n        window: 90d",
         "      meetings:\n        window: 90d\n        half_life: 7d")

    message = only_problem(rules_dir).message

    assert "meetings takes no 'half_life'" in message
    assert "(it takes: window)" in message


def test_feature_adoption_needs_the_feature_list(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "features: [dashboards, alerts, api, sso, exports, workflows, mobile, integrations]",
         "features: []")

    problem = only_problem(rules_dir)

    assert "features" in problem.message
    assert "feature_adoption" in problem.message


def test_feature_adoption_in_a_derived_score_needs_the_feature_list(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "features: [dashboards, alerts, api, sso, exports, workflows, mobile, integrations]",
         "features: []")
    edit(scorecard_file, "      feature_adoption:\n        window: 30d\n        weight: 5\n"
                         "        points: [[0, 0], [0.25, 40], [0.5, 75], [0.75, 100]]\n", "")
    edit(scorecard_file, "      health: {weight: 30,",
         "      feature_adoption: {weight: 10, points: [[0, 0], [1, 100]]}\n      health: {weight: 30,")

    assert "feature_adoption" in only_problem(rules_dir).message


def test_derived_scores_may_use_the_health_score_as_a_measure(rules_dir: Path) -> None:
    derived = load_scorecard(rules_dir).scorecard.derived

    assert "health" in derived["churn_risk"].measures
    assert "health" in DERIVED_ONLY


def test_a_group_may_not_use_the_health_score(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "      open_tickets:\n        weight: 30", "      health:\n        weight: 30")

    problem = only_problem(rules_dir)

    assert problem.field.startswith("groups.support")
    assert "'health'" in problem.message


def test_refusing_health_in_a_group_does_not_call_it_known(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "      open_tickets:\n        weight: 30", "      health:\n        weight: 30")

    known_part = only_problem(rules_dir).message.partition("known:")[2]

    assert "health" not in known_part


def test_a_parameter_on_the_health_score_is_named(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "      health: {weight: 40,", "      health: {weight: 40, window: 30d,")

    problem = only_problem(rules_dir)

    assert problem.field == "derived.churn_risk.measures.health.window"
    assert "takes no parameters" in problem.message


def test_only_churn_risk_and_expansion_readiness_are_derived_scores(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "  expansion_readiness:\n", "  expansion_readyness:\n")

    problem = only_problem(rules_dir)

    assert problem.field.startswith("derived.expansion_readyness")
    assert "'churn_risk' or 'expansion_readiness'" in problem.message


# --- YAML itself --------------------------------------------------------------------------------------------

def test_a_duplicate_key_is_refused_with_both_lines(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "\nmissing: skip\n", "\nmissing: skip\nmissing: zero\n")

    problem = only_problem(rules_dir)

    lines = scorecard_file.read_text().splitlines()
    assert problem.line == lines.index("missing: zero") + 1
    assert f"duplicate key 'missing' (first on line {lines.index('missing: skip') + 1})" in problem.message


def test_a_duplicate_measure_is_refused(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "      open_tickets:\n        weight: 30",
         "      urgent_tickets:\n        weight: 30")

    problem = only_problem(rules_dir)

    first, second = lines_with(scorecard_file, "      urgent_tickets:\n")
    assert problem.line == second
    assert f"duplicate key 'urgent_tickets' (first on line {first})" in problem.message


def test_invalid_yaml_is_reported_with_its_line(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "max_reasons: 3", "max_reasons: 3: 4")

    problem = only_problem(rules_dir)

    assert problem.message.startswith("not valid YAML")
    assert problem.line == line_with(scorecard_file, "max_reasons: 3: 4")


def test_a_list_used_as_a_key_is_invalid_yaml_not_a_crash(rules_dir: Path, scorecard_file: Path) -> None:
    edit(scorecard_file, "max_reasons: 3", "max_reasons: 3\n[red, yellow]: 1")

    assert only_problem(rules_dir).message.startswith("not valid YAML")


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "- bands\n- groups\n", "just words\n"],
                         ids=["empty", "comment", "list", "scalar"])
def test_a_file_that_is_not_a_mapping_is_refused(rules_dir: Path, scorecard_file: Path, text: str) -> None:
    scorecard_file.write_text(text, encoding="utf-8")

    problem = only_problem(rules_dir)

    assert problem.message == "expected a mapping at the top of the file"


def test_a_missing_file_is_named(rules_dir: Path, scorecard_file: Path) -> None:
    scorecard_file.unlink()

    problem = only_problem(rules_dir)

    assert problem.file == str(scorecard_file)
    assert problem.message.startswith("cannot read")
