"""History in Salesforce: field history tracking in the package, and a daily Health_Snapshot__c row per account.

The snapshots go end to end through simple-salesforce to the Salesforce sandbox, which serves sObject Collections
upsert on an external id as Salesforce documents it (tests/connectors/test_salesforce_snapshot_sandbox.py).

The package's history flags follow the Metadata API Developer Guide: `CustomField.trackHistory` ("Indicates whether
history tracking is enabled for the field"; https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/customfield.htm)
is honoured only on an object whose `CustomObject.enableHistory` is true
(https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/customobject.htm); for a standard object
such as Account that is the object's "Track Field History" switch, so Account itself is deployed as a CustomObject
carrying `enableHistory`. Tracked changes are read in the AccountHistory object and the "Account History" report
type (https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_associated_objects_history.htm).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

import pytest

from connectors.salesforce.sandbox import SalesforceSandbox
from connectors.salesforce.schema import build_schema
from connectors.sandboxes.world import World
from worker.clock import ShiftedClock
from worker.config import Settings, load_settings
from worker.cycle import Clients, Cycle
from worker.delivery.snapshots import KIND, MAX_ATTEMPTS, OBJECT, SnapshotReport, push_snapshots, snapshot_key
from worker.demo.harness import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Sandboxes, sandbox_environment
from worker.ops.doctor import run_doctor
from worker.ops.salesforce_fields import (
    METADATA_NAMESPACE,
    SNAPSHOT_FIELDS,
    SNAPSHOT_OBJECT,
    account_object_xml,
    package_xml,
    permission_set_xml,
    snapshot_object_xml,
    write_package,
)
from worker.service.metrics import Metrics
from worker.store import Store

NS = {"md": METADATA_NAMESPACE}
RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
UPSERT_PATH = f"composite/sobjects/{OBJECT}/Snapshot_Key__c"


def _parse(text: str) -> ET.Element:
    return ET.fromstring(text.encode())  # noqa: S314 - our own output


def _fields(xml: str) -> dict[str, ET.Element]:
    return {e.findtext("md:fullName", namespaces=NS) or "": e for e in _parse(xml).findall("md:fields", NS)}


@pytest.fixture
def snapshots_on(settings: Settings) -> Settings:
    return settings.model_copy(update={"salesforce_snapshots": True})


@pytest.fixture
def scored(world: World, cycle: Cycle) -> World:
    """The world synced and scored: the day's whole re-score is done."""
    cycle.run(("sync", "score"))
    return world


def _scored_accounts(store: Store) -> dict[str, dict[str, object]]:
    return {str(r["account_id"]): r for r in store.query(
        "SELECT s.* FROM scores s JOIN accounts a ON a.id = s.account_id WHERE a.is_deleted = 0")}


def _upserts(sandboxes: Sandboxes) -> list[int | None]:
    return [c.record_count for c in sandboxes.salesforce.calls if UPSERT_PATH in c.path]


def _snapshots(sandboxes: Sandboxes) -> dict[str, dict[str, object]]:
    return {str(r["Snapshot_Key__c"]): r for r in sandboxes.salesforce.records(OBJECT)}


def _push(store: Store, clients: Clients, clock: ShiftedClock, settings: Settings, **kwargs: bool) -> SnapshotReport:
    return push_snapshots(store, clients.salesforce, clock(), settings, **kwargs)


# -- field history tracking in the package ------------------------------------------------------------------

def test_the_package_tracks_the_history_of_score_band_and_churn_risk_only() -> None:
    tracked = {name for name, entry in _fields(account_object_xml()).items()
               if entry.findtext("md:trackHistory", namespaces=NS) == "true"}

    assert tracked == {"Health_Score__c", "Health_Band__c", "Churn_Risk__c"}


def test_the_package_turns_on_account_history_which_field_tracking_requires() -> None:
    root = _parse(account_object_xml())
    types = {t.findtext("md:name", namespaces=NS): [m.text for m in t.findall("md:members", NS)]
             for t in _parse(package_xml()).findall("md:types", NS)}

    assert root.findtext("md:enableHistory", namespaces=NS) == "true"
    assert "Account" in types["CustomObject"]  # deployed as an object, or its enableHistory is not read


# -- the snapshot object in the package ---------------------------------------------------------------------

def test_the_package_creates_the_snapshot_object_with_its_fields(tmp_path: Path) -> None:
    written = write_package(tmp_path / "pkg")
    types = {t.findtext("md:name", namespaces=NS): [m.text for m in t.findall("md:members", NS)]
             for t in _parse(package_xml()).findall("md:types", NS)}

    assert tmp_path / "pkg" / "objects" / f"{SNAPSHOT_OBJECT}.object" in written
    assert SNAPSHOT_OBJECT in types["CustomObject"]
    assert set(_fields(snapshot_object_xml())) == {f.name for f in SNAPSHOT_FIELDS}
    assert _parse(snapshot_object_xml()).findtext("md:nameField/md:type", namespaces=NS) == "AutoNumber"


def test_the_snapshot_key_is_a_unique_external_id() -> None:
    key = _fields(snapshot_object_xml())["Snapshot_Key__c"]

    assert (key.findtext("md:externalId", namespaces=NS), key.findtext("md:unique", namespaces=NS)) == ("true", "true")


def test_the_snapshot_fields_have_the_types_the_sandbox_org_describes() -> None:
    described = build_schema(None).sobject(SNAPSHOT_OBJECT)
    assert described is not None

    for item in SNAPSHOT_FIELDS:
        found = described.field(item.name)
        assert found is not None and found.type == item.describe_type, item.name


def test_the_permission_set_lets_the_integration_user_create_and_edit_snapshots() -> None:
    root = _parse(permission_set_xml())
    objects = {p.findtext("md:object", namespaces=NS): p for p in root.findall("md:objectPermissions", NS)}
    editable = {p.findtext("md:field", namespaces=NS) for p in root.findall("md:fieldPermissions", NS)
                if p.findtext("md:editable", namespaces=NS) == "true"}

    grant = objects[SNAPSHOT_OBJECT]
    assert [grant.findtext(f"md:{flag}", namespaces=NS) for flag in ("allowCreate", "allowEdit", "allowRead")] == \
        ["true", "true", "true"]
    assert {f"{SNAPSHOT_OBJECT}.{f.name}" for f in SNAPSHOT_FIELDS} <= editable


# -- a snapshot a day -------------------------------------------------------------------------------------------

def test_each_scored_account_gets_a_snapshot_of_the_day_in_one_call(
        scored: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        snapshots_on: Settings) -> None:
    accounts = _scored_accounts(store)
    day = clock().date().isoformat()
    sandboxes.salesforce.reset_calls()

    report = _push(store, clients, clock, snapshots_on)

    held = _snapshots(sandboxes)
    assert (report.planned, report.sent, report.created, report.failed) == (len(accounts),) * 3 + (0,)
    assert _upserts(sandboxes) == [len(accounts)]
    assert set(held) == {snapshot_key(account, day) for account in accounts}
    for account, score in accounts.items():
        row = held[snapshot_key(account, day)]
        assert (row["Account__c"], row["Date__c"], row["Band__c"], row["Confidence__c"]) == \
            (account, day, score["band"], score["confidence"])
        assert row["Score__c"] == pytest.approx(score["score"], abs=0.005)


def test_a_second_cycle_the_same_day_writes_no_snapshot(
        scored: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        snapshots_on: Settings, cycle: Cycle) -> None:
    _push(store, clients, clock, snapshots_on)
    clock.offset += timedelta(minutes=15)
    cycle.run(("sync", "score"))
    sandboxes.salesforce.reset_calls()

    again = _push(store, clients, clock, snapshots_on)

    assert (again.planned, again.sent, _upserts(sandboxes)) == (0, 0, [])
    assert len(_snapshots(sandboxes)) == len(_scored_accounts(store))


def test_the_next_day_writes_a_new_snapshot_per_account(
        scored: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        snapshots_on: Settings, cycle: Cycle) -> None:
    _push(store, clients, clock, snapshots_on)
    accounts = len(_scored_accounts(store))
    clock.offset += timedelta(days=1)
    cycle.run(("sync", "score"))

    next_day = _push(store, clients, clock, snapshots_on)

    assert (next_day.planned, next_day.created) == (accounts, accounts)
    assert len(_snapshots(sandboxes)) == 2 * accounts
    assert {str(r["Date__c"]) for r in sandboxes.salesforce.records(OBJECT)} == \
        {(clock() - timedelta(days=1)).date().isoformat(), clock().date().isoformat()}


def test_no_snapshot_is_taken_before_the_days_whole_rescore(
        scored: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        snapshots_on: Settings, cycle: Cycle) -> None:
    _push(store, clients, clock, snapshots_on)
    clock.offset += timedelta(days=1)  # a new day, not scored yet: yesterday's scores are not today's

    early = _push(store, clients, clock, snapshots_on)
    cycle.run(("sync", "score"))
    after = _push(store, clients, clock, snapshots_on)

    assert (early.planned, early.sent) == (0, 0)
    assert after.planned == len(_scored_accounts(store))


def test_a_crash_between_the_upsert_and_its_record_updates_the_same_rows_never_duplicates(
        scored: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        snapshots_on: Settings) -> None:
    _push(store, clients, clock, snapshots_on)
    before = _snapshots(sandboxes)
    with store.transaction() as conn:  # as a worker killed after Salesforce answered, before the store recorded it
        conn.execute("UPDATE outbox SET status = 'inflight', sent_at = NULL WHERE kind = ?", (KIND,))
    sandboxes.salesforce.reset_calls()

    rerun = _push(store, clients, clock, snapshots_on)

    assert (rerun.sent, rerun.created) == (len(before), 0)
    assert _upserts(sandboxes) == [len(before)]
    assert {k: r["Id"] for k, r in _snapshots(sandboxes).items()} == {k: r["Id"] for k, r in before.items()}
    assert store.scalar("SELECT count(*) FROM outbox WHERE kind = ? AND status != 'sent'", (KIND,)) == 0


def test_a_snapshot_salesforce_refuses_is_reported_and_only_it_is_tried_next_cycle(
        scored: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        snapshots_on: Settings) -> None:
    refused = sorted(_scored_accounts(store))[0]
    key = snapshot_key(refused, clock().date())
    sandboxes.salesforce.fail_keys_next_upsert([key], "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Snapshots need a band")

    first = _push(store, clients, clock, snapshots_on)
    sandboxes.salesforce.reset_calls()
    clock.offset += timedelta(minutes=15)
    second = _push(store, clients, clock, snapshots_on)

    assert (first.failed, first.error_kinds) == (1, {"other": 1})
    assert first.errors == [f"{refused}: FIELD_CUSTOM_VALIDATION_EXCEPTION: Snapshots need a band"]
    assert (second.sent, second.failed) == (1, 0)
    assert _upserts(sandboxes) == [1]
    assert key in _snapshots(sandboxes)


def test_a_snapshot_refused_every_time_is_given_up_after_the_attempts(
        scored: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        snapshots_on: Settings) -> None:
    key = snapshot_key(sorted(_scored_accounts(store))[0], clock().date())
    for _ in range(MAX_ATTEMPTS + 1):
        sandboxes.salesforce.fail_keys_next_upsert([key], "FIELD_CUSTOM_VALIDATION_EXCEPTION", "no")
        _push(store, clients, clock, snapshots_on)

    assert store.scalar("SELECT status FROM outbox WHERE dedup_key = ?", (f"snapshot:{key}",)) == "dead"


def test_snapshots_wait_when_the_daily_limit_refuses_the_call(
        scored: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        snapshots_on: Settings) -> None:
    sandboxes.salesforce.fail_next(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.",
                                   path_contains=UPSERT_PATH)

    refused = _push(store, clients, clock, snapshots_on)
    later = _push(store, clients, clock, snapshots_on)

    assert (refused.sent, refused.error_kinds, refused.waiting) == (0, {"daily_limit": 1}, refused.planned)
    assert later.sent == refused.planned and later.planned == 0


def test_snapshots_wait_once_the_cycle_used_its_share_of_the_daily_limit(
        scored: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        snapshots_on: Settings) -> None:
    sandboxes.salesforce.api_calls_used = int(sandboxes.salesforce.daily_api_limit * 0.9)
    sandboxes.salesforce.reset_calls()

    report = _push(store, clients, clock, snapshots_on)

    assert (report.skipped, report.sent, _upserts(sandboxes)) == ("api_share", 0, [])
    assert report.waiting == report.planned > 0


def test_a_cycle_that_reached_the_daily_limit_plans_the_snapshots_and_sends_none(
        scored: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        snapshots_on: Settings) -> None:
    sandboxes.salesforce.reset_calls()

    report = _push(store, clients, clock, snapshots_on, limited=True)

    assert (report.skipped, report.sent, _upserts(sandboxes)) == ("daily_limit", 0, [])
    assert report.waiting == report.planned == len(_scored_accounts(store))


def test_with_the_setting_off_nothing_is_planned_or_sent(
        scored: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        settings: Settings) -> None:
    sandboxes.salesforce.reset_calls()

    report = _push(store, clients, clock, settings)

    assert not settings.salesforce_snapshots  # the default
    assert (report.skipped, _upserts(sandboxes), sandboxes.salesforce.records(OBJECT)) == ("off", [], [])
    assert store.scalar("SELECT count(*) FROM outbox WHERE kind = ?", (KIND,)) == 0


def test_a_dry_run_changes_nothing(scored: World, sandboxes: Sandboxes, store: Store, clients: Clients,
                                   clock: ShiftedClock, snapshots_on: Settings) -> None:
    report = _push(store, clients, clock, snapshots_on, dry_run=True)

    assert report.skipped == "dry run"
    assert store.scalar("SELECT count(*) FROM outbox WHERE kind = ?", (KIND,)) == 0
    assert sandboxes.salesforce.records(OBJECT) == []


def test_an_account_deleted_in_salesforce_since_the_plan_is_dropped(
        scored: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        snapshots_on: Settings) -> None:
    gone = sorted(_scored_accounts(store))[0]
    sandboxes.salesforce.delete("Account", gone)

    report = _push(store, clients, clock, snapshots_on)

    assert report.error_kinds == {"deleted": 1} and report.failed == 0
    assert store.scalar("SELECT status FROM outbox WHERE kind = ? AND account_id = ?", (KIND, gone)) == "superseded"


# -- in a cycle ------------------------------------------------------------------------------------------------

def test_full_cycles_write_one_snapshot_per_account_a_day(
        world: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        snapshots_on: Settings, cycle: Cycle) -> None:
    runner = Cycle(store, snapshots_on, cycle.rulebook, clients, clock=clock, sentiment=cycle.sentiment)

    first = runner.run()
    clock.offset += timedelta(minutes=15)
    second = runner.run()
    clock.offset += timedelta(days=1)
    third = runner.run()

    accounts = len(_scored_accounts(store))
    assert [r.snapshots.sent for r in (first, second, third) if r.snapshots] == [accounts, 0, accounts]
    assert len(_snapshots(sandboxes)) == 2 * accounts


# -- doctor and metrics -------------------------------------------------------------------------------------------

def _doctor(env: dict[str, object]) -> dict[str, object]:
    return {check.name: check for check in run_doctor(load_settings(**env))}


def test_doctor_says_the_snapshot_object_exists_when_the_setting_is_on(
        sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    env = sandbox_environment(sandboxes, tmp_path / "h.db", usage_dir, RULES_DIR)

    on = _doctor({**env, "HEALTHBEAT_SALESFORCE_SNAPSHOTS": "on"})
    off = _doctor(env)

    assert on["Salesforce snapshots"].ok  # type: ignore[attr-defined]
    assert "Salesforce snapshots" not in off


def test_doctor_names_a_missing_snapshot_object_and_how_to_deploy_it(
        sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    bare = SalesforceSandbox(client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET,
                             missing_fields={OBJECT: {"*"}})
    bare.start()
    try:
        env = {**sandbox_environment(sandboxes, tmp_path / "h.db", usage_dir, RULES_DIR),
               "SALESFORCE_LOGIN_URL": bare.url, "REQUESTS_CA_BUNDLE": bare.ca_cert_path,
               "HEALTHBEAT_SALESFORCE_SNAPSHOTS": "on"}
        check = _doctor(env)["Salesforce snapshots"]
    finally:
        bare.stop()

    assert not check.ok  # type: ignore[attr-defined]
    assert OBJECT in check.detail and "--package" in check.fix  # type: ignore[attr-defined]


def test_metrics_count_the_snapshot_calls_rows_and_refusals(
        scored: World, sandboxes: Sandboxes, store: Store, clients: Clients, clock: ShiftedClock,
        snapshots_on: Settings) -> None:
    sandboxes.salesforce.fail_keys_next_upsert([snapshot_key(sorted(_scored_accounts(store))[0], clock().date())])
    metrics = Metrics()

    metrics.count_snapshots(_push(store, clients, clock, snapshots_on))

    text = metrics.render().decode()
    accounts = len(_scored_accounts(store))
    assert "healthbeat_snapshot_calls_total 1.0" in text
    assert f'healthbeat_snapshots_total{{result="sent"}} {accounts - 1}.0' in text
    assert 'healthbeat_snapshots_total{result="failed"} 1.0' in text
    assert 'healthbeat_snapshot_errors_total{kind="locked"} 1.0' in text


def test_each_snapshot_row_in_the_outbox_holds_what_it_sends(
        scored: World, store: Store, clients: Clients, clock: ShiftedClock, snapshots_on: Settings,
        sandboxes: Sandboxes) -> None:
    _push(store, clients, clock, snapshots_on)

    for row in store.query("SELECT account_id, payload, remote_ref FROM outbox WHERE kind = ?", (KIND,)):
        payload = json.loads(str(row["payload"]))
        assert payload["Snapshot_Key__c"] == snapshot_key(str(row["account_id"]), clock().date())
        assert _snapshots(sandboxes)[payload["Snapshot_Key__c"]]["Id"] == row["remote_ref"]
