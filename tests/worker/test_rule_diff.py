"""`rules diff`: the changes between two rule directories, in words, from the validated models."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.rulebook.diff import diff_rules
from worker.rulefile import RuleFileError

# Rule files of the test's own, so that edits to the shipped ones never change what these tests mean.
SCORECARD = """\
version: 1
bands: {red: 50, yellow: 75}   # below 50 red
features: [dashboards, alerts, api, sso, exports]
groups:
  engagement:
    weight: 35
    measures:
      days_since_two_way_touch: {weight: 40, missing: zero, points: [[0, 100], [30, 45], [60, 0]]}
      meetings:
        window: 90d
        weight: 30
        points: [[0, 0], [1, 50], [3, 90], [5, 100]]
  sentiment:
    weight: 20
    measures:
      inbound_sentiment:
        half_life: 14d
        weight: 100
        points: [[-0.6, 0], [0, 55], [0.6, 100]]
  support:
    weight: 20
    measures:
      open_tickets: {weight: 40, points: [[0, 100], [8, 0]]}
  usage:
    weight: 25
    measures:
      feature_adoption: {window: 30d, weight: 30, points: [[0, 0], [0.75, 100]]}
derived:
  churn_risk:
    measures:
      health: {weight: 45, points: [[0, 100], [100, 0]]}
"""
ALERTS = """\
version: 1
rules:
  - name: turned_red
    when: band == "red"
    resolve: score >= 55
    for: 1
    cooldown: 7d
    route: {to: owner}
    message: "{{ account_name }} turned red: health {{ score }}"
"""


def _rules(folder: Path) -> Path:
    folder.mkdir()
    (folder / "scorecard.yaml").write_text(SCORECARD)
    (folder / "alerts.yaml").write_text(ALERTS)
    return folder


@pytest.fixture
def old(tmp_path: Path) -> Path:
    return _rules(tmp_path / "old")


@pytest.fixture
def new(tmp_path: Path) -> Path:
    return _rules(tmp_path / "new")


def edit(folder: Path, name: str, before: str, after: str) -> None:
    """Replace text that occurs exactly once, so an edit never lands somewhere unintended."""
    path = folder / name
    text = path.read_text()
    assert text.count(before) == 1, f"{before!r} should occur once in {name}"
    path.write_text(text.replace(before, after))


def test_identical_directories_have_no_differences(old: Path, new: Path) -> None:
    assert diff_rules(old, new) == []


def test_comments_layout_and_written_defaults_are_no_difference(old: Path, new: Path) -> None:
    edit(new, "scorecard.yaml", "bands: {red: 50, yellow: 75}", "bands:\n  yellow: 75   # moved\n  red: 50.0\n")
    edit(new, "alerts.yaml", "    for: 1\n", "")  # 1 is the default

    assert diff_rules(old, new) == []


def test_a_group_weight_change_is_named_by_its_path(old: Path, new: Path) -> None:
    edit(new, "scorecard.yaml", "  engagement:\n    weight: 35", "  engagement:\n    weight: 40")

    assert diff_rules(old, new) == ["groups.engagement.weight 35 → 40"]


def test_a_measure_parameter_change_names_the_measure_and_both_values(old: Path, new: Path) -> None:
    edit(new, "scorecard.yaml", "      meetings:\n        window: 90d", "      meetings:\n        window: 60d")

    assert diff_rules(old, new) == ["measure meetings: window 90d → 60d"]


def test_a_band_threshold_change_reads_as_a_threshold(old: Path, new: Path) -> None:
    edit(new, "scorecard.yaml", "bands: {red: 50,", "bands: {red: 45,")

    assert diff_rules(old, new) == ["band red threshold 50 → 45"]


def test_new_points_show_both_curves(old: Path, new: Path) -> None:
    edit(new, "scorecard.yaml", "points: [[0, 0], [1, 50], [3, 90], [5, 100]]", "points: [[0, 0], [2, 60], [4, 100]]")

    assert diff_rules(old, new) == ["measure meetings: points [[0, 0], [1, 50], [3, 90], [5, 100]] → "
                                    "[[0, 0], [2, 60], [4, 100]]"]


def test_a_measure_added_to_a_group_says_where_and_its_weight(old: Path, new: Path) -> None:
    edit(new, "scorecard.yaml", "  support:\n    weight: 20\n    measures:\n", "  support:\n    weight: 20\n"
         "    measures:\n      days_to_renewal: {weight: 10, points: [[0, 0], [90, 100]]}\n")

    assert diff_rules(old, new) == ["measure days_to_renewal added to group support (weight 10)"]


def test_a_removed_group_is_named(old: Path, new: Path) -> None:
    edit(new, "scorecard.yaml", "  sentiment:\n    weight: 20\n    measures:\n      inbound_sentiment:\n"
         "        half_life: 14d\n        weight: 100\n        points: [[-0.6, 0], [0, 55], [0.6, 100]]\n", "")

    assert diff_rules(old, new) == ["group sentiment removed"]


def test_features_list_what_was_added_and_removed(old: Path, new: Path) -> None:
    edit(new, "scorecard.yaml", "api, sso, exports", "api, reports, exports")

    assert diff_rules(old, new) == ["features: added reports; removed sso"]


def test_a_derived_measure_change_names_the_derived_score(old: Path, new: Path) -> None:
    edit(new, "scorecard.yaml", "health: {weight: 45,", "health: {weight: 50,")

    assert diff_rules(old, new) == ["churn_risk measure health: weight 45 → 50"]


def test_a_changed_condition_says_the_alerts_start_fresh(old: Path, new: Path) -> None:
    edit(new, "alerts.yaml", 'when: band == "red"', "when: score < 45")

    assert diff_rules(old, new) == \
        ['alert turned_red: when changed from `band == "red"` to `score < 45` (its alerts start fresh)']


def test_a_changed_message_keeps_the_alert_state(old: Path, new: Path) -> None:
    edit(new, "alerts.yaml", "turned red: health", "is now red: health")

    assert diff_rules(old, new) == ["alert turned_red: message changed (state kept)"]


def test_a_changed_cooldown_and_route_keep_the_alert_state(old: Path, new: Path) -> None:
    edit(new, "alerts.yaml", "cooldown: 7d", "cooldown: 3d")
    edit(new, "alerts.yaml", "route: {to: owner}", 'route: {to: owner_and_channel, channel: "#cs-alerts"}')

    assert diff_rules(old, new) == ["alert turned_red: cooldown 7d → 3d (state kept)",
                                    "alert turned_red: route owner → owner_and_channel #cs-alerts (state kept)"]


def test_a_removed_resolve_condition_is_a_change_of_meaning(old: Path, new: Path) -> None:
    edit(new, "alerts.yaml", "    resolve: score >= 55\n", "")

    assert diff_rules(old, new) == ["alert turned_red: resolve changed from `score >= 55` to `the when condition "
                                    "no longer holds` (its alerts start fresh)"]


def test_rules_added_and_removed_are_named(old: Path, new: Path) -> None:
    edit(new, "alerts.yaml", "  - name: turned_red", "  - name: went_red")

    assert diff_rules(old, new) == [
        "alert turned_red removed",
        'alert went_red added: when `band == "red"` (accounts that already match are recorded without a nudge)']


def test_a_broken_directory_raises_every_problem_with_its_file_and_line(old: Path, new: Path) -> None:
    edit(new, "scorecard.yaml", "  engagement:\n    weight: 35", "  engagement:\n    wieght: 35")

    with pytest.raises(RuleFileError) as raised:
        diff_rules(old, new)

    assert f"{new / 'scorecard.yaml'}:6: groups.engagement.wieght: unknown key" in str(raised.value)
