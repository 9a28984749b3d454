"""Writing scores back to the Salesforce Account, in bulk, only where the written values changed.

Through the outbox, like nudges: planning diffs each account's fields against what was last confirmed
written (numbers normalised, so 71 and 71.0 are equal; the update time left out of the diff) and queues one
row per changed account in one transaction. Pushing sends them 200 to a call (`PATCH composite/sobjects`,
`allOrNone: false`), marking rows in flight first. A row found in flight after a crash is checked against
what Salesforce now holds before anything is sent again, so no score is written twice.

Only the fields that exist and that the integration user may edit are written (describe's `updateable`:
field-level security can make a field read-only for that user alone, and one such field in an update fails
every record). Each confirmed write keeps the fields it left out, so that once one of them can be written (an
admin created it, or granted Edit on it) the accounts written without it are written again, though their
scores did not change.

Salesforce answers each record of a call on its own, and the answer decides what becomes of its row:

- `UNABLE_TO_LOCK_ROW` (another process held the record past Salesforce's lock wait): tried again within the
  push after a short back-off, then left for the next cycle;
- `FIELD_CUSTOM_VALIDATION_EXCEPTION` (one of the org's validation rules refused the update): parked for a
  day, its attempt uncounted, because only an admin (exempting the integration user from the rule) or the
  record's own data can cure it, and neither shows here; new values for the account supersede it at once;
- `ENTITY_IS_DELETED` (the account was deleted since it was scored): dropped, never tried again;
- anything else: kept with its error and tried again next cycle, until `MAX_ATTEMPTS`.

A whole call refused for the daily API limit, or because too many requests run in the org (once the client's
own retries gave up), wrote nothing: its rows go back to the queue and the push stops for this cycle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from connectors.salesforce.client import (
    SalesforceBusy,
    SalesforceClient,
    SalesforceError,
    SalesforceLimitError,
    WriteResult,
)
from worker.store import Store, changes, iso, outbox

log = logging.getLogger(__name__)

BATCH = 200
MAX_ATTEMPTS = 5
LOCK_BACKOFF: Final = (0.5, 1.0, 2.0)
"""Seconds to wait before each retry of the records Salesforce found locked, within one push: a lock is
another transaction on the record (a trigger, another integration) that usually ends within seconds."""
VALIDATION_RETRY: Final = timedelta(days=1)
"""How long a write refused by an org's validation rule waits before the same values are tried again."""
ERROR_KINDS: Final = ("locked", "validation", "deleted", "other", "daily_limit", "busy", "unavailable")
"""How Salesforce's refusals are counted (`WritebackReport.error_kinds`, the `kind` label in `/metrics`). Per
record: `locked` (still, after the retries), `validation`, `deleted`, `other`. Per call: `daily_limit`, `busy`
(too many concurrent requests in the org) and `unavailable` (no answer: its rows are checked next cycle)."""

# score column -> Salesforce field (names are configurable per org; these are the documented defaults)
DEFAULT_FIELDS: dict[str, str] = {
    "score": "Health_Score__c", "band": "Health_Band__c", "trend": "Health_Trend__c",
    "reason": "Health_Reason__c", "updated": "Health_Updated__c", "churn_risk": "Churn_Risk__c",
    "expansion_readiness": "Expansion_Readiness__c", "confidence": "Health_Confidence__c",
}
_TEXT_LIMITS = {"band": 40, "trend": 40, "confidence": 40, "reason": 1000}
_NOT_DIFFED = {"updated"}
_LEFT_OUT = " -"  # in `writeback_state.fields`: "<digest>", or "<digest> -<field>,<field>" for what was left out
_LEFT_OUT_CURSOR = "writeback.left_out_fields"
_REFUSED_FIELD_CODES = frozenset({"INVALID_FIELD_FOR_INSERT_UPDATE", "INVALID_FIELD"})

Row = dict[str, Any]


@dataclass
class WritebackReport:
    planned: int = 0
    sent: int = 0
    failed: int = 0
    confirmed_after_crash: int = 0
    calls: int = 0
    errors: list[str] = field(default_factory=list)
    missing_fields: list[str] = field(default_factory=list)
    read_only_fields: list[str] = field(default_factory=list)
    """Fields that exist but that the integration user may not edit (field-level security): not written."""
    rewritten: int = 0
    """Accounts queued again because a field their last write left out can be written now."""
    error_kinds: dict[str, int] = field(default_factory=dict)
    """Salesforce's refusals by kind (see `ERROR_KINDS`): records, or calls for the kinds that refuse a call."""

    def count(self, kind: str, n: int = 1) -> None:
        if n:
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + n


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


def _confirmed_digest(stored: str | None) -> str | None:
    """The values of the last confirmed write, whatever fields it left out (those are `_queue_newly_writable`'s)."""
    return stored.split(_LEFT_OUT, 1)[0] if stored else None


def _left_out(stored: str) -> set[str]:
    _, marker, names = stored.partition(_LEFT_OUT)
    return set(names.split(",")) if marker else set()


def _outbox_row(account_id: str, values: dict[str, Any], digest: str, key: str, now: datetime) -> Row:
    return {"dedup_key": key, "kind": "salesforce", "account_id": account_id,
            "payload": json.dumps({"values": values, "digest": digest}, sort_keys=True),
            "status": "pending", "attempts": 0, "last_error": None, "remote_ref": None,
            "created_at": iso(now), "sent_at": None}


def plan_writeback(store: Store, now: datetime) -> int:
    """Queue a write for every account whose values differ from the last confirmed write.

    Only the accounts whose score rows changed since the last plan can differ (the store marks them), so a
    quiet cycle reads nothing; the marks are cleared with the queued rows."""
    due = changes.pending(store, changes.WRITEBACK, now)
    accounts = (json.dumps(sorted(due.accounts)),)
    last = {r["account_id"]: _confirmed_digest(r["fields"]) for r in store.query(
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
            # Confirmed already: a row still queued holds older values, unless it holds these very values, queued
            # again to write the fields their write left out (`_queue_newly_writable`).
            if account_id in queued and not queued[account_id].startswith(f"writeback:{account_id}:{digest}:"):
                superseded.append(queued[account_id])
            continue
        key = f"writeback:{account_id}:{digest}"
        if queued.get(account_id) == key:
            continue
        if account_id in queued:
            superseded.append(queued[account_id])
        rows.append(_outbox_row(account_id, values, digest, key, now))
    with store.transaction() as conn:
        outbox.supersede(conn, superseded)
        outbox.owe(store, rows)
        changes.clear(conn, due)
    return len(rows)


def _record(account_id: str, values: dict[str, Any], written: Collection[str]) -> dict[str, Any]:
    record: dict[str, Any] = {"Id": account_id}
    for key, name in DEFAULT_FIELDS.items():
        if name in written:
            record[name] = values[key]
    return record


def _chunks(rows: Sequence[Row], size: int) -> Iterator[Sequence[Row]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def push_scores(store: Store, client: SalesforceClient, now: datetime, *, dry_run: bool = False,
                sleep: Callable[[float], None] = time.sleep) -> WritebackReport:
    """Send what the outbox owes Salesforce, in the fields the integration user may write.

    `sleep` is the wait before each retry of locked records (`LOCK_BACKOFF`); a test passes one that does not
    wait."""
    report = WritebackReport()
    written = _writable_fields(client, report)
    if written is None:
        return report
    left_out = tuple(name for name in DEFAULT_FIELDS.values() if name not in written)
    _confirm_inflight(store, client, written, left_out, report, now)
    report.rewritten = _queue_newly_writable(store, left_out, now)
    rows = store.query("SELECT id, account_id, payload, attempts FROM outbox WHERE kind = 'salesforce' "
                       "AND status IN ('pending', 'failed') AND attempts < ? "
                       "AND (not_before IS NULL OR not_before <= ?) ORDER BY id", (MAX_ATTEMPTS, iso(now)))
    report.planned = len(rows)
    if dry_run:
        for row in rows:
            log.info("dry run: would write %s", _record(row["account_id"], _values(row), written))
        return report
    _Push(store, client, now, report, written, left_out).run(rows, sleep)
    return report


def _writable_fields(client: SalesforceClient, report: WritebackReport) -> frozenset[str] | None:
    """The Account fields this push writes: those that exist and that the integration user may edit; None when
    the score itself cannot be written, and then nothing is."""
    available = set(client.describe_fields("Account"))
    editable = client.updateable_fields("Account")
    report.missing_fields = [name for name in DEFAULT_FIELDS.values() if name not in available]
    report.read_only_fields = [name for name in DEFAULT_FIELDS.values() if name in available and name not in editable]
    if report.missing_fields:
        log.error("writeback: Account lacks the fields %s; create them (see README, 'Salesforce fields') "
                  "- the other fields are still written", ", ".join(report.missing_fields))
    if report.read_only_fields:
        log.error("writeback: the integration user may read but not edit the Account fields %s (field-level "
                  "security), so they are not written; grant Edit on them in the integration user's permission "
                  "set (`healthbeat salesforce fields --package DIR` writes one that does) - the other fields are "
                  "still written, and these follow once they can be", ", ".join(report.read_only_fields))
    score = DEFAULT_FIELDS["score"]
    if score not in available:
        report.errors.append(f"{score} does not exist on Account: nothing written")
        return None
    if score not in editable:
        report.errors.append(f"{score} is read-only for the integration user (field-level security): nothing "
                             "written; grant Edit on it in the integration user's permission set")
        return None
    return frozenset(name for name in DEFAULT_FIELDS.values() if name in available and name in editable)


def _queue_newly_writable(store: Store, left_out: Sequence[str], now: datetime) -> int:
    """Queue again the accounts whose last confirmed write left out a field that can be written now.

    Planning looks only at accounts whose scores changed, and a score may not change for weeks: without this,
    a field an admin created or granted Edit on would stay empty that long. The fields left out at the last
    push are kept as a cursor, so the confirmed writes are searched only when one of those can be written now
    (and once the first time)."""
    before = store.cursor(_LEFT_OUT_CURSOR)
    now_left_out = set(left_out)
    if before is not None and set(json.loads(before)) <= now_left_out:
        if set(json.loads(before)) != now_left_out:
            with store.transaction():
                store.save_cursor(_LEFT_OUT_CURSOR, json.dumps(sorted(now_left_out)), 0, now)
        return 0
    rows = []
    for score in store.query(
            "SELECT s.*, w.fields AS confirmed_fields, w.written_at AS confirmed_at FROM writeback_state w "
            "JOIN scores s ON s.account_id = w.account_id WHERE instr(w.fields, ?) > 0 AND NOT EXISTS ("
            "SELECT 1 FROM outbox o WHERE o.kind = 'salesforce' AND o.account_id = w.account_id "
            "AND o.status IN ('pending', 'inflight', 'failed')) ORDER BY s.account_id", (_LEFT_OUT,)):
        if not _left_out(score["confirmed_fields"]) - now_left_out:
            continue
        values = field_values(score)
        digest = _digest(values)
        # The key names the write it completes: queued once for it, whatever later pushes find.
        key = f"writeback:{score['account_id']}:{digest}:after:{score['confirmed_at']}"
        rows.append(_outbox_row(score["account_id"], values, digest, key, now))
    with store.transaction() as conn:
        before_owing = conn.total_changes
        outbox.owe(store, rows)
        queued = conn.total_changes - before_owing  # a row queued for the same write before is not queued again
        store.save_cursor(_LEFT_OUT_CURSOR, json.dumps(sorted(now_left_out)), 0, now)
    if queued:
        log.info("writeback: %d accounts are written again: their last write left out fields that can be written "
                 "now", queued)
    return queued


def _values(row: Row) -> dict[str, Any]:
    values: dict[str, Any] = json.loads(row["payload"])["values"]
    return values


def _kind(errors: Sequence[str]) -> str:
    """The kind of a record's refusal (see `ERROR_KINDS`), from its errors' status codes."""
    codes = {error.partition(":")[0].strip() for error in errors}
    if "ENTITY_IS_DELETED" in codes:
        return "deleted"
    if codes == {"UNABLE_TO_LOCK_ROW"}:
        return "locked"
    if codes == {"FIELD_CUSTOM_VALIDATION_EXCEPTION"}:
        return "validation"
    return "other"


@dataclass
class _Push:
    """One push: the calls, what each record's answer makes of its row, and the retries of locked records."""

    store: Store
    client: SalesforceClient
    now: datetime
    report: WritebackReport
    written: frozenset[str]
    left_out: tuple[str, ...]
    locked: list[tuple[Row, str]] = field(default_factory=list)  # in flight, to try again after a wait
    stopped: bool = False
    retries: int = 0
    deleted: list[str] = field(default_factory=list)
    rejected: dict[str, list[str]] = field(default_factory=dict)  # a validation rule's message -> accounts
    refused: list[str] = field(default_factory=list)  # "account: errors" of the refusals with no handling of their own
    fields_refused: bool = False

    def run(self, rows: Sequence[Row], sleep: Callable[[float], None]) -> None:
        for batch in _chunks(rows, BATCH):
            with self.store.transaction() as conn:
                outbox.take(conn, [r["id"] for r in batch])
            self._send(batch)
            if self.stopped:
                break
        for delay in LOCK_BACKOFF:
            if self.stopped or not self.locked:
                break
            sleep(delay)
            self.retries += 1
            waiting, self.locked = self.locked, []
            for start in range(0, len(waiting), BATCH):
                self._send([row for row, _ in waiting[start:start + BATCH]])
                if self.stopped:
                    self.locked += waiting[start + BATCH:]
                    break
        self._leave_locked()
        self._tell()

    def _send(self, batch: Sequence[Row]) -> None:
        """One call for rows already in flight, and what became of each."""
        records = [_record(r["account_id"], _values(r), self.written) for r in batch]
        try:
            results = self.client.update_records("Account", records)
        except SalesforceLimitError as exc:
            # A definite refusal, not an unknown outcome: nothing was written; try again next cycle.
            self._give_back(batch, "daily_limit")
            self.report.errors.append(str(exc))
            log.error("writeback: %s; %d accounts wait for the next cycle", exc, len(batch))
            return
        except SalesforceBusy as exc:
            # Also a definite refusal, and a passing one (the org runs too many requests at once), not an
            # outage: the client backed off already; the next cycle tries again.
            self._give_back(batch, "busy")
            log.warning("writeback: Salesforce is busy (%s), a transient condition; %d accounts wait for the next "
                        "cycle", exc, len(batch))
            return
        except SalesforceError as exc:
            # Unknown outcome: the rows stay in flight and are checked against Salesforce next time.
            self.stopped = True
            self.report.count("unavailable")
            self.report.errors.append(str(exc))
            log.error("writeback: %s; %d accounts will be checked and retried next cycle", exc, len(batch))
            return
        self.report.calls += (len(records) + BATCH - 1) // BATCH
        with self.store.transaction() as conn:
            for row, result in zip(batch, results, strict=True):
                self._settle(conn, row, result)

    def _give_back(self, batch: Sequence[Row], kind: str) -> None:
        with self.store.transaction() as conn:
            outbox.give_back(conn, [r["id"] for r in batch])
        self.stopped = True
        self.report.count(kind)

    def _settle(self, conn: Any, row: Row, result: WriteResult) -> None:
        if result.success:
            _confirm(conn, row, self.now, self.left_out)
            self.report.sent += 1
            return
        error = "; ".join(result.errors)
        kind = _kind(result.errors)
        if kind == "locked":
            self.locked.append((row, error))  # still in flight: a crash before the retry is checked as ever
            return
        self.report.count(kind)
        if kind == "deleted":
            outbox.settle(conn, [row["id"]], "superseded", self.now, error=error)
            self.deleted.append(row["account_id"])
            return
        self.report.failed += 1
        if kind == "validation":
            outbox.park(conn, [row["id"]], self.now + VALIDATION_RETRY, error=error)
            for message in result.errors:
                self.rejected.setdefault(message.partition(":")[2].strip(), []).append(row["account_id"])
            return
        dead = row["attempts"] + 1 >= MAX_ATTEMPTS
        outbox.settle(conn, [row["id"]], "dead" if dead else "failed", self.now, error=error)
        self.report.errors.append(f"{row['account_id']}: {error}")
        self.refused.append(f"{row['account_id']}: {error}")
        if any(e.partition(":")[0].strip() in _REFUSED_FIELD_CODES for e in result.errors):
            self.fields_refused = True

    def _leave_locked(self) -> None:
        """Records still locked after the retries (or when the push stopped first): left for the next cycle."""
        if not self.locked:
            return
        with self.store.transaction() as conn:
            for row, error in self.locked:
                dead = row["attempts"] + 1 >= MAX_ATTEMPTS
                outbox.settle(conn, [row["id"]], "dead" if dead else "failed", self.now, error=error)
                if dead:
                    self.report.errors.append(f"{row['account_id']}: {error} (locked in {MAX_ATTEMPTS} cycles)")
        self.report.failed += len(self.locked)
        self.report.count("locked", len(self.locked))
        log.warning("writeback: %d accounts were locked by another process in Salesforce (UNABLE_TO_LOCK_ROW) "
                    "after %d retries; they are tried again next cycle: %s", len(self.locked), self.retries,
                    ", ".join(row["account_id"] for row, _ in self.locked[:10]))

    def _tell(self) -> None:
        """One line per kind of refusal that needs saying, however many records it hit."""
        if self.deleted:
            log.warning("writeback: %d accounts were deleted in Salesforce since they were scored (ENTITY_IS_DELETED); "
                        "their writes are dropped: %s", len(self.deleted), ", ".join(self.deleted[:10]))
        for message, accounts in self.rejected.items():
            self.report.errors.append(f"a validation rule on Account refused the update of {_some(accounts)}: "
                                      f"{message}")
            log.error("writeback: a validation rule on Account refused the update of %s: %r. Exempt the "
                      "integration user from the rule: add to its error condition formula a term such as "
                      "NOT($Permission.<a custom permission granted to that user>) or $User.Username <> '<its "
                      "username>'. These writes are tried again in a day, or as soon as their values change",
                      _some(accounts, 10), message)
        for error in self.refused[:10]:
            log.warning("writeback error: %s", error)
        if len(self.refused) > 10:
            log.warning("writeback: %d more accounts refused", len(self.refused) - 10)
        if self.fields_refused:
            # The describe is cached; a field made read-only since then fails every record until it is redone.
            self.client.forget_fields()
            log.warning("writeback: Salesforce refused a field its describe had offered; Account is described "
                        "afresh next time")


def _some(accounts: Sequence[str], shown: int = 3) -> str:
    more = len(accounts) - shown
    return ", ".join(accounts[:shown]) + (f" and {more} more" if more > 0 else "")


def _confirm(conn: Any, row: Row, now: datetime, left_out: Sequence[str]) -> None:
    payload = json.loads(row["payload"])
    stored = payload["digest"] + (_LEFT_OUT + ",".join(left_out) if left_out else "")
    outbox.settle(conn, [row["id"]], "sent", now)
    conn.execute("INSERT INTO writeback_state (account_id, fields, written_at) VALUES (?, ?, ?) "
                 "ON CONFLICT (account_id) DO UPDATE SET fields = excluded.fields, "
                 "written_at = excluded.written_at", (row["account_id"], stored, iso(now)))


def _confirm_inflight(store: Store, client: SalesforceClient, written: frozenset[str], left_out: Sequence[str],
                      report: WritebackReport, now: datetime) -> None:
    """After a crash mid-push: what Salesforce already holds is confirmed, the rest goes back to pending.

    Only the fields this push writes are compared: one that is read-only or missing now may or may not have
    been written then, so the confirmation says it was left out (and it is written once it can be)."""
    rows = store.query("SELECT id, account_id, payload, attempts FROM outbox "
                       "WHERE kind = 'salesforce' AND status = 'inflight' ORDER BY id")
    if not rows:
        return
    compared = [name for key, name in DEFAULT_FIELDS.items() if name in written and key not in _NOT_DIFFED]
    held: dict[str, dict[str, Any]] = {}
    for batch in _chunks(rows, BATCH):
        ids = ", ".join(f"'{r['account_id']}'" for r in batch)
        for record in client.query(f"SELECT Id, {', '.join(compared)} FROM Account WHERE Id IN ({ids})"):
            held[record["Id"]] = record
    with store.transaction() as conn:
        for row in rows:
            wanted = _record(row["account_id"], _values(row), compared)
            current = held.get(row["account_id"], {})
            if all(_same(current.get(name), value) for name, value in wanted.items() if name != "Id"):
                _confirm(conn, row, now, left_out)
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
