"""A daily snapshot of each account's health in Salesforce (`Health_Snapshot__c`), for reports over time.

The Account fields hold only the latest score; Salesforce users who want "health over the quarter" in a report
or a dashboard need a row per account and day. With `HEALTHBEAT_SALESFORCE_SNAPSHOTS=on` the worker keeps one.

Through the outbox, like the Account write-back (`worker.delivery.writeback`): planning queues one row per
scored account, once a day and only after that day's whole re-score (ages and windows move with the date, so
the first scoring of a day scores every account: `worker.store.changes`), and records the day in the same
transaction, so a crash before the commit plans the day again and one after it never plans it twice. Pushing
sends the rows 200 to a call with sObject Collections upserted on the external id `Snapshot_Key__c`
(the account's Id and the day), `allOrNone: false`, marking rows in flight first. A row found in flight after
a crash is simply sent again: the external id makes the second write an update of the row the first created,
never a duplicate.

Salesforce answers each record on its own: a record it refused stays owed, with its error, and is tried again
next cycle until `MAX_ATTEMPTS`; one whose account was deleted meanwhile is dropped. A call refused for the
daily API limit (or too many concurrent requests) wrote nothing: its rows wait for the next cycle, as do all
rows when the cycle already reached Salesforce's daily limit or Healthbeat's share of it
(`HEALTHBEAT_SALESFORCE_API_SHARE`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final

from connectors.salesforce.client import (
    COLLECTION_LIMIT,
    SalesforceBusy,
    SalesforceClient,
    SalesforceError,
    SalesforceLimitError,
    SalesforceQueryError,
    SalesforceUnavailable,
)
from worker.config import Settings
from worker.store import Store, iso, outbox

__all__ = ["FIELDS", "KEY_FIELD", "KIND", "MAX_ATTEMPTS", "OBJECT", "SnapshotReport", "plan_snapshots",
           "push_snapshots", "snapshot_key"]

log = logging.getLogger(__name__)

OBJECT: Final = "Health_Snapshot__c"
KEY_FIELD: Final = "Snapshot_Key__c"
KIND: Final = "salesforce_snapshot"
"""The outbox kind of a snapshot row (the Account write-back's is `salesforce`)."""
MAX_ATTEMPTS: Final = 5
FIELDS: Final[dict[str, str]] = {
    "account": "Account__c", "day": "Date__c", "score": "Score__c", "band": "Band__c",
    "churn_risk": "Churn_Risk__c", "expansion_readiness": "Expansion_Readiness__c", "confidence": "Confidence__c",
}
"""What a snapshot holds → its field on `Health_Snapshot__c` (besides the external id, `KEY_FIELD`)."""
_PLANNED_DAY = "salesforce.snapshots.day"
_FULL_RESCORE = "scoring.full_rescore"  # `worker.store.changes.record_full_rescore` keeps the day it last ran


@dataclass
class SnapshotReport:
    planned: int = 0
    """Rows queued by this push: one per scored account on the first push after the day's whole re-score."""
    sent: int = 0
    created: int = 0
    failed: int = 0
    calls: int = 0
    waiting: int = 0
    """Rows still owed when the push ended (refused, or not sent because a limit was reached)."""
    skipped: str | None = None
    """Why nothing was sent (off, dry run, the daily limit, the object missing), or None."""
    errors: list[str] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str, n: int = 1) -> None:
        if n:
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + n


def snapshot_key(account_id: str, day: date | str) -> str:
    """The external id of an account's snapshot of a day: at most 29 characters (the field holds 40)."""
    return f"{account_id}:{day if isinstance(day, str) else day.isoformat()}"


def _rescored_day(store: Store) -> str | None:
    """The day of the last whole re-score, as the scoring stage recorded it."""
    raw = store.cursor(_FULL_RESCORE)
    try:
        day = json.loads(raw).get("day") if raw else None
    except (ValueError, AttributeError):
        return None
    return day if isinstance(day, str) else None


def _number(value: Any) -> float | None:
    return round(float(value), 2) if isinstance(value, int | float) and not isinstance(value, bool) else None


def plan_snapshots(store: Store, now: datetime) -> int:
    """Queue the snapshot of every scored account for the day of the last whole re-score, once per day.

    The day is the re-score's, not the clock's: a cycle that scored at 23:59 and writes back after midnight
    still snapshots the day it scored, and a new day is snapshotted only once it has been re-scored whole.
    Returns the rows queued (0 when that day is planned already)."""
    day = _rescored_day(store)
    planned = store.cursor(_PLANNED_DAY)
    if day is None or (planned is not None and day <= planned):
        return 0
    rows = []
    for score in store.query("SELECT s.account_id, s.score, s.band, s.churn_risk, s.expansion_readiness, "
                             "s.confidence FROM scores s JOIN accounts a ON a.id = s.account_id "
                             "WHERE a.is_deleted = 0 ORDER BY s.account_id"):
        key = snapshot_key(score["account_id"], day)
        values = {FIELDS["account"]: score["account_id"], FIELDS["day"]: day,
                  FIELDS["score"]: _number(score["score"]), FIELDS["band"]: score["band"],
                  FIELDS["churn_risk"]: _number(score["churn_risk"]),
                  FIELDS["expansion_readiness"]: _number(score["expansion_readiness"]),
                  FIELDS["confidence"]: score["confidence"], KEY_FIELD: key}
        rows.append({"dedup_key": f"snapshot:{key}", "kind": KIND, "account_id": score["account_id"],
                     "payload": json.dumps(values, sort_keys=True), "status": "pending", "attempts": 0,
                     "last_error": None, "remote_ref": None, "created_at": iso(now), "sent_at": None})
    with store.transaction():
        outbox.owe(store, rows)
        store.save_cursor(_PLANNED_DAY, day, len(rows), now)
    log.info("snapshots: %d accounts' health of %s queued for %s", len(rows), day, OBJECT)
    return len(rows)


def push_snapshots(store: Store, client: SalesforceClient, now: datetime, settings: Settings, *,
                   limited: bool = False, dry_run: bool = False) -> SnapshotReport:
    """Plan the day's snapshots when due and send what the outbox owes `Health_Snapshot__c`.

    Nothing at all unless `HEALTHBEAT_SALESFORCE_SNAPSHOTS` is on. `limited`: the cycle reached Salesforce's
    daily API limit already, so the rows are planned and wait. A dry run changes nothing and sends nothing."""
    report = SnapshotReport()
    if not settings.salesforce_snapshots:
        report.skipped = "off"
        return report
    if dry_run:
        report.skipped = "dry run"
        report.waiting = len(_owed(store))
        log.info("dry run: %d snapshot rows owed to %s would be sent", report.waiting, OBJECT)
        return report
    report.planned = plan_snapshots(store, now)
    rows = _owed(store)
    if rows and limited:
        report.skipped = "daily_limit"
        log.warning("snapshots: Salesforce's daily API limit was reached in this cycle; %d snapshot rows wait for "
                    "the next cycle", len(rows))
    elif rows:
        _Push(store, client, now, settings.salesforce_api_share, report).run(rows)
    report.waiting = len(_owed(store))
    return report


def _owed(store: Store) -> list[dict[str, Any]]:
    """Rows to send: pending or refused ones still within their attempts, and any left in flight by a crash
    (sent again: the external id turns a repeat into an update)."""
    return store.query("SELECT id, account_id, payload, attempts, status FROM outbox WHERE kind = ? AND "
                       "(status = 'inflight' OR (status IN ('pending', 'failed') AND attempts < ?)) ORDER BY id",
                       (KIND, MAX_ATTEMPTS))


@dataclass
class _Push:
    store: Store
    client: SalesforceClient
    now: datetime
    api_share: float
    report: SnapshotReport

    def run(self, rows: Sequence[dict[str, Any]]) -> None:
        if not self._object_exists():
            return
        for start in range(0, len(rows), COLLECTION_LIMIT):
            if self._over_share():
                return
            batch = rows[start:start + COLLECTION_LIMIT]
            with self.store.transaction() as conn:
                outbox.take(conn, [r["id"] for r in batch])
            if not self._send(batch):
                return

    def _object_exists(self) -> bool:
        try:
            self.client.describe_fields(OBJECT)
        except SalesforceQueryError as exc:
            self.report.skipped = "missing object"
            self.report.errors.append(f"{OBJECT} does not exist in Salesforce or the integration user cannot see it "
                                      f"({exc}): deploy it with `healthbeat salesforce fields --package DIR`, or set "
                                      "HEALTHBEAT_SALESFORCE_SNAPSHOTS=off")
            log.error("snapshots: %s", self.report.errors[-1])
            return False
        return True

    def _over_share(self) -> bool:
        usage = self.client.api_usage
        share = usage.share if usage is not None else None
        if share is not None and share >= self.api_share:
            self.report.skipped = "api_share"
            log.warning("snapshots: this org has used %.0f%% of its daily API requests, at or above "
                        "HEALTHBEAT_SALESFORCE_API_SHARE=%.0f%%; the snapshots wait for the next cycle",
                        share * 100, self.api_share * 100)
            return True
        return False

    def _send(self, batch: Sequence[dict[str, Any]]) -> bool:
        """One call for rows in flight; False when the push must stop."""
        ids = [r["id"] for r in batch]
        try:
            outcomes = self.client.upsert_records(OBJECT, KEY_FIELD, [json.loads(r["payload"]) for r in batch])
        except (SalesforceLimitError, SalesforceBusy) as exc:
            # A definite refusal: nothing was written. The rows wait, their attempt uncounted.
            with self.store.transaction() as conn:
                outbox.give_back(conn, ids)
            kind = "daily_limit" if isinstance(exc, SalesforceLimitError) else "busy"
            self.report.count(kind)
            self.report.skipped = kind
            log.warning("snapshots: %s; %d snapshot rows wait for the next cycle", exc, len(batch))
            return False
        except SalesforceUnavailable as exc:
            # Unknown outcome: the rows stay in flight and are sent again next cycle (an update if they landed).
            self.report.count("unavailable")
            self.report.errors.append(str(exc))
            log.error("snapshots: %s; %d snapshot rows are sent again next cycle", exc, len(batch))
            return False
        except SalesforceError as exc:
            # Salesforce refused the whole call (a field it does not know, say): counted against the rows' attempts.
            with self.store.transaction() as conn:
                for row in batch:
                    dead = row["attempts"] + 1 >= MAX_ATTEMPTS
                    outbox.settle(conn, [row["id"]], "dead" if dead else "failed", self.now, error=str(exc))
            self.report.count("other", len(batch))
            self.report.failed += len(batch)
            self.report.errors.append(str(exc))
            log.error("snapshots: %s", exc)
            return False
        self.report.calls += 1
        refused = []
        with self.store.transaction() as conn:
            for row, outcome in zip(batch, outcomes, strict=True):
                if outcome.success:
                    outbox.settle(conn, [row["id"]], "sent", self.now, remote_ref=outcome.record_id)
                    self.report.sent += 1
                    self.report.created += outcome.created
                    continue
                error = "; ".join(outcome.errors)
                if any(e.startswith("ENTITY_IS_DELETED") for e in outcome.errors):
                    outbox.settle(conn, [row["id"]], "superseded", self.now, error=error)  # the account is gone
                    self.report.count("deleted")
                    continue
                dead = row["attempts"] + 1 >= MAX_ATTEMPTS
                outbox.settle(conn, [row["id"]], "dead" if dead else "failed", self.now, error=error)
                self.report.failed += 1
                self.report.count("locked" if error.startswith("UNABLE_TO_LOCK_ROW") else "other")
                refused.append(f"{row['account_id']}: {error}")
        self.report.errors += refused
        for line in refused[:10]:
            log.warning("snapshot refused (tried again next cycle): %s", line)
        if len(refused) > 10:
            log.warning("snapshots: %d more refused", len(refused) - 10)
        return True
