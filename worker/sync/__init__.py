"""Pull activity into the store, incrementally: the first stage of a cycle.

Every stream follows one discipline: read from the committed cursor (minus an overlap, with `>=`, since
many records can share one stamp), upsert each page by (source, source id) and move the cursor in the
same transaction, never past the run's start. Re-reading is harmless; a crash loses nothing. A bad record is
quarantined with its reason and the rest of the page goes on. A stream that fails ends alone: the other
streams still run, and the next cycle resumes from what was committed. A Salesforce read too large to answer in
one query goes in windows of time, each window's end stored like a page (`cursor`); a backfill of an object
with more records than the Bulk threshold is read as one Bulk API 2.0 job, its results stored a set at a
time with the job's locator in the cursor (`salesforce_bulk`); deletes the recycle bin no
longer shows are found by a daily reconciliation (`reconcile`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from connectors.salesforce.client import SalesforceClient
from connectors.zendesk.client import ZendeskClient
from worker.errors import SyncAborted
from worker.store import Store
from worker.sync.report import SyncReport
from worker.sync.salesforce import sync_salesforce
from worker.sync.usage import sync_usage
from worker.sync.zendesk import sync_zendesk

__all__ = ["SyncAborted", "SyncReport", "sync_all"]


def sync_all(store: Store, now: datetime, *, salesforce: SalesforceClient, zendesk: ZendeskClient | None,
             usage_dir: Path | None, salesforce_overlap: timedelta, salesforce_api_share: float,
             zendesk_backfill: timedelta, salesforce_backfill: timedelta = timedelta(days=730),
             salesforce_bulk_threshold: int = 0,
             progress: Callable[[str, int], None] | None = None) -> SyncReport:
    """Every source in turn; a source that is not configured (None) is skipped. `progress(stream, records so
    far)` after each page, for a terminal's sake. A Salesforce backfill above `salesforce_bulk_threshold`
    records goes through a Bulk API 2.0 job (`salesforce_bulk`); 0 never does."""
    report = SyncReport(progress=progress)
    sync_salesforce(store, salesforce, now, report, overlap=salesforce_overlap, api_share=salesforce_api_share,
                    backfill=salesforce_backfill, bulk_threshold=salesforce_bulk_threshold)
    if zendesk is not None:
        sync_zendesk(store, zendesk, now, report, backfill=zendesk_backfill)
    else:
        report.skipped_streams["zendesk"] = "not configured"
    sync_usage(store, usage_dir, now, report)
    return report
