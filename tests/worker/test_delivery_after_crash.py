"""A crash between the remote call and its record in the store: nothing is written or sent twice, nothing lost.

Each test leaves the store exactly as a worker killed at that line would (rows marked in flight), with the
remote side either holding the effect or not, and runs the stage again.
"""

from __future__ import annotations

import json

from connectors.sandboxes.world import World
from tests.worker.test_writeback_field_security import make_read_only
from worker.clock import ShiftedClock
from worker.cycle import Clients, Cycle
from worker.delivery.notify import EVENT_TYPE, send_nudges
from worker.delivery.writeback import plan_writeback, push_scores
from worker.demo.harness import Sandboxes
from worker.store import Store


def _composite_calls(sandboxes: Sandboxes) -> int:
    return sum(1 for call in sandboxes.salesforce.calls if "composite/sobjects" in call.path)


def _score_only(cycle: Cycle) -> None:
    cycle.run(("sync", "score"))


def _mark_inflight(store: Store, kind: str) -> list[dict[str, object]]:
    with store.transaction() as conn:
        conn.execute("UPDATE outbox SET status = 'inflight', attempts = 1 WHERE kind = ?", (kind,))
    return store.query("SELECT * FROM outbox WHERE kind = ?", (kind,))


def test_writes_that_reached_salesforce_before_a_crash_are_confirmed_not_repeated(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clients: Clients,
        clock: ShiftedClock) -> None:
    _score_only(cycle)
    plan_writeback(store, clock())
    rows = _mark_inflight(store, "salesforce")
    for row in rows:  # the crashed worker's PATCH did land
        values = json.loads(str(row["payload"]))["values"]
        sandboxes.salesforce.update("Account", str(row["account_id"]), {
            "Health_Score__c": values["score"], "Health_Band__c": values["band"],
            "Health_Trend__c": values["trend"], "Health_Reason__c": values["reason"],
            "Churn_Risk__c": values["churn_risk"], "Expansion_Readiness__c": values["expansion_readiness"],
            "Health_Confidence__c": values["confidence"]})
    sandboxes.salesforce.reset_calls()

    report = push_scores(store, clients.salesforce, clock())

    assert _composite_calls(sandboxes) == 0
    assert report.confirmed_after_crash == len(rows)
    assert store.scalar("SELECT count(*) FROM outbox WHERE kind = 'salesforce' AND status != 'sent'") == 0


def test_writes_lost_in_a_crash_are_sent_after_the_check(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clients: Clients,
        clock: ShiftedClock) -> None:
    _score_only(cycle)
    plan_writeback(store, clock())
    rows = _mark_inflight(store, "salesforce")  # the crashed worker never reached Salesforce
    sandboxes.salesforce.reset_calls()

    report = push_scores(store, clients.salesforce, clock())

    assert report.confirmed_after_crash == 0
    assert report.sent == len(rows)
    assert _composite_calls(sandboxes) == 1


def test_a_record_salesforce_refuses_is_kept_and_only_it_is_retried(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clients: Clients,
        clock: ShiftedClock) -> None:
    """An error with no handling of its own (here an Apex trigger that failed) is tried again next cycle; a lock,
    a validation rule and a deleted record each have theirs (tests/worker/test_writeback_errors.py)."""
    _score_only(cycle)
    plan_writeback(store, clock())
    refused = world.accounts[0].id
    sandboxes.salesforce.fail_records_next_update(
        [refused], "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
        "AccountTrigger: execution of AfterUpdate caused by: System.NullPointerException")

    first = push_scores(store, clients.salesforce, clock())
    sandboxes.salesforce.reset_calls()
    second = push_scores(store, clients.salesforce, clock())

    assert first.failed == 1 and any("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY" in e for e in first.errors)
    assert first.error_kinds == {"other": 1}
    assert second.sent == 1
    composite = [c for c in sandboxes.salesforce.calls if "composite/sobjects" in c.path]
    assert len(composite) == 1
    assert sandboxes.salesforce.get("Account", refused)["Health_Score__c"] is not None


def test_after_a_crash_only_the_fields_the_integration_user_may_write_are_compared(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clients: Clients,
        clock: ShiftedClock) -> None:
    """A field its permission set makes read-only was never written, so Salesforce cannot hold it: comparing it
    would send every write again, and each would be refused (tests/worker/test_writeback_field_security.py)."""
    make_read_only(sandboxes, "Churn_Risk__c")
    _score_only(cycle)
    plan_writeback(store, clock())
    rows = _mark_inflight(store, "salesforce")
    for row in rows:  # the crashed worker's PATCH did land, without the field it may not write
        values = json.loads(str(row["payload"]))["values"]
        sandboxes.salesforce.update("Account", str(row["account_id"]), {
            "Health_Score__c": values["score"], "Health_Band__c": values["band"],
            "Health_Trend__c": values["trend"], "Health_Reason__c": values["reason"],
            "Expansion_Readiness__c": values["expansion_readiness"], "Health_Confidence__c": values["confidence"]})
    sandboxes.salesforce.reset_calls()

    report = push_scores(store, clients.salesforce, clock())

    assert report.confirmed_after_crash == len(rows)
    assert _composite_calls(sandboxes) == 0


def test_a_nudge_posted_before_a_crash_is_found_in_slack_and_not_posted_again(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clients: Clients,
        clock: ShiftedClock) -> None:
    assert clients.slack is not None
    owner_id, slack_user = next(iter(world.slack_user_ids.items()))
    key = "nudge:turned_red:001000000000001AAA:1:fire"
    payload = {"dedup_key": key, "rule": "turned_red", "kind": "fire", "account_id": "001000000000001AAA",
               "account_name": "Acme", "owner_name": world.owners[owner_id][0],
               "owner_email": world.owners[owner_id][1], "route": {"to": "owner", "channel": None},
               "text": "Acme turned red", "blocks": [], "url": "https://example.invalid"}
    dm = clients.slack.open_dm(slack_user)
    clients.slack.post(dm, text="Acme turned red",  # the crashed worker's post did land
                       metadata={"event_type": EVENT_TYPE, "event_payload": {"dedup_key": key}})
    with store.transaction() as conn:
        conn.execute("INSERT INTO outbox (dedup_key, kind, account_id, payload, status, attempts, remote_ref, "
                     "created_at) VALUES (?, 'slack', ?, ?, 'inflight', 1, ?, '2026-01-01T00:00:00Z')",
                     (key, payload["account_id"], json.dumps(payload), dm))

    report = send_nudges(store, clients.slack, clock(), fallback_channel="#cs-alerts")

    assert report.recovered == 1 and report.sent == 0
    assert len(sandboxes.slack.dms_to(slack_user)) == 1
    assert store.scalar("SELECT status FROM outbox WHERE dedup_key = ?", (key,)) == "sent"


def test_without_slack_configured_nudges_wait_in_the_outbox(store: Store, clock: ShiftedClock) -> None:
    with store.transaction() as conn:
        conn.execute("INSERT INTO outbox (dedup_key, kind, payload, created_at) "
                     "VALUES ('nudge:r:a:1:fire', 'slack', '{}', '2026-01-01T00:00:00Z')")

    report = send_nudges(store, None, clock(), fallback_channel=None)

    assert report.waiting == 1
    assert store.scalar("SELECT count(*) FROM pending_outbox") == 1
