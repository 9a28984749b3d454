"""An account with too little data is "unknown", neither red nor green (`Scorecard.band`).

A score is a weighted mean over the measures that had data, filled in by the missing-data policy where they
had none: without a rule, an account we know nothing about is called red (every `missing: zero` measure) or
green (the few count measures it answers) and a CSM acts on a guess. `bands.min_coverage` says how much of the
scorecard must have data before a band is given.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.worker.rule_files import edit, line_with, problems_from
from worker.scoring.engine import score_account
from worker.scoring.scorecard import UNKNOWN, Scorecard, load_scorecard


def card(min_coverage: float | None = None) -> Scorecard:
    bands: dict[str, float] = {"red": 50, "yellow": 75}
    if min_coverage is not None:
        bands["min_coverage"] = min_coverage
    return Scorecard.model_validate({"bands": bands, "groups": {"engagement": {"weight": 1, "measures": {
        "meetings": {"weight": 1, "points": [[0, 0], [3, 100]]},
        "days_since_two_way_touch": {"weight": 1, "missing": "zero", "points": [[0, 100], [60, 0]]}}}}})


@pytest.mark.parametrize(("score", "band"), [(10, "red"), (49.99, "red"), (50, "yellow"), (74.99, "yellow"),
                                             (75, "green"), (100, "green")])
def test_with_enough_data_the_score_alone_sets_the_band(score: float, band: str) -> None:
    assert card(0.4).band(score, coverage=0.9) == band


@pytest.mark.parametrize("score", [0, 47.5, 100])
def test_below_the_minimum_coverage_the_band_is_unknown_whatever_the_score(score: float) -> None:
    assert card(0.4).band(score, coverage=0.39) == UNKNOWN == "unknown"


def test_the_minimum_coverage_itself_is_enough() -> None:
    assert card(0.4).band(30, coverage=0.4) == "red"


def test_a_score_with_no_data_at_all_is_unknown_even_without_a_minimum() -> None:
    assert card().band(30, coverage=0) == UNKNOWN
    assert card().band(30, coverage=0.01) == "red"


def test_an_account_known_only_by_its_meeting_count_is_unknown_not_red() -> None:
    """The no-data account of the old scorecard: 0 meetings (a count answers for everyone) and a never-touched
    `missing: zero`: score 0, red, on half the scorecard's weight."""
    score, coverage, _, _ = score_account("A", {"engagement.meetings": {"A": 0.0}}, card(0.6))

    assert (score, coverage) == (0.0, 0.5)
    assert card(0.6).band(score, coverage) == UNKNOWN


def test_the_shipped_scorecard_calls_an_account_without_activity_or_usage_unknown(rules_dir: Path) -> None:
    scorecard = load_scorecard(rules_dir).scorecard
    counts = {"meetings": 0.0, "open_tickets": 0.0, "urgent_tickets": 0.0, "outbound_only_streak": 0.0,
              "ticket_surge": 1.0, "tickets_vs_usual": 1.0}
    raw = {f"{g}.{m}": {"A": counts[spec.measure or m]} for g, group in scorecard.groups.items()
           for m, spec in group.measures.items() if (spec.measure or m) in counts}
    score, coverage, _, _ = score_account("A", raw, scorecard)

    assert scorecard.band(score, coverage) == UNKNOWN


def test_min_coverage_is_a_share(rules_dir: Path) -> None:
    scorecard_file = rules_dir / "scorecard.yaml"
    text = scorecard_file.read_text()
    start = text.index("bands: {")
    old = text[start:text.index("}", start) + 1]
    edit(scorecard_file, old, "bands: {red: 50, yellow: 75, min_coverage: 1.5}")

    problems = problems_from(load_scorecard, rules_dir)

    assert [(p.field, p.line) for p in problems] == [("bands.min_coverage", line_with(scorecard_file, "bands:"))]
