"""Operators at work beside a running worker: their commands write while `healthbeat run` runs, a second worker
is refused however it names the database, a database that cannot be used is named with the way out, and a
stop request ends a cycle within seconds, keeping what it stored."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from connectors.salesforce.sandbox import SalesforceSandbox
from connectors.sandboxes.world import World, build_world
from connectors.slack.sandbox import SlackSandbox
from connectors.zendesk.sandbox import ZendeskSandbox
from tests.worker.test_cli import RULES_DIR, healthbeat
from worker.cli import app
from worker.clock import ShiftedClock
from worker.config import Settings
from worker.cycle import Clients, Cycle
from worker.demo.harness import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_ZENDESK_TOKEN,
    Sandboxes,
    sandbox_environment,
    start_sandboxes,
)
from worker.errors import StoreUnusable
from worker.rulebook.in_force import RuleBook
from worker.scoring.sentiment import VaderModel
from worker.store import MIGRATIONS, Store

# -- a worker running as deployed ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_worker(env: dict[str, object], cwd: Path) -> subprocess.Popen[str]:
    full = {**os.environ, **{k: str(v) for k, v in env.items()}}
    return subprocess.Popen([sys.executable, "-c", "from worker.cli import main; main()", "run"], env=full,
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(check: Callable[[], object], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return bool(json.loads(response.read()).get("last_success"))
    except (OSError, urllib.error.HTTPError, ValueError):
        return False


def _rows(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Read the database as `sqlite3` would, beside whatever else has it open."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@dataclass
class RunningWorker:
    db: Path
    env: dict[str, object]
    account_id: str
    folder: Path


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWorker]:
    """`healthbeat run` on a temporary database, its first cycle done, idle until its next in an hour."""
    folder = tmp_path_factory.mktemp("operators")
    clock = ShiftedClock()
    sandboxes = start_sandboxes(clock)
    usage = folder / "usage"
    usage.mkdir()
    build_world(sandboxes.salesforce, sandboxes.zendesk, sandboxes.slack, usage, accounts=8, seed=3, now=clock())
    port = _free_port()
    env = {**sandbox_environment(sandboxes, folder / "hb.db", usage, RULES_DIR), "HEALTHBEAT_INTERVAL": "1h",
           "HEALTHBEAT_HTTP_PORT": port}
    process = _start_worker(env, folder)
    try:
        _wait_for(lambda: _healthy(port) or process.poll() is not None, 90)
        assert process.poll() is None, process.communicate()[1][-3000:]
        account_id = str(_rows(folder / "hb.db", "SELECT id FROM accounts ORDER BY id LIMIT 1")[0][0])
        yield RunningWorker(folder / "hb.db", env, account_id, folder)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        sandboxes.stop()


def _cli(worker: RunningWorker, *args: str) -> subprocess.CompletedProcess[str]:
    return healthbeat(*args, env=worker.env, cwd=worker.folder)


def test_override_set_writes_while_the_worker_runs(worker: RunningWorker) -> None:
    result = _cli(worker, "override", "set", worker.account_id, "--value", "42", "--reason", "renewal call went well")

    assert result.returncode == 0, result.stderr
    assert _rows(worker.db, "SELECT value, reason FROM overrides WHERE account_id = ?", (worker.account_id,)) \
        == [(42.0, "renewal call went well")]


def test_override_clear_writes_while_the_worker_runs(worker: RunningWorker) -> None:
    _cli(worker, "override", "set", worker.account_id, "--value", "10", "--reason", "to be cleared")

    result = _cli(worker, "override", "clear", worker.account_id)

    assert result.returncode == 0, result.stderr
    assert _rows(worker.db, "SELECT * FROM overrides WHERE account_id = ?", (worker.account_id,)) == []


def test_silence_add_and_expire_write_while_the_worker_runs(worker: RunningWorker) -> None:
    added = _cli(worker, "silence", "add", "--until", "3d", "--reason", "quarter close", "--rule", "turned_red")
    ids = _rows(worker.db, "SELECT id FROM silences WHERE reason = 'quarter close'")
    expired = _cli(worker, "silence", "expire", str(ids[0][0]) if ids else "0")

    assert added.returncode == 0, added.stderr
    assert expired.returncode == 0, expired.stderr
    assert len(ids) == 1


def test_feedback_accept_writes_while_the_worker_runs(worker: RunningWorker) -> None:
    conn = sqlite3.connect(worker.db)
    with conn:
        proposal = conn.execute(
            "INSERT INTO feedback (dedup_key, user_id, axis, verdict, rule, account_id, episode, kind, user_name, "
            "reason, proposed_value, proposed_until, override_status, created_at, updated_at) VALUES "
            "('k', 'U1', 'score', 'score_wrong', 'turned_red', ?, 1, 'channel', 'Ana', 'pilot went live', 80, "
            "'2999-01-01', 'proposed', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
            (worker.account_id,)).lastrowid
    conn.close()

    result = _cli(worker, "feedback", "accept", str(proposal))

    assert result.returncode == 0, result.stderr
    assert _rows(worker.db, "SELECT override_status FROM feedback WHERE id = ?", (proposal,)) == [("accepted",)]


def test_a_second_run_once_beside_the_worker_is_refused_with_exit_3(worker: RunningWorker) -> None:
    cycles = _rows(worker.db, "SELECT count(*) FROM cycles")

    result = _cli(worker, "run", "--once")

    assert result.returncode == 3, result.stderr
    assert "in use by another Healthbeat worker" in result.stderr
    assert _rows(worker.db, "SELECT count(*) FROM cycles") == cycles


def test_a_second_worker_naming_the_database_through_a_symlink_is_refused(worker: RunningWorker) -> None:
    alias = worker.folder / "links" / "alias.db"
    alias.parent.mkdir()
    alias.symlink_to(worker.db)

    result = healthbeat("score", "--db", str(alias), "--rules-dir", str(RULES_DIR), env={}, cwd=worker.folder)

    assert result.returncode == 3, result.stderr
    assert "in use by another Healthbeat worker" in result.stderr


# -- a database that cannot be used ---------------------------------------------------------------------------

FAKE_SALESFORCE = {"SALESFORCE_CLIENT_ID": "id", "SALESFORCE_CLIENT_SECRET": "secret",
                   "SALESFORCE_LOGIN_URL": "https://acme.my.salesforce.com",
                   "HEALTHBEAT_RULES_DIR": RULES_DIR}
"""Enough settings for a command to reach the database (no network is asked before it)."""


def _newer_database(db: Path) -> None:
    Store(db).close()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO schema_migrations VALUES (?, '2030-01-01T00:00:00Z')", (len(MIGRATIONS) + 1,))
    conn.close()


@pytest.mark.parametrize("command", [("run", "--once"), ("db", "migrate"), ("sync",),
                                     ("override", "set", "Acme", "--value", "50", "--reason", "why")],
                         ids=lambda c: " ".join(c[:2]))
def test_a_database_from_a_newer_healthbeat_is_refused_by_a_command_that_writes(
        command: tuple[str, ...], tmp_path: Path) -> None:
    db = tmp_path / "hb.db"
    _newer_database(db)
    before = _rows(db, "SELECT * FROM schema_migrations ORDER BY version")

    result = healthbeat(*command, "--db", str(db), env=FAKE_SALESFORCE, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "upgrade Healthbeat" in result.stderr and "Traceback" not in result.stderr
    assert _rows(db, "SELECT * FROM schema_migrations ORDER BY version") == before
    assert _rows(db, "SELECT count(*) FROM cycles") == [(0,)]


def test_a_database_from_a_newer_healthbeat_is_still_read_by_a_command_that_reads(tmp_path: Path) -> None:
    db = tmp_path / "hb.db"
    _newer_database(db)

    result = healthbeat("scores", "--db", str(db), "--format", "json", env=FAKE_SALESFORCE, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("command", [("scores",), ("run", "--once"), ("override", "ls")], ids=" ".join)
def test_a_file_that_is_not_a_database_gets_one_line_pointing_to_a_backup(command: tuple[str, ...],
                                                                          tmp_path: Path) -> None:
    db = tmp_path / "hb.db"
    db.write_bytes(b"name,score\nAcme,80\n" * 400)

    result = healthbeat(*command, "--db", str(db), env=FAKE_SALESFORCE, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "backup" in result.stderr and str(db) in result.stderr


def test_a_damaged_database_gets_one_line_pointing_to_a_backup(tmp_path: Path) -> None:
    db = tmp_path / "hb.db"
    with Store(db) as store, store.transaction() as conn:
        conn.executemany("INSERT INTO accounts (id, name, owner_id, is_deleted, modstamp) VALUES (?, ?, 'u', 0, ?)",
                         [(f"001{i:015d}", "Acme " * 40, "2026-01-01T00:00:00Z") for i in range(2000)])
    with db.open("r+b") as damaged:
        damaged.seek(db.stat().st_size // 2)
        damaged.write(b"\xff" * 16384)

    result = healthbeat("scores", "--db", str(db), env=FAKE_SALESFORCE, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "malformed" in result.stderr and "healthbeat db backup" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# -- owner-only files -----------------------------------------------------------------------------------------

def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_database_and_its_wal_and_shm_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "hb.db"
    with Store(db) as store:
        with store.transaction() as conn:
            conn.execute("INSERT INTO accounts (id, name, owner_id, is_deleted, modstamp) "
                         "VALUES ('001000000000000001', 'Acme', 'u', 0, '2026-01-01T00:00:00Z')")
        modes = {suffix: _mode(Path(f"{db}{suffix}")) for suffix in ("", "-wal", "-shm")}

    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}


def test_a_backup_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    with Store(tmp_path / "hb.db") as store:
        store.backup(tmp_path / "copy.db")

    assert _mode(tmp_path / "copy.db") == 0o600
    assert _rows(tmp_path / "copy.db", "SELECT count(*) FROM schema_migrations") == [(len(MIGRATIONS),)]


def test_a_backup_into_a_folder_that_does_not_exist_names_the_folder(tmp_path: Path) -> None:
    with Store(tmp_path / "hb.db") as store, pytest.raises(StoreUnusable) as refused:
        store.backup(tmp_path / "backups" / "copy.db")

    assert str(tmp_path / "backups") in str(refused.value)


# -- stopping -------------------------------------------------------------------------------------------------

@pytest.fixture
def slow_zendesk(tmp_path: Path) -> Iterator[tuple[Sandboxes, Path]]:
    """The sandboxes with a Zendesk whose export comes one ticket a page, for a worker paced to two export
    requests a minute: a backfill that spends most of its time waiting for Zendesk, as a large one does."""
    clock = ShiftedClock()
    sandboxes = Sandboxes(
        SalesforceSandbox(client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET, clock=clock),
        ZendeskSandbox(email="healthbeat@support.example", api_token=SANDBOX_ZENDESK_TOKEN, clock=clock,
                       page_size=1, incremental_requests_per_minute=1000),
        SlackSandbox(token="xoxb-demo-sandbox"))
    for server in (sandboxes.salesforce, sandboxes.zendesk, sandboxes.slack):
        server.start()
    usage = tmp_path / "usage"
    usage.mkdir()
    build_world(sandboxes.salesforce, sandboxes.zendesk, sandboxes.slack, usage, accounts=6, seed=5, now=clock())
    yield sandboxes, usage
    sandboxes.stop()


def test_sigterm_during_a_backfill_stops_the_worker_within_seconds_keeping_the_stored_pages(
        slow_zendesk: tuple[Sandboxes, Path], tmp_path: Path) -> None:
    sandboxes, usage = slow_zendesk
    db = tmp_path / "hb.db"
    env = {**sandbox_environment(sandboxes, db, usage, RULES_DIR), "HEALTHBEAT_INTERVAL": "1h",
           "HEALTHBEAT_HTTP_PORT": _free_port(), "HEALTHBEAT_ZENDESK_REQUESTS_PER_MINUTE": 2}
    process = _start_worker(env, tmp_path)
    try:
        _wait_for(lambda: db.exists() and _rows(db, "SELECT count(*) FROM sqlite_master WHERE name = 'sync_state'")
                  == [(1,)] and _rows(db, "SELECT records FROM sync_state WHERE stream = 'zendesk.tickets'"), 60)
        stored = _rows(db, "SELECT records FROM sync_state WHERE stream = 'zendesk.tickets'")[0][0]
        time.sleep(1)  # well into Zendesk's pacing wait for its third page

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate()

    assert code == 0, stderr[-3000:]
    assert elapsed < 5, f"took {elapsed:.1f}s to stop"
    assert _rows(db, "SELECT records FROM sync_state WHERE stream = 'zendesk.tickets'")[0][0] >= stored >= 1
    assert _rows(db, "SELECT count(*) FROM activities WHERE source = 'zendesk'")[0][0] >= 1
    assert _rows(db, "SELECT status FROM cycles") == [("stopped",)]


def test_a_stop_requested_during_a_sync_ends_the_cycle_after_the_page_being_stored(
        world: World, settings: Settings, clients: Clients, clock: ShiftedClock, vader: VaderModel) -> None:
    pages: list[str] = []
    stop = threading.Event()

    def stop_after_first_page(stream: str, records: int) -> None:
        pages.append(stream)
        stop.set()

    with Store(settings.db) as store:
        report = Cycle(store, settings, RuleBook(settings.rules_dir), clients, clock=clock, sentiment=vader,
                       progress=stop_after_first_page, stop=stop).run()
        synced = store.scalar("SELECT count(*) FROM sync_state WHERE records > 0")
        scored = store.scalar("SELECT count(*) FROM scores")

    assert report.stopped and not report.ok
    assert pages == [pages[0]], "no page after the one being stored when the stop came"
    assert synced == 1 and scored == 0
    assert report.sync is not None and report.sync.total > 0


# -- the run commands' small things ---------------------------------------------------------------------------

def _leaf_commands() -> list[list[str]]:
    root = typer.main.get_command(app)
    found = []
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        subcommands = getattr(command, "commands", None) or {}
        found += [[name, sub] for sub in subcommands] if subcommands else [[name]]
    return found


def test_help_shows_no_python_type_names() -> None:
    runner = CliRunner()
    shown = {" ".join(command): runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).output
             for command in _leaf_commands()}

    leaks = {name: text for name, text in shown.items() if re.search(r"<(bool|str|list\[[^>]*\])>", text)}
    assert not leaks, "\n".join(leaks)
    assert all("Usage:" in text for text in shown.values())


def test_the_demos_help_says_three_cycles_as_the_readme_does() -> None:
    text = CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "200"}).output

    assert "three cycles" in text and "two cycles" not in text


def test_verbose_shows_each_stage_and_each_http_request(world: World, sandboxes: Sandboxes, usage_dir: Path,
                                                       tmp_path: Path) -> None:
    env = sandbox_environment(sandboxes, tmp_path / "hb.db", usage_dir, RULES_DIR)

    result = healthbeat("sync", "-v", env=env, cwd=tmp_path)

    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    debug = [r for r in records if r["level"] == "DEBUG"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert any(r["logger"] == "worker.cycle" and r["message"].startswith("stage sync") for r in debug)
    assert any(r["logger"] in ("urllib3.connectionpool", "httpx") and "127.0.0.1" in r["message"]
               for r in records), "an HTTP request to a sandbox is logged"
    assert SANDBOX_CLIENT_SECRET not in result.stderr


def test_sync_times_every_stream_it_reports(world: World, cycle: Cycle) -> None:
    report = cycle.run(("sync",))

    assert report.sync is not None
    untimed = [name for name, stats in report.sync.streams.items() if stats.read and stats.seconds <= 0]
    assert untimed == []


def test_sync_says_how_much_of_each_streams_time_went_to_storing(world: World, cycle: Cycle) -> None:
    report = cycle.run(("sync",))

    assert report.sync is not None
    read = {name: stats for name, stats in report.sync.streams.items() if stats.read}
    assert {"salesforce.Task", "zendesk.tickets", "usage.files"} <= set(read), sorted(read)
    outside = {name: (stats.storing, stats.seconds) for name, stats in read.items()
               if not 0 < stats.storing <= stats.seconds}
    assert outside == {}, "storing is a part of each stream's time, and never nothing for one that read records"


def test_a_failed_run_once_says_its_error_once(sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    env = {**sandbox_environment(sandboxes, tmp_path / "hb.db", usage_dir, RULES_DIR),
           "SALESFORCE_CLIENT_SECRET": "not-the-secret"}

    result = healthbeat("run", "--once", env=env, cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.count("invalid_client") == 1, result.stderr


def _dump(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.mark.parametrize("command", ["notify", "writeback"])
def test_a_dry_run_leaves_the_database_exactly_as_it_was(command: str, world: World, cycle: Cycle,
                                                         settings: Settings, sandboxes: Sandboxes, usage_dir: Path,
                                                         tmp_path: Path) -> None:
    assert cycle.run(("sync", "score")).ok
    before = _dump(settings.db)

    result = healthbeat(command, "--dry-run", env=sandbox_environment(sandboxes, settings.db, usage_dir, RULES_DIR),
                        cwd=tmp_path)

    assert result.returncode == 0, result.stderr[-2000:]
    assert _dump(settings.db) == before
    assert sandboxes.slack.messages == []


# -- the rules Healthbeat ships -------------------------------------------------------------------------------

def test_init_writes_the_shipped_rules_for_ops_to_edit(tmp_path: Path) -> None:
    result = healthbeat("init", "ops-rules", cwd=tmp_path)
    check = healthbeat("rules", "check", "--rules-dir", "ops-rules", cwd=tmp_path)

    written = sorted(str(p.relative_to(tmp_path / "ops-rules")) for p in (tmp_path / "ops-rules").rglob("*.yaml"))
    shipped = sorted(str(p.relative_to(RULES_DIR)) for p in RULES_DIR.rglob("*.yaml"))
    assert result.returncode == 0, result.stderr
    assert written == shipped and "scorecard.yaml" in written and "alerts.yaml" in written
    assert all((tmp_path / "ops-rules" / name).read_bytes() == (RULES_DIR / name).read_bytes() for name in written)
    assert check.returncode == 0, check.stdout + check.stderr


def test_init_never_overwrites_a_rule_file(tmp_path: Path) -> None:
    (tmp_path / "ops-rules").mkdir()
    (tmp_path / "ops-rules" / "alerts.yaml").write_text("# ours\n")

    result = healthbeat("init", "ops-rules", cwd=tmp_path)

    assert result.returncode == 2
    assert "alerts.yaml exists" in result.stderr
    assert (tmp_path / "ops-rules" / "alerts.yaml").read_text() == "# ours\n"
    assert not (tmp_path / "ops-rules" / "scorecard.yaml").exists()


def test_the_demo_runs_outside_a_clone_on_the_rules_healthbeat_ships(tmp_path: Path) -> None:
    result = healthbeat("demo", "--db", "demo.db", "--accounts", "6", cwd=tmp_path)

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Cycle 3" in result.stdout
