"""Salesforce streams: Users, Accounts, Opportunities, Events, Tasks, EmailMessages and Cases.

Each stream reads from its committed cursor (minus an overlap, with `>=`, since many records can share
one stamp), upserts each page by (source, source id) and moves the cursor in the same transaction, never
past the run's start. A stream that fails ends alone; the others still run.

A first read of an activity stream (Events, Tasks, EmailMessages, Cases) reaches back only the backfill
period (`HEALTHBEAT_SALESFORCE_BACKFILL`); Users, Accounts and Opportunities are read whole. A read that
Salesforce cannot answer in time (`QUERY_TIMEOUT`) goes on in windows of SystemModstamp (`worker.sync.cursor`); a first
read or a long catch-up of more records than `HEALTHBEAT_SALESFORCE_BULK_THRESHOLD` goes as a Bulk API 2.0 query job
(`worker.sync.salesforce_bulk`).
Records that are no activity of their own are left out here: invitees' copies of a meeting and the master of
a recurring series, open tasks, internal calls and dials that never connected. Once a day, Accounts and
Opportunities gone from Salesforce for good are marked deleted (`worker.sync.reconcile`).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import operator
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from connectors.salesforce.client import (
    ApiUsage,
    SalesforceAuthError,
    SalesforceClient,
    SalesforceError,
    SalesforceLimitError,
    SalesforceQueryTimeout,
)
from worker.errors import SyncAborted
from worker.store import Quarantined, Store, iso, parse_iso
from worker.sync import reconcile, salesforce_bulk
from worker.sync._paging import _chunks, _Prefetched
from worker.sync.cursor import MIN_WINDOW, ORIGIN, Cursor, narrower, wider
from worker.sync.report import MAX_TEXT, BudgetSpent, Row, StreamStats, SyncReport

log = logging.getLogger(__name__)

# Records stored (and the cursor moved) per transaction: ten of Salesforce's largest batches. Each commit
# of a backfill costs a WAL checkpoint, so fewer, larger commits spend less time in them: a backfill is
# faster with 20,000 than with 10,000, for some more memory in flight (measured: BENCHMARKS.md, 'Figures
# behind the code'). The budget is still checked after every batch (`_chunks`); at most four pages are held
# at once (one being stored, two queued, one being fetched).
PAGE = 20_000


@dataclass(frozen=True)
class SalesforceStream:
    """A stream declared by a few attributes: the object, its fields, and how a record becomes rows."""

    sobject: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    to_rows: Callable[[dict[str, Any]], list[tuple[str, Row]]]
    has_is_deleted: bool = True
    optional_object: bool = False
    activity: bool = False  # a first read reaches back only the backfill period (HEALTHBEAT_SALESFORCE_BACKFILL)

    def fields_in(self, available: Collection[str]) -> list[str]:
        """The fields a query asks for in an org that has `available`: every required one, and the optional
        ones it has. The stream and the side session asking for its first page ahead plan with this alike."""
        return [*self.required, *(f for f in self.optional if f in available)]


def _shown(value: Any) -> str:
    """A value in a quarantine reason: as Python writes it (escapes and all), cut short."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


_from_iso = datetime.fromisoformat


def _sf_time(value: Any) -> str | None:
    """Salesforce's `2024-01-01T00:00:00.000+0000` as the store's `2024-01-01T00:00:00Z`. Anything that is not a
    date-time Salesforce can hold (its years run from 1700 to 4000, as the Data Loader guide's 'Data Import Dates'
    says) is a ValueError: the record is quarantined rather than stored with a time that sorts wrong or that
    nothing can read back."""
    if not value:
        return None
    try:
        if len(value) == 28 and value.endswith(".000+0000") and value[7] == "-" and value[10] == "T":
            moment = _from_iso(value)  # the usual form (hot path): is there such a day, hour, minute...?
            if 1700 <= moment.year <= 4000:
                return f"{value[:19]}Z"
        else:
            moment = parse_iso(value.replace("+0000", "+00:00"))
    except (TypeError, AttributeError, ValueError):
        raise ValueError(f"not a date-time: {_shown(value)}") from None
    if not 1700 <= moment.year <= 4000:
        raise ValueError(f"not a date-time Salesforce can hold (years 1700 to 4000): {_shown(value)}")
    return iso(moment)


def _sf_id(value: Any) -> str:
    """A record's own Id keys its rows and ends up in the next query's cursor (`Id > '...'`): 15 or 18 letters and
    digits, as Salesforce makes them, or the record is quarantined."""
    if isinstance(value, str) and len(value) in (15, 18) and value.isalnum() and value.isascii():
        return value
    raise ValueError(f"Id is not a Salesforce record id: {_shown(value)}")


def _number(r: dict[str, Any], field: str) -> float | None:
    """A number field as a float (the columns are REAL; text that is not a number would reach the scorer's
    arithmetic). A number sent as text, as a field of the wrong type in an org would send it, is read."""
    value = r.get(field)
    if value is None:
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{field} is not a number: {_shown(value)}") from None


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}\Z")


def _day(r: dict[str, Any], field: str) -> str | None:
    """A Date field (`2024-05-01`): the scorer and the backtest read its first ten characters as a day."""
    value = r.get(field)
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, str) or not _DAY.match(value):  # Salesforce sends a Date as YYYY-MM-DD, only
            raise ValueError
        date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field} is not a date: {_shown(value)}") from None
    return value


def _deleted(record: dict[str, Any]) -> int:
    return 1 if record.get("IsDeleted") else 0


def _flag(r: dict[str, Any], field: str) -> bool | None:
    """A checkbox field: true, false, or absent (an org or a query without it)."""
    value = r.get(field)
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"{field} is not true or false: {_shown(value)}")


def _account_rows(r: dict[str, Any]) -> list[tuple[str, Row]]:
    name = r.get("Name")
    if not isinstance(name, str):
        raise ValueError(f"Name is not text: {_shown(name)}")
    return [("accounts", {
        "id": _sf_id(r.get("Id")), "name": name, "type": r.get("Type"), "industry": r.get("Industry"),
        "website": r.get("Website"), "owner_id": r.get("OwnerId"), "annual_revenue": _number(r, "AnnualRevenue"),
        "contracted_seats": _number(r, "Contracted_Seats__c"), "override_value": _number(r, "Health_Override__c"),
        "override_reason": r.get("Health_Override_Reason__c"),
        "override_until": _day(r, "Health_Override_Until__c"),
        "is_deleted": 1 if r.get("IsDeleted") or r.get("MasterRecordId") else 0,
        "merged_into": r.get("MasterRecordId"), "modstamp": _sf_time(r["SystemModstamp"])})]


def _user_rows(r: dict[str, Any]) -> list[tuple[str, Row]]:
    return [("users", {"source": "salesforce", "source_id": _sf_id(r.get("Id")), "name": r.get("Name"),
                       "email": r.get("Email"), "role": "owner", "timezone": r.get("TimeZoneSidKey"),
                       "is_active": 1 if r.get("IsActive", True) else 0,
                       "modstamp": _sf_time(r["SystemModstamp"])})]


def _opportunity_rows(r: dict[str, Any]) -> list[tuple[str, Row]]:
    return [("opportunities", {
        "id": _sf_id(r.get("Id")), "account_id": r.get("AccountId"), "name": r.get("Name"), "type": r.get("Type"),
        "stage": r.get("StageName"), "amount": _number(r, "Amount"), "close_date": _day(r, "CloseDate"),
        "is_closed": int(bool(r.get("IsClosed"))), "is_won": int(bool(r.get("IsWon"))),
        "is_deleted": _deleted(r), "created_at": _sf_time(r.get("CreatedDate")),
        "modstamp": _sf_time(r["SystemModstamp"])})]


def _activity(source_id: Any, kind: str, r: dict[str, Any], *, occurred: Any, account_id: Any,
              related_id: Any = None, direction: str | None, subject: Any = None, text: Any = None,
              status: Any = None, priority: Any = None, closed: Any = None, task: Any = None) -> Row:
    occurred_at = _sf_time(occurred)
    if occurred_at is None:
        raise ValueError(f"{kind} has no date")
    deleted = r.get("IsDeleted")
    if not account_id and not related_id and not task and not deleted:
        raise ValueError(f"{kind} names no account (AccountId, WhatId, RelatedToId, ParentId and ActivityId are "
                         "empty)")
    if isinstance(text, str) and len(text) > MAX_TEXT:
        text = text[:MAX_TEXT]  # a 10 MB email body says no more about sentiment than its first pages
    if type(source_id) is not str:  # its form matters only to the cursor, which checks it itself
        raise ValueError(f"Id is not text: {_shown(source_id)}")
    # one per record of a backfill (a million): no helper calls for what an expression says
    return {"source": "salesforce", "source_id": source_id, "kind": kind,
            "account_id": account_id if isinstance(account_id, str) and account_id.startswith("001") else None,
            "related_id": related_id, "parent_id": None, "occurred_at": occurred_at, "direction": direction,
            "subject": subject, "text": text, "text_hash": None, "sentiment": None, "status": status,
            "priority": priority, "closed_at": _sf_time(closed) if closed else None,
            "is_deleted": 1 if deleted else 0, "modstamp": _sf_time(r["SystemModstamp"])}


UNKNOWN = "unknown"
"""The direction of an email nobody recorded the direction of (one logged as a Task alone): neither the
customer writing nor us answering, for every measure."""


def _event_rows(r: dict[str, Any]) -> list[tuple[str, Row]]:
    """One meeting, once. Each invitee who is a Salesforce user gets a copy of the organizer's Event
    (`IsChild`), and a recurring series has a master record (`IsRecurrence`) besides its occurrences: neither
    is a meeting of its own. A deleted one is still stored as deleted, so that a copy an earlier version
    stored stops counting."""
    if not r.get("IsDeleted") and (_flag(r, "IsChild") or _flag(r, "IsRecurrence")):
        return []
    return [("activities", _activity(
        r.get("Id"), "meeting", r, occurred=r.get("ActivityDateTime") or r.get("StartDateTime"),
        account_id=r.get("AccountId"), related_id=r.get("WhatId"), direction="both",
        subject=r.get("Subject")))]


def _task_kind(r: dict[str, Any]) -> str | None:
    """"email", "call", or None for a task that is neither. Salesforce's own email and call logging set
    `TaskSubtype`; dialers and sales-engagement tools log theirs as a plain task (`TaskSubtype = 'Task'`) and
    say what it was in `Type`, or only in `CallType`. List emails and cadence steps are not a personal touch."""
    subtype = r.get("TaskSubtype")
    if subtype in ("Email", "Call"):
        return "email" if subtype == "Email" else "call"
    if subtype not in (None, "Task"):
        return None
    logged = r.get("Type")
    if logged in ("Email", "Call"):
        return "email" if logged == "Email" else "call"
    return "call" if r.get("CallType") in ("Inbound", "Outbound") else None


def _task_rows(r: dict[str, Any]) -> list[tuple[str, Row]]:
    """Only email and call tasks are activity; to-dos are not, and neither is an open task (a call or email
    planned, not made), an internal call, or a dial that never connected (`CallDurationInSeconds` 0). An
    email task is the same email as its `EmailMessage` (keyed by the task's Id there), so the task only
    fills in when no message exists, and then its direction is unknown: a task does not say who wrote."""
    kind = _task_kind(r)
    if kind is None:
        return []
    if not r.get("IsDeleted") and (_flag(r, "IsClosed") is False or (kind == "call" and (
            r.get("CallType") == "Internal" or _number(r, "CallDurationInSeconds") == 0))):
        return []
    occurred = r.get("CompletedDateTime") or (f"{r['ActivityDate']}T12:00:00.000+0000"
                                              if r.get("ActivityDate") else r.get("CreatedDate"))
    row = _activity(r.get("Id"), kind, r, occurred=occurred, account_id=r.get("AccountId"),
                    related_id=r.get("WhatId"), direction=UNKNOWN if kind == "email" else "both",
                    subject=r.get("Subject"))
    return [("activities:fill" if kind == "email" else "activities", row)]


def _email_rows(r: dict[str, Any]) -> list[tuple[str, Row]]:
    """An email under the record it is filed with (`RelatedToId`, or the case of Email-to-Case's `ParentId`);
    one filed with neither belongs where its task (`ActivityId`, the same row) does, which the task stream
    stored: the row keeps the account it has."""
    related = r.get("RelatedToId") or r.get("ParentId")
    task = r.get("ActivityId")
    return [("activities:email", _activity(
        task or r.get("Id"), "email", r, occurred=r.get("MessageDate") or r.get("CreatedDate"),
        account_id=related, related_id=related, direction="in" if r.get("Incoming") else "out",
        subject=r.get("Subject"), text=r.get("TextBody"), task=task))]


def _case_rows(r: dict[str, Any]) -> list[tuple[str, Row]]:
    return [("activities", _activity(
        r.get("Id"), "ticket", r, occurred=r.get("CreatedDate"), account_id=r.get("AccountId"),
        direction="in", subject=r.get("Subject"), text=r.get("Description"), status=r.get("Status"),
        priority=(r.get("Priority") or "").lower() or None, closed=r.get("ClosedDate")))]


_STAMP = ("Id", "SystemModstamp")
SALESFORCE_STREAMS: tuple[SalesforceStream, ...] = (
    SalesforceStream("User", (*_STAMP, "Name", "Email"), ("IsActive", "TimeZoneSidKey"), _user_rows,
                     has_is_deleted=False),
    SalesforceStream("Account", (*_STAMP, "Name", "OwnerId", "IsDeleted"),
                     ("Type", "Industry", "Website", "AnnualRevenue", "MasterRecordId", "Contracted_Seats__c",
                      "Health_Override__c", "Health_Override_Reason__c", "Health_Override_Until__c"),
                     _account_rows),
    SalesforceStream("Opportunity", (*_STAMP, "AccountId", "StageName", "CloseDate", "IsDeleted"),
                     ("Name", "Type", "Amount", "IsClosed", "IsWon", "CreatedDate"), _opportunity_rows),
    SalesforceStream("Event", (*_STAMP, "AccountId", "IsDeleted"),
                     ("WhatId", "Subject", "StartDateTime", "ActivityDateTime", "IsChild", "IsRecurrence"),
                     _event_rows, activity=True),
    SalesforceStream("Task", (*_STAMP, "AccountId", "TaskSubtype", "IsDeleted", "CreatedDate"),
                     ("WhatId", "Subject", "ActivityDate", "CompletedDateTime", "Type", "CallType",
                      "CallDurationInSeconds", "IsClosed"), _task_rows, activity=True),
    SalesforceStream("EmailMessage", (*_STAMP, "Incoming", "IsDeleted", "CreatedDate"),
                     ("RelatedToId", "ParentId", "ActivityId", "Subject", "TextBody", "MessageDate"),
                     _email_rows, optional_object=True, activity=True),
    SalesforceStream("Case", (*_STAMP, "AccountId", "Status", "IsDeleted", "CreatedDate"),
                     ("Subject", "Description", "Priority", "IsClosed", "ClosedDate"), _case_rows, activity=True),
)

_KEYS = {"accounts": ("id",), "users": ("source", "source_id"), "opportunities": ("id",),
         "activities": ("source", "source_id")}


@dataclass(frozen=True)
class Window:
    """One query's share of a stream's read: the records stamped from `start` on (`where` says exactly how: a
    cursor's condition, or None for a whole object) and before `end` (None: up to the newest)."""

    where: str | None
    start: datetime
    end: datetime | None = None

    def after(self, width: timedelta | None, now: datetime) -> Window:
        """The window that follows this one, read to its end, `width` wide (unbounded once that reaches now)."""
        assert self.end is not None
        return Window(f"SystemModstamp >= {iso(self.end)}", self.end, _window_end(self.end, width, now))


def _window_end(start: datetime, width: timedelta | None, now: datetime) -> datetime | None:
    return None if width is None or start + width >= now else start + width


def first_window(cursor: Cursor | None, now: datetime, overlap: timedelta, floor: datetime | None) -> Window:
    """Where a stream's read begins: at its cursor; on a first read, at the backfill `floor` (activity) or with
    the whole object. As wide as the cursor's window, if Salesforce once needed one."""
    if cursor is not None:
        start = cursor.start(overlap)
        return Window(cursor.where(overlap), start, _window_end(start, cursor.window, now))
    if floor is not None:
        return Window(f"SystemModstamp >= {iso(floor)}", floor)
    return Window(None, ORIGIN)


def build_soql(stream: SalesforceStream, fields: Sequence[str], window: Window) -> str:
    conditions = [window.where] if window.where else []
    if window.end is not None:
        conditions.append(f"SystemModstamp < {iso(window.end)}")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"SELECT {', '.join(fields)} FROM {stream.sobject}{where} ORDER BY SystemModstamp ASC, Id ASC"


def sync_salesforce(store: Store, client: SalesforceClient, now: datetime, report: SyncReport, *,
                    overlap: timedelta, api_share: float, backfill: timedelta = timedelta(days=730),
                    bulk_threshold: int = 0) -> None:
    """Every Salesforce stream in turn, each re-reading `overlap` before its cursor (activity streams reading
    back `backfill` on their first run), until this cycle has used `api_share` of the org's daily API limit;
    then, once a day, the reconciliation of deletes the recycle bin no longer shows. A first read or a long
    catch-up of more than `bulk_threshold` records (0: never) goes as a Bulk API 2.0 query job."""
    try:
        client.connect()
    except SalesforceAuthError as exc:
        raise SyncAborted(str(exc)) from None
    first_sync = store.cursor("salesforce.Account") is None
    ahead = _FirstPageAhead(client.sibling(), api_share=api_share, bulk_threshold=bulk_threshold)
    with _cyclic_gc_paused(), store.account_index_deferred():
        try:
            _sync_salesforce_streams(store, client, now, report, ahead, overlap=overlap, api_share=api_share,
                                     backfill=backfill, bulk_threshold=bulk_threshold)
        finally:
            for sobject, calls in ahead.close().items():  # a first page asked for and never used (a stop)
                report.streams.setdefault(f"salesforce.{sobject}", StreamStats()).api_calls += calls
        if not report.salesforce_limited:
            _reconcile(store, client, now, report, api_share=api_share, first_sync=first_sync)
        if store.cursor(_RELATED_PENDING):
            _resolve_related_accounts(store, now)
    report.api_calls["salesforce"] = client.calls


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while Salesforce's pages are fetched and stored.

    Every page parses into thousands of small dicts that hold no cycle: reference counting frees them when
    the page is stored. The cyclic collector still wakes every few hundred of them to walk everything that
    lives, pages in flight included: a noticeable share of a backfill's CPU, for nothing, and with it off the
    peak memory does not move (measured: BENCHMARKS.md, 'Figures behind the code'). It is switched back on at
    the end (unless it was off before)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _sync_salesforce_streams(store: Store, client: SalesforceClient, now: datetime, report: SyncReport,
                             ahead: _FirstPageAhead, *, overlap: timedelta, api_share: float,
                             backfill: timedelta, bulk_threshold: int) -> None:
    for index, stream in enumerate(SALESFORCE_STREAMS):
        name = f"salesforce.{stream.sobject}"
        started, calls = time.monotonic(), client.session_calls
        following = SALESFORCE_STREAMS[index + 1] if index + 1 < len(SALESFORCE_STREAMS) else None
        try:
            _check_budget(client, api_share, report)
            sync_salesforce_stream(store, client, stream, now, report, overlap=overlap, api_share=api_share,
                                   backfill=backfill, ahead=ahead, following=following,
                                   bulk_threshold=bulk_threshold)
        except BudgetSpent as exc:
            report.failed_streams[name] = str(exc)
            report.salesforce_limited = True
            log.warning("sync %s: %s; stopping Salesforce for this cycle, progress kept", name, exc)
            break
        except SalesforceLimitError as exc:
            report.failed_streams[name] = str(exc)
            report.salesforce_limited = True
            log.error("sync %s: %s; stopping Salesforce for this cycle, progress kept", name, exc)
            break
        except SalesforceAuthError as exc:
            raise SyncAborted(str(exc)) from None
        except SalesforceError as exc:
            report.failed_streams[name] = str(exc)
            log.error("sync %s failed: %s; other streams go on, next cycle resumes from the cursor",
                      name, exc)
        finally:
            stats = report.streams.setdefault(name, StreamStats())
            stats.api_calls += client.session_calls - calls + ahead.calls_taken(stream.sobject)
            stats.seconds += time.monotonic() - started


def _reconcile(store: Store, client: SalesforceClient, now: datetime, report: SyncReport, *, api_share: float,
               first_sync: bool) -> None:
    """Once a day, the Accounts and Opportunities Salesforce no longer has marked deleted; a failure is the
    reconciliation's alone (the next cycle tries again)."""
    name = f"salesforce.{reconcile.STREAM}"
    if first_sync:  # a first read of every Account and Opportunity: nothing can be missing yet
        reconcile.record(store, now)
        return
    if not reconcile.due(store, now):
        return
    stats = report.streams.setdefault(name, StreamStats())
    started, calls = time.monotonic(), client.session_calls
    try:
        stats.deleted += reconcile.reconcile_deletes(
            store, client, now, budget=functools.partial(_check_budget, client, api_share, report))
    except (BudgetSpent, SalesforceLimitError) as exc:
        report.failed_streams[name] = str(exc)
        report.salesforce_limited = True
        log.warning("sync %s: %s; it runs again next cycle", name, exc)
    except SalesforceAuthError as exc:
        raise SyncAborted(str(exc)) from None
    except SalesforceError as exc:
        report.failed_streams[name] = str(exc)
        log.error("sync %s failed: %s; it runs again next cycle", name, exc)
    finally:
        stats.api_calls += client.session_calls - calls
        stats.seconds += time.monotonic() - started


def _check_budget(client: SalesforceClient, share: float, report: SyncReport) -> None:
    """Keep the worker inside its share of the org's daily API limit (other integrations need the rest)."""
    usage = client.api_usage
    if usage is None or usage.share is None:
        return
    report.api_share = usage.share
    if report.api_share >= share:
        raise BudgetSpent(f"Salesforce API use is at {usage.used} of {usage.limit} calls today "
                          f"({report.api_share:.0%}), at or above HEALTHBEAT_SALESFORCE_API_SHARE={share:.0%}")


def sync_salesforce_stream(store: Store, client: SalesforceClient, stream: SalesforceStream, now: datetime,
                           report: SyncReport, *, overlap: timedelta, api_share: float,
                           backfill: timedelta | None = None, ahead: _FirstPageAhead | None = None,
                           following: SalesforceStream | None = None, bulk_threshold: int = 0) -> None:
    """One stream's new and changed records, page by page, each page stored with the cursor after it; in
    windows of SystemModstamp once Salesforce could not answer the whole read in time (see `worker.sync.cursor`);
    a first read or a long catch-up of more than `bulk_threshold` records first as a Bulk API 2.0 query job
    (`worker.sync.salesforce_bulk`), then the rest over REST.

    With `ahead`, its first page (or its count) may already have been asked for, and the `following` stream's
    is asked for on the side while this one's pages are stored."""
    name = f"salesforce.{stream.sobject}"
    try:
        available = client.describe_fields(stream.sobject)
    except SalesforceError as exc:
        if stream.optional_object:
            report.skipped_streams[name] = f"{stream.sobject} is not available in this org ({exc})"
            log.warning("sync %s skipped: %s is not available in this org", name, stream.sobject)
            return
        raise
    missing_required = [f for f in stream.required if f not in available]
    if missing_required:
        raise SalesforceError(f"{stream.sobject} lacks required fields {', '.join(missing_required)}")
    missing_optional = [f for f in stream.optional if f not in available]
    if missing_optional:
        log.info("sync %s: optional fields not in this org, carrying on without them: %s",
                 name, ", ".join(missing_optional))
    fields = stream.fields_in(available)
    cursor = Cursor.load(store.cursor(name))
    window = first_window(cursor, now, overlap, _floor(stream, now, backfill))
    first: dict[str, Any] | SalesforceQueryTimeout | None = None
    counted: int | None = None
    if ahead is not None:
        try:
            first = ahead.take(stream.sobject, build_soql(stream, fields, window))
        except SalesforceQueryTimeout as exc:  # the stream narrows its window as if it had asked itself
            first = exc
        counted = ahead.counted(stream.sobject, window.where)
    after: tuple[SalesforceStream, Window, bool] | None = None  # the following stream, where its read begins, and
    if ahead is not None and following is not None:            # whether it is to be counted first
        following_cursor = Cursor.load(store.cursor(f"salesforce.{following.sobject}"))
        after = following, first_window(following_cursor, now, overlap, _floor(following, now, backfill)), \
            salesforce_bulk.is_candidate(following_cursor, now, bulk_threshold)
    counted_read = cursor is None and salesforce_bulk.is_candidate(cursor, now, bulk_threshold)
    read_from = window.start
    if salesforce_bulk.is_candidate(cursor, now, bulk_threshold):
        moved = _maybe_in_bulk(store, client, stream, fields, available, cursor, window, now, report,
                               counted=counted, threshold=bulk_threshold, api_share=api_share)
        if moved is not cursor:
            cursor, first = moved, None
            window = first_window(cursor, now, overlap, _floor(stream, now, backfill))
    stats = report.streams.setdefault(name, StreamStats())
    responses = _windowed(client, stream, fields, window, cursor.window if cursor else None, now, first=first,
                          stats=stats)
    budget = functools.partial(_check_budget, client, api_share, report)
    pages = 0
    with _Prefetched(_chunks(responses, PAGE, after_each=budget)) as prefetched:
        for item in prefetched:
            if isinstance(item, _Reached):
                cursor = _store_progress(store, name, item, cursor, now)
                continue
            cursor = _store_salesforce_page(store, stream, item, cursor, now, report)
            pages += 1
            if pages == 1 and ahead is not None and after is not None:
                # Once this stream's first page is stored, its next ones are on their way: only now is
                # Salesforce asked for the following stream's first page, which it answers in its own time.
                ahead.start(after[0], after[1], client.api_usage, count=after[2])
    if pages == 0 and ahead is not None and after is not None:
        ahead.start(after[0], after[1], client.api_usage, count=after[2])
    if cursor is not None and cursor.run != now:
        with store.transaction():
            store.save_cursor(name, cursor.checked(now).dump(), 0, now)
    elif cursor is None and counted_read:  # an empty object, counted: a cursor, so that it is not counted again
        with store.transaction():
            store.save_cursor(name, Cursor(read_from, "", now).dump(), 0, now)


def _maybe_in_bulk(store: Store, client: SalesforceClient, stream: SalesforceStream, fields: Sequence[str],
                   types: dict[str, str], cursor: Cursor | None, window: Window, now: datetime, report: SyncReport, *,
                   counted: int | None, threshold: int, api_share: float) -> Cursor | None:
    """The cursor after reading `window`'s span in bulk, if it holds more than `threshold` records (`counted`, if
    the side session counted them) or a job is under way; else `cursor` itself (the same object): REST reads it."""
    name = f"salesforce.{stream.sobject}"
    if cursor is None or cursor.bulk is None:
        if counted is None:
            _check_budget(client, api_share, report)  # a count is a call: none once the share is spent
            counted = salesforce_bulk.count(client, stream.sobject, window.where, include_deleted=stream.has_is_deleted)
        if not salesforce_bulk.above(counted, threshold):
            return cursor
        log.info("sync %s: %s records to read (HEALTHBEAT_SALESFORCE_BULK_THRESHOLD=%d): in bulk", name,
                 "too many to count" if counted == salesforce_bulk.TOO_MANY else f"{counted:,}", threshold)
    start = cursor or Cursor(window.start, "", now)

    def store_page(records: list[dict[str, Any]], moved: Cursor) -> None:
        _store_salesforce_page(store, stream, records, moved, now, report, moved=moved)

    return salesforce_bulk.read_in_bulk(
        store, client, name=name, sobject=stream.sobject, fields=fields, types=types,
        include_deleted=stream.has_is_deleted, cursor=start, where=window.where,
        now=now, store_page=store_page, budget=functools.partial(_check_budget, client, api_share, report),
        page_size=PAGE)


def _floor(stream: SalesforceStream, now: datetime, backfill: timedelta | None) -> datetime | None:
    """How far back a first read of `stream` reaches: activity the backfill period, other objects all the way."""
    return (now - backfill).replace(microsecond=0) if stream.activity and backfill is not None else None


@dataclass(frozen=True)
class _Reached:
    """A mark between a stream's responses: every record stamped before `end` has been handed on (None: no
    window was finished); the next query may cover `window`; the read began at `start`."""

    end: datetime | None
    window: timedelta | None
    start: datetime


def _windowed(client: SalesforceClient, stream: SalesforceStream, fields: Sequence[str], window: Window,
              width: timedelta | None, now: datetime, *, first: dict[str, Any] | SalesforceQueryTimeout | None,
              stats: StreamStats) -> Iterator[list[dict[str, Any]] | _Reached]:
    """The stream's records from `window` on, a response at a time, window after window: a window Salesforce
    stops (`QUERY_TIMEOUT`) is asked for again half as wide, down to `MIN_WINDOW`, and the window after one it
    answered is twice as wide (short of the narrowest it stopped); a mark follows each change (`_Reached`).
    A window that held nothing, inside one Salesforce stopped, leaves every record of that one to the rest of
    it, which would be stopped too: the next window is half that rest. `first`: the first window's first
    response (or the timeout it met), already asked for."""
    failed: timedelta | None = None  # the narrowest window Salesforce stopped in this read
    stopped_at: datetime | None = None  # where the last window Salesforce stopped ended
    while True:
        soql = build_soql(stream, fields, window)
        stats.windows += 1
        try:
            if first is None:
                page = client.first_page(soql, include_deleted=stream.has_is_deleted)
            elif isinstance(first, SalesforceQueryTimeout):
                raise first
            else:
                page = first
        except SalesforceQueryTimeout as exc:
            tried = (window.end or now) - window.start
            half = narrower(tried)
            if half is None:
                raise SalesforceQueryTimeout(
                    f"Salesforce stopped the {stream.sobject} query even for {_span(tried)} of records from "
                    f"{iso(window.start)} (SystemModstamp) ({exc}); the stream stays at that point and tries "
                    "again next cycle", status=exc.status, error_code=exc.error_code) from None
            log.warning("sync salesforce.%s: Salesforce stopped the query for %s from %s (QUERY_TIMEOUT); "
                        "asking for %s", stream.sobject, _span(tried), iso(window.start), _span(half))
            stats.narrowed += 1
            failed = tried if failed is None else min(failed, tried)
            stopped_at = window.end or now
            width, window = half, Window(window.where, window.start, window.start + half)
            yield _Reached(None, width, window.start)
            continue
        finally:
            first = None
        records = 0
        for response in client.query_pages(soql, include_deleted=stream.has_is_deleted, first=page):
            records += len(response)
            yield response
        if window.end is None:
            if width is not None:
                yield _Reached(None, wider(width, failed), window.start)  # the rest came in one: widen anyway
            return
        if records == 0 and stopped_at is not None and window.end < stopped_at:
            width = max(timedelta(seconds=int((stopped_at - window.end).total_seconds()) // 2), MIN_WINDOW)
        else:
            width = wider(width, failed)
        yield _Reached(window.end, width, window.start)
        window = window.after(width, now)


def _span(width: timedelta) -> str:
    hours = width.total_seconds() / 3600
    if hours < 48:
        return "an hour" if hours == 1 else f"{hours:g} hours"
    return f"{hours / 24:.0f} days"


def _store_progress(store: Store, name: str, mark: _Reached, cursor: Cursor | None, now: datetime) -> Cursor:
    """A mark between pages, stored: the cursor at the end of the window read (every record before it is
    stored already), or only the window the next query may cover."""
    moved = cursor or Cursor(mark.start, "", now)
    if mark.end is not None:
        moved = moved.reached(mark.end, now)
    moved = moved.with_window(mark.window)
    with store.transaction():
        store.save_cursor(name, moved.dump(), 0, now)
    return moved


def _store_salesforce_page(store: Store, stream: SalesforceStream, page: list[dict[str, Any]],
                           cursor: Cursor | None, now: datetime, report: SyncReport, *, moved: Cursor | None = None
                           ) -> Cursor | None:
    """Store a page's rows (its unusable records quarantined) and, in the same transaction, the cursor after it:
    `moved` if given (a bulk read's, whose pages are in no order), else past the page's last record."""
    name = f"salesforce.{stream.sobject}"
    with report.storing(name):
        tables: dict[str, list[Row]] = {}
        bad: list[Quarantined] = []
        to_rows = stream.to_rows
        for record in page:
            try:
                for table, row in to_rows(record):
                    rows = tables.get(table)
                    if rows is None:
                        rows = tables[table] = []
                    rows.append(row)
            except _UNUSABLE as exc:
                bad.append(Quarantined("salesforce", stream.sobject, _record_id(record),
                                       f"{type(exc).__name__}: {exc}", record))
        if moved is None:
            moved = _cursor_after(page, cursor, now)

        def finish() -> None:
            store.quarantine(bad, now)
            store.save_cursor(name, moved.dump() if moved is not None else None, len(page), now)
            if stream.sobject in _RELATED_STREAMS:
                store.save_cursor(_RELATED_PENDING, "1", 0, now)

        # No savepoint around the page's rows: inside one, SQLite keeps every database page each row's statement
        # touched in its sub-journal until the savepoint ends (the change-mark triggers make each row a statement
        # that may need undoing), a large share of a backfill's CPU (measured: BENCHMARKS.md, 'Figures behind the
        # code'). A row the store refuses undoes the whole transaction instead, and the page is written again record
        # by record.
        try:
            with store.transaction():
                try:
                    _write_rows(store, tables)
                except _REFUSED as exc:
                    raise _Refused from exc
                finish()
        except _Refused:
            with store.transaction():
                bad += _write_record_by_record(store, stream, page)
                finish()
    report.add(name, len(page), deleted=sum(1 for r in page if isinstance(r, dict) and r.get("IsDeleted")),
               quarantined=len(bad))
    report.quarantined += len(bad)
    for item in bad:
        log.warning("quarantined %s %s: %s", stream.sobject, item.source_id, item.reason)
    return moved


_UNUSABLE = (KeyError, ValueError, TypeError, AttributeError)
"""What a row builder raises for a record it cannot use: the record is quarantined with the reason."""
_REFUSED = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, OverflowError,
            UnicodeEncodeError)
"""What SQLite raises for a value it cannot hold (a mapping, an integer beyond 64 bits, a lone surrogate, no
account name): the fault of one record, unlike a full disk or a lock, which still fail the stream."""


class _Refused(Exception):
    """A page's rows met a value the store refused (`_REFUSED`): its transaction is undone and the page written
    again record by record."""


def _write_rows(store: Store, tables: dict[str, list[Row]]) -> None:
    for table, rows in tables.items():
        if table == "activities:fill":
            _merge_activities(store, rows, fill=True)
        elif table == "activities:email":
            _merge_activities(store, rows, fill=False)
        else:
            store.upsert(table, rows, _KEYS[table])


_ACCOUNT_COLUMNS = ("account_id", "related_id")


def _merge_activities(store: Store, rows: list[Row], *, fill: bool) -> None:
    """An email's rows, which its task and its EmailMessage both write (one key): the task's only fill in
    what is missing (`fill`: the message says more, whichever comes first); the message's replace the row,
    but a message filed nowhere leaves the account and related record as they are (it belongs where its task
    is)."""
    if not rows:
        return
    columns = list(rows[0])
    values = list(map(operator.itemgetter(*columns), rows))  # in C, as the store's own upsert: a million rows
    if fill:
        updates = ", ".join(f"{c} = coalesce(activities.{c}, excluded.{c})" for c in _ACCOUNT_COLUMNS)
        when = " WHERE " + " OR ".join(f"activities.{c} IS NULL" for c in _ACCOUNT_COLUMNS)
    else:  # filed nowhere (no related record, so no account either): the row keeps both
        updates = ", ".join(f"{c} = CASE WHEN excluded.related_id IS NULL THEN activities.{c} ELSE excluded.{c} END"
                            if c in _ACCOUNT_COLUMNS else f"{c} = excluded.{c}"
                            for c in columns if c not in _KEYS["activities"])
        when = ""
    store.conn.executemany(
        f"INSERT INTO activities ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
        f"ON CONFLICT (source, source_id) DO UPDATE SET {updates}{when}", values)


def _write_record_by_record(store: Store, stream: SalesforceStream, page: list[dict[str, Any]]
                            ) -> list[Quarantined]:
    """The page again, each record's rows in a savepoint of their own: the store takes every record it can hold,
    and the others are quarantined with the value it could not."""
    refused: list[Quarantined] = []
    for record in page:
        try:
            rows = stream.to_rows(record)
        except _UNUSABLE:
            continue  # quarantined already
        tables: dict[str, list[Row]] = {}
        for table, row in rows:
            tables.setdefault(table, []).append(row)
        try:
            with store.transaction():
                _write_rows(store, tables)
        except _REFUSED as exc:
            refused.append(Quarantined("salesforce", stream.sobject, _record_id(record), _refusal(rows, exc),
                                       record))
    return refused


def _refusal(rows: list[tuple[str, Row]], exc: Exception) -> str:
    """The first value the store cannot hold, by column; else the store's own words."""
    for table, row in rows:
        for column, value in row.items():
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return f"{table.split(':')[0]}.{column} is not valid Unicode text: {_shown(value)}"
            elif isinstance(value, int) and not -(2**63) <= value < 2**63:
                return f"{table.split(':')[0]}.{column} is too large a number: {_shown(value)}"
            elif value is not None and not isinstance(value, int | float):
                return f"{table.split(':')[0]}.{column} cannot be stored: {_shown(value)}"
    return f"{type(exc).__name__}: {exc}"


def _record_id(record: Any) -> str | None:
    """The record's Id for the quarantine and the log, if it has one that is text (escaped where it is not
    printable: a newline or a lone surrogate in a forged Id must not reach either as it is)."""
    value = record.get("Id") if isinstance(record, dict) else None
    if not isinstance(value, str):
        return None
    return value[:100] if value[:100].isprintable() else value[:100].encode("unicode_escape").decode("ascii")


def _cursor_after(page: list[dict[str, Any]], cursor: Cursor | None, now: datetime) -> Cursor | None:
    """Past the page's last record whose stamp and Id are usable (the query is ordered by (SystemModstamp, Id)):
    a broken last record does not stop the stream; the records after the one chosen are read again next time."""
    for record in reversed(page):
        try:
            stamp = _sf_time(record.get("SystemModstamp"))
            record_id = _sf_id(record.get("Id"))
        except (ValueError, AttributeError):
            continue
        if stamp is not None:
            return (cursor or Cursor(now, "", now)).after_page(parse_iso(stamp), record_id, now)
    return cursor


# Set with any stored page that can name or be an email's related record, cleared once emails are resolved:
# the resolving UPDATE reads every email still without an account, which a quiet cycle need not do.
_RELATED_PENDING = "salesforce.related_pending"
_RELATED_STREAMS = frozenset({"Task", "EmailMessage", "Event", "Opportunity", "Case"})


def _resolve_related_accounts(store: Store, now: datetime) -> None:
    """Emails filed under an opportunity or a case belong to that record's account, as in Salesforce."""
    with store.transaction() as conn:
        store.save_cursor(_RELATED_PENDING, None, 0, now)
        conn.execute("""
            UPDATE activities SET account_id = coalesce(
                (SELECT o.account_id FROM opportunities o WHERE o.id = activities.related_id),
                (SELECT c.account_id FROM activities c
                  WHERE c.source = 'salesforce' AND c.source_id = activities.related_id))
            WHERE account_id IS NULL AND source = 'salesforce' AND related_id IS NOT NULL""")


class _FirstPageAhead:
    """The next stream's first page, asked for on a second session while this stream's pages are stored.

    Salesforce answers a query's first page only once it has found and sorted every record the query selects:
    seconds for a large backfill, during which a worker going stream by stream has nothing to do; the later
    pages come quickly (in the sandbox, the streams' first pages are a large share of a backfill's time). Asked
    for one stream ahead, once the stream before has a page stored, most of that wait passes while it is
    stored, and a backfill takes less time (measured: BENCHMARKS.md, 'Figures behind the code'; the sandbox
    answers on one core, so its work on a first page still slows the pages of the stream being read;
    Salesforce's would not). The side thread plans the query from its own describe and the first window
    (`first_window`, from the cursor read here);
    the stream uses the page only if it plans the same query (a `QUERY_TIMEOUT` it met, the stream takes as its
    own: it narrows its first window). Never more than one call ahead, and none once the API share is spent."""

    def __init__(self, sibling: SalesforceClient, *, api_share: float, bulk_threshold: int = 0) -> None:
        self._sibling = sibling
        self._api_share = api_share
        self._bulk_threshold = bulk_threshold
        self._counted: tuple[str, str | None, int] | None = None  # (sObject, WHERE, count) of the last taken
        self._pending_where: str | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salesforce-first-page")
        self._pending: tuple[str, Future[tuple[str | None, dict[str, Any] | None, int | None]]] | None = None
        self._calls: Counter[str] = Counter()  # per sObject: the side session's calls, once they are known

    def start(self, stream: SalesforceStream, window: Window, usage: ApiUsage | None, *, count: bool = False) -> None:
        """Ask for the first page of `stream`'s read from `window` (`first_window`, from the cursor read here); with
        `count`, count the read's records first, and ask for no page when they are to be read in bulk."""
        self._settle()
        if usage is not None and usage.share is not None and usage.share >= self._api_share:
            return
        self._pending_where = window.where
        self._pending = (stream.sobject, self._pool.submit(self._fetch, stream, window, count))

    def take(self, sobject: str, soql: str) -> dict[str, Any] | None:
        """The first page of `soql` if it was asked for ahead; the error of asking for it is raised here."""
        pending = self._pending
        if pending is None or pending[0] != sobject:
            self._settle()  # asked for a stream that was skipped: not this one's page, nor its error
            return None
        self._pending = None
        planned, page, counted = pending[1].result()
        self._counted = (sobject, self._pending_where, counted) if counted is not None else None
        return page if planned == soql else None

    def counted(self, sobject: str, where: str | None) -> int | None:
        """The count of `sobject`'s read from `where` if the side session made it (for the page just taken)."""
        counted, self._counted = self._counted, None
        if counted is None or counted[0] != sobject or counted[1] != where:
            return None
        return counted[2]

    def calls_taken(self, sobject: str) -> int:
        """The side session's calls for `sobject` not counted yet (its stream counts them)."""
        return self._calls.pop(sobject, 0)

    def close(self) -> Counter[str]:
        """Wait for a page still being asked for; the calls of pages never used, by sObject."""
        self._settle()
        self._pool.shutdown(wait=True)
        calls, self._calls = self._calls, Counter()
        return calls

    def _settle(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            wait([pending[1]])

    def _fetch(self, stream: SalesforceStream, window: Window, count: bool
               ) -> tuple[str | None, dict[str, Any] | None, int | None]:
        before = self._sibling.session_calls
        try:
            try:
                available = self._sibling.describe_fields(stream.sobject)
            except SalesforceError:
                return None, None, None  # the stream plans (and reports) this itself
            counted = None
            if count:
                counted = salesforce_bulk.count(self._sibling, stream.sobject, window.where,
                                                include_deleted=stream.has_is_deleted)
                if salesforce_bulk.above(counted, self._bulk_threshold):
                    return None, None, counted
            soql = build_soql(stream, stream.fields_in(available), window)
            page = self._sibling.first_page(soql, include_deleted=stream.has_is_deleted)
            return soql, page, counted
        finally:
            self._calls[stream.sobject] += self._sibling.session_calls - before
