"""`inbound_sentiment` and `sentiment_vs_usual` read the same rows (inbound texts with a sentiment), so a
scorecard reads them in one pass (`query_rows`, issue 22). Each must give, in the pass, the values it gives on
its own (its query, unchanged); both run on a generated world where most accounts have a usual and some do not
(new accounts, deleted accounts and activities), whole and scoped to some accounts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from bench.generate import FIXED_NOW
from tests.worker.long_history import untidy_store
from worker.scoring.measures import LIBRARY, account_scope, query_rows
from worker.store import Store

PAIRS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({}, {}),
    ({"window": timedelta(days=180), "half_life": timedelta(days=14)},
     {"window": timedelta(days=60), "baseline": timedelta(days=180)}),
    ({"window": timedelta(days=400), "half_life": timedelta(days=3)},
     {"window": timedelta(days=14), "baseline": timedelta(days=90), "min_baseline": 1}),
    ({"window": timedelta(days=7)}, {"window": timedelta(days=30), "baseline": timedelta(days=30)}),
]
IDS = ["defaults", "scorecard", "long-sentiment", "short"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = untidy_store(tmp_path_factory.mktemp("texts"), seed=23, usage_days=40, new_since="2024-12-01",
                         deleted_every=17)
    with store.transaction() as conn:
        conn.execute("UPDATE activities SET sentiment = NULL WHERE rowid % 23 = 0")
    yield store
    store.close()


def _pass(store: Store, sentiment: dict[str, Any], usual: dict[str, Any], *, scoped: bool = False
          ) -> list[dict[str, float]]:
    return query_rows(store, [(LIBRARY["inbound_sentiment"], sentiment), (LIBRARY["sentiment_vs_usual"], usual)],
                      FIXED_NOW, scoped=scoped)


@pytest.mark.parametrize(("sentiment", "usual"), PAIRS, ids=IDS)
def test_the_sentiment_measures_in_one_pass_give_what_each_gives_alone(
        world: Store, sentiment: dict[str, Any], usual: dict[str, Any]) -> None:
    alone = [LIBRARY["inbound_sentiment"].query(world, sentiment, FIXED_NOW),
             LIBRARY["sentiment_vs_usual"].query(world, usual, FIXED_NOW)]
    assert _pass(world, sentiment, usual) == alone
    assert min(map(len, alone)) > 20


def test_the_sentiment_measures_in_one_pass_scoped_give_the_values_of_those_accounts(world: Store) -> None:
    ids = [str(a) for (a,) in world.conn.execute("SELECT id FROM accounts ORDER BY id")][::7]
    everyone = _pass(world, {}, {})
    with account_scope(world, ids):
        assert _pass(world, {}, {}, scoped=True) == [{a: v for a, v in values.items() if a in ids}
                                                     for values in everyone]


def test_measures_over_different_rows_are_not_read_in_one_pass(world: Store) -> None:
    with pytest.raises(ValueError, match="one set of rows"):
        query_rows(world, [(LIBRARY["inbound_sentiment"], {}), (LIBRARY["meetings"], {})], FIXED_NOW)
