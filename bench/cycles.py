"""P2, P3 and P6: whole cycles against the sandboxes, counted on the sandboxes' side.

One worker (store, clients, rule book) runs cycles as `healthbeat run` does, keeping its clients between
cycles: a backfill, then cycles with nothing changed, then a bad week for one account (P6). P3 then
changes every score and writes them back, against a naive loop of one call per account. Calls are counted
by the sandboxes (what went over the wire), not by the worker's own counters.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.server import SandboxServer, environment
from worker.clock import ShiftedClock
from worker.config import load_settings
from worker.cycle import Clients, Cycle, CycleReport, build_clients
from worker.delivery.writeback import BATCH, DEFAULT_FIELDS, field_values, plan_writeback, push_scores
from worker.rulebook.in_force import RuleBook
from worker.store import Store

STAGES = ("sync", "score", "evaluate", "writeback", "notify")


class TimedCycle(Cycle):
    """The worker's cycle, unchanged, with each stage's seconds kept for the report."""

    stage_seconds: dict[str, float]

    def _time(self, stage: str, report: CycleReport) -> None:
        started = time.perf_counter()
        try:
            getattr(super(), stage)(report)
        finally:
            self.stage_seconds[stage] = time.perf_counter() - started

    def sync(self, report: CycleReport) -> None:
        self._time("sync", report)

    def score(self, report: CycleReport) -> None:
        self._time("score", report)

    def evaluate(self, report: CycleReport) -> None:
        self._time("evaluate", report)

    def writeback(self, report: CycleReport) -> None:
        self._time("writeback", report)

    def notify(self, report: CycleReport) -> None:
        self._time("notify", report)

    def prune(self, report: CycleReport) -> None:  # a stage of newer cycles; never called where absent
        self._time("prune", report)


@dataclass
class CycleFigures:
    label: str
    seconds: float
    ok: bool
    stages: list[str]
    stage_seconds: dict[str, float]
    calls: dict[str, dict[str, int]]
    records: int
    records_by_stream: dict[str, int]
    sentiment_scored: int
    scored: int
    changed: int
    wrote_back: int
    nudges: int
    error: str | None = None

    @property
    def salesforce_data_calls(self) -> int:
        return sum(n for k, n in self.calls.get("salesforce", {}).items() if k not in ("token", "composite records"))


@dataclass
class CycleResults:
    accounts: int
    cycles: list[CycleFigures] = field(default_factory=list)
    p6: dict[str, Any] = field(default_factory=dict)
    p3: dict[str, Any] = field(default_factory=dict)


def _next_interval(cycle: TimedCycle, server: SandboxServer) -> None:
    """Let one `HEALTHBEAT_INTERVAL` pass on both sides, as between two cycles of `healthbeat run`."""
    assert isinstance(cycle.clock, ShiftedClock)
    cycle.clock.offset += cycle.settings.interval
    server.ask("shift_days", cycle.settings.interval.total_seconds() / 86400)


def _on_one_day(cycle: TimedCycle, server: SandboxServer, intervals: int) -> None:
    """Move both clocks past midnight UTC if the run's cycles would straddle it: a quiet cycle on a new day
    would measure the calendar, not the worker. The run spans `intervals` of `HEALTHBEAT_INTERVAL`, plus an
    hour for the cycles' own time at the largest scale."""
    assert isinstance(cycle.clock, ShiftedClock)
    shift = cycle.clock.clear_of_midnight(cycle.settings.interval * intervals + timedelta(hours=1))
    if shift:
        server.ask("shift_days", shift.total_seconds() / 86400)


def _run(cycle: TimedCycle, server: SandboxServer, label: str) -> CycleFigures:
    server.ask("reset_calls")
    cycle.stage_seconds = {}
    report = cycle.run()
    calls = server.ask("calls")
    return CycleFigures(
        label, report.seconds, report.ok, list(report.stages), dict(cycle.stage_seconds), calls,
        report.sync.total if report.sync else 0, dict(report.sync.records) if report.sync else {},
        report.sentiment_scored,
        report.scoring.scored if report.scoring else 0, report.scoring.changed if report.scoring else 0,
        report.writeback.sent if report.writeback else 0, report.notify.sent if report.notify else 0,
        report.error or ("; ".join(report.problems()) or None))


def run_cycles(server: SandboxServer, workdir: Path, rules_dir: Path, *, naive_cap: int = 2000) -> CycleResults:
    """Backfill, two quiet cycles, a bad week for one account (P6), then every score changed (P3)."""
    settings = load_settings(**environment(server.endpoints, workdir / "cycles.db", rules_dir))
    clients = build_clients(settings)
    results = CycleResults(len(server.endpoints.world.accounts))
    with Store(settings.db, lock=True) as store:
        cycle = TimedCycle(store, settings, RuleBook(settings.rules_dir), clients, clock=ShiftedClock())
        _on_one_day(cycle, server, intervals=4)
        for index, label in enumerate(("backfill", "first quiet cycle (after our own write-back)",
                                       "quiet cycle (steady state)")):
            if index:
                _next_interval(cycle, server)
            results.cycles.append(_run(cycle, server, label))
        _next_interval(cycle, server)
        results.p6 = _activity_to_nudge(cycle, server, store, results)
        _next_interval(cycle, server)
        results.p3 = _every_score_changed(server, store, clients, cycle.clock(), naive_cap)
    clients.close()
    return results


def _activity_to_nudge(cycle: TimedCycle, server: SandboxServer, store: Store, results: CycleResults
                       ) -> dict[str, Any]:
    """The least healthy account that is not red gets a bad week; does its owner hear of it next cycle?"""
    row = store.query("SELECT s.account_id, a.name, s.score, s.band FROM scores s JOIN accounts a ON a.id = "
                      "s.account_id WHERE s.band != 'red' ORDER BY s.score, s.account_id LIMIT 1")
    if not row:
        return {"error": "no account outside red to trouble"}
    target = row[0]
    before = len(server.ask("slack_messages"))
    made = server.ask("trouble", target["account_id"])
    figures = _run(cycle, server, "after a bad week for one account")
    results.cycles.append(figures)
    after = store.query("SELECT score, band FROM scores WHERE account_id = ?", (target["account_id"],))[0]
    messages = server.ask("slack_messages")[before:]
    reached = [m for m in messages if target["name"] in m["text"]]
    return {"account": target["account_id"], "name": target["name"], "records_added": made,
            "score_before": target["score"], "band_before": target["band"], "score_after": after["score"],
            "band_after": after["band"], "slack_messages": len(messages), "reached_slack": bool(reached),
            "cycle_seconds": figures.seconds, "message": reached[0]["text"][:200] if reached else None}


def _every_score_changed(server: SandboxServer, store: Store, clients: Clients, now: datetime,
                         naive_cap: int) -> dict[str, Any]:
    """Move every score by a point, write back through the outbox, then a naive loop on a sample."""
    with store.transaction() as conn:
        conn.execute("UPDATE scores SET score = CASE WHEN score >= 99 THEN score - 1 ELSE score + 1 END")
    changed = int(store.scalar("SELECT count(*) FROM scores"))
    server.ask("reset_calls")
    started = time.perf_counter()
    planned = plan_writeback(store, now)
    report = push_scores(store, clients.salesforce, now)
    batched_seconds = time.perf_counter() - started
    batched_calls = server.ask("calls")["salesforce"]
    rows = store.query("SELECT * FROM scores ORDER BY account_id LIMIT ?", (naive_cap,))
    records = [{"Id": r["account_id"], **{DEFAULT_FIELDS[k]: v for k, v in field_values(r).items()}} for r in rows]
    server.ask("reset_calls")
    started = time.perf_counter()
    for record in records:
        clients.salesforce.update_records("Account", [record])
    naive_seconds = time.perf_counter() - started
    naive_calls = server.ask("calls")["salesforce"]
    return {"changed": changed, "planned": planned, "sent": report.sent, "failed": report.failed,
            "composite_calls": batched_calls.get("composite", 0), "expected_calls": math.ceil(changed / BATCH),
            "other_calls": {k: v for k, v in batched_calls.items() if k not in ("composite", "composite records")},
            "seconds": batched_seconds, "per_1000": batched_seconds / changed * 1000 if changed else 0.0,
            "naive_accounts": len(records), "naive_calls": naive_calls.get("composite", 0),
            "naive_seconds": naive_seconds,
            "naive_per_1000": naive_seconds / len(records) * 1000 if records else 0.0}
