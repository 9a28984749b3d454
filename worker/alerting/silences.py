"""Silences: nudges held back for a while (`healthbeat silence add`), by rule, account or owner.

A silence changes what is sent, never what is known: alert states still move, so when it ends the account's
state is current and no stale nudge is owed. This module owns the `silences` table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from worker.store import Store, iso


def add_silence(store: Store, *, rule: str | None, account_id: str | None, owner: str | None, until: datetime,
                reason: str, by: str | None, now: datetime) -> int:
    """Hold back the nudges that match every field given (None matches anything); returns the silence's id."""
    with store.transaction() as conn:
        cursor = conn.execute(
            "INSERT INTO silences (rule, account_id, owner, until, reason, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", (rule, account_id, owner, iso(until), reason, by, iso(now)))
    return int(cursor.lastrowid or 0)


def expire_silence(store: Store, silence_id: int, now: datetime) -> bool:
    """End a silence now; False when there is no such silence in force."""
    with store.transaction() as conn:
        changed = conn.execute("UPDATE silences SET until = ? WHERE id = ? AND until > ?",
                               (iso(now), silence_id, iso(now))).rowcount
    return bool(changed)


def list_silences(store: Store, now: datetime, *, expired_too: bool = False) -> list[dict[str, Any]]:
    return store.query("SELECT id, rule, account_id, owner, until, reason, created_by, created_at FROM silences "
                       + ("" if expired_too else "WHERE until > ? ") + "ORDER BY id",
                       () if expired_too else (iso(now),))


def active_silences(store: Store, now: datetime) -> list[dict[str, Any]]:
    return store.query("SELECT * FROM silences WHERE until > ? ORDER BY id", (iso(now),))


def silenced_by(silences: Iterable[Mapping[str, Any]], rule: str, context: Mapping[str, Any]) -> int | None:
    """The id of a silence that covers this nudge: every field it gives (rule, account, owner) matches."""
    for silence in silences:
        if (silence["rule"] in (None, rule) and silence["account_id"] in (None, context["account_id"])
                and silence["owner"] in (None, context.get("owner"), context.get("owner_email"))):
            return int(silence["id"])
    return None
