"""Retention runs on the first cycle of a day: it counts whole days, so later cycles would scan for nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from worker.config import load_settings
from worker.store import Store
from worker.store.retention import prune, prune_due

MORNING = datetime(2024, 5, 10, 0, 5, tzinfo=UTC)


def test_the_first_cycle_of_a_day_prunes_and_the_later_ones_do_not(tmp_path: Path) -> None:
    settings = load_settings(db=tmp_path / "t.db")
    with Store(settings.db) as store:
        assert prune_due(store, MORNING)

        prune(store, MORNING, text_retention=settings.retention_text,
              history_retention=settings.retention_history)

        assert not prune_due(store, MORNING + timedelta(hours=23))
        assert prune_due(store, MORNING + timedelta(days=1))
