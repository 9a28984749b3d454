"""When a quiet cycle reads Zendesk's organizations again: at once for a ticket naming one the store does not
know, and without reading every Zendesk activity to find out (a quiet cycle must not grow with the tickets)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from worker.store import Store, iso
from worker.sync.zendesk import _organizations_due

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def store() -> Iterator[Store]:
    with Store(":memory:") as opened:
        with opened.transaction() as conn:
            opened.save_cursor("zendesk.organizations", iso(NOW - timedelta(hours=1)), 0, NOW)
            conn.execute("INSERT INTO zendesk_organizations (id, name, account_id) VALUES (7, 'Acme', '001A')")
            conn.executemany(
                "INSERT INTO activities (source, source_id, kind, account_id, related_id, occurred_at) "
                "VALUES ('zendesk', ?, 'ticket', '001A', 'org:7', '2026-03-01T08:00:00Z')",
                [(f"ticket:{n}",) for n in range(50)])
        yield opened


def _ticket(store: Store, number: int, organization: int) -> None:
    with store.transaction() as conn:
        conn.execute("INSERT INTO activities (source, source_id, kind, related_id, occurred_at) "
                     "VALUES ('zendesk', ?, 'ticket', ?, '2026-03-01T09:00:00Z')",
                     (f"ticket:{number}", f"org:{organization}"))


def test_organizations_are_not_due_while_every_ticket_names_a_known_one(store: Store) -> None:
    _ticket(store, 100, 7)  # stored before its mapping: no account yet, but a known organization

    assert not _organizations_due(store, NOW)


def test_a_ticket_naming_an_organization_the_store_does_not_know_makes_them_due_at_once(store: Store) -> None:
    _ticket(store, 101, 8)

    assert _organizations_due(store, NOW)


def test_the_check_reads_only_the_activities_without_an_account(store: Store) -> None:
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    _organizations_due(store, NOW)
    store.conn.set_trace_callback(None)
    (check,) = [s for s in statements if "zendesk_organizations" in s]

    plan = " ".join(str(row[3]) for row in store.conn.execute(f"EXPLAIN QUERY PLAN {check}"))

    assert "activities USING INDEX activities_account (account_id=?)" in plan \
        or "activities USING INDEX activities_related" in plan, plan
