"""A store written by an earlier release upgrades in place when the worker opens it, and a store a first
backfill left without its account index (built once at the end of that backfill) gets it back."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.store import MIGRATIONS, Store
from worker.store import database as store_module

ACME = "001000000000001AAA"


def _earlier_store(path: Path, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:version])
        with Store(path) as store, store.transaction() as conn:
            conn.execute("INSERT INTO accounts (id, name, is_deleted) VALUES (?, 'Acme', 0)", (ACME,))
            conn.execute("INSERT INTO activities (source, source_id, kind, account_id, occurred_at, direction, "
                         "is_deleted) VALUES ('salesforce', '00U1', 'email', ?, '2024-05-01T10:00:00Z', 'in', 0)",
                         (ACME,))


def test_the_account_index_gains_the_columns_every_activity_measure_filters_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _earlier_store(tmp_path / "hb.db", 5, monkeypatch)
    with Store(tmp_path / "hb.db") as store:
        columns = [row[2] for row in store.conn.execute("PRAGMA index_info(activities_account)")]
        kept = store.conn.execute("SELECT account_id, direction FROM activities").fetchall()
        version = store.schema_version
    assert (version, columns, kept) == (len(MIGRATIONS), ["account_id", "kind", "occurred_at", "is_deleted",
                                                          "direction"], [(ACME, "in")])


def test_a_first_reply_is_found_from_the_account_index_alone(tmp_path: Path) -> None:
    with Store(tmp_path / "hb.db") as store:
        plan = " ".join(str(row[3]) for row in store.conn.execute(
            "EXPLAIN QUERY PLAN SELECT r.occurred_at FROM activities r WHERE r.account_id = ? AND r.kind = 'email' "
            "AND r.direction = 'out' AND r.is_deleted = 0 AND r.occurred_at >= ? ORDER BY r.occurred_at LIMIT 1",
            (ACME, "2024-05-01T10:00:00Z")))
    assert "COVERING INDEX activities_account" in plan


def _account_index(store: Store) -> str | None:
    sql: str | None = store.scalar("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'activities_account'")
    return sql


def _add_activity(store: Store) -> None:
    with store.transaction() as conn:
        conn.execute("INSERT INTO activities (source, source_id, kind, account_id, occurred_at, direction, "
                     "is_deleted) VALUES ('salesforce', '00U1', 'email', ?, '2024-05-01T10:00:00Z', 'in', 0)",
                     (ACME,))


def test_a_first_backfill_stores_its_activities_without_the_account_index_and_builds_it_after(
        tmp_path: Path) -> None:
    with Store(tmp_path / "hb.db") as store:
        migrated = _account_index(store)
        with store.account_index_deferred() as deferred:
            during = _account_index(store)
            _add_activity(store)
        after = _account_index(store)
        found = store.conn.execute("SELECT count(*) FROM activities INDEXED BY activities_account "
                                   "WHERE account_id = ?", (ACME,)).fetchone()[0]
    assert (deferred, during, after, found) == (True, None, migrated, 1)


def test_a_store_that_holds_activities_keeps_its_account_index_while_it_syncs(tmp_path: Path) -> None:
    with Store(tmp_path / "hb.db") as store:
        _add_activity(store)
        with store.account_index_deferred() as deferred:
            during = _account_index(store)
    assert not deferred
    assert during is not None


def test_a_first_backfill_that_fails_still_builds_the_account_index(tmp_path: Path) -> None:
    with Store(tmp_path / "hb.db") as store:
        with pytest.raises(RuntimeError), store.account_index_deferred():
            _add_activity(store)
            raise RuntimeError("Salesforce went away")
        assert _account_index(store) is not None


def _killed_mid_backfill(path: Path) -> str | None:
    """A store as a first backfill killed before its end leaves it: activities, and no account index."""
    with Store(path) as store:
        migrated = _account_index(store)
        _add_activity(store)
        store.conn.execute("DROP INDEX activities_account")
    return migrated


def test_the_worker_opening_a_store_a_killed_backfill_left_builds_the_account_index_again(tmp_path: Path) -> None:
    migrated = _killed_mid_backfill(tmp_path / "hb.db")
    with Store(tmp_path / "hb.db", lock=True) as store:
        rebuilt = _account_index(store)
    assert rebuilt == migrated


def test_a_command_reading_beside_the_worker_leaves_the_account_index_to_it(tmp_path: Path) -> None:
    _killed_mid_backfill(tmp_path / "hb.db")
    with Store(tmp_path / "hb.db") as store:
        assert _account_index(store) is None


def test_the_next_sync_into_a_store_a_killed_backfill_left_goes_on_without_the_index_and_builds_it(
        tmp_path: Path) -> None:
    migrated = _killed_mid_backfill(tmp_path / "hb.db")
    with Store(tmp_path / "hb.db") as store:
        with store.account_index_deferred() as deferred:
            during = _account_index(store)
        after = _account_index(store)
    assert (deferred, during, after) == (True, None, migrated)


def test_building_the_account_index_leaves_the_page_cache_as_it_was(tmp_path: Path) -> None:
    with Store(tmp_path / "hb.db") as store:
        before = store.scalar("PRAGMA cache_size")
        with store.account_index_deferred():
            _add_activity(store)
        assert store.scalar("PRAGMA cache_size") == before
