"""`median_reply_hours` and `inbound_answered_share` look up the same first reply of each inbound email, so a
scorecard reads the emails and their first replies once for both (`query_replies`, issue 22) and takes the
median and the share in Python. Each must give, from that one read, the values its own query gives (unchanged),
to the bit: on a generated world with emails either way, deleted ones, accounts deleted and new, whole and
scoped to some accounts, and with several parameter sets at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from bench.generate import FIXED_NOW
from tests.worker.long_history import untidy_store
from worker.scoring.measures import LIBRARY, account_scope, query_replies
from worker.store import Store, iso, parse_iso

MEDIAN, SHARE = LIBRARY["median_reply_hours"], LIBRARY["inbound_answered_share"]
SETS: list[list[tuple[Any, dict[str, Any]]]] = [
    [(MEDIAN, {}), (SHARE, {})],
    [(MEDIAN, {"window": timedelta(days=90)}), (SHARE, {"window": timedelta(days=90), "within": timedelta(days=2)})],
    [(SHARE, {"window": timedelta(days=30), "within": timedelta(days=7)}), (MEDIAN, {"window": timedelta(days=400)}),
     (SHARE, {"window": timedelta(days=400), "within": timedelta(hours=12)}),
     (MEDIAN, {"window": timedelta(days=7)})],
    [(MEDIAN, {"window": timedelta(days=14)}), (MEDIAN, {"window": timedelta(days=60)})],
]
IDS = ["defaults", "scorecard", "mixed-windows", "medians-only"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = untidy_store(tmp_path_factory.mktemp("replies"), seed=31, usage_days=20, new_since="2025-04-01",
                         deleted_every=13)
    with store.transaction() as conn:
        # Replies at the edges: the same second as the email, exactly `within` later, a second past it, after as_of.
        emails = conn.execute("SELECT account_id, occurred_at FROM activities WHERE kind = 'email' AND "
                              "direction = 'in' AND is_deleted = 0 ORDER BY rowid LIMIT 400").fetchall()
        edges = [timedelta(0), timedelta(days=2), timedelta(days=2, seconds=1), timedelta(days=7), timedelta(days=900)]
        conn.executemany(
            "INSERT INTO activities (source, source_id, kind, account_id, occurred_at, direction, is_deleted, "
            "modstamp) VALUES ('salesforce', ?, 'email', ?, ?, 'out', 0, ?)",
            [(f"edge-{n}", account, iso(parse_iso(at) + edges[n % len(edges)]), at)
             for n, (account, at) in enumerate(emails)])
    yield store
    store.close()


@pytest.mark.parametrize("measures", SETS, ids=IDS)
def test_the_reply_measures_from_one_read_give_what_each_gives_alone(
        world: Store, measures: list[tuple[Any, dict[str, Any]]]) -> None:
    alone = [measure.query(world, params, FIXED_NOW) for measure, params in measures]
    assert query_replies(world, measures, FIXED_NOW) == alone
    assert min(map(len, alone)) > 20


def test_the_reply_measures_from_one_read_scoped_give_the_values_of_those_accounts(world: Store) -> None:
    ids = [str(a) for (a,) in world.conn.execute("SELECT id FROM accounts ORDER BY id")][::7]
    everyone = query_replies(world, SETS[1], FIXED_NOW)
    with account_scope(world, ids):
        assert query_replies(world, SETS[1], FIXED_NOW, scoped=True) == [
            {a: v for a, v in values.items() if a in ids} for values in everyone]


def test_other_measures_are_not_read_with_the_replies(world: Store) -> None:
    with pytest.raises(ValueError, match="first replies"):
        query_replies(world, [(MEDIAN, {}), (LIBRARY["meetings"], {})], FIXED_NOW)
