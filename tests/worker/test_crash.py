"""SIGKILL the worker at seeded random moments, restart it, and end where an uninterrupted worker ends.

Two standalone sandbox servers (`python -m connectors.sandboxes.server`) hold the same world (same accounts,
seed and "now"). On one, a worker runs each cycle once (`healthbeat run --once`). On the other, each cycle
is started again and again and killed with SIGKILL, then allowed to finish: first, while it has something to
send, a random moment after a write-back or nudge was marked in flight (the narrowest window for "sent
twice" or "lost"); then a random 0..T s after its cycle began (T: how long the uninterrupted worker's cycle
took, halved after each kill that came too late, since a restarted cycle has less left to do).

Between the first and second cycles the world changes in both: accounts that went quiet for three weeks have
a bad week (angry emails, urgent tickets), so scores fall, write-backs go out and nudges are owed. Salesforce
answers composite updates slowly (a stall, in both worlds), as it does, so kills can land mid-update.

The killed run must end with the same activities, scores, alert episodes, Account fields and Slack nudges
as the uninterrupted one, each nudge in Slack exactly once, and nothing left unconfirmed in the outbox.

It runs twice: once with both workers backfilling over REST pages, and once with the killed worker
backfilling every object through Bulk API 2.0 query jobs (a threshold of 1 record) against the uninterrupted
one on REST, so a Bulk backfill killed anywhere ends with the same store and scores as REST pages.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
ACCOUNTS = 14
SEED = 3
QUIET = 6  # the first accounts go quiet for three weeks, then have a bad week
DAYS_BEHIND = 21  # the world is built this long ago, then caught up, except for the quiet accounts
KILLS_PER_CYCLE = 8  # at random moments of each cycle
AIMED_PER_CYCLE = 3  # at most, aimed at write-backs and nudges in flight
MIN_WINDOW = 0.02  # seconds
CYCLES = 3
KILL_SEED = 1729
COMPOSITE_STALL = 0.3  # seconds Salesforce takes to answer a composite update, in both worlds
WORKER = ("-c", "from worker.cli import main; main()", "run", "--once")
CLEAN_STATUSES = ("sent", "superseded")

@dataclass
class SandboxProcess:
    """A sandbox server in its own process, driven through its control endpoint."""

    process: subprocess.Popen[bytes]
    ready: dict[str, Any]
    environment: dict[str, str]

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.request(method, f"{self.ready['control']}/control/{path}", json=body, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Worker:
    """`healthbeat run --once` against one sandbox server, with its own database."""

    environment: dict[str, str]
    db: Path
    logs: Path
    runs: int = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.runs += 1
        with (self.logs / f"run-{self.runs:03d}.log").open("wb") as log:
            return subprocess.Popen([sys.executable, *WORKER], env=self.environment, cwd=self.db.parent,
                                    stdout=subprocess.DEVNULL, stderr=log)

    def run_to_end(self) -> float:
        """One uninterrupted cycle; returns how long the cycle took, by its own report."""
        process = self.start()
        process.wait(timeout=120)
        log = (self.logs / f"run-{self.runs:03d}.log").read_text()
        assert process.returncode == 0, f"worker exit {process.returncode}:\n{log[-3000:]}"
        with _read(self.db) as conn:
            summary = conn.execute("SELECT summary FROM cycles ORDER BY id DESC LIMIT 1").fetchone()[0]
        return float(json.loads(summary)["seconds"])


@dataclass
class KillTally:
    points: int = 0
    aimed: int = 0  # of the points: those aimed at a write-back or nudge just marked in flight
    mid_cycle: int = 0  # the process died inside its cycle
    left_in_flight: int = 0  # of those: died with a write-back or nudge sent but not yet confirmed
    after_cycle: int = 0  # the cycle had ended; the process was exiting
    after_exit: int = 0  # the process had exited before its kill time
    per_cycle: list[int] = field(default_factory=list)  # mid-cycle kills in each cycle
    confirmed_after_crash: int = 0  # write-backs a restarted worker found already in Salesforce
    recovered: int = 0  # nudges a restarted worker found already in Slack


@dataclass
class Outcome:
    reference: sqlite3.Connection
    crashed: sqlite3.Connection
    reference_state: dict[str, Any]
    crashed_state: dict[str, Any]
    kills: KillTally
    seconds: float
    backfill: str  # "rest" or "bulk": how the killed worker backfilled


def _start_server(folder: Path, now: datetime) -> SandboxProcess:
    folder.mkdir(parents=True)
    port_file = folder / "ready.json"
    with (folder / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "connectors.sandboxes.server", "--accounts", str(ACCOUNTS), "--seed", str(SEED),
             "--now", now.isoformat(), "--env-file", str(folder / "sandbox.env"),
             "--usage-dir", str(folder / "usage"), "--port-file", str(port_file),
             "--zendesk-requests-per-minute", "10000"],  # dozens of restarts a minute: no 60 s Retry-After
            stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 30
    while not port_file.exists():
        assert process.poll() is None, (folder / "server.log").read_text()
        assert time.monotonic() < deadline, "the sandbox server did not get ready in 30 s"
        time.sleep(0.05)
    ready = json.loads(port_file.read_text())
    lines = (folder / "sandbox.env").read_text().splitlines()
    return SandboxProcess(process, ready, dict(line.split("=", 1) for line in lines if line))


def _worker(server: SandboxProcess, folder: Path, *, bulk_threshold: int) -> Worker:
    (folder / "logs").mkdir(parents=True)
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("HEALTHBEAT_", "SALESFORCE_", "ZENDESK_", "SLACK_", "USAGE_"))}
    environment = {**inherited, **server.environment, "HEALTHBEAT_DB": str(folder / "healthbeat.db"),
                   "HEALTHBEAT_RULES_DIR": str(RULES_DIR),
                   "HEALTHBEAT_SALESFORCE_BULK_THRESHOLD": str(bulk_threshold)}
    return Worker(environment, folder / "healthbeat.db", folder / "logs")


Probe = Callable[[sqlite3.Connection], str | None]


def _wait_for(process: subprocess.Popen[bytes], db: Path, probe: Probe) -> str | None:
    """Poll the worker's database until `probe` answers (its answer) or the process exits (None).

    Reading while the worker writes is safe once the store is in WAL mode: readers never block the writer.
    """
    wal = db.with_name(db.name + "-wal")
    while not wal.exists():  # before WAL mode, a reader could hold up the worker's writes
        if process.poll() is not None:
            return None
        time.sleep(0.002)
    with _read(db) as conn:
        while process.poll() is None:
            try:
                found = probe(conn)
            except sqlite3.OperationalError:  # the first run is still creating its tables
                found = None
            if found is not None:
                return found
            time.sleep(0.001)
    return None


def _in_flight(conn: sqlite3.Connection) -> dict[tuple[int, int], str]:
    """Outbox rows in flight, by (id, attempts): a row sent again counts as new."""
    return {(r[0], r[1]): r[2] for r in conn.execute("SELECT id, attempts, kind FROM outbox WHERE status = 'inflight'")}


def _kill(worker: Worker, rng: random.Random, tally: KillTally, *, aim: bool, within: dict[str, float]) -> bool:
    """Start a cycle and SIGKILL it a random 0..within[kind] s after its cycle began (kind "cycle") or, aiming,
    after a write-back or nudge went in flight (kind "salesforce" or "slack"); True if it died in its cycle."""
    before_cycle, before_in_flight = _progress(worker.db)

    def began(conn: sqlite3.Connection) -> str | None:
        return "cycle" if conn.execute("SELECT count(*) FROM cycles WHERE id > ?", (before_cycle,)).fetchone()[0] \
            else None

    def sending(conn: sqlite3.Connection) -> str | None:
        return next((kind for key, kind in _in_flight(conn).items() if key not in before_in_flight), None)

    process = worker.start()
    seen = _wait_for(process, worker.db, sending if aim else began)
    tally.points += 1
    tally.aimed += 1 if aim else 0
    if seen is not None:
        time.sleep(rng.uniform(0, within[seen]))
    if process.poll() is not None:
        tally.after_exit += 1
        return False
    process.kill()
    process.wait()
    with _read(worker.db) as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM cycles WHERE id > ?", (before_cycle,))]
        in_flight = _in_flight(conn)
    if "running" not in statuses:
        tally.after_cycle += 1
        return False
    tally.mid_cycle += 1
    tally.left_in_flight += 1 if set(in_flight) - set(before_in_flight) else 0
    return True


def _progress(db: Path) -> tuple[int, dict[tuple[int, int], str]]:
    """The last cycle's id and the outbox rows in flight, before a run starts."""
    if not db.exists():
        return 0, {}
    with _read(db) as conn:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM cycles").fetchone()[0]), _in_flight(conn)


def _crash_through_cycle(worker: Worker, rng: random.Random, window: float, tally: KillTally) -> None:
    """Aimed kills while there is something to send, then kills at random moments, then let it finish."""
    before = tally.mid_cycle
    for _ in range(AIMED_PER_CYCLE):
        # Within a slow composite update, or a few ms after a nudge is marked: before or after the post.
        if not _kill(worker, rng, tally, aim=True, within={"salesforce": COMPOSITE_STALL, "slack": 0.01}):
            break  # nothing (more) went in flight: this cycle has nothing left to send
    for _ in range(KILLS_PER_CYCLE):
        if not _kill(worker, rng, tally, aim=False, within={"cycle": window}):
            window = max(MIN_WINDOW, window / 2)  # a restarted cycle has less left to do
    tally.per_cycle.append(tally.mid_cycle - before)
    worker.run_to_end()


class _read:
    """A look at a worker's database, closed when done."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(db)

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


@pytest.fixture(scope="module", params=["rest", "bulk"])
def outcome(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    started = datetime.now(UTC)
    if (started + timedelta(minutes=3)).date() != started.date():
        pytest.skip("scores count whole days: the two runs must not straddle midnight UTC")
    root = tmp_path_factory.mktemp("crash")
    servers = [_start_server(root / name, started.replace(microsecond=0) - timedelta(days=DAYS_BEHIND))
               for name in ("reference", "crashed")]
    try:
        reference = _worker(servers[0], root / "reference" / "worker", bulk_threshold=0)
        crashed = _worker(servers[1], root / "crashed" / "worker", bulk_threshold=1 if request.param == "bulk" else 0)
        quiet = servers[0].ready["accounts"][:QUIET]
        _change_both(servers, {"quiet": quiet})  # everyone else's last three weeks
        for server in servers:
            server.control("POST", "fault", {"system": "salesforce", "fault": "stall", "seconds": COMPOSITE_STALL,
                                             "path_contains": "composite/sobjects", "times": 1000})
        rng = random.Random(KILL_SEED)
        tally = KillTally()
        # Bulk is a backfill's path: a backfill, then the cycle with the bad week, whose nudges are at stake.
        for cycle in range(1, (CYCLES if request.param == "rest" else 2) + 1):
            if cycle == 2:
                _change_both(servers, {"trouble": quiet})
            _crash_through_cycle(crashed, rng, reference.run_to_end(), tally)
        states = [server.control("GET", "state") for server in servers]
    finally:
        for server in servers:
            server.stop()
    with _read(reference.db) as reference_db, _read(crashed.db) as crashed_db:
        _count_recoveries(crashed_db, tally)
        yield Outcome(reference_db, crashed_db, states[0], states[1], tally,
                      (datetime.now(UTC) - started).total_seconds(), request.param)


def _change_both(servers: list[SandboxProcess], change: dict[str, Any]) -> None:
    """The same change, at the same moment, in both worlds."""
    at = datetime.now(UTC).replace(microsecond=0).isoformat()
    for server in servers:
        server.control("POST", "advance", {**change, "at": at})


def _count_recoveries(conn: sqlite3.Connection, tally: KillTally) -> None:
    """What restarted workers found already done (a lower bound: killed cycles keep no summary)."""
    for (summary,) in conn.execute("SELECT summary FROM cycles WHERE summary IS NOT NULL"):
        report = json.loads(summary)
        tally.confirmed_after_crash += (report.get("writeback") or {}).get("confirmed_after_crash", 0)
        tally.recovered += (report.get("notify") or {}).get("recovered", 0)


def _rows(conn: sqlite3.Connection, sql: str) -> list[tuple[Any, ...]]:
    return sorted(conn.execute(sql).fetchall(), key=repr)


def _nudges(state: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(dedup key, recipient, text) of every message Slack holds, the key from its metadata.

    A DM's recipient is the user: DM channel ids depend on the order conversations were opened in.
    """
    found = []
    for message in state["slack_messages"]:
        payload = (message.get("metadata") or {}).get("event_payload") or {}
        recipient = message["user"] if message["kind"] == "im" else message["channel"]
        found.append((str(payload.get("dedup_key")), str(recipient), message["text"]))
    return sorted(found)


def test_twenty_kills_or_more_and_most_inside_a_cycle_some_mid_send(outcome: Outcome) -> None:
    kills = outcome.kills
    said = f"{kills} in {outcome.seconds:.0f} s"

    assert kills.points >= 20, said
    assert kills.mid_cycle >= 10, said
    assert all(count >= 1 for count in kills.per_cycle), said
    assert kills.left_in_flight >= 1, said


def test_the_killed_worker_backfilled_the_way_it_was_asked(outcome: Outcome) -> None:
    jobs = outcome.crashed_state["calls"]["salesforce_bulk_jobs"]

    assert outcome.reference_state["calls"]["salesforce_bulk_jobs"] == 0
    assert (jobs >= 6) if outcome.backfill == "bulk" else (jobs == 0), f"{jobs} Bulk query jobs"


def test_the_uninterrupted_run_had_something_to_lose(outcome: Outcome) -> None:
    assert _nudges(outcome.reference_state), "no nudge was sent: the comparison would prove nothing"
    assert outcome.reference.execute("SELECT count(*) FROM writeback_state").fetchone()[0] == ACCOUNTS


def test_same_activities_by_kind_and_source_id(outcome: Outcome) -> None:
    sql = "SELECT source, kind, source_id, account_id, is_deleted FROM activities"
    reference, crashed = _rows(outcome.reference, sql), _rows(outcome.crashed, sql)

    assert Counter(r[1] for r in crashed) == Counter(r[1] for r in reference)
    assert crashed == reference


def test_same_scores(outcome: Outcome) -> None:
    sql = ("SELECT account_id, score, band, trend, reason, coverage, churn_risk, expansion_readiness, "
           "confidence FROM scores")

    assert _rows(outcome.crashed, sql) == _rows(outcome.reference, sql)


def test_same_alert_states_and_episodes(outcome: Outcome) -> None:
    sql = "SELECT rule, account_id, state, episode FROM alerts"

    assert _rows(outcome.crashed, sql) == _rows(outcome.reference, sql)


def test_same_health_fields_on_every_salesforce_account(outcome: Outcome) -> None:
    def fields(state: dict[str, Any]) -> list[dict[str, Any]]:
        skip = {"SystemModstamp", "Health_Updated__c"}  # when, not what
        return sorted(({k: v for k, v in a.items() if k not in skip} for a in state["accounts"]),
                      key=lambda a: a["Id"])

    assert fields(outcome.crashed_state) == fields(outcome.reference_state)


def test_each_nudge_is_in_slack_exactly_once(outcome: Outcome) -> None:
    crashed = _nudges(outcome.crashed_state)
    keys = Counter(key for key, _, _ in crashed)

    assert [key for key, count in keys.items() if count > 1] == []
    assert crashed == _nudges(outcome.reference_state)


def test_nothing_is_left_unconfirmed_in_the_outbox(outcome: Outcome) -> None:
    sql = "SELECT kind, dedup_key, status FROM outbox"
    crashed = _rows(outcome.crashed, sql)

    assert [row for row in crashed if row[2] not in CLEAN_STATUSES] == []
    assert crashed == _rows(outcome.reference, sql)
