"""Score overrides: a CSM's word pinned on an account's score until a date (`healthbeat override set`, or a
correction from the "Score looks wrong" button).

An override shows everywhere as pinned (Salesforce, Slack, `explain`) and ends by itself at its date, so a
stale word never outlives the data. The overrides set in Salesforce (`Health_Override__c`) are synced onto
the account and read beside these. This module owns the `overrides` table.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from worker.store import Store, iso


def pin(store: Store, account_id: str, value: float, reason: str, until: date, set_by: str | None,
        now: datetime) -> None:
    """Pin the account's score at `value` through `until`; an override already there is replaced."""
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO overrides (account_id, value, reason, until, set_by, set_at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (account_id) DO UPDATE SET value = excluded.value, reason = excluded.reason, "
            "until = excluded.until, set_by = excluded.set_by, set_at = excluded.set_at",
            (account_id, value, reason, until.isoformat(), set_by, iso(now)))


def unpin(store: Store, account_id: str) -> bool:
    """Remove the account's override; False when it had none."""
    with store.transaction() as conn:
        return bool(conn.execute("DELETE FROM overrides WHERE account_id = ?", (account_id,)).rowcount)


def list_overrides(store: Store) -> list[dict[str, Any]]:
    return store.query("SELECT o.account_id, a.name, o.value, o.reason, o.until, o.set_by, o.set_at "
                       "FROM overrides o LEFT JOIN accounts a ON a.id = o.account_id ORDER BY o.until")


def holder(store: Store, account_id: str, today: date, *, besides: str | None = None) -> str | None:
    """Who holds an override in force on the account today: its setter (or the command line), or a CSM in
    Salesforce; None when none holds. With `besides`, that person's own override does not count (they may
    change it), but one set in Salesforce still does."""
    rows = store.query("SELECT set_by, until FROM overrides WHERE account_id = ?", (account_id,))
    if rows and (rows[0]["until"] is None or rows[0]["until"][:10] >= today.isoformat()) \
            and (besides is None or rows[0]["set_by"] != besides):
        return str(rows[0]["set_by"] or "someone on the command line")
    account = store.query("SELECT override_value, override_until FROM accounts WHERE id = ?", (account_id,))
    if account and account[0]["override_value"] is not None and \
            (account[0]["override_until"] is None or account[0]["override_until"][:10] >= today.isoformat()):
        return "a CSM in Salesforce (Health_Override__c)"
    return None
