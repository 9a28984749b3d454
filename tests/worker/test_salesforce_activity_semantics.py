"""What counts as a customer's activity in a real org's Salesforce records, and what does not.

Each behaviour rests on Salesforce's documentation:

- Meetings: "When a Salesforce user is invited to a calendar event, a child calendar event record is created for
  the invitee. A child calendar event is an Event record with the IsChild field set to true and OwnerId set to
  the invitee's user ID" (https://developer.salesforce.com/docs/platform/change-data-capture/guide/cdc-standard-objects-task-event-invitees.html);
  `IsRecurrence` ("Create Recurring Series of Events") marks a series' master record
  (https://developer.salesforce.com/docs/atlas.en-us.228.0.sfFieldRef.meta/sfFieldRef/salesforce_field_reference_Event.htm).
- Calls and emails: Task has `TaskSubtype`, `Type`, `CallType` (Inbound, Outbound, Internal),
  `CallDurationInSeconds` and `IsClosed` ("Closed", from the task's status)
  (https://developer.salesforce.com/docs/atlas.en-us.196.0.sfFieldRef.meta/sfFieldRef/salesforce_field_reference_Task.htm,
  https://developer.salesforce.com/docs/platform/object-reference/references/standard-objects/object-task.html):
  Salesforce's own logging sets `TaskSubtype`; dialers and sales-engagement tools log a plain task and set `Type`
  and `CallType`.
- An EmailMessage's `ActivityId` is the "ID of the activity that is associated with the email ... It's
  auto-created for other entities"
  (https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_emailmessage.htm):
  an email filed under no record still has its task, which names the account.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connectors.sandboxes.world import build_world, sf_datetime
from worker.clock import ShiftedClock
from worker.config import Settings, load_settings
from worker.cycle import Clients, Cycle, build_clients
from worker.demo.harness import Sandboxes, sandbox_environment, start_sandboxes
from worker.rulebook.in_force import RuleBook
from worker.scoring.measures import LIBRARY
from worker.scoring.sentiment import VaderModel
from worker.store import Store
from worker.sync import sync_all
from worker.sync.report import SyncReport

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"


def _sync(store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> SyncReport:
    return sync_all(store, clock(), salesforce=clients.salesforce, zendesk=None, usage_dir=None,
                    salesforce_overlap=settings.salesforce_overlap,
                    salesforce_api_share=settings.salesforce_api_share, zendesk_backfill=settings.zendesk_backfill)


def _account(sandboxes: Sandboxes) -> tuple[str, str]:
    owner = sandboxes.salesforce.insert("User", {"Name": "Dana", "Email": "dana@example.com"})
    return sandboxes.salesforce.insert("Account", {"Name": "Acme", "OwnerId": owner}), owner


def _live(store: Store, kind: str) -> list[dict[str, Any]]:
    return store.query("SELECT * FROM activities WHERE kind = ? AND is_deleted = 0 ORDER BY occurred_at", (kind,))


def _task(sandboxes: Sandboxes, account: str | None, at: datetime, **fields: Any) -> str:
    values = {"AccountId": account, "WhatId": account, "Subject": "Logged", "Status": "Completed",
              "CompletedDateTime": sf_datetime(at), **fields}
    return sandboxes.salesforce.insert("Task", values)


# -- meetings ---------------------------------------------------------------------------------------------------

def test_a_meeting_with_invitees_who_use_salesforce_counts_once(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account, owner = _account(sandboxes)
    colleague = sandboxes.salesforce.insert("User", {"Name": "Ravi", "Email": "ravi@example.com"})
    meeting = {"AccountId": account, "Subject": "QBR", "ActivityDateTime": sf_datetime(clock() - timedelta(days=1))}
    organizer = sandboxes.salesforce.insert("Event", {**meeting, "OwnerId": owner})
    sandboxes.salesforce.insert("Event", {**meeting, "OwnerId": colleague, "IsChild": True})

    _sync(store, settings, clients, clock)

    assert [m["source_id"] for m in _live(store, "meeting")] == [organizer]


def test_the_master_record_of_a_recurring_series_is_no_meeting(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account, _ = _account(sandboxes)
    at = sf_datetime(clock() - timedelta(days=3))
    sandboxes.salesforce.insert("Event", {"AccountId": account, "Subject": "Weekly", "ActivityDateTime": at,
                                          "IsRecurrence": True})
    occurrence = sandboxes.salesforce.insert("Event", {"AccountId": account, "Subject": "Weekly",
                                                       "ActivityDateTime": at})

    report = _sync(store, settings, clients, clock)

    assert [m["source_id"] for m in _live(store, "meeting")] == [occurrence]
    assert report.quarantined == 0  # not activity is not bad data


def test_an_invitee_copy_stored_by_an_earlier_version_stops_counting_once_it_is_deleted(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account, _ = _account(sandboxes)
    copy = sandboxes.salesforce.insert("Event", {"AccountId": account, "ActivityDateTime": sf_datetime(clock()),
                                                 "IsChild": True})
    with store.transaction() as conn:  # as the sync before this one stored it: a meeting
        conn.execute("INSERT INTO activities (source, source_id, kind, account_id, occurred_at, direction) "
                     "VALUES ('salesforce', ?, 'meeting', ?, ?, 'both')", (copy, account, "2026-01-01T00:00:00Z"))
    sandboxes.salesforce.delete("Event", copy)

    _sync(store, settings, clients, clock)

    assert _live(store, "meeting") == []


# -- calls ------------------------------------------------------------------------------------------------------

def test_a_call_a_dialer_logged_as_a_plain_task_is_a_call(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account, _ = _account(sandboxes)
    typed = _task(sandboxes, account, clock() - timedelta(hours=3), TaskSubtype="Task", Type="Call",
                  CallType="Outbound", CallDurationInSeconds=420)
    untyped = _task(sandboxes, account, clock() - timedelta(hours=2), TaskSubtype="Task", CallType="Inbound",
                    CallDurationInSeconds=95)

    _sync(store, settings, clients, clock)

    assert [c["source_id"] for c in _live(store, "call")] == [typed, untyped]


def test_a_dial_that_never_connected_and_an_internal_call_are_no_touch(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account, _ = _account(sandboxes)
    _task(sandboxes, account, clock(), TaskSubtype="Task", Type="Call", CallType="Outbound", CallDurationInSeconds=0)
    _task(sandboxes, account, clock(), TaskSubtype="Call", CallType="Internal", CallDurationInSeconds=600)
    logged = _task(sandboxes, account, clock(), TaskSubtype="Call")  # logged by hand: no duration, still a call

    _sync(store, settings, clients, clock)

    assert [c["source_id"] for c in _live(store, "call")] == [logged]


def test_an_open_task_is_a_plan_not_a_touch(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account, _ = _account(sandboxes)
    _task(sandboxes, account, clock(), TaskSubtype="Call", Status="Not Started", CompletedDateTime=None,
          ActivityDate=(clock() + timedelta(days=2)).date().isoformat())
    _task(sandboxes, account, clock(), TaskSubtype="Email", Status="In Progress", CompletedDateTime=None)

    report = _sync(store, settings, clients, clock)

    assert _live(store, "call") == [] and _live(store, "email") == []
    assert report.quarantined == 0


# -- emails -----------------------------------------------------------------------------------------------------

def test_an_email_logged_as_a_task_alone_is_stored_with_no_direction(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account, _ = _account(sandboxes)
    by_salesforce = _task(sandboxes, account, clock() - timedelta(hours=2), TaskSubtype="Email")
    by_a_tool = _task(sandboxes, account, clock() - timedelta(hours=1), TaskSubtype="Task", Type="Email")

    _sync(store, settings, clients, clock)

    assert [(e["source_id"], e["direction"]) for e in _live(store, "email")] == [
        (by_salesforce, "unknown"), (by_a_tool, "unknown")]


def test_an_email_of_unknown_direction_neither_answers_an_inbound_email_nor_makes_a_two_way_touch(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account, _ = _account(sandboxes)
    asked = clock() - timedelta(days=5)
    sandboxes.salesforce.insert("EmailMessage", {"RelatedToId": account, "Incoming": True, "TextBody": "Any news?",
                                                 "MessageDate": sf_datetime(asked)})
    _task(sandboxes, account, asked + timedelta(hours=2), TaskSubtype="Email")  # no EmailMessage: who wrote?
    _sync(store, settings, clients, clock)
    params = {"window": timedelta(days=90), "within": timedelta(days=2)}

    answered = LIBRARY["inbound_answered_share"].query(store, params, clock())
    touch = LIBRARY["days_since_two_way_touch"].query(store, {"within": timedelta(days=14)}, clock())
    streak = LIBRARY["outbound_only_streak"].query(store, {"window": timedelta(days=90)}, clock())

    assert answered == {account: 0.0}
    assert touch == {}  # no meeting, call or exchange at all
    assert streak == {account: 0.0}  # nor an email we sent that the customer left unanswered


def test_an_email_filed_under_no_record_belongs_to_its_task_s_account(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account, _ = _account(sandboxes)
    at = sf_datetime(clock() - timedelta(hours=1))
    task = _task(sandboxes, account, clock() - timedelta(hours=1), TaskSubtype="Email", Subject="Email: Re")
    sandboxes.salesforce.insert("EmailMessage", {"ActivityId": task, "Incoming": False, "TextBody": "Done",
                                                 "MessageDate": at})

    report = _sync(store, settings, clients, clock)

    [email] = _live(store, "email")
    assert (email["source_id"], email["account_id"], email["direction"], email["text"]) == (task, account, "out",
                                                                                           "Done")
    assert report.quarantined == 0


def test_an_email_filed_under_no_record_whose_task_comes_a_cycle_later_gets_its_account_then(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account, _ = _account(sandboxes)
    task = _task(sandboxes, None, clock() - timedelta(hours=1), TaskSubtype="Email", WhatId=None)  # filed later
    sandboxes.salesforce.insert("EmailMessage", {"ActivityId": task, "Incoming": True, "TextBody": "Hi",
                                                 "MessageDate": sf_datetime(clock() - timedelta(hours=1))})
    _sync(store, settings, clients, clock)
    clock.offset += timedelta(minutes=15)
    sandboxes.salesforce.update("Task", task, {"WhatId": account})  # Salesforce sets AccountId from WhatId
    sandboxes.salesforce.update("Task", task, {"AccountId": account})

    _sync(store, settings, clients, clock)

    [email] = _live(store, "email")
    assert (email["account_id"], email["direction"], email["text"]) == (account, "in", "Hi")


# -- the generated world ----------------------------------------------------------------------------------------

def _scores(noise: bool, folder: Path, vader: VaderModel) -> list[dict[str, Any]]:
    moment = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    clock = ShiftedClock(offset=moment - datetime.now(UTC))
    sandboxes = start_sandboxes(clock)
    try:
        (folder / "usage").mkdir(parents=True)
        build_world(sandboxes.salesforce, sandboxes.zendesk, sandboxes.slack, folder / "usage", accounts=12, seed=11,
                    now=clock(), noise=noise)
        settings = load_settings(**sandbox_environment(sandboxes, folder / "healthbeat.db", folder / "usage",
                                                       RULES_DIR))
        clients = build_clients(settings)
        with Store(settings.db) as store:
            report = Cycle(store, settings, RuleBook(RULES_DIR), clients, clock=clock, sentiment=vader).run(
                ("sync", "score"))
            clients.close()
            assert report.ok and report.sync is not None and report.sync.quarantined == 0, report.summary()
            return store.query("SELECT account_id, score, band, reason, measures FROM scores ORDER BY account_id")
    finally:
        sandboxes.stop()


def test_copies_series_masters_open_tasks_and_tool_logged_copies_leave_every_score_as_it_was(
        tmp_path: Path, vader: VaderModel) -> None:
    """The world with the records a real org holds besides its customers' activity (`noise`) scores exactly as
    the world without them."""
    assert _scores(True, tmp_path / "noisy", vader) == _scores(False, tmp_path / "plain", vader)
