"""A scratch copy of the store: what a backtest, a churn model's fit, a rule preview and a dry run write to.

A copy in memory doubles the worker's memory while a weekly refit replays the history; on a large org, in a
container with a memory limit, that is the worker killed. Past a size, the copy goes to a temporary file
beside the store instead, and goes away with it.
"""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker.store import Store

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "hb.db") as live, live.transaction():
        live.upsert("accounts", [{"id": "A", "name": "Acme", "is_deleted": 0}], ("id",))
    return Store(tmp_path / "hb.db")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".scratch-" in p.name)


def test_a_small_store_is_copied_into_memory(store: Store) -> None:
    with store, store.scratch_copy() as copy:
        assert not copy.on_disk
        assert copy.scalar("SELECT name FROM accounts") == "Acme"


def test_a_large_store_is_copied_to_a_private_file_beside_it_that_goes_when_the_copy_closes(store: Store) -> None:
    with store:
        copy = store.scratch_copy(on_disk_from=1)
        with copy:
            assert copy.on_disk and copy.path.parent == store.path.parent
            assert stat.S_IMODE(copy.path.stat().st_mode) == 0o600  # it holds customer text too
            assert copy.scalar("SELECT name FROM accounts") == "Acme"
            with copy.transaction():
                copy.conn.execute("DELETE FROM accounts")

        assert store.scalar("SELECT count(*) FROM accounts") == 1
        assert _leftovers(store.path.parent) == []


def test_a_copy_that_fails_leaves_no_file_behind(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    with store:
        monkeypatch.setattr(Store, "conn", property(lambda self: _Failing(self._conn, full_disk)))
        with pytest.raises(OSError, match="No space left"):
            store.scratch_copy(on_disk_from=1)

    assert _leftovers(store.path.parent) == []


class _Failing:
    """The live connection, whose backup fails as a full disk makes it."""

    def __init__(self, conn: object, backup: object) -> None:
        self._conn, self.backup = conn, backup

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)
