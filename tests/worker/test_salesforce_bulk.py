"""Large backfills as Bulk API 2.0 query jobs: the same store and scores as REST pages, resumable after a kill by
the locator kept in the cursor, back on REST when a job fails, never for incremental cycles nor with the
threshold at 0, and never more than a set of results in memory at once.

The sandbox serves query jobs as Salesforce documents them (tests/connectors/test_salesforce_bulk_sandbox.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from connectors.sandboxes.world import World, sf_datetime
from worker.clock import ShiftedClock
from worker.config import Settings
from worker.cycle import Clients, Cycle
from worker.demo.harness import Sandboxes
from worker.rulebook.in_force import RuleBook
from worker.scoring.engine import score_accounts
from worker.scoring.scorecard import load_scorecard
from worker.scoring.sentiment import VaderModel
from worker.service.metrics import Metrics, observe_cycle
from worker.store import Store
from worker.sync import salesforce as salesforce_sync
from worker.sync.cursor import Cursor
from worker.sync.report import SyncReport
from worker.sync.salesforce import sync_salesforce

TABLES = {"activities": "source, source_id", "accounts": "id", "opportunities": "id", "users": "source, source_id"}


class Killed(Exception):
    """The worker dies here (a SIGKILL after a committed page)."""


def _sync(store: Store, settings: Settings, clients: Clients, clock: ShiftedClock, *, threshold: int,
          progress: Callable[[str, int], None] | None = None) -> SyncReport:
    clients.salesforce.poll_sleep = lambda _seconds: None  # the sandbox's jobs complete after one poll in progress
    report = SyncReport(progress=progress)
    sync_salesforce(store, clients.salesforce, clock(), report, overlap=settings.salesforce_overlap,
                    api_share=settings.salesforce_api_share, backfill=settings.salesforce_backfill,
                    bulk_threshold=threshold)
    return report


def _tables(store: Store) -> dict[str, list[dict[str, object]]]:
    return {table: store.query(f"SELECT * FROM {table} ORDER BY {key}") for table, key in TABLES.items()}


def _jobs(sandboxes: Sandboxes) -> list[str]:
    """The query jobs created (POST jobs/query)."""
    return [c.path for c in sandboxes.salesforce.calls if c.method == "POST" and c.path.endswith("/jobs/query")]


def _bulk_calls(sandboxes: Sandboxes) -> int:
    return sum(1 for c in sandboxes.salesforce.calls if "/jobs/" in c.path)


def _account(sandboxes: Sandboxes) -> str:
    owner = sandboxes.salesforce.insert("User", {"Name": "Dana", "Email": "dana@example.com"})
    return sandboxes.salesforce.insert("Account", {"Name": "Acme", "OwnerId": owner})


def _meetings(sandboxes: Sandboxes, account: str, clock: ShiftedClock, count: int) -> list[str]:
    first = clock() - timedelta(days=30)
    ids = []
    for n in range(count):
        at = sf_datetime(first + n * timedelta(days=30) / count)
        ids.append(sandboxes.salesforce.insert("Event", {"AccountId": account, "Subject": f"Call {n}",
                                                         "ActivityDateTime": at, "SystemModstamp": at}))
    return ids


def _stored(store: Store) -> list[str]:
    return [r["source_id"] for r in store.query("SELECT source_id FROM activities WHERE kind = 'meeting' ORDER BY 1")]


def test_a_backfill_in_bulk_stores_exactly_what_rest_pages_store_and_scores_the_same(
        sandboxes: Sandboxes, world: World, store: Store, settings: Settings, clients: Clients,
        clock: ShiftedClock, tmp_path: Path) -> None:
    _sync(store, settings, clients, clock, threshold=0)
    assert _jobs(sandboxes) == []
    sandboxes.salesforce.reset_calls()

    with Store(tmp_path / "bulk.db") as bulk:
        report = _sync(bulk, settings, clients, clock, threshold=1)  # every object with more than one record
        scorecard = load_scorecard(settings.rules_dir)
        score_accounts(store, scorecard, clock())
        score_accounts(bulk, scorecard, clock())

        assert report.failed_streams == {}
        assert len(_jobs(sandboxes)) >= 5  # Events, Tasks, EmailMessages, Cases, Accounts, Opportunities...
        assert _tables(bulk) == _tables(store)
        scores = "SELECT account_id, score, band, churn_risk, expansion_readiness, reason FROM scores ORDER BY 1"
        assert bulk.query(scores) == store.query(scores) and store.query(scores)


def test_with_the_threshold_at_zero_no_job_is_created_and_nothing_is_counted(
        sandboxes: Sandboxes, world: World, store: Store, settings: Settings, clients: Clients,
        clock: ShiftedClock) -> None:
    _sync(store, settings, clients, clock, threshold=0)

    assert _bulk_calls(sandboxes) == 0
    assert not [c for c in sandboxes.salesforce.calls if "COUNT%28%29" in c.query]


def test_a_backfill_below_the_threshold_is_counted_once_per_stream_and_read_over_rest(
        sandboxes: Sandboxes, world: World, store: Store, settings: Settings, clients: Clients,
        clock: ShiftedClock) -> None:
    _sync(store, settings, clients, clock, threshold=1_000_000)

    assert _bulk_calls(sandboxes) == 0
    counts = [parse_qs(c.query)["q"][0] for c in sandboxes.salesforce.calls if "COUNT%28%29" in c.query]
    assert sorted(q.split(" FROM ")[1].split()[0] for q in counts) == sorted(
        ["User", "Account", "Opportunity", "Event", "Task", "EmailMessage", "Case"])


def test_an_incremental_cycle_after_a_bulk_backfill_reads_over_rest_only(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    _meetings(sandboxes, account, clock, 30)
    _sync(store, settings, clients, clock, threshold=10)
    assert _jobs(sandboxes)
    clock.offset += timedelta(minutes=15)
    later = sandboxes.salesforce.insert("Event", {"AccountId": account, "Subject": "Later",
                                                  "ActivityDateTime": sf_datetime(clock())})
    sandboxes.salesforce.reset_calls()

    _sync(store, settings, clients, clock, threshold=10)

    assert _bulk_calls(sandboxes) == 0
    assert not [c for c in sandboxes.salesforce.calls if "COUNT%28%29" in c.query]
    assert later in _stored(store)


def test_a_catch_up_after_more_than_a_day_away_is_counted_again_and_may_go_in_bulk(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    _sync(store, settings, clients, clock, threshold=10)
    clock.offset += timedelta(days=2)
    meetings = _meetings(sandboxes, account, clock, 30)
    sandboxes.salesforce.reset_calls()

    _sync(store, settings, clients, clock, threshold=10)

    assert len(_jobs(sandboxes)) == 1  # Event's; the other objects counted under the threshold
    assert _stored(store) == sorted(meetings)


@pytest.mark.parametrize("ending", ["Failed", "Aborted"])
def test_a_job_that_ends_failed_or_aborted_falls_back_to_rest_with_a_warning(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock,
        caplog: pytest.LogCaptureFixture, ending: str) -> None:
    account = _account(sandboxes)
    meetings = _meetings(sandboxes, account, clock, 30)
    sandboxes.salesforce.bulk.fail_next(ending, "InternalServerError : retried more than 15 times")

    with caplog.at_level(logging.WARNING, logger="worker.sync.salesforce_bulk"):
        report = _sync(store, settings, clients, clock, threshold=10)

    assert report.failed_streams == {}
    assert _stored(store) == sorted(meetings)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"ended {ending}" in m and "over REST instead" in m for m in warned)
    assert Cursor.load(store.cursor("salesforce.Event")).bulk is None  # type: ignore[union-attr]


def test_a_job_that_fails_falls_back_to_rest_windows_when_salesforce_stops_the_whole_query(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    meetings = _meetings(sandboxes, account, clock, 60)
    sandboxes.salesforce.bulk.fail_next("Failed")
    sandboxes.salesforce.query_timeout_rows = 25  # COUNT() too: "too many to count" reads in bulk

    report = _sync(store, settings, clients, clock, threshold=1_000)

    assert len(_jobs(sandboxes)) == 1
    assert report.failed_streams == {}
    assert report.streams["salesforce.Event"].narrowed >= 1
    assert _stored(store) == sorted(meetings)


@pytest.mark.parametrize("sets", [1, 2, 4])
def test_a_worker_killed_mid_job_goes_on_from_the_stored_locator_and_loses_and_repeats_nothing(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock,
        monkeypatch: pytest.MonkeyPatch, sets: int) -> None:
    monkeypatch.setattr(salesforce_sync, "PAGE", 10)  # sets of ten records: a kill lands between sets
    account = _account(sandboxes)
    meetings = _meetings(sandboxes, account, clock, 55)
    stored: list[int] = []

    def kill(stream: str, read: int) -> None:
        if stream == "salesforce.Event":
            stored.append(read)
            if len(stored) == sets:
                raise Killed

    with pytest.raises(Killed):
        _sync(store, settings, clients, clock, threshold=10, progress=kill)
    cursor = Cursor.load(store.cursor("salesforce.Event"))
    assert cursor is not None and cursor.bulk is not None and cursor.bulk.locator is not None
    clock.offset += timedelta(minutes=1)
    sandboxes.salesforce.reset_calls()
    again = _sync(store, settings, clients, clock, threshold=10)

    assert _jobs(sandboxes) == []  # the same job, from its locator
    assert again.streams["salesforce.Event"].read == 55 - 10 * sets
    assert _stored(store) == sorted(meetings)


def test_a_worker_restarted_after_salesforce_deleted_its_job_starts_a_new_one(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(salesforce_sync, "PAGE", 10)
    account = _account(sandboxes)
    meetings = _meetings(sandboxes, account, clock, 35)

    def kill(stream: str, _read: int) -> None:
        if stream == "salesforce.Event":
            raise Killed

    with pytest.raises(Killed):
        _sync(store, settings, clients, clock, threshold=10, progress=kill)
    sandboxes.salesforce.bulk.delete_all()  # seven days later, say
    sandboxes.salesforce.reset_calls()
    report = _sync(store, settings, clients, clock, threshold=10)

    assert len(_jobs(sandboxes)) == 1
    assert report.failed_streams == {}
    assert _stored(store) == sorted(meetings)


def test_a_large_job_is_read_a_set_at_a_time_never_more_than_a_page_held(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(salesforce_sync, "PAGE", 40)
    account = _account(sandboxes)
    _meetings(sandboxes, account, clock, 300)
    pages: list[int] = []
    last = [0]

    def watch(stream: str, read: int) -> None:
        if stream == "salesforce.Event":
            pages.append(read - last[0])
            last[0] = read

    _sync(store, settings, clients, clock, threshold=10, progress=watch)

    results = [parse_qs(c.query) for c in sandboxes.salesforce.calls if c.path.endswith("/results")]
    assert len(results) == 8 and all(r["maxRecords"] == ["40"] for r in results)
    assert max(pages) <= 40 and sum(pages) >= 300


def test_a_bulk_read_stops_at_the_api_share_between_sets_and_the_next_cycle_goes_on(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(salesforce_sync, "PAGE", 10)
    account = _account(sandboxes)
    meetings = _meetings(sandboxes, account, clock, 60)
    clients.salesforce.describe_fields("Event")
    salesforce = sandboxes.salesforce
    limit_at = salesforce.api_calls_used
    first = _sync(store, settings, clients, clock, threshold=10_000)  # counts, no job: where the calls go
    del first
    salesforce.daily_api_limit = 2 * (limit_at + 30)

    with Store(store.path.with_name("second.db")) as second:
        report = _sync(second, settings, clients, clock, threshold=10)
        assert report.salesforce_limited
        salesforce.daily_api_limit = 1_000_000
        clock.offset += timedelta(minutes=1)
        _sync(second, settings, clients, clock, threshold=10)
        assert _stored(second) == sorted(meetings)


def test_a_cursor_keeps_its_job_through_a_dump_and_a_load(clock: ShiftedClock) -> None:
    from worker.sync.cursor import BulkProgress

    now = clock().replace(microsecond=0)
    cursor = Cursor(now - timedelta(days=3), "", now, bulk=BulkProgress("750R00000000001IAA", "MjA", now))

    assert Cursor.load(cursor.dump()) == cursor
    assert Cursor.load(cursor.with_bulk(None).dump()).bulk is None  # type: ignore[union-attr]
    assert isinstance(now, datetime)


def test_a_cycle_that_ran_bulk_jobs_shows_them_and_the_allocation_left_on_metrics(
        world: World, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock,
        vader: VaderModel) -> None:
    clients.salesforce.poll_sleep = lambda _seconds: None
    bulk = settings.model_copy(update={"salesforce_bulk_threshold": 1})
    cycle = Cycle(store, bulk, RuleBook(settings.rules_dir), clients, clock=clock, sentiment=vader)
    metrics = Metrics()

    observe_cycle(metrics, cycle.run(), store, clients=clients)
    jobs = clients.salesforce.bulk_jobs
    page = metrics.render().decode()

    assert jobs >= 5
    assert f"healthbeat_salesforce_bulk_jobs_total {float(jobs)}" in page
    assert 'healthbeat_salesforce_bulk_allocation_remaining{unit="jobs"} ' + f"{10_000.0 - jobs}" in page
    assert "healthbeat_salesforce_bulk_result_bytes_total 0.0" not in page


def test_a_cycle_without_bulk_jobs_asks_salesforce_nothing_about_the_allocation(
        world: World, store: Store, settings: Settings, clients: Clients, cycle: Cycle,
        sandboxes: Sandboxes) -> None:
    metrics = Metrics()

    observe_cycle(metrics, cycle.run(), store, clients=clients)

    assert not [c for c in sandboxes.salesforce.calls if c.path.endswith("/limits")]
    assert "healthbeat_salesforce_bulk_jobs_total 0.0" in metrics.render().decode()
