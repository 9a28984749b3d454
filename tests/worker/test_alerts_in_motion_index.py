"""A quiet cycle reads only the alert states in motion, not every rule's row of every account: the query of
`_accounts_in_motion` is answered from the partial index `alerts_in_motion` (migration 12)."""

from __future__ import annotations

from pathlib import Path

from worker.alerting.engine import _accounts_in_motion
from worker.store import Store

MOTION = ("SELECT DISTINCT account_id FROM alerts WHERE state = 'pending' "
          "OR (since = updated_at AND state IN ('firing', 'resolved'))")


def test_the_accounts_in_motion_are_read_from_their_own_index(tmp_path: Path) -> None:
    with Store(tmp_path / "hb.db") as store:
        plan = " ".join(str(row[3]) for row in store.conn.execute(f"EXPLAIN QUERY PLAN {MOTION}"))

    assert plan in ("SCAN alerts USING INDEX alerts_in_motion", "SCAN alerts USING COVERING INDEX alerts_in_motion")


def test_the_index_holds_the_states_in_motion_and_nothing_else(tmp_path: Path) -> None:
    with Store(tmp_path / "hb.db") as store:
        rows = [("A", "pending", "t1", "t2"), ("B", "firing", "t1", "t1"), ("C", "firing", "t1", "t2"),
                ("D", "resolved", "t3", "t3"), ("E", "resolved", "t1", "t3"), ("F", "ok", "t1", "t1")]
        with store.transaction() as conn:
            conn.executemany("INSERT INTO alerts (rule, account_id, state, since, updated_at) "
                             "VALUES ('turned_red', ?, ?, ?, ?)", rows)
        indexed = {a for (a,) in store.conn.execute("SELECT account_id FROM alerts INDEXED BY alerts_in_motion "
                                                      "WHERE state = 'pending' OR (since = updated_at AND "
                                                      "state IN ('firing', 'resolved'))")}

        assert _accounts_in_motion(store) == indexed == {"A", "B", "D"}
