"""A generated store with a long history and the untidiness of a real one, for the tests that prove a
restructured query gives exactly the values the query it replaced gave."""

from __future__ import annotations

import random
from pathlib import Path

from bench.generate import WorldSpec, fill_store
from worker.store import Store


def untidy_store(folder: Path, *, seed: int, usage_days: int, new_since: str,
                 deleted_every: int) -> Store:
    """300 accounts whose activity spans 420 days (most have a usual to compare with); 40 of them new (their
    activity begins at `new_since`), 10 deleted, and every `deleted_every`-th activity deleted; a test adds its
    own untidiness on top."""
    store = Store(folder / "world.db")
    fill_store(store, WorldSpec(300, history_days=420, usage_days=usage_days, zendesk_share=0.3))
    rng = random.Random(seed)
    ids = [str(a) for (a,) in store.conn.execute("SELECT id FROM accounts ORDER BY id")]
    with store.transaction() as conn:
        conn.executemany("DELETE FROM activities WHERE account_id = ? AND occurred_at < ?",
                         [(a, new_since) for a in rng.sample(ids, 40)])
        conn.executemany("UPDATE accounts SET is_deleted = 1 WHERE id = ?", [(a,) for a in rng.sample(ids, 10)])
        conn.execute(f"UPDATE activities SET is_deleted = 1 WHERE rowid % {int(deleted_every)} = 0")
    return store
