"""Fixtures shared by the end-to-end tests: the three sandboxes, a world in them, and a worker pointed at them.

The sandboxes and the worker share one shifted clock, so a test can let weeks pass in a line.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from connectors.sandboxes.world import World, build_world
from worker.clock import ShiftedClock
from worker.config import Settings, load_settings
from worker.cycle import Clients, Cycle, build_clients
from worker.demo.harness import Sandboxes, sandbox_environment, start_sandboxes
from worker.rulebook.in_force import RuleBook
from worker.scoring.sentiment import VaderModel
from worker.store import Store

RULES_DIR = Path(__file__).resolve().parents[1] / "rules"


@pytest.fixture(scope="session")
def vader() -> VaderModel:
    return VaderModel()


@pytest.fixture
def clock() -> ShiftedClock:
    """Real time, past midnight UTC if the test's next two hours would cross it: tests let a cycle's 15 minutes
    pass and expect the same day."""
    shifted = ShiftedClock()
    shifted.clear_of_midnight(timedelta(hours=2))
    return shifted


@pytest.fixture
def sandboxes(clock: ShiftedClock) -> Iterator[Sandboxes]:
    running = start_sandboxes(clock)
    yield running
    running.stop()


@pytest.fixture
def usage_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "usage"
    folder.mkdir()
    return folder


@pytest.fixture
def world(sandboxes: Sandboxes, usage_dir: Path, clock: ShiftedClock) -> World:
    return build_world(sandboxes.salesforce, sandboxes.zendesk, sandboxes.slack, usage_dir,
                       accounts=18, seed=11, now=clock())


@pytest.fixture
def settings(sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> Settings:
    return load_settings(**sandbox_environment(sandboxes, tmp_path / "healthbeat.db", usage_dir, RULES_DIR))


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings.db) as opened:
        yield opened


@pytest.fixture
def clients(settings: Settings) -> Iterator[Clients]:
    built = build_clients(settings)
    yield built
    built.close()


@pytest.fixture
def cycle(store: Store, settings: Settings, clients: Clients, clock: ShiftedClock, vader: VaderModel) -> Cycle:
    return Cycle(store, settings, RuleBook(settings.rules_dir), clients, clock=clock, sentiment=vader)
