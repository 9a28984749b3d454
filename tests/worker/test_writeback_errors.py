"""Write-back refusals as Salesforce answers them: each kind of refusal gets its own handling and its own count.

An sObject Collections update (`PATCH composite/sobjects`, `allOrNone: false`) answers 200 with one SaveResult
per record; a refused record carries errors with a StatusCode and a message
(https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-update.html,
StatusCode in https://developer.salesforce.com/docs/platform/api/guide/sforce-api-calls-concepts-core-data-objects.html):

- UNABLE_TO_LOCK_ROW: another transaction holds the record; an update waits up to 10 seconds for the lock, then
  fails (Apex Developer Guide, "Locking Statements":
  https://developer.salesforce.com/docs/atlas.en-us.apexcode.meta/apexcode/langCon_apex_locking_statements.htm).
  The lock is gone once that transaction ends, so a retry a moment later usually succeeds.
- FIELD_CUSTOM_VALIDATION_EXCEPTION: one of the org's validation rules (an error condition formula and an error
  message, https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/meta_validationformulas.htm)
  was true for the record; the message is the rule's own. Rules apply to API users too, and the usual cure is an
  exemption in the formula (a custom permission, `$Permission.X`, granted to the integration user).
- ENTITY_IS_DELETED: the record is deleted (in the recycle bin); it cannot be updated.

A whole request may be refused with REQUEST_LIMIT_EXCEEDED: "TotalRequests" for the org's daily limit,
"ConcurrentRequests" when too many long requests run at once (the client retries the latter before giving up).

The sandbox fails the next update of chosen records with a chosen StatusCode (`fail_records_next_update`) and
answers ENTITY_IS_DELETED for a deleted record by itself. A lock held longer, or a rule that keeps refusing, is
played by failing the record again before each try.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.sandbox import ApiCall
from connectors.sandboxes.world import World
from worker.clock import ShiftedClock
from worker.cycle import Clients, Cycle, CycleReport
from worker.delivery.writeback import ERROR_KINDS, LOCK_BACKOFF, MAX_ATTEMPTS, plan_writeback, push_scores
from worker.demo.harness import Sandboxes
from worker.service.metrics import Metrics, observe_cycle
from worker.store import Store

RULE = "Customer accounts need an Industry before their health is recorded"
TRIGGER_ERROR = "AccountTrigger: execution of AfterUpdate caused by: System.NullPointerException"


@pytest.fixture
def planned(world: World, cycle: Cycle, store: Store, clock: ShiftedClock) -> World:
    """The world scored, with a write owed for each account."""
    cycle.run(("sync", "score"))
    plan_writeback(store, clock())
    return world


def _composite(sandboxes: Sandboxes) -> list[ApiCall]:
    return [c for c in sandboxes.salesforce.calls if "composite/sobjects" in c.path]


def _row(store: Store, account_id: str) -> tuple[str, int]:
    row = store.query("SELECT status, attempts FROM outbox WHERE account_id = ? ORDER BY id DESC LIMIT 1",
                      (account_id,))[0]
    return row["status"], row["attempts"]


def _refuse_by_rule(sandboxes: Sandboxes, account_id: str) -> None:
    sandboxes.salesforce.fail_records_next_update([account_id], "FIELD_CUSTOM_VALIDATION_EXCEPTION", RULE)


# -- UNABLE_TO_LOCK_ROW -----------------------------------------------------------------------------------------

def test_a_record_another_process_holds_is_written_on_a_retry_within_the_push(
        planned: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock) -> None:
    locked = planned.accounts[0].id
    sandboxes.salesforce.fail_records_next_update([locked])  # UNABLE_TO_LOCK_ROW
    waits: list[float] = []
    sandboxes.salesforce.reset_calls()

    report = push_scores(store, clients.salesforce, clock(), sleep=waits.append)

    assert (report.sent, report.failed, report.errors) == (len(planned.accounts), 0, [])
    assert waits == [LOCK_BACKOFF[0]]
    assert [c.record_count for c in _composite(sandboxes)] == [len(planned.accounts), 1]
    assert sandboxes.salesforce.get("Account", locked)["Health_Score__c"] is not None


def test_a_record_still_locked_after_the_retries_waits_for_the_next_cycle_without_failing_this_one(
        planned: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock) -> None:
    locked = planned.accounts[0].id
    waits: list[float] = []

    def still_held(seconds: float) -> None:
        waits.append(seconds)
        sandboxes.salesforce.fail_records_next_update([locked])

    sandboxes.salesforce.fail_records_next_update([locked])
    first = push_scores(store, clients.salesforce, clock(), sleep=still_held)
    after_first = _row(store, locked)
    second = push_scores(store, clients.salesforce, clock(), sleep=still_held)

    assert (first.failed, first.error_kinds, first.errors) == (1, {"locked": 1}, [])
    assert waits == list(LOCK_BACKOFF)
    assert after_first == ("failed", 1)
    assert second.sent == 1


# -- FIELD_CUSTOM_VALIDATION_EXCEPTION --------------------------------------------------------------------------

def test_a_validation_rule_refusal_names_the_rule_and_how_to_exempt_the_integration_user(
        planned: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        caplog: pytest.LogCaptureFixture) -> None:
    refused = planned.accounts[0].id
    _refuse_by_rule(sandboxes, refused)
    caplog.set_level(logging.INFO, logger="worker.delivery.writeback")

    report = push_scores(store, clients.salesforce, clock())

    assert (report.failed, report.error_kinds) == (1, {"validation": 1})
    assert report.errors == [f"a validation rule on Account refused the update of {refused}: {RULE}"]
    said = [r.getMessage() for r in caplog.records if RULE in r.getMessage()]
    assert len(said) == 1 and "Exempt the integration user from the rule" in said[0]


def test_a_write_a_validation_rule_refused_is_not_sent_again_until_new_values_come(
        planned: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock) -> None:
    refused = planned.accounts[0].id
    _refuse_by_rule(sandboxes, refused)
    push_scores(store, clients.salesforce, clock())
    clock.offset += timedelta(minutes=15)
    sandboxes.salesforce.reset_calls()

    next_cycle = push_scores(store, clients.salesforce, clock())
    calls_meanwhile = len(_composite(sandboxes))
    with store.transaction() as conn:  # the account's score moves
        conn.execute("UPDATE scores SET score = score - 7 WHERE account_id = ?", (refused,))
    plan_writeback(store, clock())
    with_new_values = push_scores(store, clients.salesforce, clock())

    assert (next_cycle.planned, calls_meanwhile) == (0, 0)
    assert with_new_values.sent == 1
    assert sandboxes.salesforce.get("Account", refused)["Health_Score__c"] == pytest.approx(
        store.scalar("SELECT score FROM scores WHERE account_id = ?", (refused,)))


def test_a_write_a_validation_rule_refused_is_tried_again_a_day_later(
        planned: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock) -> None:
    refused = planned.accounts[0].id
    _refuse_by_rule(sandboxes, refused)
    push_scores(store, clients.salesforce, clock())

    clock.offset += timedelta(hours=23)
    too_soon = push_scores(store, clients.salesforce, clock())
    clock.offset += timedelta(hours=1)
    a_day_later = push_scores(store, clients.salesforce, clock())

    assert too_soon.planned == 0
    assert a_day_later.sent == 1


def test_a_write_a_validation_rule_keeps_refusing_is_never_given_up(
        planned: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock) -> None:
    refused = planned.accounts[0].id
    for _ in range(MAX_ATTEMPTS + 1):
        _refuse_by_rule(sandboxes, refused)
        push_scores(store, clients.salesforce, clock())
        clock.offset += timedelta(days=1)

    assert _row(store, refused) == ("failed", 0)


# -- ENTITY_IS_DELETED ----------------------------------------------------------------------------------------

def test_an_account_deleted_in_salesforce_is_dropped_never_retried_and_said_once(
        planned: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        caplog: pytest.LogCaptureFixture) -> None:
    gone = planned.accounts[0].id
    sandboxes.salesforce.delete("Account", gone)
    caplog.set_level(logging.INFO, logger="worker.delivery.writeback")

    first = push_scores(store, clients.salesforce, clock())
    clock.offset += timedelta(days=1)
    later = push_scores(store, clients.salesforce, clock())

    assert (first.sent, first.failed, first.errors) == (len(planned.accounts) - 1, 0, [])
    assert first.error_kinds == {"deleted": 1}
    assert later.planned == 0
    assert _row(store, gone)[0] == "superseded"
    assert len([r for r in caplog.records if gone in r.getMessage()]) == 1


# -- REQUEST_LIMIT_EXCEEDED -------------------------------------------------------------------------------------

def test_the_daily_limit_gives_the_writes_back_for_the_next_cycle_and_is_counted(
        planned: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock) -> None:
    sandboxes.salesforce.fail_next(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.",
                                   path_contains="composite/sobjects")

    report = push_scores(store, clients.salesforce, clock())

    assert (report.sent, report.error_kinds) == (0, {"daily_limit": 1})
    assert {_row(store, a.id) for a in planned.accounts} == {("pending", 0)}


def _client_that_does_not_wait(clients: Clients) -> SalesforceClient:
    """The worker's client as it is, but giving up after two tries and without waiting between them."""
    return SalesforceClient(clients.salesforce.credentials, retry_sleep=lambda seconds: None, max_attempts=2)


def test_too_many_concurrent_requests_give_the_writes_back_as_a_passing_condition_not_an_outage(
        planned: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        caplog: pytest.LogCaptureFixture) -> None:
    sandboxes.salesforce.fail_next(403, "REQUEST_LIMIT_EXCEEDED",
                                   "ConcurrentRequests (Concurrent API Requests) Limit exceeded.",
                                   path_contains="composite/sobjects", times=2)  # both of the client's attempts
    caplog.set_level(logging.INFO, logger="worker.delivery.writeback")

    with _client_that_does_not_wait(clients) as client:
        report = push_scores(store, client, clock())

    assert (report.sent, report.error_kinds, report.errors) == (0, {"busy": 1}, [])
    assert {_row(store, a.id) for a in planned.accounts} == {("pending", 0)}
    said = [r for r in caplog.records if "busy" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING]


# -- /metrics -------------------------------------------------------------------------------------------------

def test_each_kind_of_refusal_is_counted_in_metrics(
        planned: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock) -> None:
    locked, rejected, gone, broken = (a.id for a in planned.accounts[:4])
    salesforce = sandboxes.salesforce
    salesforce.fail_records_next_update([locked])
    _refuse_by_rule(sandboxes, rejected)
    salesforce.delete("Account", gone)
    salesforce.fail_records_next_update([broken], "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", TRIGGER_ERROR)
    report = push_scores(store, clients.salesforce, clock(),
                         sleep=lambda seconds: salesforce.fail_records_next_update([locked]))
    metrics = Metrics()

    observe_cycle(metrics, CycleReport(started_at=clock(), ok=True, writeback=report), store)

    counted = {kind: metrics.registry.get_sample_value("healthbeat_writeback_errors_total", {"kind": kind})
               for kind in ERROR_KINDS}
    assert counted == {"locked": 1, "validation": 1, "deleted": 1, "other": 1, "daily_limit": 0, "busy": 0,
                       "unavailable": 0}
