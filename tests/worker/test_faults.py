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
from connectors.slack.client import SlackClient
from connectors.slack.sandbox import LOST_ANSWER
from connectors.world import World, advance, build_world, stir_trouble
from connectors.zendesk.client import ZendeskClient
from worker.config import Settings, load_settings
from worker.cycle import Clients, Cycle, CycleReport
from worker.demo import Sandboxes, ShiftedClock, pick_changes, sandbox_environment, start_sandboxes
from worker.rulebook import RuleBook
from worker.sentiment import VaderModel
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

    def short_salesforce_timeout(self, seconds: float) -> None:
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


def play(stack: Stack, *, changes: tuple[list[str], str] | None = None, backfill: Hook = _nothing,
         follow_up: Hook = _nothing, after_change: Hook = _nothing, last: Hook = _nothing) -> list[CycleReport]:
    """The scenario; each hook runs just before its cycle (the fault goes in there)."""
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
    return reports


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


def assert_nothing_lost_or_duplicated(stack: Stack, clean: Clean) -> None:
    got = snapshot(stack)
    keys = Counter(key for key, _, _ in got.nudges)
    assert [key for key, count in keys.items() if count > 1] == [], "a nudge was posted twice"
    assert [row for row in got.outbox if row[2] not in ("sent", "superseded")] == [], "left in the outbox"
    assert got.activities == clean.snapshot.activities, "activities differ from the clean run"
    assert got.scores == clean.snapshot.scores, "scores differ from the clean run"
    assert got.outbox == clean.snapshot.outbox, "the outbox differs from the clean run"
    assert got.accounts == clean.snapshot.accounts, "Salesforce Accounts differ from the clean run"
    assert got.nudges == clean.snapshot.nudges, "Slack messages differ from the clean run"


@pytest.fixture
def clock() -> FixedClock:
    """Overrides tests/conftest.py's: the sandboxes, the world and the worker see the clean run's seconds."""
    return FixedClock()


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, vader: VaderModel) -> Clean:
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
            troubled, silent = [], ""

            def remember(stack: Stack) -> None:
                nonlocal troubled, silent
                troubled, silent = pick_changes(stack.store)

            reports = play(stack, after_change=_nothing, follow_up=_nothing, backfill=_nothing,
                           last=_nothing, changes=None) if False else None  # placeholder, replaced below
            del reports, remember
            reports = []
            for _ in range(2):
                reports.append(stack.cycle.run())
            troubled, silent = pick_changes(store)
            clean_snapshot = None
            _close(stack)
        return Clean(clean_snapshot, troubled, silent)  # type: ignore[arg-type]
    finally:
        sandboxes.stop()
