"""The `*_vs_usual` measures ask whether an account is known from before its baseline before they read its
window and baseline (issue 22): an account with nothing from before has no value, so reading its activity was
work for nothing. Every value must stay what the measures gave when they read every account and tested the
account's history last; the queries of that form are kept here as the reference, and both run on a generated
world where most accounts have a usual and some do not (new accounts, deleted rows, emails either way).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from bench.generate import FIXED_NOW, WorldSpec, fill_store
from tests.worker.long_history import untidy_store
from worker.scoring.measures import (
    _ANSWERED_EITHER_WAY,
    _IN_BASELINE,
    _INBOUND_TEXT,
    _JUDGED,
    _KNOWN_BEFORE_BASELINE,
    _RECENT,
    LIBRARY,
    _answered_by,
)
from worker.store import Store


def _count_against_usual_before(condition: str) -> str:
    return f"""SELECT id, CASE WHEN known AND baseline_count >= :min_baseline
                              THEN (recent_count + 1.0) / (baseline_count * :window / :baseline + 1.0) END
        FROM (SELECT acc.id, coalesce(sum({_RECENT}), 0) AS recent_count,
                     coalesce(sum({_IN_BASELINE}), 0) AS baseline_count, ({_KNOWN_BEFORE_BASELINE}) AS known
              FROM accounts acc
              LEFT JOIN activities a ON a.account_id = acc.id AND a.is_deleted = 0 AND {condition}
                   AND a.occurred_at >= :baseline_from AND a.occurred_at <= :as_of
              WHERE acc.is_deleted = 0 AND SCOPE(acc.id) GROUP BY acc.id)"""


def _mean_against_usual_before(condition: str, value: str) -> str:
    return f"""SELECT id, CASE WHEN known AND baseline_count >= :min_baseline AND recent_count > 0
                              THEN recent_mean - baseline_mean END
        FROM (SELECT acc.id, count(CASE WHEN {_RECENT} THEN 1 END) AS recent_count,
                     count(CASE WHEN {_IN_BASELINE} THEN 1 END) AS baseline_count,
                     avg(CASE WHEN {_RECENT} THEN {value} END) AS recent_mean,
                     avg(CASE WHEN {_IN_BASELINE} THEN {value} END) AS baseline_mean,
                     ({_KNOWN_BEFORE_BASELINE}) AS known
              FROM accounts acc
              JOIN activities a ON a.account_id = acc.id AND a.is_deleted = 0 AND {condition}
                   AND a.occurred_at >= :baseline_from AND a.occurred_at <= :as_of
              WHERE acc.is_deleted = 0 AND SCOPE(acc.id) GROUP BY acc.id)"""


BEFORE = {
    "meetings_vs_usual": _count_against_usual_before("a.kind = 'meeting'"),
    "two_way_touches_vs_usual": _count_against_usual_before(
        f"(a.kind IN ('meeting', 'call') OR (a.kind = 'email' {_ANSWERED_EITHER_WAY}))"),
    "tickets_vs_usual": _count_against_usual_before("a.kind = 'ticket'"),
    "customer_reply_rate_vs_usual": _mean_against_usual_before(
        f"a.kind = 'email' AND a.direction = 'out' AND {_JUDGED}", _answered_by("in")),
    "inbound_answered_vs_usual": _mean_against_usual_before(
        f"a.kind = 'email' AND a.direction = 'in' AND {_JUDGED}", _answered_by("out")),
    "sentiment_vs_usual": _mean_against_usual_before(_INBOUND_TEXT, "a.sentiment"),
}
PARAMETERS = [{}, {"window": timedelta(days=60), "baseline": timedelta(days=180), "min_baseline": 3},
              {"window": timedelta(days=14), "baseline": timedelta(days=90), "min_baseline": 1}]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """300 accounts whose activity spans 420 days (most have a usual), some of them new (their data begins
    inside the baseline) or deleted, and a few activities deleted."""
    store = untidy_store(tmp_path_factory.mktemp("declines"), seed=22, usage_days=40, new_since="2024-12-01",
                         deleted_every=17)
    yield store
    store.close()


@pytest.mark.parametrize("name", sorted(BEFORE))
@pytest.mark.parametrize("params", PARAMETERS, ids=["defaults", "scorecard", "short"])
def test_a_decline_measure_gives_the_values_it_gave_when_it_read_every_account(
        world: Store, name: str, params: dict[str, object]) -> None:
    measure = LIBRARY[name]
    reference = replace(measure, sql=BEFORE[name]).query(world, params, FIXED_NOW)
    assert measure.query(world, params, FIXED_NOW) == reference
    assert len(reference) > 20  # the world gives many accounts a value: the comparison is not between nothings


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_a_decline_measure_scoped_to_some_accounts_gives_their_values(world: Store, name: str) -> None:
    from worker.scoring.measures import account_scope

    ids = [str(a) for (a,) in world.conn.execute("SELECT id FROM accounts ORDER BY id")][::7]
    measure = LIBRARY[name]
    everyone = replace(measure, sql=BEFORE[name]).query(world, {}, FIXED_NOW)
    with account_scope(world, ids):
        assert measure.query(world, {}, FIXED_NOW, scoped=True) == {a: v for a, v in everyone.items() if a in ids}


def test_the_generated_world_of_the_benchmarks_has_no_usual_to_compare_with(tmp_path: Path) -> None:
    """Why P4's default world shows the measures' cost only for the accounts' history test: its activity
    spans 180 days, less than a window and a baseline."""
    with Store(tmp_path / "p4.db") as store:
        fill_store(store, WorldSpec(30))
        assert all(not LIBRARY[name].query(store, {}, FIXED_NOW) for name in BEFORE)
