"""Field-level security: the write-back writes the Account fields the integration user may edit, and no others.

Salesforce's describe reports, for the user who asks, whether each field is `updateable`; a permission set that
grants Read without Edit on a field (FieldPermissions.PermissionsEdit false) makes it read-only for that user
alone (https://developer.salesforce.com/docs/atlas.en-us.apexcode.meta/apexcode/apex_classes_field_object_describe.htm,
https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_fieldpermissions.htm).
An sObject Collections update that sets such a field fails that record with the StatusCode
INVALID_FIELD_FOR_INSERT_UPDATE (https://developer.salesforce.com/docs/platform/api/guide/sforce-api-calls-concepts-core-data-objects.html),
and the write-back sets the same fields on every record: one read-only field would fail every record.

The sandbox plays both (`SalesforceSandbox(read_only_fields=...)`). An admin changes a permission set while the
worker runs, which the sandbox has no call for, so `set_read_only` gives the running sandbox the schema it would
have been built with.
"""

from __future__ import annotations

import logging

import pytest

from connectors.salesforce.schema import build_schema
from connectors.sandboxes.world import World
from worker.clock import ShiftedClock
from worker.cycle import Clients, Cycle
from worker.delivery.writeback import plan_writeback, push_scores
from worker.demo.harness import Sandboxes
from worker.service.metrics import Metrics, observe_cycle
from worker.store import Store


def make_read_only(sandboxes: Sandboxes, *fields: str) -> None:
    """The integration user's permission set as an admin just saved it: Read without Edit on these Account fields
    (none: Edit on all of them again)."""
    sandboxes.salesforce.schema = build_schema(read_only_fields={"Account": set(fields)} if fields else None)


def _grant_edit(sandboxes: Sandboxes, clients: Clients) -> None:
    make_read_only(sandboxes)
    clients.salesforce.forget_fields()  # as the describe cache's age (an hour) would, at the next connect


def _scored_and_planned(cycle: Cycle, store: Store, clock: ShiftedClock) -> None:
    cycle.run(("sync", "score"))
    plan_writeback(store, clock())


def _account_field(sandboxes: Sandboxes, world: World, name: str) -> list[object]:
    return [sandboxes.salesforce.get("Account", a.id)[name] for a in world.accounts]


def _churn_risks(store: Store, world: World) -> list[float]:
    held = {r["account_id"]: round(r["churn_risk"], 2)
            for r in store.query("SELECT account_id, churn_risk FROM scores")}
    return [held[a.id] for a in world.accounts]


def test_a_read_only_field_is_left_out_and_the_other_fields_are_written(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clients: Clients,
        clock: ShiftedClock) -> None:
    make_read_only(sandboxes, "Churn_Risk__c")
    _scored_and_planned(cycle, store, clock)

    report = push_scores(store, clients.salesforce, clock())

    assert (report.sent, report.failed, report.errors) == (len(world.accounts), 0, [])
    assert report.read_only_fields == ["Churn_Risk__c"]
    assert None not in _account_field(sandboxes, world, "Health_Score__c")
    assert set(_account_field(sandboxes, world, "Churn_Risk__c")) == {None}


def test_the_read_only_fields_are_named_once_with_the_fix(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clients: Clients, clock: ShiftedClock,
        caplog: pytest.LogCaptureFixture) -> None:
    make_read_only(sandboxes, "Churn_Risk__c", "Expansion_Readiness__c")
    _scored_and_planned(cycle, store, clock)
    caplog.set_level(logging.INFO, logger="worker.delivery.writeback")

    push_scores(store, clients.salesforce, clock())

    named = [r for r in caplog.records if "Churn_Risk__c" in r.getMessage()]
    assert len(named) == 1 and named[0].levelno == logging.ERROR
    assert "Churn_Risk__c, Expansion_Readiness__c" in named[0].getMessage()
    assert "grant Edit on them in the integration user's permission set" in named[0].getMessage()


def test_once_edit_is_granted_the_field_is_written_though_no_score_changed(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clients: Clients,
        clock: ShiftedClock) -> None:
    make_read_only(sandboxes, "Churn_Risk__c")
    _scored_and_planned(cycle, store, clock)
    push_scores(store, clients.salesforce, clock())
    _grant_edit(sandboxes, clients)

    assert plan_writeback(store, clock()) == 0  # no score moved
    report = push_scores(store, clients.salesforce, clock())

    assert (report.rewritten, report.sent, report.read_only_fields) == (len(world.accounts), len(world.accounts), [])
    assert _account_field(sandboxes, world, "Churn_Risk__c") == _churn_risks(store, world)


def test_accounts_written_with_every_field_are_not_written_again(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clients: Clients,
        clock: ShiftedClock) -> None:
    make_read_only(sandboxes, "Churn_Risk__c")
    _scored_and_planned(cycle, store, clock)
    push_scores(store, clients.salesforce, clock())
    _grant_edit(sandboxes, clients)
    push_scores(store, clients.salesforce, clock())
    sandboxes.salesforce.reset_calls()

    report = push_scores(store, clients.salesforce, clock())

    assert (report.rewritten, report.planned, report.sent) == (0, 0, 0)
    assert not [c for c in sandboxes.salesforce.calls if "composite/sobjects" in c.path]


def test_a_newly_editable_field_is_still_written_after_a_cycle_that_could_not_send_it(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clients: Clients,
        clock: ShiftedClock) -> None:
    make_read_only(sandboxes, "Churn_Risk__c")
    _scored_and_planned(cycle, store, clock)
    push_scores(store, clients.salesforce, clock())
    _grant_edit(sandboxes, clients)
    sandboxes.salesforce.fail_next(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.",
                                   path_contains="composite/sobjects")
    push_scores(store, clients.salesforce, clock())  # the daily limit: nothing sent, the writes wait
    with store.transaction() as conn:  # the accounts re-scored to the same written values
        conn.execute("UPDATE scores SET coverage = coverage + 0.01")
    plan_writeback(store, clock())

    report = push_scores(store, clients.salesforce, clock())

    assert report.sent == len(world.accounts)
    assert _account_field(sandboxes, world, "Churn_Risk__c") == _churn_risks(store, world)


def test_a_read_only_score_field_writes_nothing_and_says_why(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clients: Clients,
        clock: ShiftedClock) -> None:
    make_read_only(sandboxes, "Health_Score__c")
    _scored_and_planned(cycle, store, clock)

    report = push_scores(store, clients.salesforce, clock())

    assert report.sent == 0
    assert report.errors == ["Health_Score__c is read-only for the integration user (field-level security): "
                             "nothing written; grant Edit on it in the integration user's permission set"]
    assert not [c for c in sandboxes.salesforce.calls if "composite/sobjects" in c.path]


def test_metrics_show_each_skipped_field_until_it_is_written(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clients: Clients) -> None:
    metrics = Metrics()

    def skipped(name: str) -> float | None:
        return metrics.registry.get_sample_value("healthbeat_writeback_skipped_fields",
                                                 {"field": name, "reason": "read_only"})

    make_read_only(sandboxes, "Churn_Risk__c")
    observe_cycle(metrics, cycle.run(), store)
    before = (skipped("Churn_Risk__c"), skipped("Health_Score__c"))
    _grant_edit(sandboxes, clients)
    observe_cycle(metrics, cycle.run(), store)

    assert before == (1.0, 0.0)
    assert skipped("Churn_Risk__c") == 0.0
