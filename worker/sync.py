"""Pull activity into the store, incrementally: the first stage of a cycle.

Every stream follows one discipline: read from the committed cursor (minus an overlap, with `>=`, since
many records can share one stamp), upsert each page by (source, source id) and move the cursor in the
same transaction, never past the run's start. Re-reading is harmless; a crash loses nothing. A bad record is
quarantined with its reason and the rest of the page goes on. A stream that fails ends alone: the other
streams still run, and the next cycle resumes from what was committed.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import urlparse

from connectors.salesforce.client import (
    ApiUsage,
    SalesforceAuthError,
    SalesforceClient,
    SalesforceError,
    SalesforceLimitError,
)
from connectors.salesforce.ids import to_18
from connectors.usage.reader import BadUsageRow, list_usage_files, read_usage_file
from connectors.zendesk.client import ZendeskAuthError, ZendeskClient, ZendeskError, ZendeskNotFound
from connectors.zendesk.records import BadRecord, ZendeskComment, ZendeskOrganization, ZendeskTicket
from worker.config import Settings
from worker.cursor import Cursor
from worker.store import Quarantined, Store, iso, parse_iso

log = logging.getLogger(__name__)

# Records stored (and the cursor moved) per transaction: ten of Salesforce's largest batches. Each commit
# of a backfill costs a WAL checkpoint: per 195,000 records, 1.2 s CPU and 3.5 s wall in commits with pages
# of 2,000, 0.4 s and 0.8 s with 10,000; a backfill of 10,000 accounts took 22.5-23.9 s with 20,000 against
# 25.1-25.6 s with 10,000 (peak memory 323 MB against 272). The budget is still checked after every batch
# (`_chunks`); at most four pages are held at once (one being stored, two queued, one being fetched).
PAGE = 20_000
MAX_TEXT = 100_000


@dataclass
class StreamStats:
    read: int = 0
    deleted: int = 0
    quarantined: int = 0
    api_calls: int = 0
    seconds: float = 0.0


@dataclass
class SyncReport:
    records: dict[str, int] = field(default_factory=dict)
    streams: dict[str, StreamStats] = field(default_factory=dict)
    api_share: float | None = None  # share of Salesforce's daily API limit in use, as last reported
    quarantined: int = 0
    failed_streams: dict[str, str] = field(default_factory=dict)
    skipped_streams: dict[str, str] = field(default_factory=dict)
    unmapped_organizations: list[int] = field(default_factory=list)
    salesforce_limited: bool = False  # the daily API limit was reached: nothing more to ask this cycle
    progress: Callable[[str, int], None] | None = field(default=None, repr=False, compare=False)
    api_calls: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.records.values())

    def add(self, stream: str, count: int, *, deleted: int = 0, quarantined: int = 0) -> None:
        self.records[stream] = self.records.get(stream, 0) + count
        stats = self.streams.setdefault(stream, StreamStats())
        stats.read += count
        if self.progress is not None:
            self.progress(stream, stats.read)
        stats.deleted += deleted
        stats.quarantined += quarantined

    def table(self) -> list[dict[str, Any]]:
        """One row per stream: what `healthbeat sync` prints at the end."""
        return [{"stream": name, "read": s.read, "deleted": s.deleted, "quarantined": s.quarantined,
                 "api_calls": s.api_calls, "seconds": round(s.seconds, 2),
                 "failed": self.failed_streams.get(name, "")} for name, s in sorted(self.streams.items())]


class BudgetSpent(Exception):
    """This cycle has used its share of Salesforce's daily API limit: stop cleanly, resume next cycle."""


class SyncAborted(Exception):
    """The cycle cannot go on (bad credentials): names the system and what to check."""


# -- Salesforce ---------------------------------------------------------------------------------------

Row = dict[str, Any]


@dataclass(frozen=True)
class SalesforceStream:
    """A stream declared by a few attributes: the object, its fields, and how a record becomes rows."""

    sobject: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    to_rows: Callable[[dict[str, Any]], list[tuple[str, Row]]]
    has_is_deleted: bool = True
    optional_object: bool = False

    def fields_in(self, available: Collection[str]) -> list[str]:
        """The fields a query asks for in an org that has `available`: every required one, and the optional
        ones it has. The stream and the side session asking for its first page ahead plan with this alike."""
        return [*self.required, *(f for f in self.optional if f in available)]


def _sf_time(value: Any) -> str | None:
    """Salesforce's `2024-01-01T00:00:00.000+0000` as the store's `2024-01-01T00:00:00Z`."""
    if not value:
        return None
    if len(value) == 28 and value.endswith(".000+0000"):  # the usual form: no parsing needed (hot path)
        return f"{value[:19]}Z"
    return iso(parse_iso(value.replace("+0000", "+00:00")))


def _deleted(record: dict[str, Any]) -> int:
    return 1 if record.get("IsDeleted") else 0


def _account_rows(r: dict[str, Any]) -> list[tuple[str, Row]]:
    return [("accounts", {
        "id": r["Id"], "name": r["Name"], "type": r.get("Type"), "industry": r.get("Industry"),
        "website": r.get("Website"), "owner_id": r.get("OwnerId"), "annual_revenue": r.get("AnnualRevenue"),
        "contracted_seats": r.get("Contracted_Seats__c"), "override_value": r.get("Health_Override__c"),
        "override_reason": r.get("Health_Override_Reason__c"),
        "override_until": r.get("Health_Override_Until__c"),
        "is_deleted": 1 if r.get("IsDeleted") or r.get("MasterRecordId") else 0,
        "merged_into": r.get("MasterRecordId"), "modstamp": _sf_time(r["SystemModstamp"])})]


def _user_rows(r: dict[str, Any]) -> list[tuple[str, Row]]:
    return [("users", {"source": "salesforce", "source_id": r["Id"], "name": r.get("Name"),
                       "email": r.get("Email"), "role": "owner", "timezone": r.get("TimeZoneSidKey"),
                       "is_active": 1 if r.get("IsActive", True) else 0,
                       "modstamp": _sf_time(r["SystemModstamp"])})]


def _opportunity_rows(r: dict[str, Any]) -> list[tuple[str, Row]]:
    return [("opportunities", {
        "id": r["Id"], "account_id": r.get("AccountId"), "name": r.get("Name"), "type": r.get("Type"),
        "stage": r.get("StageName"), "amount": r.get("Amount"), "close_date": r.get("CloseDate"),
        "is_closed": int(bool(r.get("IsClosed"))), "is_won": int(bool(r.get("IsWon"))),
        "is_deleted": _deleted(r), "modstamp": _sf_time(r["SystemModstamp"])})]


def _activity(source_id: str, kind: str, r: dict[str, Any], *, occurred: Any, account_id: Any,
              related_id: Any = None, direction: str | None, subject: Any = None, text: Any = None,
              status: Any = None, priority: Any = None, closed: Any = None) -> Row:
    occurred_at = _sf_time(occurred)
    if occurred_at is None:
        raise ValueError(f"{kind} has no date")
    deleted = r.get("IsDeleted")
    if not account_id and not related_id and not deleted:
        raise ValueError(f"{kind} names no account (AccountId, WhatId, RelatedToId and ParentId are empty)")
    if isinstance(text, str) and len(text) > MAX_TEXT:
        text = text[:MAX_TEXT]  # a 10 MB email body says no more about sentiment than its first pages
    # one per record of a backfill (a million): no helper calls for what an expression says
    return {"source": "salesforce", "source_id": source_id, "kind": kind,
            "account_id": account_id if isinstance(account_id, str) and account_id.startswith("001") else None,
            "related_id": related_id, "parent_id": None, "occurred_at": occurred_at, "direction": direction,
            "subject": subject, "text": text, "text_hash": None, "sentiment": None, "status": status,
            "priority": priority, "closed_at": _sf_time(closed) if closed else None,
            "is_deleted": 1 if deleted else 0, "modstamp": _sf_time(r["SystemModstamp"])}


def _event_rows(r: dict[str, Any]) -> list[tuple[str, Row]]:
    return [("activities", _activity(
        r["Id"], "meeting", r, occurred=r.get("ActivityDateTime") or r.get("StartDateTime"),
        account_id=r.get("AccountId"), related_id=r.get("WhatId"), direction="both",
        subject=r.get("Subject")))]


def _task_rows(r: dict[str, Any]) -> list[tuple[str, Row]]:
    """Only email and call tasks are activity; to-dos are not. An email task is the same email as its
    `EmailMessage` (keyed by the task's Id there), so the task only fills in when no message exists."""
    subtype = r.get("TaskSubtype")
    if subtype not in ("Email", "Call"):
        return []
    occurred = r.get("CompletedDateTime") or (f"{r['ActivityDate']}T12:00:00.000+0000"
                                              if r.get("ActivityDate") else r.get("CreatedDate"))
    row = _activity(r["Id"], "email" if subtype == "Email" else "call", r, occurred=occurred,
                    account_id=r.get("AccountId"), related_id=r.get("WhatId"),
                    direction="out" if subtype == "Email" else "both", subject=r.get("Subject"))
    return [("activities:fill" if subtype == "Email" else "activities", row)]


def _email_rows(r: dict[str, Any]) -> list[tuple[str, Row]]:
    related = r.get("RelatedToId") or r.get("ParentId")
    return [("activities", _activity(
        r.get("ActivityId") or r["Id"], "email", r, occurred=r.get("MessageDate") or r.get("CreatedDate"),
        account_id=related, related_id=related, direction="in" if r.get("Incoming") else "out",
        subject=r.get("Subject"), text=r.get("TextBody")))]


def _case_rows(r: dict[str, Any]) -> list[tuple[str, Row]]:
    return [("activities", _activity(
        r["Id"], "ticket", r, occurred=r.get("CreatedDate"), account_id=r.get("AccountId"),
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
                     ("Name", "Type", "Amount", "IsClosed", "IsWon"), _opportunity_rows),
    SalesforceStream("Event", (*_STAMP, "AccountId", "IsDeleted"),
                     ("WhatId", "Subject", "StartDateTime", "ActivityDateTime"), _event_rows),
    SalesforceStream("Task", (*_STAMP, "AccountId", "TaskSubtype", "IsDeleted", "CreatedDate"),
                     ("WhatId", "Subject", "ActivityDate", "CompletedDateTime"), _task_rows),
    SalesforceStream("EmailMessage", (*_STAMP, "Incoming", "IsDeleted", "CreatedDate"),
                     ("RelatedToId", "ParentId", "ActivityId", "Subject", "TextBody", "MessageDate"),
                     _email_rows, optional_object=True),
    SalesforceStream("Case", (*_STAMP, "AccountId", "Status", "IsDeleted", "CreatedDate"),
                     ("Subject", "Description", "Priority", "IsClosed", "ClosedDate"), _case_rows),
)

_KEYS = {"accounts": ("id",), "users": ("source", "source_id"), "opportunities": ("id",),
         "activities": ("source", "source_id")}


def build_soql(stream: SalesforceStream, fields: Sequence[str], cursor: Cursor | None, overlap: timedelta) -> str:
    where = f" WHERE {cursor.where(overlap)}" if cursor else ""
    return f"SELECT {', '.join(fields)} FROM {stream.sobject}{where} ORDER BY SystemModstamp ASC, Id ASC"


def sync_salesforce(store: Store, client: SalesforceClient, settings: Settings, now: datetime,
                    report: SyncReport) -> None:
    try:
        client.connect()
    except SalesforceAuthError as exc:
        raise SyncAborted(str(exc)) from None
    ahead = _FirstPageAhead(client.sibling(), settings)
    with _cyclic_gc_paused(), store.account_index_deferred():
        try:
            _sync_salesforce_streams(store, client, settings, now, report, ahead)
        finally:
            for sobject, calls in ahead.close().items():  # a first page asked for and never used (a stop)
                report.streams.setdefault(f"salesforce.{sobject}", StreamStats()).api_calls += calls
        if store.cursor(_RELATED_PENDING):
            _resolve_related_accounts(store, now)
    report.api_calls["salesforce"] = client.calls


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while Salesforce's pages are fetched and stored.

    Every page parses into thousands of small dicts that hold no cycle: reference counting frees them when
    the page is stored. The cyclic collector still wakes every few hundred of them to walk everything that
    lives, pages in flight included: 1.5-2.3 of 17.4-18.9 CPU s in a backfill of 10,000 accounts, for
    nothing. Peak memory did not move (324 MB against 323). It is switched back on at the end (unless it was
    off before)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _sync_salesforce_streams(store: Store, client: SalesforceClient, settings: Settings, now: datetime,
                             report: SyncReport, ahead: _FirstPageAhead) -> None:
    for index, stream in enumerate(SALESFORCE_STREAMS):
        name = f"salesforce.{stream.sobject}"
        started, calls = time.monotonic(), client.session_calls
        following = SALESFORCE_STREAMS[index + 1] if index + 1 < len(SALESFORCE_STREAMS) else None
        try:
            _check_budget(client, settings.salesforce_api_share, report)
            sync_salesforce_stream(store, client, stream, settings, now, report, ahead=ahead, following=following)
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


def _check_budget(client: SalesforceClient, share: float, report: SyncReport) -> None:
    """Keep the worker inside its share of the org's daily API limit (other integrations need the rest)."""
    usage = client.api_usage
    if usage is None or usage.share is None:
        return
    report.api_share = usage.share
    if report.api_share >= share:
        raise BudgetSpent(f"Salesforce API use is at {usage.used} of {usage.limit} calls today "
                          f"({report.api_share:.0%}), at or above HEALTHBEAT_SALESFORCE_API_SHARE={share:.0%}")


def sync_salesforce_stream(store: Store, client: SalesforceClient, stream: SalesforceStream,
                           settings: Settings, now: datetime, report: SyncReport, *,
                           ahead: _FirstPageAhead | None = None, following: SalesforceStream | None = None) -> None:
    """One stream's new and changed records, page by page, each page stored with the cursor after it.

    With `ahead`, its first page may already have been asked for, and the `following` stream's is asked for
    on the side while this one's pages are stored."""
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
    soql = build_soql(stream, fields, cursor, settings.salesforce_overlap)
    first = ahead.take(stream.sobject, soql) if ahead is not None else None
    following_cursor = (Cursor.load(store.cursor(f"salesforce.{following.sobject}"))
                        if ahead is not None and following is not None else None)
    responses = client.query_pages(soql, include_deleted=stream.has_is_deleted, first=first)
    budget = functools.partial(_check_budget, client, settings.salesforce_api_share, report)
    pages = 0
    with _Prefetched(_chunks(responses, PAGE, after_each=budget)) as prefetched:
        for page in prefetched:
            cursor = _store_salesforce_page(store, stream, page, cursor, now, report)
            pages += 1
            if pages == 1 and ahead is not None and following is not None:
                # Once this stream's first page is stored, its next ones are on their way: only now is
                # Salesforce asked for the following stream's first page, which it answers in its own time.
                ahead.start(following, following_cursor, client.api_usage)
    if pages == 0 and ahead is not None and following is not None:
        ahead.start(following, following_cursor, client.api_usage)
    if pages == 0 and cursor is not None:
        with store.transaction():
            store.save_cursor(name, cursor.checked(now).dump(), 0, now)


def _store_salesforce_page(store: Store, stream: SalesforceStream, page: list[dict[str, Any]],
                           cursor: Cursor | None, now: datetime, report: SyncReport) -> Cursor:
    name = f"salesforce.{stream.sobject}"
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
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            bad.append(Quarantined("salesforce", stream.sobject, record.get("Id"),
                                   f"{type(exc).__name__}: {exc}", record))
    last = page[-1]  # the query is ordered by (SystemModstamp, Id)
    moved = (cursor or Cursor(now, "", now)).after_page(parse_iso(_sf_time(last["SystemModstamp"]) or iso(now)),
                                                        str(last["Id"]), now)
    with store.transaction():
        for table, rows in tables.items():
            if table.endswith(":fill"):
                store.insert_missing(table.split(":")[0], rows)
            else:
                store.upsert(table, rows, _KEYS[table])
        store.quarantine(bad, now)
        store.save_cursor(name, moved.dump(), len(page), now)
        if stream.sobject in _RELATED_STREAMS:
            store.save_cursor(_RELATED_PENDING, "1", 0, now)
    report.add(name, len(page), deleted=sum(1 for r in page if r.get("IsDeleted")), quarantined=len(bad))
    report.quarantined += len(bad)
    for item in bad:
        log.warning("quarantined %s %s: %s", stream.sobject, item.source_id, item.reason)
    return moved


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


def _chunks(responses: Iterable[list[Row]], size: int, *, after_each: Callable[[], None]) -> Iterator[list[Row]]:
    """The client's responses (Salesforce picks their size) regrouped into pages of `size` records.

    A page is handed on as soon as it is full, before the next response is asked for. `after_each` runs
    after each response, before the next is asked for: the API budget check, so that once the budget is
    spent no further call is made. If it raises, the records already fetched are handed on first (they
    were paid for), then the error."""
    buffer: list[Row] = []
    for records in responses:
        buffer += records
        while len(buffer) >= size:
            yield buffer[:size]
            del buffer[:size]
        try:
            after_each()
        except Exception:
            if buffer:
                yield buffer
            raise
    if buffer:
        yield buffer


_Item = TypeVar("_Item")


class _FirstPageAhead:
    """The next stream's first page, asked for on a second session while this stream's pages are stored.

    Salesforce answers a query's first page only once it has found and sorted every record the query selects:
    seconds for a large backfill, during which a worker going stream by stream has nothing to do; the later
    pages come quickly (the sandbox's first pages at 5,000 accounts: 3.8 s of a 12 s backfill). Asked for one
    stream ahead, once the stream before has a page stored, most of that wait passes while it is stored: a
    backfill of 10,000 accounts took 26.5-27.3 s instead of 27.8-28.6 (the sandbox answers on one core, so
    its work on a first page still slows the pages of the stream being read; Salesforce's would not). The
    side thread plans the query from its own describe and the cursor read here; the stream uses the page only
    if it plans the same query. Never more than one call ahead, and none once the API share is spent."""

    def __init__(self, sibling: SalesforceClient, settings: Settings) -> None:
        self._sibling = sibling
        self._settings = settings
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salesforce-first-page")
        self._pending: tuple[str, Future[tuple[str | None, dict[str, Any] | None]]] | None = None
        self._calls: Counter[str] = Counter()  # per sObject: the side session's calls, once they are known

    def start(self, stream: SalesforceStream, cursor: Cursor | None, usage: ApiUsage | None) -> None:
        self._settle()
        if usage is not None and usage.share is not None and usage.share >= self._settings.salesforce_api_share:
            return
        self._pending = (stream.sobject, self._pool.submit(self._fetch, stream, cursor))

    def take(self, sobject: str, soql: str) -> dict[str, Any] | None:
        """The first page of `soql` if it was asked for ahead; the error of asking for it is raised here."""
        pending = self._pending
        if pending is None or pending[0] != sobject:
            self._settle()  # asked for a stream that was skipped: not this one's page, nor its error
            return None
        self._pending = None
        planned, page = pending[1].result()
        return page if planned == soql else None

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

    def _fetch(self, stream: SalesforceStream, cursor: Cursor | None) -> tuple[str | None, dict[str, Any] | None]:
        before = self._sibling.session_calls
        try:
            try:
                available = self._sibling.describe_fields(stream.sobject)
            except SalesforceError:
                return None, None  # the stream plans (and reports) this itself
            soql = build_soql(stream, stream.fields_in(available), cursor, self._settings.salesforce_overlap)
            return soql, self._sibling.first_page(soql, include_deleted=stream.has_is_deleted)
        finally:
            self._calls[stream.sobject] += self._sibling.session_calls - before


class _Prefetched(Generic[_Item]):
    """Iterate `source` in a thread, up to `depth` items ahead, so that waiting for Salesforce and parsing
    its JSON overlap storing the page before.

    An error in the thread is raised to the consumer in order, after the items before it. Leaving the
    `with` block stops the thread and waits for it: a call already under way finishes, no new one starts,
    and the client (not thread-safe) is the caller's alone again."""

    def __init__(self, source: Iterator[_Item], *, depth: int = 2) -> None:
        self._source = source
        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="salesforce-pages", daemon=True)

    def __enter__(self) -> _Prefetched[_Item]:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def __iter__(self) -> Iterator[_Item]:
        while True:
            last, item = self._queue.get()
            if not last:
                yield item
            elif item is None:
                return
            else:
                raise item

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._hand_over((False, item)):
                    return
            self._hand_over((True, None))
        except BaseException as exc:  # any error: the consumer re-raises it, in order, in its own thread
            self._hand_over((True, exc))
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()

    def _hand_over(self, entry: tuple[bool, Any]) -> bool:
        """Wait for room in the queue; False once the consumer has gone."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


# -- Zendesk ------------------------------------------------------------------------------------------

def sync_zendesk(store: Store, client: ZendeskClient, now: datetime, report: SyncReport, *,
                 backfill: timedelta = timedelta(days=365)) -> None:
    try:
        client.verify()
        _sync_tickets(store, client, now, report, backfill)
        if _organizations_due(store, now):
            _sync_organizations(store, client, now, report)
        map_organizations(store, report, now)
    except ZendeskAuthError as exc:
        report.failed_streams["zendesk"] = str(exc)
        log.error("sync zendesk: %s", exc)
    except ZendeskError as exc:
        report.failed_streams["zendesk.tickets"] = str(exc)
        log.error("sync zendesk failed: %s; next cycle resumes from the cursor", exc)
    report.api_calls["zendesk"] = client.calls


ORGANIZATIONS_REFRESH = timedelta(hours=6)


def _organizations_due(store: Store, now: datetime) -> bool:
    """Organizations change rarely and are listed whole (no incremental export for them here): read them
    every few hours (so a new Account can claim an organization by domain within that time), and at once
    when a ticket names an organization the store does not know."""
    last = store.cursor("zendesk.organizations")
    if last is None or parse_iso(last) + ORGANIZATIONS_REFRESH <= now:
        return True
    return bool(store.scalar(
        "SELECT 1 FROM activities WHERE source = 'zendesk' AND kind = 'ticket' AND related_id IS NOT NULL "
        "AND related_id NOT IN (SELECT 'org:' || id FROM zendesk_organizations) LIMIT 1"))


def _domain(website: str | None) -> str | None:
    if not website:
        return None
    host = urlparse(website if "://" in website else f"https://{website}").hostname or ""
    return host.removeprefix("www.").lower() or None


def _sync_organizations(store: Store, client: ZendeskClient, now: datetime, report: SyncReport) -> None:
    """Read every organization (when due) and keep it as Zendesk has it; mapping is a separate, local step."""
    rows: list[Row] = []
    bad: list[Quarantined] = []
    for item in client.organizations():
        if isinstance(item, BadRecord):
            bad.append(Quarantined("zendesk", "organizations", None, item.reason, item.raw))
            continue
        rows.append({"id": item.id, "name": item.name, "external_id": item.external_id,
                     "domains": json.dumps(list(item.domain_names))})
    with store.transaction():
        store.upsert("zendesk_organizations", rows, ("id",))
        store.quarantine(bad, now)
        store.save_cursor("zendesk.organizations", iso(now), len(rows), now)
    report.add("zendesk.organizations", len(rows))
    report.quarantined += len(bad)


_MAPPED_FROM = "zendesk.mapped_from"


def _mapping_inputs(store: Store) -> str:
    """What the mapping depends on, in a few numbers: the accounts (any change moves their modstamp) and the
    organizations (stored only by `_sync_organizations`)."""
    accounts = store.conn.execute("SELECT count(*), max(modstamp) FROM accounts").fetchone()
    organizations = store.conn.execute(
        "SELECT count(*), total(id), group_concat(coalesce(external_id, '') || coalesce(domains, ''), '|') "
        "FROM zendesk_organizations").fetchone()
    return hashlib.sha256(json.dumps([*accounts, *organizations]).encode()).hexdigest()


def map_organizations(store: Store, report: SyncReport, now: datetime) -> None:
    """Map each stored organization to an Account by external id, else by domain; never guess beyond that.

    Local (no API call), so it runs in any cycle where an account or an organization changed: an Account
    that arrives later claims its organization and that organization's tickets at once."""
    inputs = _mapping_inputs(store)
    if store.cursor(_MAPPED_FROM) == inputs:
        report.unmapped_organizations = [int(r["id"]) for r in store.query(
            "SELECT id FROM zendesk_organizations WHERE account_id IS NULL ORDER BY id")]
        return
    accounts = {r["id"]: _domain(r["website"]) for r in
                store.query("SELECT id, website FROM accounts WHERE is_deleted = 0")}
    by_domain: dict[str, str] = {}
    for account_id, domain in accounts.items():
        if domain:
            by_domain.setdefault(domain, account_id)
    mapped = []
    for org in store.query("SELECT id, name, external_id, domains, account_id, mapped_by FROM zendesk_organizations"):
        found = ZendeskOrganization(int(org["id"]), org["name"] or "", org["external_id"],
                                    tuple(json.loads(org["domains"] or "[]")))
        account_id, mapped_by = _map_organization(found, accounts, by_domain)
        if (account_id, mapped_by) != (org["account_id"], org["mapped_by"]):
            mapped.append((account_id, mapped_by, org["id"]))
    with store.transaction() as conn:
        conn.executemany("UPDATE zendesk_organizations SET account_id = ?, mapped_by = ? WHERE id = ?", mapped)
        if mapped:
            conn.execute("""
                UPDATE activities SET account_id = (SELECT z.account_id FROM zendesk_organizations z
                                                    WHERE 'org:' || z.id = activities.related_id)
                WHERE source = 'zendesk' AND account_id IS NOT (
                    SELECT z.account_id FROM zendesk_organizations z WHERE 'org:' || z.id = activities.related_id)""")
        store.save_cursor(_MAPPED_FROM, inputs, 0, now)
    report.unmapped_organizations = [int(r["id"]) for r in store.query(
        "SELECT id FROM zendesk_organizations WHERE account_id IS NULL ORDER BY id")]
    if mapped and report.unmapped_organizations:
        log.warning("zendesk: %d organizations have no Salesforce account (ids %s); their tickets are "
                    "not scored until mapped", len(report.unmapped_organizations),
                    ", ".join(map(str, report.unmapped_organizations[:20])))


def _map_organization(org: ZendeskOrganization, accounts: dict[str, str | None],
                      by_domain: dict[str, str]) -> tuple[str | None, str | None]:
    if org.external_id:
        candidate = org.external_id.strip()
        if len(candidate) in (15, 18):
            full = to_18(candidate) if len(candidate) == 15 else candidate
            if full in accounts:
                return full, "external_id"
    for domain in org.domain_names:
        match = by_domain.get(domain.lower().removeprefix("www."))
        if match:
            return match, "domain"
    return None, None


def _sync_tickets(store: Store, client: ZendeskClient, now: datetime, report: SyncReport,
                  backfill: timedelta) -> None:
    name = "zendesk.tickets"
    cursor = store.cursor(name)
    known_roles = {r["source_id"]: r["role"] for r in
                   store.query("SELECT source_id, role FROM users WHERE source = 'zendesk'")}
    for page in client.ticket_pages(cursor=cursor, start_time=now - backfill):
        tickets = [t for t in page.tickets if isinstance(t, ZendeskTicket)]
        bad = [Quarantined("zendesk", "tickets", None, t.reason, t.raw)
               for t in page.tickets if isinstance(t, BadRecord)]
        comments = {t.id: _comments(client, t.id) for t in tickets if not t.is_deleted}
        authors = {c.author_id for cs in comments.values() for c in cs if str(c.author_id) not in known_roles}
        users = client.users(authors) if authors else []
        for user in users:
            known_roles[str(user.id)] = user.role
        with store.transaction() as conn:
            store.upsert("users", [{"source": "zendesk", "source_id": str(u.id), "name": u.name,
                                    "email": u.email, "role": u.role, "timezone": None, "is_active": 1,
                                    "modstamp": iso(now)} for u in users], ("source", "source_id"))
            store.upsert("activities", [_ticket_row(t) for t in tickets], ("source", "source_id"))
            rows = [_comment_row(t, c, known_roles) for t in tickets for c in comments.get(t.id, [])]
            store.upsert("activities", rows, ("source", "source_id"))
            deleted = [str(t.id) for t in tickets if t.is_deleted]
            conn.executemany("UPDATE activities SET is_deleted = 1 WHERE source = 'zendesk' AND parent_id = ?",
                             [(d,) for d in deleted])
            conn.execute("""
                UPDATE activities SET account_id = (SELECT z.account_id FROM zendesk_organizations z
                                                    WHERE 'org:' || z.id = activities.related_id)
                WHERE source = 'zendesk' AND account_id IS NULL AND related_id IS NOT NULL""")
            store.quarantine(bad, now)
            store.save_cursor(name, page.after_cursor or cursor, len(page.tickets), now)
        cursor = page.after_cursor or cursor
        report.add(name, len(tickets))
        report.add("zendesk.comments", len(rows))
        report.quarantined += len(bad)


def _comments(client: ZendeskClient, ticket_id: int) -> list[ZendeskComment]:
    """A ticket deleted between the export and this call has no comments left to count."""
    try:
        return client.ticket_comments(ticket_id)
    except ZendeskNotFound:
        return []


def _ticket_row(t: ZendeskTicket) -> Row:
    return {"source": "zendesk", "source_id": f"ticket:{t.id}", "kind": "ticket", "account_id": None,
            "related_id": f"org:{t.organization_id}" if t.organization_id else None, "parent_id": None,
            "occurred_at": iso(t.created_at), "direction": "in", "subject": t.subject, "text": None,
            "text_hash": None, "sentiment": None, "status": t.status, "priority": t.priority,
            "closed_at": iso(t.updated_at) if t.status in ("solved", "closed") else None,
            "is_deleted": 1 if t.is_deleted else 0, "modstamp": iso(t.updated_at)}


def _comment_row(t: ZendeskTicket, c: ZendeskComment, roles: dict[str, str]) -> Row:
    """Inbound means the customer wrote it: the author's role decides, not who opened the ticket."""
    role = roles.get(str(c.author_id))
    return {"source": "zendesk", "source_id": f"comment:{c.id}", "kind": "ticket_comment",
            "account_id": None, "related_id": f"org:{t.organization_id}" if t.organization_id else None,
            "parent_id": str(t.id), "occurred_at": iso(c.created_at),
            "direction": "in" if role == "end-user" else "out", "subject": None, "text": c.body,
            "text_hash": None, "sentiment": None, "status": None, "priority": None, "closed_at": None,
            "is_deleted": 0, "modstamp": iso(t.updated_at)}


# -- Usage files --------------------------------------------------------------------------------------

def sync_usage(store: Store, settings: Settings, now: datetime, report: SyncReport) -> None:
    """Read each file once per content (name and hash remembered); a later row for an account-day wins."""
    folder = settings.usage_dir
    if folder is None:
        return
    if not folder.is_dir():
        report.failed_streams["usage"] = f"USAGE_DIR {folder} is not a folder"
        log.error("sync usage: USAGE_DIR %s is not a folder", folder)
        return
    name = "usage.files"
    seen: dict[str, dict[str, str]] = json.loads(store.cursor(name) or "{}")
    for usage_file in list_usage_files(folder):
        known = seen.get(usage_file.path.name)
        if isinstance(known, dict) and known.get("stat") == usage_file.fingerprint:
            continue  # unchanged on disk: not even read
        digest = hashlib.sha256(usage_file.path.read_bytes()).hexdigest()[:32]
        if isinstance(known, dict) and known.get("sha256") == digest:
            seen[usage_file.path.name] = {"stat": usage_file.fingerprint, "sha256": digest}
            continue  # the same content, touched or copied again: nothing to re-read
        rows: dict[tuple[str, str], Row] = {}
        bad: list[Quarantined] = []
        for item in read_usage_file(usage_file.path):
            if isinstance(item, BadUsageRow):
                bad.append(Quarantined("usage", "usage_daily", f"{item.file}:{item.line}",
                                       f"{item.file} line {item.line}: {item.reason}", item.raw))
                continue
            account_id = to_18(item.account_id) if len(item.account_id) == 15 else item.account_id
            rows[(account_id, item.day.isoformat())] = {
                "account_id": account_id, "day": item.day.isoformat(), "active_users": item.active_users,
                "events": item.events, "features_used": json.dumps(list(item.features_used)),
                "seats": item.seats, "source_file": f"{item.file}:{item.line}"}
        seen[usage_file.path.name] = {"stat": usage_file.fingerprint, "sha256": digest}
        with store.transaction():
            store.upsert("usage_daily", list(rows.values()), ("account_id", "day"))
            store.quarantine(bad, now)
            store.save_cursor(name, json.dumps(seen, sort_keys=True), len(rows), now)
        report.add(name, len(rows))
        report.quarantined += len(bad)
        for item_bad in bad:
            log.warning("quarantined usage row: %s", item_bad.reason)


def sync_all(store: Store, settings: Settings, now: datetime, *,
             salesforce: SalesforceClient, zendesk: ZendeskClient | None,
             progress: Callable[[str, int], None] | None = None) -> SyncReport:
    """Every source in turn; `progress(stream, records so far)` after each page, for a terminal's sake."""
    report = SyncReport(progress=progress)
    sync_salesforce(store, salesforce, settings, now, report)
    if zendesk is not None:
        sync_zendesk(store, zendesk, now, report, backfill=settings.zendesk_backfill)
    else:
        report.skipped_streams["zendesk"] = "not configured"
    sync_usage(store, settings, now, report)
    return report
