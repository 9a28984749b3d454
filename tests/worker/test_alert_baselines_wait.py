"""A new alert rule's baseline waits for a sync that read every source, but not for ever.

Taken on scores without, say, the tickets, a baseline records a red account as not red, and the next whole sync
nudges its owner that it "turned red" when it was red all along (`tests/worker/test_faults.py` plays that). But
a source that fails every cycle (a revoked Zendesk token) must not keep every new rule silent: after a day of
partial syncs the baseline is taken on what there is.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from connectors.sandboxes.world import World
from worker.clock import ShiftedClock
from worker.cycle import BASELINE_WAIT, Cycle, CycleReport
from worker.store import Store
from worker.sync.report import SyncReport


@pytest.fixture
def synced(world: World, cycle: Cycle) -> Cycle:
    """The world read into the store (and the rules loaded), no alert rule evaluated yet."""
    assert cycle.run(("sync",)).ok
    return cycle


def _evaluate(cycle: Cycle, clock: ShiftedClock, *, failing: bool) -> CycleReport:
    report = CycleReport(clock(), sync=SyncReport(failed_streams={"zendesk.tickets": "503"} if failing else {}))
    cycle.score(report)
    cycle.evaluate(report)
    return report


def _states(store: Store) -> int:
    return int(store.scalar("SELECT count(*) FROM alerts"))


def test_a_partial_sync_leaves_new_rules_without_a_baseline(synced: Cycle, store: Store, clock: ShiftedClock) -> None:
    report = _evaluate(synced, clock, failing=True)

    assert report.alerts is not None and "turned_red" in report.alerts.baselines_waiting
    assert _states(store) == 0


def test_the_next_whole_sync_takes_the_baselines(synced: Cycle, store: Store, clock: ShiftedClock) -> None:
    _evaluate(synced, clock, failing=True)
    clock.offset += timedelta(minutes=15)

    report = _evaluate(synced, clock, failing=False)

    assert report.alerts is not None and report.alerts.baselines_waiting == [] and report.alerts.fired == 0
    assert _states(store) > 0


def test_a_source_failing_for_a_day_no_longer_holds_the_baselines_back(synced: Cycle, store: Store,
                                                                       clock: ShiftedClock) -> None:
    _evaluate(synced, clock, failing=True)
    clock.offset += BASELINE_WAIT - timedelta(minutes=15)
    assert _evaluate(synced, clock, failing=True).alerts.baselines_waiting  # type: ignore[union-attr]
    clock.offset += timedelta(minutes=30)

    report = _evaluate(synced, clock, failing=True)

    assert report.alerts is not None and report.alerts.baselines_waiting == [] and report.alerts.fired == 0
    assert _states(store) > 0
