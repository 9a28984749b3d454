"""Keeping the database no bigger than it needs to be: old email and comment text, old history, old receipts.

Text is the most personal thing the store holds and the least needed once its sentiment is known, so it is
cleared first (`HEALTHBEAT_RETENTION_TEXT`); the activity row, its direction, date and sentiment stay, so
scores do not change. Daily history older than `HEALTHBEAT_RETENTION_HISTORY` goes, as do delivered outbox
rows and cycle records past the same horizon.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from worker.store import outbox
from worker.store.database import Store, iso

_LAST_PRUNED = "retention.pruned_day"


def prune_due(store: Store, now: datetime) -> bool:
    """Retention counts whole days: the first cycle of a day prunes, the others would scan for nothing."""
    return store.cursor(_LAST_PRUNED) != now.date().isoformat()


def prune(store: Store, now: datetime, *, text_retention: timedelta, history_retention: timedelta) -> dict[str, int]:
    """Clear text older than `text_retention` (its sentiment stays); drop history, delivered outbox rows and
    cycle records older than `history_retention`. Counts per kind, only those that removed something."""
    text_before = iso(now - text_retention)
    history_before = now - history_retention
    with store.transaction() as conn:
        counts = {
            "texts": conn.execute("UPDATE activities SET text = NULL WHERE text IS NOT NULL AND sentiment IS NOT NULL "
                                  "AND occurred_at < ?", (text_before,)).rowcount,
            "history": conn.execute("DELETE FROM score_history WHERE day < ?",
                                    (history_before.date().isoformat(),)).rowcount,
            "outbox": outbox.prune_delivered(conn, history_before),
            "cycles": conn.execute("DELETE FROM cycles WHERE started_at < ?", (iso(history_before),)).rowcount,
        }
        store.save_cursor(_LAST_PRUNED, now.date().isoformat(), 0, now)
    return {k: v for k, v in counts.items() if v}
