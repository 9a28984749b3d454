"""The usage pass reads only the days its measures look at, and asks the key for the rest (issue 22): the newest
active day, the most seats an account had, whether its usage reaches back before its baseline. Every value must
stay what the measures gave when the pass read every usage row an account ever had; the expressions of that form
are kept here as the reference, and both run on a generated world with long usage histories, accounts whose
usage stopped long ago or never had an active user lately, seats missing in the window, and deleted accounts.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from bench.generate import FIXED_NOW, WorldSpec, fill_store
from worker.scoring.measures import _EVENTS_BEFORE, _FEATURES_SEEN, LIBRARY, Measure, account_scope, query_usage
from worker.store import Store

_SEATS_IN_USE_BEFORE = "coalesce(max(CASE WHEN u.day > :window_start THEN u.seats END), max(u.seats))"
_SEATS_CONTRACTED_BEFORE = ("coalesce((SELECT contracted_seats FROM accounts WHERE id = u.account_id), "
                            "max(CASE WHEN u.day > :window_start THEN u.seats END), max(u.seats))")


def _usage_against_usual_before(per_day: str) -> str:
    recent = f"coalesce(sum(CASE WHEN u.day >= :recent_from THEN {per_day} END), 0)"
    baseline = f"coalesce(sum(CASE WHEN u.day >= :baseline_from AND u.day < :recent_from THEN {per_day} END), 0)"
    return f"""CASE WHEN min(u.day) < :baseline_from AND {baseline} >= :min_baseline
                    THEN ({recent} + 1.0) / ({baseline} * :window / :baseline + 1.0) END"""


# Each usage measure as an expression over every usage row of the account (`since` None: the pass is unbounded).
BEFORE = {
    "days_since_last_active": "julianday(:as_of_day) - julianday(max(CASE WHEN u.active_users > 0 THEN u.day END))",
    "usage_frequency": "count(CASE WHEN u.active_users > 0 AND u.day > :window_start THEN 1 END) / :window",
    "feature_adoption": f"({_FEATURES_SEEN}) * 1.0 / :features_count",
    "active_user_share": f"""CASE WHEN {_SEATS_IN_USE_BEFORE} > 0 THEN
                 coalesce(sum(CASE WHEN u.day > :window_start THEN u.active_users END), 0) * 1.0 / :window
                 / {_SEATS_IN_USE_BEFORE} END""",
    "usage_trend": f"""CASE WHEN {_EVENTS_BEFORE} > 0 THEN
                 sum(CASE WHEN u.day > :window_start THEN u.events ELSE 0 END) * 1.0 / {_EVENTS_BEFORE} - 1 END""",
    "seat_utilization": f"""CASE WHEN {_SEATS_CONTRACTED_BEFORE} > 0 THEN
                 coalesce(max(CASE WHEN u.day > :window_start THEN u.active_users END), 0) * 1.0
                 / {_SEATS_CONTRACTED_BEFORE} END""",
    "active_days_vs_usual": _usage_against_usual_before("(u.active_users > 0)"),
    "active_users_vs_usual": _usage_against_usual_before("u.active_users"),
}
FEATURES = ("dashboards", "alerts", "api", "sso", "exports", "workflows", "mobile", "integrations")
PARAMETERS: list[dict[str, Any]] = [
    {}, {"window": timedelta(days=45), "baseline": timedelta(days=180), "min_baseline": 5},
    {"window": timedelta(days=7), "baseline": timedelta(days=60), "min_baseline": 1}]


def _before(name: str) -> Measure:
    return replace(LIBRARY[name], sql=BEFORE[name], since=None)


def _params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    own = {k: v for k, v in params.items() if k in LIBRARY[name].defaults}
    return own | ({"features": FEATURES} if "features" in LIBRARY[name].needs else {})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """300 accounts with 300 days of usage each, some of which stopped months ago, some with no active user in
    the last months, some with no seats in the window, some with contracted seats, a few deleted."""
    store = Store(tmp_path_factory.mktemp("usage") / "world.db")
    fill_store(store, WorldSpec(300, history_days=420, usage_days=300, zendesk_share=0.3))
    rng = random.Random(22)
    ids = [str(a) for (a,) in store.conn.execute("SELECT id FROM accounts ORDER BY id")]
    with store.transaction() as conn:
        conn.executemany("DELETE FROM usage_daily WHERE account_id = ? AND day > ?",
                         [(a, rng.choice(["2024-09-01", "2025-01-01", "2025-04-01"])) for a in rng.sample(ids, 30)])
        conn.executemany("UPDATE usage_daily SET active_users = 0 WHERE account_id = ? AND day > '2025-02-01'",
                         [(a,) for a in rng.sample(ids, 20)])
        conn.executemany("UPDATE usage_daily SET seats = NULL WHERE account_id = ? AND day > ?",
                         [(a, rng.choice(["2024-12-01", "2025-05-01"])) for a in rng.sample(ids, 30)])
        conn.executemany("UPDATE accounts SET contracted_seats = ? WHERE id = ?",
                         [(rng.choice([None, 0, 5, 40]), a) for a in rng.sample(ids, 60)])
        conn.executemany("UPDATE accounts SET is_deleted = 1 WHERE id = ?", [(a,) for a in rng.sample(ids, 10)])
        conn.executemany("DELETE FROM usage_daily WHERE account_id = ?", [(a,) for a in rng.sample(ids, 10)])
        conn.execute("INSERT INTO usage_daily (account_id, day, active_users, events, features_used, seats) "
                     "VALUES ('001ORPHAN', '2024-08-01', 3, 10, '[\"api\"]', 4)")
    yield store
    store.close()


@pytest.mark.parametrize("name", sorted(BEFORE))
@pytest.mark.parametrize("params", PARAMETERS, ids=["defaults", "scorecard", "short"])
def test_a_usage_measure_gives_the_values_it_gave_when_the_pass_read_every_day(
        world: Store, name: str, params: dict[str, Any]) -> None:
    own = _params(name, params)
    reference = _before(name).query(world, own, FIXED_NOW)
    assert LIBRARY[name].query(world, own, FIXED_NOW) == reference
    assert len(reference) > 20


@pytest.mark.parametrize("params", PARAMETERS, ids=["defaults", "scorecard", "short"])
def test_the_usage_measures_read_together_give_the_values_of_the_unbounded_pass(
        world: Store, params: dict[str, Any]) -> None:
    together = [(LIBRARY[name], _params(name, params)) for name in sorted(BEFORE)]
    reference = query_usage(world, [(_before(m.name), p) for m, p in together], FIXED_NOW)
    assert query_usage(world, together, FIXED_NOW) == reference
    assert len(reference[0]) > 250  # every account with usage, those whose usage stopped long ago included


def test_an_account_whose_usage_stopped_before_every_window_keeps_its_values(world: Store) -> None:
    together = [(LIBRARY[name], _params(name, {})) for name in sorted(BEFORE)]
    values = dict(zip(sorted(BEFORE), query_usage(world, together, FIXED_NOW), strict=True))
    assert values["usage_frequency"]["001ORPHAN"] == 0.0
    assert values["days_since_last_active"]["001ORPHAN"] > 240


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_a_usage_measure_scoped_to_some_accounts_gives_their_values(world: Store, name: str) -> None:
    ids = [str(a) for (a,) in world.conn.execute("SELECT DISTINCT account_id FROM usage_daily ORDER BY 1")][::7]
    own = _params(name, {})
    everyone = _before(name).query(world, own, FIXED_NOW)
    with account_scope(world, ids):
        assert LIBRARY[name].query(world, own, FIXED_NOW, scoped=True) == {
            a: v for a, v in everyone.items() if a in ids}
