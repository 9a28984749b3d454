"""Large activity tables: a first sync reaches back only the backfill period, and a read Salesforce cannot answer
in time (`QUERY_TIMEOUT`, or no first page within the read timeout) goes in windows of SystemModstamp, halved
until Salesforce answers, without losing or repeating a record, and without costing a quiet cycle a call.

Salesforce stops a query that runs for about two minutes ("If the query doesn't execute within the standard
2-minute timeout limit, the job fails and a QUERY_TIMEOUT error is returned":
https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/asynch_api_bulk_query_processing.htm);
the sandbox plays it by answering QUERY_TIMEOUT to any query that would scan more than `query_timeout_rows`
records, so a whole large object times out and a narrow window of it does not.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import pytest

from connectors.salesforce.client import SalesforceClient, SalesforceCredentials
from connectors.sandboxes.world import World, sf_datetime
from worker.clock import ShiftedClock
from worker.config import Settings
from worker.cycle import Clients
from worker.demo.harness import Sandboxes
from worker.store import Store, iso
from worker.sync import sync_all
from worker.sync.cursor import MIN_WINDOW, Cursor
from worker.sync.report import BudgetSpent, SyncReport
from worker.sync.salesforce import SALESFORCE_STREAMS, sync_salesforce_stream

EVENT = next(s for s in SALESFORCE_STREAMS if s.sobject == "Event")


class Killed(Exception):
    """The worker dies here (a SIGKILL after a committed page)."""


def _sync(store: Store, settings: Settings, clients: Clients, clock: ShiftedClock,
          progress: Callable[[str, int], None] | None = None) -> SyncReport:
    return sync_all(store, clock(), salesforce=clients.salesforce, zendesk=None, usage_dir=None,
                    salesforce_overlap=settings.salesforce_overlap,
                    salesforce_api_share=settings.salesforce_api_share, zendesk_backfill=settings.zendesk_backfill,
                    salesforce_backfill=settings.salesforce_backfill, progress=progress,
                    salesforce_bulk_threshold=0)  # windows of REST pages are what these tests are about


def _account(sandboxes: Sandboxes) -> str:
    owner = sandboxes.salesforce.insert("User", {"Name": "Dana", "Email": "dana@example.com"})
    return sandboxes.salesforce.insert("Account", {"Name": "Acme", "OwnerId": owner})


def _meetings(sandboxes: Sandboxes, account: str, clock: ShiftedClock, count: int, *, days: float,
              ending: timedelta = timedelta(0)) -> list[str]:
    """`count` meetings logged one after another over `days` days up to `ending` ago, each stamped as it was
    held."""
    first = clock() - ending - timedelta(days=days)
    ids = []
    for n in range(count):
        at = sf_datetime(first + n * timedelta(days=days) / count)
        ids.append(sandboxes.salesforce.insert("Event", {"AccountId": account, "Subject": f"Call {n}",
                                                         "ActivityDateTime": at, "SystemModstamp": at}))
    return ids


def _stored(store: Store, kind: str = "meeting") -> list[str]:
    return [r["source_id"] for r in store.query("SELECT source_id FROM activities WHERE kind = ? ORDER BY 1",
                                                (kind,))]


def _timeouts(sandboxes: Sandboxes) -> list[str]:
    return [c.query for c in sandboxes.salesforce.calls if c.status == 400 and "/query" in c.path]


def test_a_first_sync_reads_activity_only_from_the_backfill_period_on_and_accounts_whole(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    ancient = _meetings(sandboxes, account, clock, 2, days=10, ending=settings.salesforce_backfill + timedelta(days=1))
    recent = _meetings(sandboxes, account, clock, 2, days=10)
    old_customer = sandboxes.salesforce.insert("Account", {"Name": "Initech", "SystemModstamp": sf_datetime(
        clock() - settings.salesforce_backfill - timedelta(days=400))})

    _sync(store, settings, clients, clock)

    assert _stored(store) == sorted(recent)
    assert not set(ancient) & set(_stored(store))
    assert store.scalar("SELECT count(*) FROM accounts WHERE id = ?", (old_customer,)) == 1


def test_an_object_salesforce_cannot_read_in_one_query_is_read_in_windows_and_every_record_arrives_once(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    meetings = _meetings(sandboxes, account, clock, 120, days=40)
    sandboxes.salesforce.query_timeout_rows = 30

    report = _sync(store, settings, clients, clock)

    assert report.failed_streams == {}
    assert _stored(store) == sorted(meetings)
    stats = report.streams["salesforce.Event"]
    assert stats.narrowed >= 1 and stats.windows > stats.narrowed
    assert len(_timeouts(sandboxes)) == stats.narrowed
    cursor = Cursor.load(store.cursor("salesforce.Event"))
    assert cursor is not None and cursor.window is not None  # the next catch-up starts in windows


def test_a_first_page_the_side_session_found_timed_out_is_not_asked_for_again_at_full_width(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    _meetings(sandboxes, account, clock, 60, days=20)
    sandboxes.salesforce.query_timeout_rows = 30

    now = clock()
    _sync(store, settings, clients, clock)  # Event's first page is asked for ahead, while Opportunity's are stored

    floor = iso((now - settings.salesforce_backfill).replace(microsecond=0))
    whole = [q for q in _timeouts(sandboxes) if "Event" in q and quote(floor) in q and "%3C+" not in q]
    assert len(whole) == 1  # the side session's, taken by the stream: it asked for the first half at once


def test_a_quiet_cycle_after_a_backfill_in_windows_asks_one_query_per_stream(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    _meetings(sandboxes, account, clock, 120, days=40)
    sandboxes.salesforce.query_timeout_rows = 30
    _sync(store, settings, clients, clock)
    clock.offset += timedelta(minutes=15)

    quiet = _sync(store, settings, clients, clock)

    per_stream = {name: s.api_calls for name, s in quiet.streams.items() if name.startswith("salesforce.")}
    assert per_stream == {f"salesforce.{s.sobject}": 1 for s in SALESFORCE_STREAMS}


def test_a_backfill_in_windows_stores_exactly_what_a_backfill_in_one_query_stores(
        sandboxes: Sandboxes, world: World, store: Store, settings: Settings, clients: Clients,
        clock: ShiftedClock, tmp_path: Path) -> None:
    _sync(store, settings, clients, clock)
    sandboxes.salesforce.query_timeout_rows = 100  # every activity object of the world is larger than this

    with Store(tmp_path / "windows.db") as windowed:
        report = _sync(windowed, settings, clients, clock)
        got = windowed.query("SELECT * FROM activities ORDER BY source, source_id")

    assert report.failed_streams == {}
    assert all(report.streams[f"salesforce.{s}"].narrowed for s in ("Event", "Task", "EmailMessage"))
    assert got == store.query("SELECT * FROM activities ORDER BY source, source_id")


@pytest.mark.parametrize("pages", [1, 2, 3, 5])
def test_a_worker_killed_during_a_backfill_in_windows_loses_and_repeats_nothing(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock,
        pages: int) -> None:
    account = _account(sandboxes)
    meetings = _meetings(sandboxes, account, clock, 90, days=30)
    sandboxes.salesforce.query_timeout_rows = 20
    stored: list[int] = []

    def kill(stream: str, _read: int) -> None:
        if stream == "salesforce.Event":
            stored.append(1)
            if len(stored) == pages:
                raise Killed

    with pytest.raises(Killed):
        _sync(store, settings, clients, clock, progress=kill)
    clock.offset += timedelta(minutes=1)
    again = _sync(store, settings, clients, clock)

    assert _stored(store) == sorted(meetings)
    assert again.streams["salesforce.Event"].read <= len(meetings) - 1  # it went on from the cursor


def test_a_window_that_held_nothing_still_moves_the_cursor_to_its_end(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    _meetings(sandboxes, account, clock, 40, days=5)  # the backfill period's last days only
    salesforce = sandboxes.salesforce
    salesforce.query_timeout_rows = 20
    clients.salesforce.describe_fields("Event")  # described up front: the stream's calls are its queries
    now = clock()
    # the read from the floor times out, its first half (empty) is answered: then the API share is spent
    salesforce.daily_api_limit = 2 * (salesforce.api_calls_used + 2)

    with pytest.raises(BudgetSpent):
        sync_salesforce_stream(store, clients.salesforce, EVENT, now, SyncReport(), overlap=settings.salesforce_overlap,
                               api_share=settings.salesforce_api_share, backfill=settings.salesforce_backfill)

    cursor = Cursor.load(store.cursor("salesforce.Event"))
    floor = (now - settings.salesforce_backfill).replace(microsecond=0)
    assert cursor is not None and cursor.stamp == floor + settings.salesforce_backfill / 2
    assert _stored(store) == []


def test_a_window_salesforce_cannot_answer_even_an_hour_of_fails_its_stream_alone_and_says_where(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    before = _meetings(sandboxes, account, clock, 5, days=5, ending=timedelta(days=2))
    bulk = sf_datetime(clock() - timedelta(days=1))  # a mass update: one stamp on more records than Salesforce reads
    for n in range(12):
        sandboxes.salesforce.insert("Event", {"AccountId": account, "Subject": f"Bulk {n}",
                                              "ActivityDateTime": bulk, "SystemModstamp": bulk})
    task = sandboxes.salesforce.insert("Task", {"AccountId": account, "TaskSubtype": "Call", "Status": "Completed",
                                                "CompletedDateTime": sf_datetime(clock())})
    sandboxes.salesforce.query_timeout_rows = 8

    report = _sync(store, settings, clients, clock)

    assert list(report.failed_streams) == ["salesforce.Event"]
    message = report.failed_streams["salesforce.Event"]
    assert "even for an hour" in message and "QUERY_TIMEOUT" in message and "tries again next cycle" in message
    assert set(before) <= set(_stored(store))  # what came before the dense hour is kept
    assert _stored(store, "call") == [task]
    cursor = Cursor.load(store.cursor("salesforce.Event"))
    assert cursor is not None and cursor.window == MIN_WINDOW and cursor.stamp < datetime.fromisoformat(
        bulk.replace("+0000", "+00:00"))


def _slow_client(settings: Settings, timeout: float) -> SalesforceClient:
    assert settings.salesforce_client_id and settings.salesforce_client_secret
    return SalesforceClient(SalesforceCredentials(
        login_url=settings.salesforce_login_url, client_id=settings.salesforce_client_id,
        client_secret=settings.salesforce_client_secret.get_secret_value(), ca_bundle=settings.ca_bundle),
        timeout=timeout, retry_sleep=lambda _seconds: None)


def test_a_first_page_that_does_not_come_within_the_read_timeout_narrows_the_window_too(
        sandboxes: Sandboxes, store: Store, settings: Settings, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    meetings = _meetings(sandboxes, account, clock, 10, days=10)
    client = _slow_client(settings, timeout=0.5)
    client.describe_fields("Event")
    sandboxes.salesforce.stall_next(1.5, path_contains="/queryAll")  # the whole read's first page: too slow
    report = SyncReport()

    sync_salesforce_stream(store, client, EVENT, clock(), report, overlap=settings.salesforce_overlap,
                           api_share=settings.salesforce_api_share, backfill=settings.salesforce_backfill)
    client.close()

    assert report.streams["salesforce.Event"].narrowed == 1
    assert _stored(store) == sorted(meetings)


def test_the_queries_of_a_read_in_windows_cover_the_backfill_period_without_gap_or_overlap(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    _meetings(sandboxes, account, clock, 60, days=60)
    sandboxes.salesforce.query_timeout_rows = 25
    now = clock()

    sync_salesforce_stream(store, clients.salesforce, EVENT, now, SyncReport(), overlap=settings.salesforce_overlap,
                           api_share=settings.salesforce_api_share, backfill=settings.salesforce_backfill)

    answered = [_bounds(c.query) for c in sandboxes.salesforce.calls
                if c.status == 200 and c.path.endswith("/queryAll/") and "Event" in c.query]
    floor = iso((now - settings.salesforce_backfill).replace(microsecond=0))
    assert answered[0][0] == floor and answered[-1][1] is None
    assert all(a[1] == b[0] for a, b in pairwise(answered))


def _bounds(query: str) -> tuple[Any, Any]:
    """(from, before) of a windowed read's SOQL, as the URL carries it."""
    soql = parse_qs(query)["q"][0]
    start = soql.split("SystemModstamp >= ", 1)[1].split()[0]
    end = soql.split("SystemModstamp < ", 1)[1].split()[0] if "SystemModstamp < " in soql else None
    return start, end
