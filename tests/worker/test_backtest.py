"""`healthbeat backtest`: scores replayed as of past days, set against the churn the CRM recorded.

The small cases have their answers worked out by hand in the test; the end-to-end cases run on a generated
history (`connectors.sandboxes.history`) read through the sandboxes by a real sync, whose churned accounts declined
before they left, so a working backtest must find that the score saw it coming.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from connectors.sandboxes.history import History, build_history
from worker.alerting.rules import load_alert_rules
from worker.analysis.backtest import (
    AlertFire,
    Backtest,
    Guardrail,
    Observation,
    Plan,
    Replay,
    auc,
    backtest_as_dict,
    band_distribution,
    band_rates,
    label,
    lead_time,
    opportunities_as_of,
    replay,
    roc_points,
    rule_figures,
    run_backtest,
)
from worker.analysis.command import run_command
from worker.analysis.outcomes import Outcome, OutcomeRules, Outcomes, read_outcomes
from worker.analysis.plots import plot_backtest
from worker.clock import ShiftedClock
from worker.config import load_settings
from worker.cycle import Cycle, build_clients
from worker.demo.harness import sandbox_environment, start_sandboxes
from worker.errors import OutcomeConfigError
from worker.rulebook.in_force import RuleBook
from worker.rulebook.preview import snapshot
from worker.scoring.measures import LIBRARY
from worker.scoring.scorecard import load_scorecard
from worker.store import Store, iso

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
DAY0 = date(2025, 1, 6)
HISTORY_ENDS = datetime(2025, 6, 2, 12, tzinfo=UTC)


def day(n: int) -> date:
    return DAY0 + timedelta(days=n)


def observation(account_id: str, n: int, score: float, band: str, owner: str = "owner-1") -> Observation:
    return Observation(account_id, owner, day(n), score, band, 1.0, None, None, ())


# -- the generated history, read by a real sync (once for the module) -----------------------------------

@dataclass
class Generated:
    history: History
    store: Store
    outcomes: Outcomes
    plan: Plan
    backtest: Backtest
    replay: Replay


def generated_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    """60 accounts over 15 months (seed 3: 15 churn), synced through the sandboxes and backtested once."""
    folder = tmp_path_factory.mktemp("history")
    usage = folder / "usage"
    usage.mkdir()
    clock = ShiftedClock(offset=HISTORY_ENDS - datetime.now(UTC))  # the same history, whatever the day
    sandboxes = start_sandboxes(clock)
    try:
        history = build_history(sandboxes.salesforce, sandboxes.zendesk, sandboxes.slack, usage,
                                accounts=60, months=15, seed=3, now=HISTORY_ENDS)
        settings = load_settings(**sandbox_environment(sandboxes, folder / "healthbeat.db", usage, RULES_DIR))
        store = Store(settings.db)
        clients = build_clients(settings)
        assert Cycle(store, settings, RuleBook(RULES_DIR), clients, clock=clock).run(("sync",)).ok
        clients.close()
    finally:
        sandboxes.stop()
    outcomes = read_outcomes(store)
    plan = Plan(until=history.end)
    result, replayed = run_backtest(store, load_scorecard(RULES_DIR), load_alert_rules(RULES_DIR), outcomes, plan)
    yield Generated(history, store, outcomes, plan, result, replayed)
    store.close()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    yield from generated_history(tmp_path_factory)


# -- AUC, by hand --------------------------------------------------------------------------------------

def test_auc_is_the_share_of_churned_retained_pairs_ranked_right_with_ties_counting_half() -> None:
    # pairs where the churned account scored lower: 10 → 4 of 4; 40 → 50, 70 and half of the tie 40: 2.5;
    # 60 → 70: 1. That is 7.5 of 3 x 4 = 12 pairs.
    assert auc([10, 40, 60], [30, 50, 70, 40]) == pytest.approx(7.5 / 12)


def test_auc_is_one_half_when_the_score_says_nothing() -> None:
    assert auc([50, 50], [50, 50, 50]) == 0.5


def test_auc_is_unknown_without_both_outcomes() -> None:
    assert auc([], [10, 20]) is None


def test_roc_curve_runs_from_nothing_flagged_to_everything_flagged() -> None:
    points = roc_points([10, 40], [30, 70])

    assert points == [(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]


# -- labels, calibration, lead time, rules, guardrails (small data) --------------------------------------

def test_a_snapshot_followed_by_churn_within_the_horizon_is_positive() -> None:
    assert label(day(0), day(60), 90, until=day(300)) is True


def test_a_snapshot_whose_churn_comes_after_the_horizon_is_negative() -> None:
    assert label(day(0), day(120), 90, until=day(300)) is False


def test_a_snapshot_whose_horizon_is_not_over_has_no_label_even_if_its_account_churned() -> None:
    assert label(day(250), day(260), 90, until=day(300)) is None


def test_churn_rate_by_band_divides_churned_snapshots_by_all_snapshots_of_the_band() -> None:
    pairs = [(observation("A", 0, 30, "red"), True), (observation("B", 0, 35, "red"), False),
             (observation("C", 0, 60, "yellow"), True), (observation("D", 0, 65, "yellow"), False),
             (observation("E", 0, 70, "yellow"), False), (observation("F", 0, 90, "green"), False)]

    rates = {rate.band: rate.rate for rate in band_rates(pairs)}

    assert rates == {"red": 0.5, "yellow": pytest.approx(1 / 3), "green": 0.0, "unknown": None}


def test_lead_time_counts_from_the_start_of_the_red_stretch_that_ends_in_churn() -> None:
    observations = [observation("A", 0, 80, "green"), observation("A", 14, 40, "red"),
                    observation("A", 28, 60, "yellow"), observation("A", 42, 45, "red"),
                    observation("A", 56, 30, "red"),
                    observation("B", 42, 60, "yellow"), observation("B", 56, 55, "yellow")]
    outcomes = Outcomes.of([Outcome("A", day(70), True, "test"), Outcome("B", day(70), True, "test")])

    lead = lead_time(observations, outcomes, step_days=14)

    assert (lead.churned_accounts, lead.red_before, lead.median_days) == (2, 1, 28)
    assert dict((a, d) for a, _, d in lead.days) == {"A": 28, "B": None}


def test_the_share_red_before_churn_reads_the_last_snapshot_on_or_before_that_day() -> None:
    # 30 days before day 70 is day 40: the last snapshot then is day 28, A yellow and B absent.
    observations = [observation("A", 28, 60, "yellow"), observation("A", 56, 30, "red"),
                    observation("B", 56, 30, "red")]
    outcomes = Outcomes.of([Outcome("A", day(70), True, "test"), Outcome("B", day(70), True, "test")])

    shares = {k: (share, n) for k, share, n in lead_time(observations, outcomes, step_days=14).red_share_at}

    assert shares[30] == (0.0, 1)


def test_alert_rule_figures_count_warned_churns_alerts_followed_by_churn_and_alerts_per_owner() -> None:
    days = [day(n) for n in range(0, 251, 14)]
    replayed = Replay(days, rules=["turned_red"], fires=[
        AlertFire("turned_red", "A", "o1", day(14)),   # A churns 26 days later: a good alert
        AlertFire("turned_red", "B", "o1", day(14)),   # B never churns: a false alarm
        AlertFire("turned_red", "C", "o2", day(238)),  # its horizon is not over: not judged yet
    ], warning_days={"turned_red": {"A": [day(14), day(28)]}})
    observations = [observation(a, 0, 50, "yellow", owner) for a, owner in
                    (("A", "o1"), ("B", "o1"), ("C", "o2"), ("D", "o2"))]
    outcomes = Outcomes.of([Outcome("A", day(40), True, "test"), Outcome("D", day(60), True, "test")])

    (figures,) = rule_figures(replayed, observations, outcomes, 90, until=day(250))

    assert (figures.precision, figures.recall, figures.median_warning_days) == (0.5, 0.5, 26)
    assert figures.fires_per_owner_month == round(3 / 2 / (250 / 30.44), 2)
    assert figures.peak_owner_month == 2


def test_a_snapshot_outside_a_guardrail_is_named() -> None:
    observations = [observation("A", 0, 30, "red")] + [observation(x, 0, 90, "green") for x in "BC"]  # 33 % red
    observations += [observation(x, 14, 90, "green") for x in "ABC"]  # none red

    shares = band_distribution(observations, [Guardrail.parse("red:5-25")])

    assert [(s.day, s.breaches) for s in shares] == [(day(0), ("red 5%-25%",)), (day(14), ("red 5%-25%",))]


def test_inside_the_guardrail_nothing_is_named() -> None:
    observations = [observation("A", 0, 30, "red")] + [observation(x, 0, 90, "green") for x in "BCDEFG"]

    (shares,) = band_distribution(observations, [Guardrail.parse("red:5-25")])

    assert shares.breaches == ()


def test_a_guardrail_that_is_not_band_low_high_is_refused() -> None:
    with pytest.raises(ValueError, match="red:5-25"):
        Guardrail.parse("red 5 to 25")


def test_snapshot_days_end_on_the_last_day_and_step_back_evenly() -> None:
    plan = Plan(until=datetime(2025, 3, 31, 12, tzinfo=UTC), period=timedelta(days=28), step=timedelta(days=14))

    assert plan.days() == [date(2025, 3, 3), date(2025, 3, 17), date(2025, 3, 31)]


# -- outcomes from hand-built opportunities ---------------------------------------------------------------

def _opportunity(store: Store, id_: str, account: str, name: str, type_: str | None, close: str,
                 closed: bool, won: bool, deleted: bool = False) -> None:
    store.upsert("opportunities", [{"id": id_, "account_id": account, "name": name, "type": type_,
                                    "stage": "x", "amount": 1.0, "close_date": close, "is_closed": int(closed),
                                    "is_won": int(won), "is_deleted": int(deleted), "modstamp": None}], ("id",))


@pytest.fixture
def crm() -> Iterator[Store]:
    with Store(":memory:") as store:
        _opportunity(store, "o1", "A", "A renewal 2024", "Renewal", "2024-03-01", True, True)
        _opportunity(store, "o2", "A", "A renewal 2025", "Renewal", "2025-03-01", True, False)
        _opportunity(store, "o3", "B", "B upsell", "New Business", "2025-01-10", True, False)
        _opportunity(store, "o4", "C", "C Renewal FY25", None, "2025-02-01", True, False)
        _opportunity(store, "o5", "D", "D renewal", "Renewal", "2025-02-01", True, False, deleted=True)
        _opportunity(store, "o6", "E", "E renewal", "Renewal", "2026-02-01", False, False)
        yield store


def test_a_renewal_closed_lost_is_churn_on_its_close_date_and_one_won_is_retention(crm: Store) -> None:
    outcomes = read_outcomes(crm)

    assert outcomes.churned_on == {"A": date(2025, 3, 1), "C": date(2025, 2, 1)}
    assert [e.day for e in outcomes.renewals_won()] == [date(2024, 3, 1)]


def test_lost_deals_that_are_not_renewals_and_deleted_renewals_are_no_churn(crm: Store) -> None:
    outcomes = read_outcomes(crm)

    assert "B" not in outcomes.churned_on and "D" not in outcomes.churned_on


def test_an_open_renewal_makes_a_customer_without_an_outcome(crm: Store) -> None:
    outcomes = read_outcomes(crm)

    assert "E" in outcomes.customers and outcomes.churn_day("E") is None


def test_renewals_may_be_recognised_by_type_alone(crm: Store) -> None:
    outcomes = read_outcomes(crm, OutcomeRules(renewal_types=("Renewal",), renewal_name_contains=None))

    assert set(outcomes.churned_on) == {"A"}


def test_an_account_churn_date_column_the_store_lacks_is_named(crm: Store) -> None:
    with pytest.raises(OutcomeConfigError, match="Churn_Date__c"):
        read_outcomes(crm, OutcomeRules(churn_date_column="Churn_Date__c"))


# -- --tune says what the history lacks --------------------------------------------------------------------

def test_tuning_without_churn_in_the_period_names_the_lost_renewals_and_the_period_that_reaches_them(
        tmp_path: Path) -> None:
    with Store(":memory:") as store:
        for account in "ABCD":
            store.upsert("accounts", [{"id": account, "name": account, "is_deleted": 0}], ("id",))
            store.upsert("activities", [{
                "source": "test", "source_id": f"{account}{n}", "kind": "meeting", "account_id": account,
                "related_id": None, "parent_id": None,
                "occurred_at": iso(datetime.combine(day(n), datetime.min.time(), UTC)), "direction": "both",
                "subject": None, "text": None, "text_hash": None, "sentiment": None, "status": None,
                "priority": None, "closed_at": None, "is_deleted": 0, "modstamp": None} for n in range(0, 400, 30)],
                ("source", "source_id"))
        _opportunity(store, "oA", "A", "A renewal", "Renewal", day(150).isoformat(), True, False)
        _opportunity(store, "oB", "B", "B renewal", "Renewal", day(200).isoformat(), True, False)
        _opportunity(store, "oC", "C", "C renewal", "Renewal", day(450).isoformat(), False, False)
        _opportunity(store, "oD", "D", "D renewal", "Renewal", day(250).isoformat(), True, True)
        plan = Plan(until=datetime.combine(day(400), datetime.min.time(), UTC) + timedelta(hours=12),
                    period=timedelta(days=100))

        result = run_command(store, load_scorecard(RULES_DIR), None, read_outcomes(store), plan,
                             tune_out=tmp_path / "scorecard.yaml")

    said = " ".join(result.messages)
    assert result.exit_code == 1 and "not enough churn to tune" in said
    # The replay reaches back over the whole history (from 90 days after the first data), not only --period
    assert (f"the replayed history ({day(92)} to {day(302)}) labels 2 churn events (accounts churning within the "
            f"horizon of a snapshot); fitting needs at least 5 to fit on and 3 later ones to judge on, a horizon "
            f"apart: 6 more") in said
    assert (f"the store records 2 lost renewals ({day(150)} to {day(200)}); the store's data starts on {day(0)}"
            ) in said


# -- no leakage -------------------------------------------------------------------------------------------

def _plant_trouble(store: Store, account_id: str, after: date) -> None:
    """Angry emails, urgent open tickets and no product use, all after `after`. (Not a renewal: one closing
    after a snapshot may well have been known at it; see the renewal test below.)"""
    moment = datetime.combine(after, datetime.min.time(), UTC) + timedelta(days=2)
    rows = [{"source": "test", "source_id": f"planted-{k}", "kind": kind, "account_id": account_id,
             "related_id": None, "parent_id": None, "occurred_at": iso(moment + timedelta(hours=k)),
             "direction": "in", "subject": "planted", "text": "furious", "text_hash": None, "sentiment": -0.95,
             "status": "open" if kind == "ticket" else None, "priority": "urgent" if kind == "ticket" else None,
             "closed_at": None, "is_deleted": 0, "modstamp": None}
            for k, kind in enumerate(["email"] * 6 + ["ticket"] * 4)]
    store.upsert("activities", rows, ("source", "source_id"))
    store.upsert("usage_daily", [{"account_id": account_id, "day": (after + timedelta(days=k)).isoformat(),
                                  "active_users": 0, "events": 0, "features_used": "[]", "seats": 50,
                                  "source_file": "planted"} for k in range(1, 15)], ("account_id", "day"))


def _steady_account(generated: Generated) -> str:
    return next(f.account_id for f in generated.history.fates.values()
                if f.churned_on is None and f.rough_patch is None and f.temperament == "thriving")


def test_activity_after_a_snapshot_leaves_that_snapshots_score_unchanged(generated: Generated) -> None:
    account = _steady_account(generated)
    past = generated.plan.days()[12]
    card = load_scorecard(RULES_DIR)

    before = replay(generated.store, card, None, [past], generated.plan.until, population={account})
    with snapshot(generated.store) as copy:
        _plant_trouble(copy, account, past)
        after = replay(copy, card, None, [past], generated.plan.until, population={account})

    assert after.observations == before.observations


def test_the_same_planted_trouble_does_lower_the_score_of_a_later_snapshot(generated: Generated) -> None:
    account = _steady_account(generated)
    past = generated.plan.days()[12]
    later = past + timedelta(days=14)
    card = load_scorecard(RULES_DIR)

    before = replay(generated.store, card, None, [later], generated.plan.until, population={account})
    with snapshot(generated.store) as copy:
        _plant_trouble(copy, account, past)
        after = replay(copy, card, None, [later], generated.plan.until, population={account})

    assert after.observations[0].score < before.observations[0].score - 5


def test_a_renewal_lost_after_a_snapshot_reads_as_still_open_at_that_snapshot(generated: Generated) -> None:
    fate = next(f for f in generated.history.churned if f.churned_on and f.churned_on > generated.plan.days()[3])
    assert fate.churned_on is not None
    past = fate.churned_on - timedelta(days=30)
    moment = datetime.combine(past, datetime.max.time(), UTC)
    days_to_renewal = LIBRARY["days_to_renewal"]

    with snapshot(generated.store) as copy:
        today = days_to_renewal.query(copy, {}, moment).get(fate.account_id)
        opportunities_as_of(copy, past)
        then = days_to_renewal.query(copy, {}, moment).get(fate.account_id)

    assert (today, then) == (None, 30)


# -- on the generated history -----------------------------------------------------------------------------

def test_outcomes_read_from_the_crm_are_the_churn_the_history_made(generated: Generated) -> None:
    made = {f.account_id: f.churned_on for f in generated.history.churned}

    assert generated.outcomes.churned_on == made


def test_the_score_separates_accounts_about_to_churn_from_the_others(generated: Generated) -> None:
    found = generated.backtest.discrimination

    assert found.auc is not None and found.auc > 0.75
    assert found.churn_events >= 8 and found.accounts == 60


def test_red_accounts_churn_more_than_yellow_ones_and_yellow_more_than_green(generated: Generated) -> None:
    rates = {b.band: b.rate for b in generated.backtest.bands}

    assert generated.backtest.bands_ordered
    assert rates["red"] > rates["yellow"] > rates["green"]  # type: ignore[operator]


def test_most_churned_accounts_that_declined_were_red_before_they_left(generated: Generated) -> None:
    declined = [f for f in generated.history.churned if f.decline_days]
    lead = generated.backtest.lead

    assert lead.red_before >= len(declined) // 2
    assert lead.median_days is not None and lead.median_days > 0


def test_the_red_alert_rule_warns_churn_and_most_of_its_alerts_preceded_one(generated: Generated) -> None:
    turned_red = next(r for r in generated.backtest.rules if r.rule == "turned_red")

    assert turned_red.recall is not None and turned_red.recall >= 0.4
    assert turned_red.precision is not None and turned_red.precision >= 0.8


def test_no_account_is_observed_on_or_after_its_churn(generated: Generated) -> None:
    churned = generated.outcomes.churned_on

    assert all(o.day < churned[o.account_id] for o in generated.replay.observations if o.account_id in churned)


def test_the_json_report_carries_every_figure(generated: Generated) -> None:
    document = json.loads(json.dumps(backtest_as_dict(generated.backtest)))

    assert {"auc", "churn_rate_by_band", "lead_time", "rules", "band_distribution", "score_before_outcome",
            "notes"} <= document.keys()
    assert document["auc"]["churn_events"] == generated.backtest.discrimination.churn_events


def test_the_charts_are_written_as_png_files(generated: Generated, tmp_path: Path) -> None:
    charts = plot_backtest(generated.backtest, tmp_path / "charts")

    assert sorted(p.name for p in charts) == ["bands_over_time.png", "churn_by_band.png", "roc.png",
                                             "score_before_churn.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in charts)
