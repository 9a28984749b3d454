"""Writing scores back to the Salesforce Account, in bulk, only where the written values changed.

Through the outbox, like nudges: planning diffs each account's fields against what was last confirmed
written (numbers normalised, so 71 and 71.0 are equal; the update time left out of the diff) and queues one
row per changed account in one transaction. Pushing sends them 200 to a call (`PATCH composite/sobjects`,
`allOrNone: false`), marking rows in flight first. A row found in flight after a crash is checked against
what Salesforce now holds before anything is sent again, so no score is written twice; a record that
Salesforce refused is kept with its error and only it is retried.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.salesforce.client import SalesforceClient, SalesforceError, SalesforceLimitError
from worker.store import Store, changes, iso, outbox

log = logging.getLogger(__name__)

BATCH = 200
MAX_ATTEMPTS = 5

# score column -> Salesforce field (names are configurable per org; these are the documented defaults)
DEFAULT_FIELDS: dict[str, str] = {
    "score": "Health_Score__c", "band": "Health_Band__c", "trend": "Health_Trend__c",
    "reason": "Health_Reason__c", "updated": "Health_Updated__c", "churn_risk": "Churn_Risk__c",
    "expansion_readiness": "Expansion_Readiness__c", "confidence": "Health_Confidence__c",
}
_TEXT_LIMITS = {"band": 40, "trend": 40, "confidence": 40, "reason": 1000}
_NOT_DIFFED = {"updated"}


@dataclass
class WritebackReport:
    planned: int = 0
    sent: int = 0
    failed: int = 0
    confirmed_after_crash: int = 0
    calls: int = 0
    errors: list[str] = field(default_factory=list)
    missing_fields: list[str] = field(default_factory=list)


def _truncate(text: str, limit: int) -> str:
    """Cut at a word boundary with an ellipsis, so a CSM never reads half a word in Salesforce."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(";,. ")
    return cut + "…"


def field_values(score: dict[str, Any]) -> dict[str, Any]:
    """The values we write, normalised so that equal meanings compare equal."""
    values: dict[str, Any] = {}
    for key in DEFAULT_FIELDS:
        if key == "updated":
            values[key] = score["scored_at"]
            continue
        value = score.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = round(float(value), 2)
        elif isinstance(value, str) and key in _TEXT_LIMITS:
            value = _truncate(value, _TEXT_LIMITS[key])
        values[key] = value
    return values


def _digest(values: dict[str, Any]) -> str:
    diffed = {k: v for k, v in values.items() if k not in _NOT_DIFFED}
    return hashlib.sha256(json.dumps(diffed, sort_keys=True).encode()).hexdigest()[:16]


def plan_writeback(store: Store, now: datetime) -> int:
    """Queue a write for every account whose values differ from the last confirmed write.

    Only the accounts whose score rows changed since the last plan can differ (the store marks them), so a
    quiet cycle reads nothing; the marks are cleared with the queued rows."""
    due = changes.pending(store, changes.WRITEBACK, now)
    accounts = (json.dumps(sorted(due.accounts)),)
    last = {r["account_id"]: r["fields"] for r in store.query(
        "SELECT account_id, fields FROM writeback_state WHERE account_id IN (SELECT value FROM json_each(?))",
        accounts)}
    queued = {r["account_id"]: r["dedup_key"] for r in store.query(
        "SELECT account_id, dedup_key FROM outbox WHERE kind = 'salesforce' "
        "AND status IN ('pending', 'inflight', 'failed') AND account_id IN (SELECT value FROM json_each(?))",
        accounts)}
    rows, superseded = [], []
    for score in store.query("SELECT * FROM scores WHERE account_id IN (SELECT value FROM json_each(?)) "
                             "ORDER BY account_id", accounts):
        values = field_values(score)
        digest = _digest(values)
        account_id = score["account_id"]
        if last.get(account_id) == digest:
            if account_id in queued:
                superseded.append(queued[account_id])
            continue
        key = f"writeback:{account_id}:{digest}"
        if queued.get(account_id) == key:
            continue
        if account_id in queued:
            superseded.append(queued[account_id])
        rows.append({"dedup_key": key, "kind": "salesforce", "account_id": account_id,
                     "payload": json.dumps({"values": values, "digest": digest}, sort_keys=True),
                     "status": "pending", "attempts": 0, "last_error": None, "remote_ref": None,
                     "created_at": iso(now), "sent_at": None})
    with store.transaction() as conn:
        outbox.supersede(conn, superseded)
        outbox.owe(store, rows)
        changes.clear(conn, due)
    return len(rows)


def _record(account_id: str, values: dict[str, Any], available: set[str]) -> dict[str, Any]:
    record: dict[str, Any] = {"Id": account_id}
    for key, name in DEFAULT_FIELDS.items():
        if name in available:
            record[name] = values[key]
    return record


def _chunks(rows: Sequence[dict[str, Any]], size: int) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def push_scores(store: Store, client: SalesforceClient, now: datetime, *, dry_run: bool = False
                ) -> WritebackReport:
    report = WritebackReport()
    available = set(client.describe_fields("Account"))
    report.missing_fields = [name for name in DEFAULT_FIELDS.values() if name not in available]
    if report.missing_fields:
        log.error("writeback: Account lacks the fields %s; create them (see README, 'Salesforce fields') "
                  "- the other fields are still written", ", ".join(report.missing_fields))
    if "Health_Score__c" not in available:
        report.errors.append("Health_Score__c does not exist on Account: nothing written")
        return report
    _confirm_inflight(store, client, available, report, now)
    rows = store.query("SELECT id, account_id, payload, attempts FROM outbox WHERE kind = 'salesforce' "
                       "AND status IN ('pending', 'failed') AND attempts < ? ORDER BY id", (MAX_ATTEMPTS,))
    report.planned = len(rows)
    if dry_run:
        for row in rows:
            log.info("dry run: would write %s", _record(row["account_id"], json.loads(row["payload"])["values"],
                                                         available))
        return report
    for batch in _chunks(rows, BATCH):
        with store.transaction() as conn:
            outbox.take(conn, [r["id"] for r in batch])
        records = [_record(r["account_id"], json.loads(r["payload"])["values"], available) for r in batch]
        try:
            results = client.update_records("Account", records)
        except SalesforceLimitError as exc:
            # A definite refusal, not an unknown outcome: nothing was written; try again next cycle.
            with store.transaction() as conn:
                outbox.give_back(conn, [r["id"] for r in batch])
            report.errors.append(str(exc))
            log.error("writeback: %s; %d accounts wait for the next cycle", exc, len(batch))
            break
        except SalesforceError as exc:
            # Unknown outcome: the rows stay in flight and are checked against Salesforce next time.
            report.errors.append(str(exc))
            log.error("writeback: %s; %d accounts will be checked and retried next cycle", exc, len(batch))
            break
        report.calls += (len(records) + BATCH - 1) // BATCH
        with store.transaction() as conn:
            for row, result in zip(batch, results, strict=True):
                if result.success:
                    _confirm(conn, row, now)
                    report.sent += 1
                else:
                    error = "; ".join(result.errors)
                    dead = row["attempts"] + 1 >= MAX_ATTEMPTS
                    outbox.settle(conn, [row["id"]], "dead" if dead else "failed", now, error=error)
                    report.failed += 1
                    report.errors.append(f"{row['account_id']}: {error}")
    for error in report.errors[:10]:
        log.warning("writeback error: %s", error)
    return report


def _confirm(conn: Any, row: dict[str, Any], now: datetime) -> None:
    payload = json.loads(row["payload"])
    outbox.settle(conn, [row["id"]], "sent", now)
    conn.execute("INSERT INTO writeback_state (account_id, fields, written_at) VALUES (?, ?, ?) "
                 "ON CONFLICT (account_id) DO UPDATE SET fields = excluded.fields, "
                 "written_at = excluded.written_at", (row["account_id"], payload["digest"], iso(now)))


def _confirm_inflight(store: Store, client: SalesforceClient, available: set[str],
                      report: WritebackReport, now: datetime) -> None:
    """After a crash mid-push: what Salesforce already holds is confirmed, the rest goes back to pending."""
    rows = store.query("SELECT id, account_id, payload, attempts FROM outbox "
                       "WHERE kind = 'salesforce' AND status = 'inflight' ORDER BY id")
    if not rows:
        return
    compared = [name for key, name in DEFAULT_FIELDS.items() if name in available and key not in _NOT_DIFFED]
    held: dict[str, dict[str, Any]] = {}
    for batch in _chunks(rows, BATCH):
        ids = ", ".join(f"'{r['account_id']}'" for r in batch)
        for record in client.query(f"SELECT Id, {', '.join(compared)} FROM Account WHERE Id IN ({ids})"):
            held[record["Id"]] = record
    with store.transaction() as conn:
        for row in rows:
            values = json.loads(row["payload"])["values"]
            wanted = _record(row["account_id"], values, set(compared))
            current = held.get(row["account_id"], {})
            if all(_same(current.get(name), value) for name, value in wanted.items() if name != "Id"):
                _confirm(conn, row, now)
                report.confirmed_after_crash += 1
            else:
                # Not there: send it again, unless newer values for the account are already queued.
                newer = conn.execute("SELECT 1 FROM outbox WHERE kind = 'salesforce' AND account_id = ? AND id > ? "
                                     "AND status IN ('pending', 'failed')", (row["account_id"], row["id"])).fetchone()
                outbox.requeue(conn, row["id"], superseded=newer is not None)


def _same(held: Any, wanted: Any) -> bool:
    if isinstance(wanted, float) and isinstance(held, int | float):
        return round(float(held), 2) == wanted
    return bool(held == wanted)
