"""The pure arithmetic of scoring: points from raw values, weights, coverage, bands, explanations, overrides.

A small scorecard is built in code for each test (real measure names, made-up raw values), so every number
in an expectation can be checked by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from worker.scoring.engine import (
    MeasureResult,
    Raw,
    _override,
    _points_for,
    band_of,
    explain,
    interpolate,
    score_account,
)
from worker.scoring.scorecard import MeasureSpec, Scorecard

ACCOUNT = "001000000000001AAA"
AS_OF = datetime(2024, 5, 10, 9, 0, tzinfo=UTC)
RISING = [(0.0, 0.0), (1.0, 50.0), (3.0, 100.0)]
FALLING = [(0.0, 100.0), (14.0, 80.0), (30.0, 40.0), (60.0, 0.0)]


def spec(points: list[tuple[float, float]] | None = None, *, weight: float = 1, missing: str | None = None
         ) -> MeasureSpec:
    return MeasureSpec.model_validate({"weight": weight, "points": points or [[0, 0], [100, 100]],
                                       "missing": missing})


def scorecard(groups: dict[str, tuple[float, dict[str, dict[str, Any]]]], **top: Any) -> Scorecard:
    """Groups as {name: (weight, {measure: fields})}; every measure maps raw 0..100 to points 0..100 unless told."""
    return Scorecard.model_validate({
        "bands": {"red": 40, "yellow": 70}, **top,
        "groups": {name: {"weight": weight,
                          "measures": {key: {"weight": 1, "points": [[0, 0], [100, 100]], **fields}
                                       for key, fields in measures.items()}}
                   for name, (weight, measures) in groups.items()}})


def raw_for(**values: float | None) -> Raw:
    """Raw values for ACCOUNT by "group.measure" (spelt group__measure); None means no data."""
    return {key.replace("__", "."): ({} if value is None else {ACCOUNT: value}) for key, value in values.items()}


TWO_GROUPS = scorecard({
    "engagement": (60, {"meetings": {"weight": 3}, "open_tickets": {"weight": 1}}),
    "usage": (40, {"usage_frequency": {"weight": 1}}),
})


# --- interpolate --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [(-5, 0), (0, 0), (0.5, 25), (1, 50), (2, 75), (3, 100), (40, 100)])
def test_interpolate_is_linear_between_points_and_flat_beyond_the_ends(raw: float, expected: float) -> None:
    assert interpolate(RISING, raw) == pytest.approx(expected)


@pytest.mark.parametrize(("raw", "expected"), [(-1, 100), (7, 90), (14, 80), (22, 60), (45, 20), (60, 0), (400, 0)])
def test_interpolate_follows_a_falling_direction(raw: float, expected: float) -> None:
    assert interpolate(FALLING, raw) == pytest.approx(expected)


def test_interpolate_handles_fractional_raw_values() -> None:
    assert interpolate([(-0.6, 0.0), (0.0, 55.0), (0.6, 100.0)], -0.3) == pytest.approx(27.5)


# --- missing-data policies ----------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["skip", "neutral", "zero"])
def test_a_value_present_is_interpolated_whatever_the_policy(policy: str) -> None:
    assert _points_for(spec(FALLING), 7, policy) == pytest.approx(90)


@pytest.mark.parametrize(("policy", "expected"), [("skip", None), ("neutral", 50.0), ("zero", 0.0)])
def test_a_missing_value_follows_the_scorecards_policy(policy: str, expected: float | None) -> None:
    assert _points_for(spec(FALLING), None, policy) == expected


def test_a_measures_own_policy_overrides_the_scorecards() -> None:
    assert _points_for(spec(FALLING, missing="zero"), None, "neutral") == 0.0


# --- score_account: weights, rebalancing, coverage ----------------------------------------------------------

def test_with_every_measure_present_the_score_is_the_weighted_mean() -> None:
    raw = raw_for(engagement__meetings=80, engagement__open_tickets=40, usage__usage_frequency=50)

    score, coverage, _results, groups = score_account(ACCOUNT, raw, TWO_GROUPS)

    assert groups == {"engagement": pytest.approx(70), "usage": pytest.approx(50)}
    assert (score, coverage) == pytest.approx((62, 1.0))  # 0.6 * 70 + 0.4 * 50


def test_a_skipped_measure_rebalances_the_weights_in_its_group() -> None:
    raw = raw_for(engagement__meetings=None, engagement__open_tickets=40, usage__usage_frequency=50)

    score, _coverage, _results, groups = score_account(ACCOUNT, raw, TWO_GROUPS)

    assert groups["engagement"] == pytest.approx(40)
    assert score == pytest.approx(44)  # 0.6 * 40 + 0.4 * 50


def test_coverage_is_the_share_of_weight_that_had_data() -> None:
    raw = raw_for(engagement__meetings=None, engagement__open_tickets=40, usage__usage_frequency=50)

    _score, coverage, _results, _groups = score_account(ACCOUNT, raw, TWO_GROUPS)

    assert coverage == pytest.approx(0.6 * 0.25 + 0.4)


def test_a_group_without_any_data_drops_out_and_the_others_carry_the_score() -> None:
    raw = raw_for(engagement__meetings=80, engagement__open_tickets=40, usage__usage_frequency=None)

    score, coverage, _results, groups = score_account(ACCOUNT, raw, TWO_GROUPS)

    assert groups["usage"] is None
    assert (score, coverage) == pytest.approx((70, 0.6))


def test_a_measure_absent_from_the_raw_values_counts_as_missing() -> None:
    score, coverage, _results, _groups = score_account(ACCOUNT, raw_for(usage__usage_frequency=50), TWO_GROUPS)

    assert (score, coverage) == pytest.approx((50, 0.4))


def test_an_account_with_no_data_at_all_scores_zero_with_zero_coverage() -> None:
    score, coverage, results, _groups = score_account(ACCOUNT, {}, TWO_GROUPS)

    assert (score, coverage) == (0.0, 0.0)
    assert all(r.points is None and r.weight == 0 for r in results)


def test_a_zero_policy_pulls_the_score_down_instead_of_rebalancing() -> None:
    card = scorecard({"engagement": (1, {"meetings": {"weight": 1, "missing": "zero"},
                                         "open_tickets": {"weight": 1}})})

    score, _coverage, _results, _groups = score_account(ACCOUNT, raw_for(engagement__open_tickets=80), card)

    assert score == pytest.approx(40)


def test_a_neutral_policy_stands_a_missing_measure_at_fifty() -> None:
    card = scorecard({"engagement": (1, {"meetings": {"weight": 1}, "open_tickets": {"weight": 1}})},
                     missing="neutral")

    score, _coverage, _results, _groups = score_account(ACCOUNT, raw_for(engagement__open_tickets=90), card)

    assert score == pytest.approx(70)


def test_a_measure_filled_in_by_the_neutral_policy_does_not_count_as_coverage() -> None:
    card = scorecard({"engagement": (1, {"meetings": {"weight": 1}, "open_tickets": {"weight": 1}})},
                     missing="neutral")

    _score, coverage, _results, _groups = score_account(ACCOUNT, raw_for(engagement__open_tickets=90), card)

    assert coverage == pytest.approx(0.5)


def test_each_measure_carries_its_share_of_the_final_score() -> None:
    raw = raw_for(engagement__meetings=None, engagement__open_tickets=40, usage__usage_frequency=50)

    _score, _coverage, results, _groups = score_account(ACCOUNT, raw, TWO_GROUPS)

    shares = {r.key: r.weight for r in results}
    assert shares == {"meetings": 0, "open_tickets": pytest.approx(0.6), "usage_frequency": pytest.approx(0.4)}
    assert sum(shares.values()) == pytest.approx(1)


def test_each_measure_result_keeps_its_raw_value_points_and_reason() -> None:
    card = scorecard({"engagement": (1, {"meetings": {"window": "90d", "points": [[0, 0], [1, 50], [3, 100]]}})})

    _score, _coverage, results, _groups = score_account(ACCOUNT, raw_for(engagement__meetings=2), card)

    [result] = results
    assert (result.key, result.raw, result.points, result.weight) == ("meetings", 2, 75.0, 1.0)
    assert result.reason == "2 meetings in 90 days"


def test_a_missing_measure_has_no_reason() -> None:
    _score, _coverage, results, _groups = score_account(ACCOUNT, raw_for(usage__usage_frequency=50), TWO_GROUPS)

    assert {r.key: r.reason for r in results if r.points is None} == {"meetings": None, "open_tickets": None}


def test_the_score_is_rounded_to_two_decimals() -> None:
    card = scorecard({"engagement": (1, {"meetings": {}, "open_tickets": {}, "urgent_tickets": {}})})

    score, _coverage, _results, _groups = score_account(
        ACCOUNT, raw_for(engagement__meetings=10, engagement__open_tickets=10, engagement__urgent_tickets=11), card)

    assert score == 10.33


# --- bands --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("score", "band"), [(0, "red"), (39.99, "red"), (40, "yellow"), (69.99, "yellow"),
                                             (70, "green"), (100, "green")])
def test_a_band_is_below_red_red_below_yellow_yellow_else_green(score: float, band: str) -> None:
    assert band_of(score, TWO_GROUPS) == band


# --- explain ------------------------------------------------------------------------------------------------

def result(key: str, points: float | None, weight: float, reason: str | None = None) -> MeasureResult:
    return MeasureResult(key, None if points is None else 1.0, points, weight,
                         said=reason if reason is not None or points is None else f"{key} says {points:g}")


SPREAD = [
    result("days_since_two_way_touch", 10, 0.30),   # shortfall 27
    result("urgent_tickets", 0, 0.20),              # shortfall 20
    result("meetings", 40, 0.25),                   # shortfall 15
    result("open_tickets", 55, 0.05),               # shortfall 2.25
    result("usage_frequency", 95, 0.20),            # strength 19
]


def test_a_red_account_is_explained_by_its_biggest_weighted_shortfalls() -> None:
    text = explain(SPREAD, "red", 2)

    assert text == "days_since_two_way_touch says 10; urgent_tickets says 0"


def test_a_yellow_account_is_explained_like_a_red_one() -> None:
    assert explain(SPREAD, "yellow", 3) == \
        "days_since_two_way_touch says 10; urgent_tickets says 0; meetings says 40"


def test_a_shortfall_is_a_measure_below_sixty_points() -> None:
    text = explain([result("meetings", 65, 0.9), result("open_tickets", 50, 0.1)], "red", 3)

    assert text == "open_tickets says 50"


def test_a_green_account_is_explained_by_its_biggest_weighted_strengths() -> None:
    results = [result("usage_frequency", 95, 0.2), result("meetings", 80, 0.5), result("open_tickets", 72, 0.1),
               result("urgent_tickets", 30, 0.2)]

    assert explain(results, "green", 2) == "meetings says 80; usage_frequency says 95"


def test_a_strength_is_a_measure_at_seventy_points_or_more() -> None:
    results = [result("meetings", 69, 0.9), result("open_tickets", 70, 0.1)]

    assert explain(results, "green", 3) == "open_tickets says 70"


def test_a_green_account_falling_fast_is_explained_by_its_shortfalls() -> None:
    assert explain(SPREAD, "green", 1, falling=True) == "days_since_two_way_touch says 10"


def test_equal_weighted_shortfalls_are_ordered_by_name() -> None:
    results = [result("urgent_tickets", 0, 0.5), result("meetings", 0, 0.5)]

    assert explain(results, "red", 2) == "meetings says 0; urgent_tickets says 0"


def test_when_nothing_stands_out_the_explanation_says_so() -> None:
    results = [result("meetings", 65, 0.5), result("usage_frequency", 60, 0.5)]

    assert explain(results, "red", 3) == "No single measure stands out"


def test_an_explanation_says_little_data_when_most_measures_are_missing() -> None:
    results = [result("meetings", 10, 0.6), result("open_tickets", None, 0), result("urgent_tickets", None, 0),
               result("usage_frequency", None, 0)]

    assert explain(results, "red", 3) == "meetings says 10 (little data: 1 of 4 measures)"


def test_an_explanation_says_little_data_when_half_the_measures_are_missing() -> None:
    results = [result("meetings", 10, 0.6), result("urgent_tickets", 80, 0.4), result("open_tickets", None, 0),
               result("usage_frequency", None, 0)]

    assert explain(results, "red", 3).endswith("(little data: 2 of 4 measures)")


def test_an_explanation_does_not_say_little_data_when_most_measures_are_present() -> None:
    results = [result("meetings", 10, 0.4), result("urgent_tickets", 80, 0.3), result("usage_frequency", 75, 0.3),
               result("open_tickets", None, 0)]

    assert "little data" not in explain(results, "red", 3)


def test_a_measure_without_a_reason_is_never_named() -> None:
    results = [result("meetings", 0, 0.6, reason=""), result("urgent_tickets", 30, 0.4)]

    assert explain(results, "red", 3) == "urgent_tickets says 30"


# --- CSM override -------------------------------------------------------------------------------------------

def override(value: object = 30, until: str | None = "2024-06-30", reason: str | None = "Renewal in hand"
             ) -> dict[str, object]:
    return {"override_value": value, "override_until": until, "override_reason": reason}


def test_an_active_override_pins_the_score_and_says_so() -> None:
    assert _override(override(), AS_OF) == (30.0, "Pinned by CSM at 30 until 2024-06-30: Renewal in hand")


def test_an_override_holds_through_its_last_day() -> None:
    assert _override(override(until="2024-05-10"), AS_OF) is not None


def test_an_expired_override_is_ignored() -> None:
    assert _override(override(until="2024-05-09"), AS_OF) is None


def test_an_expiry_given_as_a_salesforce_datetime_is_read_by_its_date() -> None:
    assert _override(override(until="2024-05-09T23:00:00.000+0000"), AS_OF) is None


def test_an_override_without_expiry_holds_and_says_no_date() -> None:
    assert _override(override(until=None), AS_OF) == (30.0, "Pinned by CSM at 30: Renewal in hand")


def test_an_override_without_a_reason_says_none_was_given() -> None:
    pinned = _override(override(reason=None), AS_OF)

    assert pinned is not None and pinned[1].endswith(": no reason given")


def test_no_override_value_means_no_override() -> None:
    assert _override(override(value=None), AS_OF) is None


def test_an_override_value_stored_as_text_is_read_as_a_number() -> None:
    pinned = _override(override(value="72.5"), AS_OF)

    assert pinned is not None and pinned[0] == 72.5
