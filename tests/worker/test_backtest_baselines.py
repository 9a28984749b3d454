"""`healthbeat backtest` beside the single signals a score must beat, and the red band's lift and recall.

The signals (days since the last two-way touch, tickets in the last 90 days, days to the open renewal) are
ranked on the very snapshots the score is judged on, so their AUC can be read beside the score's. Every case
is worked out by hand: a signal that separates churn perfectly must score 1, one pointing the wrong way 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from worker.analysis.backtest import (
    SIGNALS,
    Backtest,
    BandRate,
    Discrimination,
    LeadTime,
    Observation,
    Plan,
    backtest_as_dict,
    baselines,
    run_backtest,
    single_signals,
    summary_lines,
)
from worker.analysis.outcomes import read_outcomes
from worker.scoring.scorecard import load_scorecard
from worker.store import Store, iso

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
DAY0 = date(2025, 1, 6)
KEYS = [s.key for s in SIGNALS]


def _signals(recency: float | None = 5.0, tickets: float | None = 0.0, renewal: float | None = 200.0
             ) -> tuple[float | None, ...]:
    values = {"recency": recency, "support_volume": tickets, "renewal_proximity": renewal}
    return tuple(values[k] for k in KEYS)


def _observation(account: str, signals: tuple[float | None, ...], score: float = 70.0, band: str = "yellow",
                 churn_risk: float | None = None) -> Observation:
    return Observation(account, "owner", DAY0, score, band, 1.0, churn_risk, None, (), signals)


def _auc_of(pairs: list[tuple[Observation, bool]], key: str) -> float | None:
    return {b.key: b.auc for b in baselines(pairs)}[key]


# -- each signal's direction --------------------------------------------------------------------------

def test_more_days_since_a_two_way_touch_ranks_riskier() -> None:
    pairs = [(_observation("A", _signals(recency=60)), True), (_observation("B", _signals(recency=3)), False)]

    assert _auc_of(pairs, "recency") == 1.0


def test_more_tickets_in_the_last_90_days_ranks_riskier() -> None:
    pairs = [(_observation("A", _signals(tickets=7)), True), (_observation("B", _signals(tickets=1)), False)]

    assert _auc_of(pairs, "support_volume") == 1.0


def test_fewer_days_to_the_open_renewal_ranks_riskier() -> None:
    pairs = [(_observation("A", _signals(renewal=20)), True), (_observation("B", _signals(renewal=20)), False),
             (_observation("C", _signals(renewal=300)), False)]

    assert _auc_of(pairs, "renewal_proximity") == pytest.approx(0.75)  # one pair right, one tie


def test_an_account_never_touched_ranks_riskier_than_any_that_was() -> None:
    pairs = [(_observation("A", _signals(recency=None)), True), (_observation("B", _signals(recency=400)), False)]

    assert _auc_of(pairs, "recency") == 1.0


def test_an_account_without_an_open_renewal_ranks_safest_on_renewal_proximity() -> None:
    pairs = [(_observation("A", _signals(renewal=None)), True), (_observation("B", _signals(renewal=900)), False)]

    assert _auc_of(pairs, "renewal_proximity") == 0.0


def test_a_signal_has_no_auc_without_both_outcomes() -> None:
    pairs = [(_observation("A", _signals()), False), (_observation("B", _signals()), False)]

    assert all(b.auc is None for b in baselines(pairs))


def test_observations_without_signals_are_left_out_of_the_baselines() -> None:
    pairs = [(_observation("A", ()), True), (_observation("B", _signals()), False)]

    assert {b.observations for b in baselines(pairs)} == {1}


# -- the red band ---------------------------------------------------------------------------------------

def _backtest(pairs: list[tuple[str, bool]]) -> Backtest:
    """A backtest whose band counts are `pairs` of (band, churned)."""
    bands = tuple(BandRate(band, sum(1 for b, _ in pairs if b == band), sum(1 for b, y in pairs if b == band and y))
                  for band in ("red", "yellow", "green"))
    return Backtest(Plan(until=datetime(2025, 6, 1, tzinfo=UTC)), 1, len(pairs),
                    Discrimination(0.7, 0.05, 0.6, len(pairs), len(pairs), 1, 1, ()), bands,
                    LeadTime(0, 0, None, (), ()), (), (), (), ())


def test_red_lift_is_the_churn_rate_in_red_over_the_overall_churn_rate() -> None:
    # red: 2 of 4 churned (50 %); overall 3 of 20 (15 %): lift 3.33
    bt = _backtest([("red", True)] * 2 + [("red", False)] * 2 + [("green", True)] + [("green", False)] * 15)

    assert bt.red_lift == pytest.approx(0.5 / 0.15)


def test_red_recall_is_the_share_of_snapshots_before_a_churn_that_were_red() -> None:
    bt = _backtest([("red", True)] + [("yellow", True)] * 2 + [("green", True)] * 3 + [("green", False)] * 10)

    assert bt.red_recall == pytest.approx(1 / 6)


def test_without_red_snapshots_the_lift_is_unknown_and_the_recall_zero() -> None:
    bt = _backtest([("yellow", True), ("green", False)])

    assert (bt.red_lift, bt.red_recall) == (None, 0.0)


def test_the_summary_shows_the_red_band_and_every_single_signal_beside_the_score() -> None:
    bt = _backtest([("red", True), ("green", False), ("green", False), ("green", True)])
    pairs = [(_observation("A", _signals(recency=60)), True), (_observation("B", _signals(recency=3)), False)]
    bt = replace(bt, baselines=baselines(pairs))

    text = "\n".join(summary_lines(bt))

    assert "Red band: lift 2.0× (churn 100% in red against 50% overall), recall 50%" in text
    assert ("AUC: days since the last two-way touch 1.00, tickets in the last 90 days 0.50, days to the open "
            "renewal 0.50 (score 0.70, churn risk 0.60)") in text


# -- on a hand-made store ---------------------------------------------------------------------------------

def _moment(days: int) -> datetime:
    return datetime.combine(DAY0 + timedelta(days=days), datetime.min.time(), UTC) + timedelta(hours=12)


def _activity(store: Store, key: str, account: str, kind: str, days: int, direction: str = "both") -> None:
    store.upsert("activities", [{
        "source": "test", "source_id": key, "kind": kind, "account_id": account, "related_id": None,
        "parent_id": None, "occurred_at": iso(_moment(days)), "direction": direction, "subject": key, "text": None,
        "text_hash": None, "sentiment": None, "status": "solved" if kind == "ticket" else None,
        "priority": "normal" if kind == "ticket" else None, "closed_at": None, "is_deleted": 0, "modstamp": None}],
        ("source", "source_id"))


def _renewal(store: Store, key: str, account: str, days: int, *, won: bool | None) -> None:
    store.upsert("opportunities", [{
        "id": key, "account_id": account, "name": f"{account} renewal", "type": "Renewal", "stage": "x",
        "amount": 1000.0, "close_date": (DAY0 + timedelta(days=days)).isoformat(), "is_closed": int(won is not None),
        "is_won": int(bool(won)), "is_deleted": 0, "modstamp": None}], ("id",))


@pytest.fixture
def crm() -> Iterator[Store]:
    """Four accounts alike in every activity; A and B lose the renewal 30 days after day 0, C and D renew
    200 days after it: only the renewal date tells them apart."""
    with Store(":memory:") as store:
        for account in "ABCD":
            store.upsert("accounts", [{"id": account, "name": f"Account {account}", "is_deleted": 0}], ("id",))
            _activity(store, f"meeting-{account}", account, "meeting", -5)
        _renewal(store, "oA", "A", 30, won=False)
        _renewal(store, "oB", "B", 30, won=False)
        _renewal(store, "oC", "C", 200, won=None)
        _renewal(store, "oD", "D", 200, won=True)
        yield store


def test_a_signal_that_foretells_every_churn_on_a_store_scores_auc_one(crm: Store) -> None:
    plan = Plan(until=_moment(100), period=timedelta(days=100), step=timedelta(days=100))

    result, _ = run_backtest(crm, load_scorecard(RULES_DIR), None, read_outcomes(crm), plan)

    found = {b.key: b.auc for b in result.baselines}
    assert found["renewal_proximity"] == 1.0
    assert result.discrimination.auc == 0.5  # the score sees four alike accounts
    assert result.discrimination.churn_events == 2


def test_single_signals_read_the_store_as_of_the_snapshot(crm: Store) -> None:
    for days in (-100, -60, -2, 3):  # one too old for the 90 days, two inside them, one after the snapshot
        _activity(crm, f"ticket{days}", "A", "ticket", days, direction="in")
    _activity(crm, "late-meeting", "B", "meeting", 2)  # after the snapshot: unseen

    found = single_signals(crm, _moment(0))

    assert found["support_volume"] == {"A": 2.0}
    assert found["recency"]["B"] == 5.0
    assert found["renewal_proximity"]["C"] == 200.0


def test_an_account_only_written_to_has_no_two_way_touch(crm: Store) -> None:
    crm.upsert("accounts", [{"id": "E", "name": "Account E", "is_deleted": 0}], ("id",))
    _activity(crm, "cold-email", "E", "email", -3, direction="out")

    assert "E" not in single_signals(crm, _moment(0))["recency"]


def test_the_json_report_adds_the_baselines_and_the_red_band_to_every_key_it_had(crm: Store) -> None:
    plan = Plan(until=_moment(100), period=timedelta(days=100), step=timedelta(days=100))
    result, _ = run_backtest(crm, load_scorecard(RULES_DIR), None, read_outcomes(crm), plan)

    document = json.loads(json.dumps(backtest_as_dict(result)))

    assert {"from", "until", "step_days", "horizon_days", "snapshots", "accounts", "auc", "churn_rate_by_band",
            "bands_ordered", "lead_time", "rules", "guardrails", "band_distribution", "score_before_outcome",
            "notes"} <= document.keys()
    assert document["baselines"]["renewal_proximity"]["auc"] == 1.0
    assert set(document["baselines"]) == {"recency", "support_volume", "renewal_proximity"}
    assert set(document["red_band"]) == {"lift", "recall", "churn_rate"}


def test_missing_values_stand_for_the_worst_recency_and_the_safest_renewal() -> None:
    by_key = {s.key: s for s in SIGNALS}

    assert by_key["recency"].risk(None) == -math.inf
    assert by_key["renewal_proximity"].risk(None) == math.inf
    assert by_key["support_volume"].risk(None) == 0.0
