"""The incremental cursor of a Salesforce stream, and the windows a read goes in: pure values and rules, no I/O.

A cursor is (stamp, id, run): the `SystemModstamp` and `Id` of the last record stored, and the start of the
run that stored it. Reading resumes strictly after (stamp, id) in `ORDER BY SystemModstamp, Id` order, so
records sharing a stamp (bulk updates) are neither dropped nor read again every cycle. A record can still
commit late with a stamp below a run's start, so the next run also re-reads everything stamped after that
run's start minus an overlap. The stamp never passes the run's start: what changed during a run is read
by the next one.

A read asks for everything from the cursor on in one query, unless Salesforce once could not answer that in
time (`QUERY_TIMEOUT`): then the cursor also remembers a `window`, the span of `SystemModstamp` one query may
cover, and a read goes window by window (`SystemModstamp >= start AND SystemModstamp < end`), halving a
window Salesforce stops and doubling the next after one it answers (short of a width it stopped). Once a
window has been read to its end, the cursor moves to that end even if the window held nothing
(`Cursor.reached`): every record stamped before it is stored. Each move is stored with the pages (or alone,
for an empty window), so a crash loses nothing and at worst reads one window again.

A backfill (or a long catch-up) of a large object goes as one Bulk API 2.0 query job instead
(`worker.sync.salesforce_bulk`): its results come in no useful order, so the stamp cannot follow them; the cursor
keeps the job (`BulkProgress`: its id, the locator of the next set of results, and the end of the span it reads)
and each set is stored with the locator after it. A restarted worker goes on from that locator while Salesforce
keeps the job; once the last set is stored, the cursor moves to the job's end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from worker.store import iso, parse_iso

ORIGIN = datetime(1999, 1, 1, tzinfo=UTC)
"""Older than any SystemModstamp (Salesforce sets it; no org's records are older than Salesforce): where the
windows of a stream that reads a whole object begin."""
MIN_WINDOW = timedelta(hours=1)
"""The narrowest window: a query Salesforce cannot answer even for one hour of records fails the stream."""
WIDEST = timedelta(days=3650)
"""Windows that grow past this are no limit at all: the next read is one query again."""


@dataclass(frozen=True)
class BulkProgress:
    """A Bulk API 2.0 query job under way: every record stamped from the cursor's stamp to `end` is in its results;
    those before `locator` (None: none yet) are stored."""

    job: str
    locator: str | None
    end: datetime


@dataclass(frozen=True)
class Cursor:
    stamp: datetime
    id: str
    run: datetime
    window: timedelta | None = None  # the SystemModstamp span one query may cover; None: no limit
    bulk: BulkProgress | None = None  # a query job being read (its results in no order): the stamp waits for its end

    def dump(self) -> str:
        data: dict[str, object] = {"stamp": iso(self.stamp), "id": self.id, "run": iso(self.run)}
        if self.window is not None:
            data["window"] = int(self.window.total_seconds())
        if self.bulk is not None:
            data["bulk"] = {"job": self.bulk.job, "locator": self.bulk.locator, "end": iso(self.bulk.end)}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def load(cls, text: str | None) -> Cursor | None:
        """Read a stored cursor; a bare timestamp (an older form) is a stamp with no id."""
        if not text:
            return None
        if text.startswith("{"):
            data = json.loads(text)
            window = data.get("window")
            bulk = data.get("bulk")
            return cls(parse_iso(data["stamp"]), str(data.get("id") or ""), parse_iso(data["run"]),
                       timedelta(seconds=int(window)) if window else None,
                       BulkProgress(str(bulk["job"]), bulk.get("locator") or None, parse_iso(bulk["end"]))
                       if isinstance(bulk, dict) else None)
        stamp = parse_iso(text)
        return cls(stamp, "", stamp)

    def where(self, overlap: timedelta) -> str:
        """The SOQL condition for the next read (datetime literals in the `2024-01-01T00:00:00Z` form)."""
        lookback = self.run - overlap
        if lookback < self.stamp:
            return f"SystemModstamp >= {iso(lookback)}"
        if not self.id:
            return f"SystemModstamp >= {iso(self.stamp)}"
        return f"(SystemModstamp > {iso(self.stamp)} OR (SystemModstamp = {iso(self.stamp)} AND Id > '{self.id}'))"

    def start(self, overlap: timedelta) -> datetime:
        """The earliest SystemModstamp the next read asks for (`where`'s lower bound): where its window begins."""
        return min(self.run - overlap, self.stamp)

    def after_page(self, stamp: datetime, record_id: str, run: datetime) -> Cursor:
        """Past the page's last record; capped at the run's start, where the id no longer applies."""
        if stamp >= run:
            return Cursor(run, "", run, self.window)
        return Cursor(stamp, record_id, run, self.window)

    def checked(self, run: datetime) -> Cursor:
        """A run found nothing new: the lookback now starts from this run."""
        return Cursor(self.stamp, self.id, run, self.window)

    def reached(self, end: datetime, run: datetime) -> Cursor:
        """A window was read to its `end`: every record stamped before it is stored, the next read starts
        there. Never backwards, never past the run's start."""
        end = min(end, run)
        if end <= self.stamp:
            return Cursor(self.stamp, self.id, run, self.window)
        return Cursor(end, "", run, self.window)

    def with_window(self, window: timedelta | None) -> Cursor:
        return replace(self, window=window)

    def with_bulk(self, bulk: BulkProgress | None) -> Cursor:
        return replace(self, bulk=bulk)


def narrower(tried: timedelta) -> timedelta | None:
    """Half a window Salesforce could not answer (whole seconds, `MIN_WINDOW` at least); None when the window
    tried was no wider than `MIN_WINDOW` already."""
    if tried <= MIN_WINDOW:
        return None
    return max(timedelta(seconds=int(tried.total_seconds()) // 2), MIN_WINDOW)


def wider(window: timedelta | None, failed: timedelta | None = None) -> timedelta | None:
    """The window after one Salesforce answered: twice as wide, to no limit at all past `WIDEST`, but short of
    the narrowest window it stopped this run (`failed`, three quarters of it): each stopped query costs Salesforce's
    two minutes, and growing straight back to a width that failed would cost them again and again."""
    if window is None:
        return None
    grown = window * 2 if failed is None else max(min(window * 2, failed * 3 / 4), MIN_WINDOW)
    return None if grown > WIDEST else timedelta(seconds=int(grown.total_seconds()))
