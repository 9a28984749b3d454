"""A large backfill of one Salesforce object as a Bulk API 2.0 query job, stored set by set.

Orgs with tens of millions of Tasks and EmailMessages are where reading REST pages is slowest and most fragile
(each query Salesforce stops after two minutes, each page a call of 2,000 records); Bulk API 2.0 runs the query
on Salesforce's side, splitting it itself, and hands the results over by locator, tens of thousands of records a
call. So a read that begins far back, the first of a stream (`HEALTHBEAT_SALESFORCE_BACKFILL`) or a catch-up after
the worker was away longer than `CATCH_UP`, first counts what it would read (`SELECT COUNT()`, one call; a count
Salesforce cannot finish in time is large enough); above `HEALTHBEAT_SALESFORCE_BULK_THRESHOLD` it is one
`queryAll` job. Incremental cycles stay on REST: they read minutes of changes, and a job costs at least three
calls and seconds of Salesforce's queue.

The job reads the span from the stream's cursor to the run's start; its results come in no useful order, so
each set is stored (upserted by id, as REST pages are) with the job and the locator of the next set in the
cursor (`worker.sync.cursor.BulkProgress`), and only after the last set does the cursor move to the span's end.
The same run then reads what changed since over REST, from there. A worker killed mid-job goes on from the
locator stored while Salesforce keeps the job (seven days), and starts a new job once it is gone; a set stored
again is the same rows again. A job that ends Failed or Aborted is logged and the read goes on over REST, in
windows if Salesforce stops the whole query (`worker.sync.salesforce`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from connectors.salesforce.client import SalesforceClient, SalesforceError, SalesforceQueryTimeout
from worker.store import Store, iso
from worker.sync._paging import _Prefetched
from worker.sync.cursor import BulkProgress, Cursor

log = logging.getLogger(__name__)

CATCH_UP: Final = timedelta(days=1)
"""A stream whose last read is older than this is catching up (the worker was stopped, or the stream failing) and
may be read in bulk. A day of an org's changes is rarely near the threshold, so most catch-ups stay on REST after
their one COUNT() call; any cycle closer than a day to the last spends no call on counting at all."""
TOO_MANY: Final = -1
"""The count of a read Salesforce could not count in time (QUERY_TIMEOUT): more than any threshold."""

StorePage = Callable[[list[dict[str, Any]], Cursor], None]
"""Store one set of a job's records with the cursor given, in one transaction (`worker.sync.salesforce`)."""


def is_candidate(cursor: Cursor | None, now: datetime, threshold: int) -> bool:
    """Whether a read from `cursor` may go in bulk: a first read, a job under way, or a catch-up."""
    if threshold <= 0:
        return False
    return cursor is None or cursor.bulk is not None or now - cursor.run > CATCH_UP


def count_soql(sobject: str, where: str | None) -> str:
    return f"SELECT COUNT() FROM {sobject}{f' WHERE {where}' if where else ''}"


def count(client: SalesforceClient, sobject: str, where: str | None, *, include_deleted: bool) -> int:
    """How many records a read would bring (`TOO_MANY` when Salesforce cannot count them in time)."""
    try:
        return client.count(count_soql(sobject, where), include_deleted=include_deleted)
    except SalesforceQueryTimeout:
        return TOO_MANY


def above(counted: int, threshold: int) -> bool:
    return counted == TOO_MANY or counted > threshold


def job_soql(sobject: str, fields: Sequence[str], where: str | None, end: datetime) -> str:
    """The job's query: the read's span up to `end`, unordered (an ORDER BY would stop Salesforce splitting it)."""
    conditions = [c for c in (where, f"SystemModstamp < {iso(end)}") if c]
    return f"SELECT {', '.join(fields)} FROM {sobject} WHERE {' AND '.join(conditions)}"


def read_in_bulk(store: Store, client: SalesforceClient, *, name: str, sobject: str, fields: Sequence[str],
                 types: Mapping[str, str], include_deleted: bool, cursor: Cursor, where: str | None,
                 now: datetime, store_page: StorePage, budget: Callable[[], None], page_size: int) -> Cursor:
    """Read the span from `cursor` (`where`) to `now` as one query job (or go on with the one `cursor` names) and
    store it set by set; the cursor after: at the span's end, or where it was (its job dropped) when the job
    failed, so that the caller reads the span over REST. `budget` runs after each set, before the next call."""
    progress = cursor.bulk
    job = None
    if progress is not None:
        log.info("sync %s: going on with Bulk API 2.0 query job %s from %s", name, progress.job,
                 "its first set" if progress.locator is None else f"locator {progress.locator}")
        try:
            job = client.wait_for_query_job(progress.job)
        except SalesforceError as exc:
            if exc.status != 404:
                raise
            log.warning("sync %s: Bulk API 2.0 query job %s is gone (%s); starting a new one", name, progress.job,
                        exc)
            cursor = _save(store, name, cursor.with_bulk(None), now)
    if job is None:
        end = now
        job = client.create_query_job(job_soql(sobject, fields, where, end), include_deleted=include_deleted)
        log.info("sync %s: %s in bulk, Bulk API 2.0 query job %s, up to %s", name, sobject, job.id, iso(end))
        progress = BulkProgress(job.id, None, end)
        cursor = _save(store, name, cursor.with_bulk(progress), now)
        job = client.wait_for_query_job(job.id)
    assert progress is not None
    if job.state != "JobComplete":
        log.warning("sync %s: Bulk API 2.0 query job %s ended %s%s; reading %s over REST instead", name, job.id,
                    job.state, f" ({job.error_message})" if job.error_message else "", sobject)
        return _save(store, name, cursor.with_bulk(None), now)
    sets = _results(client, progress, types, page_size, budget)
    with _Prefetched(sets) as prefetched:
        for records, locator in prefetched:
            cursor = cursor.with_bulk(BulkProgress(progress.job, locator, progress.end))
            store_page(records, cursor)
    done = Cursor(max(progress.end, cursor.stamp), "", progress.end, cursor.window)
    log.info("sync %s: Bulk API 2.0 query job %s read to its end", name, progress.job)
    return _save(store, name, done, now)


def _results(client: SalesforceClient, progress: BulkProgress, types: Mapping[str, str], page_size: int,
             budget: Callable[[], None]) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
    """Each set of a complete job's results from `progress`'s locator on, with the locator after it (None after
    the last; a set of none is handed on too, so that its locator is stored)."""
    locator = progress.locator
    while True:
        results = client.query_job_results(progress.job, dict(types), locator=locator, max_records=page_size)
        yield results.records, results.next_locator
        if results.next_locator is None:
            return
        locator = results.next_locator
        budget()


def _save(store: Store, name: str, cursor: Cursor, now: datetime) -> Cursor:
    with store.transaction():
        store.save_cursor(name, cursor.dump(), 0, now)
    return cursor
