"""Which accounts a stage still owes work: the store's change marks, read and cleared transactionally.

A quiet cycle must cost almost nothing at 100,000 accounts, so scoring looks only at the accounts whose data
changed, and alert evaluation and write-back planning only at the accounts whose scores changed. Triggers in
the store make the marks, whatever wrote the data or the score (see the `account_changes` migration). A stage
takes its marks with `pending`, and clears exactly those marks with `clear` in the transaction that stores its
results: a crash before that commit leaves the marks for the next cycle, and a mark made again meanwhile (a new
version) survives.

Time alone moves some measures (ages in whole days, windows starting at midnight, overrides expiring by date),
so the first scoring of each day, and any change of scorecard, re-scores every account (`full_rescore_due`).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from worker.store.database import Store, iso

SCORE = "score"
EVALUATE = "evaluate"
WRITEBACK = "writeback"
_FULL_RESCORE = "scoring.full_rescore"
SCORES_STORED = "scoring.stored"  # how many re-scores stored scores: what a Home tab shows may have moved since


@dataclass(frozen=True)
class ChangeSet:
    """The marks a stage read: each (account, effective time, version), and the accounts they name."""

    stage: str
    marks: tuple[tuple[str, str, int], ...]

    @property
    def accounts(self) -> frozenset[str]:
        return frozenset(account for account, _, _ in self.marks)

    def __len__(self) -> int:
        return len(self.accounts)


def pending(store: Store, stage: str, as_of: datetime) -> ChangeSet:
    """The marks in effect at `as_of` (a scheduled meeting's mark waits until the meeting starts)."""
    rows = store.conn.execute(
        "SELECT account_id, effective_at, version FROM account_changes WHERE stage = ? AND effective_at <= ? "
        "ORDER BY account_id, effective_at", (stage, iso(as_of))).fetchall()
    return ChangeSet(stage, tuple((str(a), str(e), int(v)) for a, e, v in rows))


def clear(conn: sqlite3.Connection, changes: ChangeSet) -> None:
    """Delete the marks that were read, unless marked again since (their version moved on)."""
    conn.executemany(
        "DELETE FROM account_changes WHERE stage = ? AND account_id = ? AND effective_at = ? AND version = ?",
        [(changes.stage, account, effective, version) for account, effective, version in changes.marks])


def full_rescore_due(store: Store, scorecard_digest: str, as_of: datetime) -> str | None:
    """Why every account must be re-scored now, or None when the changed accounts are enough."""
    last = store.cursor(_FULL_RESCORE)
    if last is None:
        return "no whole re-score on record"
    state = json.loads(last)
    if state.get("scorecard") != scorecard_digest:
        # the digest is the scorecard's, then "+" and the churn model's when one is in force
        before, now = str(state.get("scorecard")).partition("+"), scorecard_digest.partition("+")
        return "the scorecard changed" if before[0] != now[0] else "the churn model in force changed"
    if state.get("day") != as_of.date().isoformat():
        return "a new day (ages and windows move with the date)"
    if state.get("as_of", "") > iso(as_of):
        return "the clock went back"
    return None


def record_full_rescore(store: Store, scorecard_digest: str, as_of: datetime) -> None:
    """Called inside the transaction that stores a whole re-score's results."""
    store.save_cursor(_FULL_RESCORE, json.dumps({"scorecard": scorecard_digest, "day": as_of.date().isoformat(),
                                                 "as_of": iso(as_of)}), 0, as_of)


def record_scores_stored(store: Store, accounts: int, as_of: datetime) -> None:
    """Called inside the transaction that ends a re-score that stored any score (a quiet cycle stores none): a
    count, not a time, so that two re-scores at one time (a clock that stood still) still differ."""
    store.save_cursor(SCORES_STORED, str(int(store.cursor(SCORES_STORED) or 0) + 1), accounts, as_of)


def accounts_moved(store: Store) -> tuple[int, str | None]:
    """How many accounts the store holds and their newest change: any Account stored, merged or deleted moves
    one or the other. Read from the `accounts_modstamp` index, never from every row, for the checks a quiet
    cycle makes of whether something that depends on the accounts needs doing again."""
    count, newest = store.conn.execute("SELECT count(*), max(modstamp) FROM accounts").fetchone()
    return int(count), newest


def record_rescore_time(store: Store, scorecard_digest: str, as_of: datetime) -> None:
    """An incremental re-score moves the 'last seen' time on, so a clock going back is noticed."""
    last = store.cursor(_FULL_RESCORE)
    if last is not None:
        state = json.loads(last)
        if state.get("scorecard") == scorecard_digest and state.get("day") == as_of.date().isoformat():
            store.save_cursor(_FULL_RESCORE, json.dumps({**state, "as_of": iso(as_of)}), 0, as_of)
