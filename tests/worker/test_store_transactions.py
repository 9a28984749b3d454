"""`Store.transaction()` is all-or-nothing, and nests: an inner transaction is a savepoint of the outer one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker.store import Store

NOW = datetime(2026, 1, 5, 9, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "hb.db") as opened:
        yield opened


def _cursors(store: Store) -> list[str]:
    return [row["stream"] for row in store.query("SELECT stream FROM sync_state ORDER BY stream")]


def _save(store: Store, name: str) -> None:
    store.save_cursor(name, "x", 0, NOW)


def test_a_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        _save(store, "a")
        raise RuntimeError("boom")

    assert _cursors(store) == []


def test_an_inner_transaction_that_fails_is_undone_alone_when_the_outer_goes_on(store: Store) -> None:
    with store.transaction():
        _save(store, "outer")
        with pytest.raises(RuntimeError), store.transaction():
            _save(store, "inner")
            raise RuntimeError("boom")
        _save(store, "after")

    assert _cursors(store) == ["after", "outer"]


def test_an_inner_transaction_is_undone_with_the_outer_one(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        with store.transaction():
            _save(store, "inner")
        raise RuntimeError("boom")

    assert _cursors(store) == []


def test_an_inner_transaction_is_committed_with_the_outer_one(store: Store) -> None:
    with store.transaction():
        with store.transaction():
            _save(store, "inner")
        assert store.conn.in_transaction

    assert not store.conn.in_transaction
    assert _cursors(store) == ["inner"]
