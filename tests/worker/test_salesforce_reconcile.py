"""Deletes the recycle bin no longer shows: a daily reconciliation of live Account and Opportunity ids.

"The Recycle Bin lets you view and restore recently deleted records for 15 days before they are permanently
deleted ... If your org reaches its Recycle Bin limit, Salesforce automatically removes the oldest records"
(https://developer.salesforce.com/docs/atlas.en-us.254.0.api.meta/api/sforce_api_calls_emptyrecyclebin.htm):
`queryAll` shows a delete only while the record is in the bin, so a worker stopped for longer, or one that
missed a mass delete, never sees it through its cursor.
"""

from __future__ import annotations

from datetime import timedelta

from connectors.sandboxes.world import World
from worker.clock import ShiftedClock
from worker.config import Settings
from worker.cycle import Clients
from worker.demo.harness import Sandboxes
from worker.store import Store
from worker.sync import sync_all
from worker.sync.report import SyncReport

RECONCILE = "salesforce.reconcile"


def _sync(store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> SyncReport:
    return sync_all(store, clock(), salesforce=clients.salesforce, zendesk=None, usage_dir=None,
                    salesforce_overlap=settings.salesforce_overlap,
                    salesforce_api_share=settings.salesforce_api_share, zendesk_backfill=settings.zendesk_backfill)


def _queries(sandboxes: Sandboxes, since: int, sobject: str, until: int | None = None) -> list[str]:
    return [c.query for c in sandboxes.salesforce.calls[since:until]
            if "/query" in c.path and f"SELECT+Id+FROM+{sobject}" in c.query]


def _live(store: Store, table: str) -> set[str]:
    return {r["id"] for r in store.query(f"SELECT id FROM {table} WHERE is_deleted = 0")}


def test_an_account_gone_from_the_recycle_bin_while_the_worker_was_down_is_marked_deleted_the_next_day(
        sandboxes: Sandboxes, world: World, store: Store, settings: Settings, clients: Clients,
        clock: ShiftedClock) -> None:
    _sync(store, settings, clients, clock)
    gone = world.accounts[0].id
    renewal = store.scalar("SELECT id FROM opportunities WHERE account_id = ?", (gone,))
    sandboxes.salesforce.delete("Opportunity", renewal)
    sandboxes.salesforce.delete("Account", gone)
    clock.offset += timedelta(days=16)  # the worker was down; the recycle bin was emptied meanwhile

    report = _sync(store, settings, clients, clock)

    assert report.streams["salesforce.Account"].deleted == 0  # the stream never saw the delete
    assert gone not in _live(store, "accounts") and renewal not in _live(store, "opportunities")
    assert report.streams[RECONCILE].deleted == 2
    assert len(_live(store, "accounts")) == len(world.accounts) - 1


def test_a_mass_delete_that_overflowed_the_recycle_bin_is_found_by_the_next_reconciliation(
        sandboxes: Sandboxes, world: World, store: Store, settings: Settings, clients: Clients,
        clock: ShiftedClock) -> None:
    _sync(store, settings, clients, clock)
    purged = [a.id for a in world.accounts[:5]]
    for account in purged:
        sandboxes.salesforce.purge("Account", account)
    clock.offset += timedelta(days=1, minutes=1)

    _sync(store, settings, clients, clock)

    assert _live(store, "accounts") == {a.id for a in world.accounts[5:]}


def test_the_reconciliation_runs_once_a_day_at_one_id_query_per_object_and_not_after_the_first_sync(
        sandboxes: Sandboxes, world: World, store: Store, settings: Settings, clients: Clients,
        clock: ShiftedClock) -> None:
    first = _sync(store, settings, clients, clock)  # a backfill reads every record: nothing to reconcile
    clock.offset += timedelta(hours=12)
    before = len(sandboxes.salesforce.calls)
    half_a_day = _sync(store, settings, clients, clock)
    clock.offset += timedelta(hours=12)
    mark = len(sandboxes.salesforce.calls)

    a_day = _sync(store, settings, clients, clock)

    assert RECONCILE not in first.streams and RECONCILE not in half_a_day.streams
    assert _queries(sandboxes, before, "Account", until=mark) == []
    assert len(_queries(sandboxes, mark, "Account")) == len(_queries(sandboxes, mark, "Opportunity")) == 1
    assert a_day.streams[RECONCILE].api_calls == 2  # 18 ids of each: one page each (2,000 ids a page)
    assert a_day.streams[RECONCILE].deleted == 0


def test_the_reconciliation_pages_through_every_id_before_it_marks_anything(
        sandboxes: Sandboxes, world: World, store: Store, settings: Settings, clients: Clients,
        clock: ShiftedClock) -> None:
    _sync(store, settings, clients, clock)
    sandboxes.salesforce.purge("Account", world.accounts[-1].id)
    sandboxes.salesforce.batch_size = 5  # 17 live ids: four pages
    clock.offset += timedelta(days=1)

    report = _sync(store, settings, clients, clock)

    assert report.streams[RECONCILE].api_calls == 4 + 4  # Accounts, then Opportunities (18: four pages)
    assert _live(store, "accounts") == {a.id for a in world.accounts[:-1]}


def test_a_reconciliation_cut_short_by_the_api_budget_marks_nothing_and_runs_again_next_cycle(
        sandboxes: Sandboxes, world: World, store: Store, settings: Settings, clients: Clients,
        clock: ShiftedClock) -> None:
    _sync(store, settings, clients, clock)
    salesforce = sandboxes.salesforce
    salesforce.purge("Account", world.accounts[0].id)
    salesforce.batch_size = 5
    clock.offset += timedelta(days=1)
    salesforce.api_calls_used = 0
    salesforce.daily_api_limit = 2 * (8 + 2)  # the streams' seven queries and a login... then half a reconciliation

    cut = _sync(store, settings, clients, clock)
    salesforce.daily_api_limit = 10**6
    clock.offset += timedelta(minutes=15)
    again = _sync(store, settings, clients, clock)

    assert cut.salesforce_limited and RECONCILE in cut.failed_streams
    assert again.streams[RECONCILE].deleted == 1
    assert world.accounts[0].id not in _live(store, "accounts")


def test_salesforce_answering_no_account_at_all_is_not_taken_for_a_delete_of_every_account(
        sandboxes: Sandboxes, world: World, store: Store, settings: Settings, clients: Clients,
        clock: ShiftedClock) -> None:
    _sync(store, settings, clients, clock)
    for account in world.accounts:  # as the integration user sees it after losing access to every Account
        sandboxes.salesforce.purge("Account", account.id)
    clock.offset += timedelta(days=1)

    report = _sync(store, settings, clients, clock)

    assert "no Account ids at all" in report.failed_streams[RECONCILE]
    assert len(_live(store, "accounts")) == len(world.accounts)
