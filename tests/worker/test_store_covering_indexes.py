"""Every activity measure finds what it asks of an activity in an index, never in the table row: on a store of
5 million activities, reading the row of each index entry (for a sentiment, a ticket's state) was most of what
the heaviest measures cost. The plans are SQLite's own, on a store without statistics, as the worker's are."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker.scoring.measures import LIBRARY, Measure, account_scope, in_scope, query_replies, query_rows
from worker.store import MIGRATIONS, Store
from worker.store import database as store_module

ACME = "001000000000001AAA"
AS_OF = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
_ACTIVITY_MEASURES = sorted(name for name, measure in LIBRARY.items() if "activities" in measure.sql)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with Store(tmp_path_factory.mktemp("covering") / "hb.db") as opened:
        yield opened


def _reads_rows(store: Store, sql: str, bound: dict[str, object] | None = None) -> list[str]:
    """The steps of the plan that read an activity's row from the table: a search of an activities index that
    does not cover the query, or a scan of the table."""
    aliases = set(re.findall(r"\bactivities (\w+)", sql))
    steps = [str(row[3]) for row in store.conn.execute(f"EXPLAIN QUERY PLAN {sql}", bound or {})]
    return [step for step in steps if "COVERING" not in step
            and ("INDEX activities_" in step or step.split()[:2] in (["SCAN", alias] for alias in aliases))]


@pytest.mark.parametrize("scoped", [False, True], ids=["whole", "scoped"])
@pytest.mark.parametrize("name", _ACTIVITY_MEASURES)
def test_an_activity_measure_reads_the_activities_from_an_index_alone(store: Store, name: str, scoped: bool) -> None:
    measure = LIBRARY[name]
    with account_scope(store, [ACME] if scoped else None):
        assert _reads_rows(store, in_scope(measure.sql, scoped=scoped), measure.bind({}, AS_OF)) == []


def _traced(store: Store, run: object) -> list[str]:
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    try:
        assert callable(run)
        run()
    finally:
        store.conn.set_trace_callback(None)
    return [s for s in statements if s.lstrip().upper().startswith("SELECT")]


def _pair(*names: str) -> list[tuple[Measure, dict[str, object]]]:
    return [(LIBRARY[name], {}) for name in names]


def test_the_pass_over_inbound_texts_reads_them_from_their_own_index_alone(store: Store) -> None:
    (sql,) = _traced(store, lambda: query_rows(store, _pair("inbound_sentiment", "sentiment_vs_usual"), AS_OF))
    plan = " ".join(str(row[3]) for row in store.conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
    assert "COVERING INDEX activities_inbound_text" in plan
    assert _reads_rows(store, sql) == []


def test_the_read_of_first_replies_reads_the_emails_from_an_index_alone(store: Store) -> None:
    (sql,) = _traced(store, lambda: query_replies(store, _pair("median_reply_hours", "inbound_answered_share"),
                                                  AS_OF))
    assert _reads_rows(store, sql) == []


def test_a_store_of_the_previous_release_indexes_its_inbound_texts_and_tickets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:-1])
        with Store(tmp_path / "hb.db") as earlier, earlier.transaction() as conn:
            conn.executemany(
                "INSERT INTO activities (source, source_id, kind, account_id, occurred_at, direction, sentiment, "
                "status, priority, is_deleted) VALUES ('zendesk', ?, ?, ?, '2025-05-01T10:00:00Z', ?, ?, ?, ?, 0)",
                [("t1", "ticket", ACME, "in", 0.4, "open", "urgent"),
                 ("c1", "ticket_comment", ACME, "in", None, None, None),
                 ("c2", "ticket_comment", ACME, "out", 0.2, None, None)])
    with Store(tmp_path / "hb.db") as store:
        version = store.schema_version
        texts = store.conn.execute("SELECT source_id FROM activities INDEXED BY activities_inbound_text "
                                   "WHERE direction = 'in' AND sentiment IS NOT NULL "
                                   "AND kind IN ('email', 'ticket_comment', 'ticket')").fetchall()
        tickets = store.conn.execute("SELECT source_id, status, priority FROM activities INDEXED BY activities_ticket "
                                     "WHERE kind = 'ticket'").fetchall()
    assert (version, texts, tickets) == (len(MIGRATIONS), [("t1",)], [("t1", "open", "urgent")])
