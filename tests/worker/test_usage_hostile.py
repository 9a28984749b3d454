"""Hostile usage files never stop the worker: each bad row or file is quarantined with its file, line and
reason, the rest is read, the sync report counts it, and a real cycle through the sandboxes still scores
every account and writes the scores back."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from connectors.sandboxes.world import World
from worker.cycle import Cycle
from worker.demo.harness import Sandboxes
from worker.store import Store
from worker.sync.report import SyncReport
from worker.sync.usage import sync_usage

ACCOUNT = "001000000000001AAA"
OTHER = "001000000000002AAA"
HEADER = "account_id,date,active_users,events,features_used,seats\n"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "usage.db") as opened:
        yield opened


def _sync(store: Store, folder: Path) -> SyncReport:
    report = SyncReport()
    sync_usage(store, folder, NOW, report)
    return report


def _good(folder: Path, account: str = OTHER) -> None:
    (folder / "zz-good.csv").write_text(HEADER + f"{account},2026-03-01,5,50,api,10\n")


def _reasons(store: Store) -> list[str]:
    return [r["reason"] for r in store.query("SELECT reason FROM quarantine WHERE source = 'usage' ORDER BY id")]


def _days(store: Store, account: str) -> list[str]:
    return [r["day"] for r in store.query("SELECT day FROM usage_daily WHERE account_id = ? ORDER BY day",
                                          (account,))]


def _hostile(kind: str, account: str = ACCOUNT, today: date | None = None) -> tuple[bytes, str]:
    """Each finding: a usage file's bytes, and how its quarantine reason must begin."""
    today = today or NOW.date()
    yesterday = today - timedelta(days=1)
    if kind == "latin-1 byte":
        return ((HEADER + f"{account},{today},5,50,caf\xe9,10\n").encode("latin-1"),
                "u.csv line 2: not UTF-8: byte 0xE9")
    if kind == "field over the csv limit":
        return ((HEADER + f"{account},{today},5,50,{'x' * 200_000},10\n").encode(),
                "u.csv line 2: not CSV: field larger than field limit")
    if kind == "active_users past SQLite's integers":
        return ((HEADER + f"{account},{today},99999999999999999999999,50,api,10\n").encode(),
                "u.csv line 2: active_users: '99999999999999999999999' is more than")
    if kind == "events SQLite can store but not sum":
        return ((HEADER + f"{account},{yesterday},5,9223372036854775807,api,10\n"
                          f"{account},{today},5,9223372036854775807,api,10\n").encode(),
                "u.csv line 2: events: '9223372036854775807' is more than")
    if kind == "a date in 9999":
        return ((HEADER + f"{account},9999-12-31,5,50,api,10\n").encode(),
                "u.csv line 2: date: 9999-12-31 is in the future")
    assert kind == "no header"
    return (f"{account},{yesterday},5,50,api,10\n{account},{today},5,50,api,10\n".encode(),
            "u.csv line 1: no header: line 1 must name the columns")


HOSTILE = ["latin-1 byte", "field over the csv limit", "active_users past SQLite's integers",
           "events SQLite can store but not sum", "a date in 9999", "no header"]


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_usage_file_is_quarantined_with_file_and_line_and_other_files_are_read(
        db: Store, usage_dir: Path, kind: str) -> None:
    data, reason = _hostile(kind)
    (usage_dir / "u.csv").write_bytes(data)
    _good(usage_dir)

    report = _sync(db, usage_dir)

    assert _reasons(db)[0].startswith(reason), _reasons(db)
    assert _days(db, OTHER) == ["2026-03-01"]
    assert report.quarantined == len(_reasons(db))
    assert report.streams["usage.files"].quarantined == report.quarantined


def test_a_utf8_bom_from_excel_is_simply_accepted(db: Store, usage_dir: Path) -> None:
    (usage_dir / "excel.csv").write_bytes(("\ufeff" + HEADER + f"{ACCOUNT},2026-03-01,5,50,api,10\n").encode())

    report = _sync(db, usage_dir)

    assert _days(db, ACCOUNT) == ["2026-03-01"]
    assert report.quarantined == 0


def test_the_lines_of_a_latin1_file_that_decode_are_still_read(db: Store, usage_dir: Path) -> None:
    (usage_dir / "u.csv").write_bytes((HEADER + f"{ACCOUNT},2026-02-28,5,50,api,10\n"
                                       f"{ACCOUNT},2026-03-01,5,50,caf\xe9,10\n").encode("latin-1"))

    _sync(db, usage_dir)

    assert _days(db, ACCOUNT) == ["2026-02-28"]
    assert _reasons(db) == ["u.csv line 3: not UTF-8: byte 0xE9 at byte 39 of the line (save the file as UTF-8)"]


def test_a_symlink_out_of_usage_dir_is_refused_by_name_and_never_read(
        db: Store, usage_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.csv"
    outside.write_text(HEADER + f"{ACCOUNT},2026-03-01,5,50,api,10\n")
    (usage_dir / "link.csv").symlink_to(outside)
    _good(usage_dir)

    report = _sync(db, usage_dir)

    assert _days(db, ACCOUNT) == []
    assert _reasons(db) == [f"link.csv: leads out of USAGE_DIR (to {outside.resolve()}); never read"]
    assert report.quarantined == 1
    assert _days(db, OTHER) == ["2026-03-01"]


def test_a_refused_file_is_quarantined_once_not_every_cycle(db: Store, usage_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.csv").write_text(HEADER)
    (usage_dir / "link.csv").symlink_to(tmp_path / "elsewhere.csv")
    _sync(db, usage_dir)

    again = _sync(db, usage_dir)

    assert again.quarantined == 0
    assert len(_reasons(db)) == 1


def test_a_pipe_named_csv_is_refused_without_blocking_the_cycle(db: Store, usage_dir: Path) -> None:
    os.mkfifo(usage_dir / "pipe.csv")
    _good(usage_dir)

    _sync(db, usage_dir)

    assert _reasons(db) == ["pipe.csv: is not a regular file (a folder, pipe or device); never read"]
    assert _days(db, OTHER) == ["2026-03-01"]


def test_a_file_name_that_is_not_utf8_is_kept_escaped(db: Store, usage_dir: Path) -> None:
    name = os.fsdecode(b"usage-\xff.csv")
    (usage_dir / name).write_text(HEADER + f"{ACCOUNT},2026-03-01,5,50,api,10\n{ACCOUNT},2026-03-02,x,1,,\n")

    _sync(db, usage_dir)

    assert _days(db, ACCOUNT) == ["2026-03-01"]
    assert db.scalar("SELECT source_file FROM usage_daily") == "usage-\\xff.csv:2"
    assert _reasons(db) == ["usage-\\xff.csv line 3: active_users: expected a whole number, got 'x'"]


def test_a_quarantined_file_is_not_quarantined_again_until_it_changes(db: Store, usage_dir: Path) -> None:
    (usage_dir / "u.csv").write_text(f"{ACCOUNT},2026-03-01,5,50,api,10\n")
    _sync(db, usage_dir)

    again = _sync(db, usage_dir)

    assert again.quarantined == 0
    assert len(_reasons(db)) == 1


# A real cycle through the sandboxes: the hostile file costs its rows, not the cycle.
@pytest.mark.parametrize("kind", HOSTILE)
def test_a_cycle_with_a_hostile_usage_file_still_scores_and_writes_back_every_account(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, usage_dir: Path, kind: str) -> None:
    victim = world.accounts[0].id
    data, reason = _hostile(kind, victim, cycle.clock().date())
    (usage_dir / "u.csv").write_bytes(data)

    report = cycle.run()

    assert report.ok, report.summary()
    live = {a["Id"] for a in sandboxes.salesforce.records("Account")}
    assert {r["account_id"] for r in store.query("SELECT account_id FROM scores")} == live
    assert all(sandboxes.salesforce.get("Account", a)["Health_Score__c"] is not None for a in live)
    assert any(r.startswith(reason) for r in _reasons(store)), _reasons(store)
    assert report.sync is not None and report.sync.quarantined >= 1
