"""Each fault class the sandboxes can inject, end to end: nothing lost, nothing duplicated.

Every test plays the same scenario as a clean run on the same world (same seed, same clock): a backfill and a
follow-up cycle, three weeks in which three accounts have a bad week and one goes silent, then two more
cycles, which write scores back and nudge owners. The fault is injected before one of those cycles; the
follow-up cycle is where a fault that stopped something must be made good. At the end the store (activities,
scores, outbox) and the remote side (every Account record, every Slack message) must equal the clean run's.

Both runs use a clock that does not tick by itself (a fixed moment plus the weeks the scenario adds), so the
two are equal to the second; retries never really sleep: the clients' sleeps only record the waits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.salesforce.client import SalesforceClient, SalesforceCredentials
from connectors.sandboxes.world import World, advance, build_world, stir_trouble
from connectors.slack.client import SlackClient
from connectors.slack.sandbox import LOST_ANSWER
from connectors.zendesk.client import ZendeskClient
from worker.clock import ShiftedClock
from worker.config import Settings, load_settings
from worker.cycle import Clients, Cycle, CycleReport
from worker.demo.harness import Sandboxes, pick_changes, sandbox_environment, start_sandboxes
from worker.rulebook.in_force import RuleBook
from worker.scoring.sentiment import VaderModel
from worker.store import Store

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
MOMENT = datetime.now(UTC).replace(microsecond=0)
WORLD_ACCOUNTS, WORLD_SEED = 18, 11  # as tests/conftest.py's `world`: the clean run builds the same world
PAGE = 200  # a batch size Salesforce may choose, so that the sync reads several pages per object
QUERY_PAGE = "/queryAll/"  # the path of a follow-up page (nextRecordsUrl) of a queryAll


@dataclass
class FixedClock(ShiftedClock):
    """Time stands still at MOMENT, plus the offset the scenario adds: two runs see the same seconds."""

    moment: datetime = MOMENT

    def __call__(self) -> datetime:
        return self.moment + self.offset


@dataclass
class Stack:
    """Sandboxes, their world, and a worker pointed at them, whose clients sleep into `waits`."""

    sandboxes: Sandboxes
    world: World
    settings: Settings
    store: Store
    clock: FixedClock
    cycle: Cycle
    waits: list[float] = field(default_factory=list)

    def salesforce_timeout(self, seconds: float) -> None:
        """A fresh Salesforce client with this request timeout (it logs in on its first call)."""
        self.cycle.clients.salesforce.close()
        self.cycle.clients.salesforce = _salesforce(self.settings, self.waits, timeout=seconds)


@dataclass(frozen=True)
class Snapshot:
    """What must not be lost or duplicated: the store's rows and what the remote systems now hold."""

    activities: list[tuple[Any, ...]]
    scores: list[tuple[Any, ...]]
    outbox: list[tuple[Any, ...]]
    accounts: list[dict[str, Any]]
    nudges: list[tuple[str, str, str]]


@dataclass(frozen=True)
class Clean:
    snapshot: Snapshot
    troubled: list[str]
    silent: str


Hook = Callable[[Stack], object]


def _nothing(stack: Stack) -> None:
    """No fault."""


def _salesforce(settings: Settings, waits: list[float], *, timeout: float = 30.0) -> SalesforceClient:
    assert settings.salesforce_client_id and settings.salesforce_client_secret
    return SalesforceClient(SalesforceCredentials(
        login_url=settings.salesforce_login_url, client_id=settings.salesforce_client_id,
        client_secret=settings.salesforce_client_secret.get_secret_value(),
        api_version=settings.salesforce_api_version, ca_bundle=settings.ca_bundle),
        timeout=timeout, retry_sleep=waits.append)


def _stack(sandboxes: Sandboxes, world: World, settings: Settings, store: Store, clock: FixedClock,
           vader: VaderModel) -> Stack:
    """`worker.cycle.build_clients`, but with sleeps that only record the wait."""
    waits: list[float] = []
    assert settings.zendesk_url and settings.zendesk_email and settings.zendesk_api_token
    assert settings.slack_bot_token is not None
    clients = Clients(
        _salesforce(settings, waits),
        ZendeskClient(settings.zendesk_url, settings.zendesk_email, settings.zendesk_api_token.get_secret_value(),
                      requests_per_minute=settings.zendesk_requests_per_minute, sleep=waits.append),
        SlackClient(settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url,
                    sleep=waits.append))
    cycle = Cycle(store, settings, RuleBook(settings.rules_dir), clients, clock=clock, sentiment=vader)
    return Stack(sandboxes, world, settings, store, clock, cycle, waits)


def _close(stack: Stack) -> None:
    stack.cycle.clients.close()
    stack.cycle.clients.salesforce.close()


@dataclass
class Played:
    reports: list[CycleReport]
    troubled: list[str]
    silent: str


def play(stack: Stack, *, changes: tuple[list[str], str] | None = None, backfill: Hook = _nothing,
         follow_up: Hook = _nothing, after_change: Hook = _nothing, last: Hook = _nothing) -> Played:
    """The scenario; each hook runs just before its cycle (a fault goes in there).

    Three weeks pass after the first two cycles: a bad week for three accounts, silence for one; which
    ones is `changes`, or `pick_changes` on what the store then holds.
    """
    reports = []
    for hook in (backfill, follow_up):
        hook(stack)
        reports.append(stack.cycle.run())
    troubled, silent = changes or pick_changes(stack.store)
    start = stack.clock()
    stack.clock.offset += timedelta(days=21)
    advance(stack.world, start, stack.clock(), quiet=[silent, *troubled])
    stir_trouble(stack.world, troubled, stack.clock())
    for hook in (after_change, last):
        hook(stack)
        reports.append(stack.cycle.run())
    return Played(reports, troubled, silent)


def snapshot(stack: Stack) -> Snapshot:
    def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r.values()) for r in stack.store.query(sql)]

    nudges = []
    for message in stack.sandboxes.slack.messages:
        key = ((message.metadata or {}).get("event_payload") or {}).get("dedup_key")
        recipient = message.user if message.kind == "im" else message.channel  # DM ids depend on opening order
        nudges.append((str(key), str(recipient), message.text))
    return Snapshot(
        activities=rows("SELECT * FROM activities ORDER BY source, source_id"),
        scores=rows("SELECT * FROM scores ORDER BY account_id"),
        outbox=rows("SELECT kind, dedup_key, status FROM outbox ORDER BY dedup_key"),
        accounts=sorted(stack.sandboxes.salesforce.records("Account"), key=lambda a: str(a["Id"])),
        nudges=sorted(nudges))


def assert_nothing_lost_or_duplicated(stack: Stack, clean: Clean, *, provisional_writes: bool = False) -> None:
    """The faulted run ends as the clean one. With `provisional_writes`, a cycle scored without one source
    and wrote those scores back (as it should), so only the write-backs' end state must match."""
    got = snapshot(stack)
    keys = Counter(key for key, _, _ in got.nudges)
    assert [key for key, count in keys.items() if count > 1] == [], "a nudge was posted twice"
    assert [row for row in got.outbox if row[2] not in ("sent", "superseded")] == [], "left in the outbox"
    assert got.activities == clean.snapshot.activities, "activities differ from the clean run"
    assert got.scores == clean.snapshot.scores, "scores differ from the clean run"
    assert got.accounts == clean.snapshot.accounts, "Salesforce Accounts differ from the clean run"
    assert got.nudges == clean.snapshot.nudges, "Slack messages differ from the clean run"
    outbox, expected = got.outbox, clean.snapshot.outbox
    if provisional_writes:
        outbox, expected = ([row for row in rows if row[0] != "salesforce"] for rows in (outbox, expected))
    assert outbox == expected, "the outbox differs from the clean run"


@pytest.fixture
def clock() -> FixedClock:
    """Overrides tests/conftest.py's: the sandboxes, the world and the worker see the clean run's seconds."""
    return FixedClock()


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, vader: VaderModel) -> Clean:
    """The scenario without faults, on its own sandboxes: what every faulted run must end with."""
    clock = FixedClock()
    sandboxes = start_sandboxes(clock)
    try:
        folder = tmp_path_factory.mktemp("clean")
        (folder / "usage").mkdir()
        world = build_world(sandboxes.salesforce, sandboxes.zendesk, sandboxes.slack, folder / "usage",
                            accounts=WORLD_ACCOUNTS, seed=WORLD_SEED, now=clock())
        settings = load_settings(**sandbox_environment(sandboxes, folder / "healthbeat.db", folder / "usage",
                                                       RULES_DIR))
        with Store(settings.db) as store:
            stack = _stack(sandboxes, world, settings, store, clock, vader)
            played = play(stack)
            _close(stack)
            assert all(r.ok for r in played.reports), [r.summary() for r in played.reports]
            assert played.reports[2].notify and played.reports[2].notify.sent, "the clean run sent no nudge"
            return Clean(snapshot(stack), played.troubled, played.silent)
    finally:
        sandboxes.stop()


@pytest.fixture
def faulted(sandboxes: Sandboxes, world: World, settings: Settings, store: Store, clock: FixedClock,
            vader: VaderModel) -> Iterator[Stack]:
    assert (len(world.accounts), world.seed) == (WORLD_ACCOUNTS, WORLD_SEED), "conftest's world changed"
    stack = _stack(sandboxes, world, settings, store, clock, vader)
    yield stack
    _close(stack)


def _changes(clean: Clean) -> tuple[list[str], str]:
    return clean.troubled, clean.silent


def _calls(stack: Stack, path: str, status: int) -> int:
    return sum(1 for c in stack.sandboxes.salesforce.calls if path in c.path and c.status == status)


# -- Salesforce ------------------------------------------------------------------------------------------------

def test_a_503_on_a_query_page_is_retried_and_nothing_is_lost(faulted: Stack, clean: Clean) -> None:
    def fault(stack: Stack) -> None:
        stack.sandboxes.salesforce.batch_size = PAGE
        stack.sandboxes.salesforce.fail_next(503, "SERVER_UNAVAILABLE", "Service unavailable",
                                             path_contains=QUERY_PAGE)

    played = play(faulted, changes=_changes(clean), backfill=fault)

    assert played.reports[0].ok, played.reports[0].summary()
    assert _calls(faulted, QUERY_PAGE, 503) == 1 and len(faulted.waits) == 1
    assert_nothing_lost_or_duplicated(faulted, clean)


def test_a_503_that_outlasts_the_retries_fails_one_stream_and_the_next_cycle_resumes_it(
        faulted: Stack, clean: Clean) -> None:
    def fault(stack: Stack) -> None:
        stack.sandboxes.salesforce.batch_size = PAGE
        stack.sandboxes.salesforce.fail_next(503, "SERVER_UNAVAILABLE", "Service unavailable",
                                             path_contains=QUERY_PAGE, times=4)

    played = play(faulted, changes=_changes(clean), backfill=fault)

    first = played.reports[0]
    assert not first.ok and first.sync and len(first.sync.failed_streams) == 1, first.summary()
    assert _calls(faulted, QUERY_PAGE, 503) == 4
    assert played.reports[1].ok, played.reports[1].summary()
    assert_nothing_lost_or_duplicated(faulted, clean, provisional_writes=True)


def test_a_query_page_that_times_out_is_retried_and_nothing_is_lost(faulted: Stack, clean: Clean) -> None:
    def fault(stack: Stack) -> None:
        stack.salesforce_timeout(0.5)
        stack.sandboxes.salesforce.batch_size = PAGE
        stack.sandboxes.salesforce.stall_next(1.5, path_contains=QUERY_PAGE + "01g")  # a locator page

    def patient(stack: Stack) -> None:
        stack.salesforce_timeout(30.0)

    played = play(faulted, changes=_changes(clean), backfill=fault, follow_up=patient)

    assert played.reports[0].ok, played.reports[0].summary()
    assert faulted.waits, "the timed-out query was not retried"
    assert_nothing_lost_or_duplicated(faulted, clean)


def test_a_connection_dropped_while_paging_is_retried_and_nothing_is_lost(faulted: Stack, clean: Clean) -> None:
    def fault(stack: Stack) -> None:
        stack.sandboxes.salesforce.batch_size = PAGE
        stack.sandboxes.salesforce.drop_next(path_contains=QUERY_PAGE)

    played = play(faulted, changes=_changes(clean), backfill=fault)

    assert played.reports[0].ok, played.reports[0].summary()
    assert _calls(faulted, QUERY_PAGE, 0) == 1
    assert_nothing_lost_or_duplicated(faulted, clean)


def test_a_session_that_expires_while_paging_is_renewed_and_paging_goes_on(faulted: Stack, clean: Clean) -> None:
    def fault(stack: Stack) -> None:
        stack.sandboxes.salesforce.batch_size = PAGE
        stack.sandboxes.salesforce.fail_next(401, "INVALID_SESSION_ID", "Session expired or invalid",
                                             path_contains=QUERY_PAGE)

    played = play(faulted, changes=_changes(clean), backfill=fault)

    assert all(r.ok for r in played.reports), [r.summary() for r in played.reports]
    logins = sum(1 for c in faulted.sandboxes.salesforce.calls if c.path.endswith("/oauth2/token"))
    # one a cycle, one for the side session asking for first pages ahead (kept between cycles), and one more
    # for the expired session
    assert logins == len(played.reports) + 2
    assert_nothing_lost_or_duplicated(faulted, clean)


def test_request_limit_exceeded_stops_salesforce_for_the_cycle_and_the_next_cycle_resumes(
        faulted: Stack, clean: Clean) -> None:
    salesforce = faulted.sandboxes.salesforce

    def exhausted(stack: Stack) -> None:
        salesforce.api_calls_used = salesforce.daily_api_limit

    def new_day(stack: Stack) -> None:
        salesforce.api_calls_used = 0

    played = play(faulted, changes=_changes(clean), backfill=exhausted, follow_up=new_day)

    first = played.reports[0]
    assert not first.ok and "daily API request limit" in " ".join(first.problems()), first.summary()
    assert first.sync and list(first.sync.failed_streams) == ["salesforce.User"], first.summary()
    assert faulted.waits == []  # not a transient error: never retried
    assert played.reports[1].ok, played.reports[1].summary()
    assert_nothing_lost_or_duplicated(faulted, clean)


def test_near_the_daily_limit_the_cycle_stops_salesforce_before_salesforce_refuses(faulted: Stack) -> None:
    salesforce = faulted.sandboxes.salesforce
    salesforce.api_calls_used = salesforce.daily_api_limit - 5  # five calls left today

    report = faulted.cycle.run()

    assert _calls(faulted, "/services/data/", 403) == 0
    assert not any("composite/sobjects" in c.path for c in salesforce.calls)
    assert report.sync is not None and report.sync.salesforce_limited
    assert "HEALTHBEAT_SALESFORCE_API_SHARE" in " ".join(report.problems())


def test_request_limit_exceeded_mid_backfill_is_made_good_in_the_next_cycle(faulted: Stack, clean: Clean) -> None:
    salesforce = faulted.sandboxes.salesforce

    def exhaust(stack: Stack) -> None:
        salesforce.api_calls_used = salesforce.daily_api_limit - 5  # five calls into the backfill

    def new_day(stack: Stack) -> None:
        salesforce.api_calls_used = 0

    played = play(faulted, changes=_changes(clean), backfill=exhaust, follow_up=new_day)

    assert played.reports[1].ok, played.reports[1].summary()
    assert_nothing_lost_or_duplicated(faulted, clean, provisional_writes=True)


def test_records_refused_in_a_composite_update_are_retried_alone_in_the_next_cycle(
        faulted: Stack, clean: Clean) -> None:
    refused = [a.id for a in faulted.world.accounts[:2]]

    def fault(stack: Stack) -> None:  # not a lock (retried within the push): an error only a later cycle may cure
        stack.sandboxes.salesforce.fail_records_next_update(
            refused, "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "AccountAfterUpdate: execution of AfterUpdate failed")

    def forget_calls(stack: Stack) -> None:
        stack.sandboxes.salesforce.reset_calls()

    played = play(faulted, changes=_changes(clean), backfill=fault, follow_up=forget_calls)

    assert played.reports[0].writeback and played.reports[0].writeback.failed == len(refused)
    retried = [c for c in faulted.sandboxes.salesforce.calls if "composite/sobjects" in c.path]
    assert played.reports[1].ok and [c.record_count for c in retried[:1]] == [len(refused)]
    assert_nothing_lost_or_duplicated(faulted, clean)


# -- Zendesk ---------------------------------------------------------------------------------------------------

def test_a_zendesk_429_waits_exactly_retry_after_and_nothing_is_lost(faulted: Stack, clean: Clean) -> None:
    def fault(stack: Stack) -> None:
        stack.sandboxes.zendesk.fail_next(429, retry_after=7, path_contains="incremental")

    played = play(faulted, changes=_changes(clean), after_change=fault)

    assert played.reports[2].ok, played.reports[2].summary()
    assert faulted.waits == [7.0]
    assert_nothing_lost_or_duplicated(faulted, clean)


def test_a_zendesk_503_is_retried_and_nothing_is_lost(faulted: Stack, clean: Clean) -> None:
    def fault(stack: Stack) -> None:
        stack.sandboxes.zendesk.fail_next(503, path_contains="ticket_events")

    played = play(faulted, changes=_changes(clean), backfill=fault)

    assert played.reports[0].ok, played.reports[0].summary()
    assert len(faulted.waits) == 1
    assert_nothing_lost_or_duplicated(faulted, clean)


def test_a_zendesk_503_that_outlasts_the_retries_is_made_good_next_cycle(faulted: Stack, clean: Clean) -> None:
    def fault(stack: Stack) -> None:
        stack.sandboxes.zendesk.fail_next(503, path_contains="incremental", times=5)

    played = play(faulted, changes=_changes(clean), backfill=fault)

    first = played.reports[0]
    assert not first.ok and first.sync and "zendesk.tickets" in first.sync.failed_streams, first.summary()
    assert played.reports[1].ok, played.reports[1].summary()
    assert_nothing_lost_or_duplicated(faulted, clean, provisional_writes=True)


# -- Slack -----------------------------------------------------------------------------------------------------

def test_a_slack_rate_limit_on_a_post_waits_and_sends_each_nudge_once(faulted: Stack, clean: Clean) -> None:
    def fault(stack: Stack) -> None:
        stack.sandboxes.slack.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=3)

    played = play(faulted, changes=_changes(clean), after_change=fault)

    assert played.reports[2].ok, played.reports[2].summary()
    assert len(faulted.waits) == 1 and faulted.waits[0] >= 3
    assert_nothing_lost_or_duplicated(faulted, clean)


def test_a_slack_500_on_a_post_is_not_retried_blindly_and_the_nudge_goes_out_next_cycle_once(
        faulted: Stack, clean: Clean) -> None:
    def fault(stack: Stack) -> None:
        stack.sandboxes.slack.fail_next("chat.postMessage", "internal_error", status=500)

    played = play(faulted, changes=_changes(clean), after_change=fault)

    third = played.reports[2]
    assert not third.ok and third.notify and third.notify.failed == 1, third.summary()
    assert faulted.waits == []
    assert played.reports[3].ok, played.reports[3].summary()
    assert_nothing_lost_or_duplicated(faulted, clean)


def test_a_slack_post_whose_answer_is_lost_is_found_in_history_and_not_sent_again(
        faulted: Stack, clean: Clean) -> None:
    def fault(stack: Stack) -> None:
        stack.sandboxes.slack.fail_next("chat.postMessage", "connection_lost", status=LOST_ANSWER)

    played = play(faulted, changes=_changes(clean), after_change=fault)

    assert not played.reports[2].ok, played.reports[2].summary()
    assert played.reports[3].notify and played.reports[3].notify.recovered == 1, played.reports[3].summary()
    assert_nothing_lost_or_duplicated(faulted, clean)
