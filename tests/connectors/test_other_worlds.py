"""The worlds the score was not tuned on (`connectors.sandboxes.other_worlds`): fixed by their seeds, and
their ground truth (who churned, when, how) is what their CRM records say.

The validity benchmark (`bench.validity`) judges the score against these worlds' fates, so a world that
drifted from one run to the next, or whose fates disagreed with the opportunities it wrote, would make
every figure there meaningless. Small worlds (40 accounts) keep this fast; the first accounts of a small
world are those of the full one.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from connectors.salesforce.sandbox import SalesforceSandbox
from connectors.sandboxes.other_worlds import CHANNELS, MECHANISMS, WORLDS, OtherWorld, build_other_world
from connectors.zendesk.sandbox import ZendeskSandbox

ENDS = datetime(2025, 6, 2, 12, tzinfo=UTC)
SIZE = 40
SMALL = 10  # the size of the world built twice
OBJECTS = ("User", "Account", "Opportunity", "Event", "Task", "EmailMessage", "Case")


@dataclass
class Built:
    world: OtherWorld
    salesforce: SalesforceSandbox
    zendesk: ZendeskSandbox
    usage: Path


def _build(name: str, folder: Path, accounts: int = SIZE) -> Built:
    """A world in sandboxes that are never started: the data API is all a generator uses."""
    salesforce = SalesforceSandbox(client_id="id", client_secret="secret", clock=lambda: ENDS)
    zendesk = ZendeskSandbox(email="agent@support.example", clock=lambda: ENDS)
    world = build_other_world(name, salesforce, zendesk, folder, now=ENDS, accounts=accounts)
    return Built(world, salesforce, zendesk, folder)


@pytest.fixture(scope="module", params=sorted(WORLDS))
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    yield _build(request.param, tmp_path_factory.mktemp(request.param))


def _is_renewal(record: dict[str, object]) -> bool:
    """As the backtest's default outcome rules recognise one: the type, or the word in the name."""
    return record["Type"] == "Renewal" or "renewal" in str(record["Name"]).lower()


def _day(stamp: object) -> date:
    return date.fromisoformat(str(stamp)[:10])


def _usage_days(world: OtherWorld) -> Iterator[tuple[str, date]]:
    for path in world.usage_files:
        with path.open(encoding="utf-8") as handle:
            rows = csv.DictReader(handle) if path.suffix == ".csv" else (json.loads(line) for line in handle)
            for row in rows:
                yield row["account_id"], date.fromisoformat(row["date"])


# -- fixed by the seed -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def half(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The same world, smaller."""
    return _build(built.world.mix.name, tmp_path_factory.mktemp("half"), accounts=SMALL)


def test_the_same_seed_writes_the_same_records(half: Built, tmp_path: Path) -> None:
    again = _build(half.world.mix.name, tmp_path, accounts=SMALL)

    for sobject in OBJECTS:
        assert again.salesforce.records(sobject) == half.salesforce.records(sobject), sobject
    assert again.zendesk.event_count == half.zendesk.event_count
    assert [p.read_bytes() for p in again.world.usage_files] == [p.read_bytes() for p in half.world.usage_files]
    assert again.world.fates == half.world.fates


def test_the_first_accounts_of_a_smaller_world_live_the_same_story(built: Built, half: Built) -> None:
    def story(world: OtherWorld) -> list[tuple[object, ...]]:
        return [(f.name, f.touch, f.renewals, f.churned_on, f.mechanism, f.dips)
                for f in list(world.fates.values())[: SMALL]]

    assert story(half.world) == story(built.world)


# -- the ground truth is what the CRM says --------------------------------------------------------------

def test_every_churned_account_lost_exactly_one_renewal_on_its_churn_day(built: Built) -> None:
    lost: dict[str, list[date]] = {}
    for record in built.salesforce.records("Opportunity"):
        if _is_renewal(record) and record["StageName"] == "Closed Lost":
            lost.setdefault(str(record["AccountId"]), []).append(date.fromisoformat(str(record["CloseDate"])))

    assert lost == {f.account_id: [f.churned_on] for f in built.world.churned}
    assert built.world.churned, "a world of 40 accounts should have some churn to check"


def test_the_renewals_closed_in_the_history_are_the_fates_renewals(built: Built) -> None:
    start = built.world.start.date()
    closed: dict[str, list[date]] = {a: [] for a in built.world.fates}
    for record in built.salesforce.records("Opportunity"):
        close = date.fromisoformat(str(record["CloseDate"]))
        if _is_renewal(record) and record["IsClosed"] and close > start:
            closed[str(record["AccountId"])].append(close)

    assert {a: sorted(d) for a, d in closed.items()} == {a: list(f.renewals) for a, f in built.world.fates.items()}


def test_no_renewal_follows_a_churn_and_every_retained_account_has_its_next_one_open_or_not_yet_created(
        built: Built) -> None:
    open_renewals: dict[str, date] = {}
    for record in built.salesforce.records("Opportunity"):
        if _is_renewal(record) and not record["IsClosed"]:
            open_renewals[str(record["AccountId"])] = date.fromisoformat(str(record["CloseDate"]))

    assert open_renewals == {a: f.open_renewal for a, f in built.world.fates.items() if f.open_renewal}
    assert not any(f.open_renewal for f in built.world.churned)


def test_every_opportunity_was_created_before_it_closed_and_before_the_end(built: Built) -> None:
    for record in built.salesforce.records("Opportunity"):
        created = _day(record["CreatedDate"])
        assert created < date.fromisoformat(str(record["CloseDate"])), record["Name"]
        assert created <= ENDS.date(), record["Name"]


def test_a_churned_account_has_no_activity_or_usage_from_its_churn_day_on(built: Built) -> None:
    churned = {f.account_id: f.churned_on for f in built.world.churned}
    late = []
    for sobject, stamp, account in (("Event", "ActivityDateTime", "AccountId"), ("Task", "CreatedDate", "AccountId"),
                                    ("EmailMessage", "MessageDate", "RelatedToId"), ("Case", "CreatedDate",
                                                                                     "AccountId")):
        for record in built.salesforce.records(sobject):
            day = churned.get(str(record[account]))
            if day is not None and _day(record[stamp]) >= day:
                late.append((sobject, record["Id"]))
    for account, used in _usage_days(built.world):
        day = churned.get(account)
        if day is not None and used >= day:
            late.append(("usage", account))

    assert late == []


def test_meetings_are_plain_events_and_calls_and_our_emails_completed_tasks(built: Built) -> None:
    tasks = built.salesforce.records("Task")

    assert {(t["TaskSubtype"], t["Status"]) for t in tasks} <= {("Call", "Completed"), ("Email", "Completed")}
    assert all(e["ActivityDateTime"] and e["StartDateTime"] for e in built.salesforce.records("Event"))


# -- the fates themselves ------------------------------------------------------------------------------------

def test_a_silent_churner_shows_no_decline_before_it_leaves(built: Built) -> None:
    silent = [f for f in built.world.fates.values() if f.mechanism == "silent" and not f.dips]
    for fate in silent:
        assert fate.churned_on is not None
        assert {fate.level(c, fate.churned_on - timedelta(days=1)) for c in CHANNELS} == {1.0}


def test_a_decline_reaches_its_floors_at_its_bottom_and_stays_there(built: Built) -> None:
    declined = [f for f in built.world.churned if f.mechanism not in (None, "silent") and not f.dips]
    for fate in declined:
        assert fate.bottom_at is not None and fate.churned_on is not None
        for channel, floor in fate.floors:
            assert fate.level(channel, fate.bottom_at) == pytest.approx(floor)
            assert fate.level(channel, max(fate.bottom_at, fate.churned_on - timedelta(days=1))) == pytest.approx(floor)


def test_a_dip_weighs_at_its_bottom_and_is_over_once_its_recovery_is(built: Built) -> None:
    dipped = [f for f in built.world.fates.values() if len(f.dips) == 1 and f.decline_from is None]
    assert dipped, "a world of 40 accounts should have a dip to check"
    for fate in dipped:
        (dip,) = fate.dips
        after = dip.end + timedelta(days=dip.recovery + 1)
        assert [fate.level(channel, dip.end) for channel, _ in dip.floors] == pytest.approx([f for _, f in dip.floors])
        assert {fate.level(channel, after) for channel, _ in dip.floors} == {1.0}


def test_every_mechanism_a_world_names_exists() -> None:
    assert all(set(mix.mechanisms) <= set(MECHANISMS) for mix in WORLDS.values())
