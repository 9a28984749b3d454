"""The outbox: every effect the worker owes the outside world (a Salesforce write, a Slack nudge), one row each.

A row is written in the same transaction as the decision that owes it, under a unique dedup key, so a crash
can neither lose an effect nor owe it twice. Its life:

    pending ──take──> inflight ──settle──> sent          (confirmed: the effect is known to have happened)
       ^                 │  ├─────settle──> failed/dead  (refused; failed rows are tried again, dead ones not)
       │                 │  ├─────park────> failed       (refused until someone acts: tried again not before a time)
       │                 │  └─────settle──> superseded   (nothing left to deliver to: the record was deleted)
       └──give_back──────┘                               (a definite "not done": back in the queue)
    pending/failed ──supersede──> superseded             (newer values replaced it before it went out)

A row found `inflight` after a crash is checked against the remote system before anything is sent again.
This module is the only one that writes the table: the stages say what happened, it says how that is kept.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from worker.store.database import Store, iso

Status = Literal["pending", "inflight", "sent", "failed", "dead", "superseded"]


def owe(store: Store, rows: Sequence[Mapping[str, Any]]) -> None:
    """Queue effects; a row whose dedup key is already queued (or was delivered) is not queued again."""
    store.insert_missing("outbox", [dict(row) for row in rows])


def supersede(conn: sqlite3.Connection, dedup_keys: Iterable[str]) -> None:
    """Rows that newer values replaced before they went out; a row in flight is left to its own settling."""
    conn.executemany("UPDATE outbox SET status = 'superseded' WHERE dedup_key = ? AND status != 'inflight'",
                     [(key,) for key in dedup_keys])


def take(conn: sqlite3.Connection, ids: Iterable[int], *, conversation: str | None = None,
         batch_key: str | None = None) -> None:
    """Mark rows in flight before the call that delivers them, counting the attempt. A Slack nudge also keeps
    the conversation it goes to (and the digest it goes in), where its recovery looks for it after a crash."""
    if conversation is None:
        conn.executemany("UPDATE outbox SET status = 'inflight', attempts = attempts + 1 WHERE id = ?",
                         [(row_id,) for row_id in ids])
    else:
        conn.executemany("UPDATE outbox SET status = 'inflight', attempts = attempts + 1, remote_ref = ?, "
                         "batch_key = ? WHERE id = ?", [(conversation, batch_key, row_id) for row_id in ids])


def give_back(conn: sqlite3.Connection, ids: Iterable[int]) -> None:
    """The call was refused before it did anything (a limit, not an error): pending again, the attempt uncounted."""
    conn.executemany("UPDATE outbox SET status = 'pending', attempts = attempts - 1 WHERE id = ?",
                     [(row_id,) for row_id in ids])


def settle(conn: sqlite3.Connection, ids: Iterable[int], status: Status, now: datetime, *,
           remote_ref: str | None = None, error: str | None = None) -> None:
    """What became of rows: `sent` stamps the time and clears the error; `remote_ref` (where the effect
    landed) is kept unless a new one is given."""
    conn.executemany(
        "UPDATE outbox SET status = ?, remote_ref = coalesce(?, remote_ref), last_error = ?, "
        "sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END WHERE id = ?",
        [(status, remote_ref, error, status, iso(now), row_id) for row_id in ids])


def park(conn: sqlite3.Connection, ids: Iterable[int], until: datetime, *, error: str) -> None:
    """Refused for a reason that trying again soon will not cure (an org's validation rule): failed, not tried
    before `until`, and the attempt uncounted, so that the row waits for someone to act instead of dying."""
    conn.executemany("UPDATE outbox SET status = 'failed', attempts = max(attempts - 1, 0), last_error = ?, "
                     "not_before = ? WHERE id = ?", [(error, iso(until), row_id) for row_id in ids])


def requeue(conn: sqlite3.Connection, row_id: int, *, superseded: bool) -> None:
    """A row found in flight whose effect did not happen: queued again, or superseded by a newer row."""
    conn.execute("UPDATE outbox SET status = ? WHERE id = ?", ("superseded" if superseded else "pending", row_id))


def prune_delivered(conn: sqlite3.Connection, before: datetime) -> int:
    """Delivered and superseded rows created before `before`: receipts nobody needs any more."""
    return conn.execute("DELETE FROM outbox WHERE status IN ('sent', 'superseded') AND created_at < ?",
                        (iso(before),)).rowcount
