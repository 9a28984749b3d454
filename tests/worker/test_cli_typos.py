"""A typo on the command line is refused with the values that would have been right, and free text has limits:
a misspelt filter never answers with an empty list, a misspelt silence never silences nothing for weeks."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.worker.test_terminal_output import ACME, GLOBEX, build_store, invoke
from worker.alerting.message import NudgeKey
from worker.errors import FeedbackError
from worker.service.feedback import Vote, record_vote
from worker.store import Store, iso
from worker.terminal import MAX_NAME, MAX_REASON

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("typos") / "hb.db"
    build_store(path)
    with Store(path) as store, store.transaction() as conn:
        conn.execute("UPDATE scores SET segment = 'direct' WHERE account_id = ?", (ACME,))
    return path


@pytest.fixture
def db(shared_db: Path, tmp_path: Path) -> Path:
    """A copy per test, for the commands that write."""
    copy = tmp_path / "hb.db"
    shutil.copy(shared_db, copy)
    return copy


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The refusal on stderr of a command that exited 2 without a traceback, as one line."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return " ".join(result.stderr.split())


# -- filters -------------------------------------------------------------------------------------------------

def test_an_unknown_band_is_refused_naming_the_bands(shared_db: Path, tmp_path: Path) -> None:
    message = refused(invoke("scores", "--band", "redd", "--db", str(shared_db), cwd=tmp_path))

    assert "--band 'redd'" in message and "red, yellow, green" in message


def test_a_band_in_capitals_is_read_as_the_band(shared_db: Path, tmp_path: Path) -> None:
    result = invoke("scores", "--band", "Unknown", "--format", "json", "--db", str(shared_db), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert {row["band"] for row in json.loads(result.stdout)} == {"unknown"}


def test_an_unknown_segment_is_refused_with_the_one_meant(shared_db: Path, tmp_path: Path) -> None:
    message = refused(invoke("scores", "--segment", "dirct", "--db", str(shared_db), cwd=tmp_path))

    assert "--segment 'dirct'" in message and "did you mean 'direct'" in message


def test_a_segment_the_scorecard_defines_is_accepted_before_any_account_is_in_it(
        shared_db: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    with (rules / "scorecard.yaml").open("a") as handle:
        handle.write('segments:\n  - name: partner\n    match: {type: ["Channel Partner"]}\n')

    result = invoke("scores", "--segment", "partner", "--format", "json", "--db", str(shared_db),
                        env={"HEALTHBEAT_RULES_DIR": str(rules)}, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_an_unknown_owner_is_refused_with_the_one_meant(shared_db: Path, tmp_path: Path) -> None:
    message = refused(invoke("scores", "--owner", "Bob Stoen", "--db", str(shared_db), cwd=tmp_path))

    assert "--owner 'Bob Stoen'" in message and "did you mean 'Bob Stone'" in message


def test_an_unknown_quarantine_source_is_refused_naming_the_sources(shared_db: Path, tmp_path: Path) -> None:
    message = refused(invoke("quarantine", "ls", "--source", "zendsk", "--db", str(shared_db), cwd=tmp_path))

    assert "salesforce, zendesk, usage" in message and "did you mean 'zendesk'" in message


def test_feedback_of_a_rule_neither_in_force_nor_answered_is_refused(shared_db: Path, tmp_path: Path) -> None:
    message = refused(invoke("feedback", "ls", "--rule", "turned_rde", "--db", str(shared_db), cwd=tmp_path))

    assert "did you mean 'turned_red'" in message


# -- silences ------------------------------------------------------------------------------------------------

def _silences(db: Path) -> int:
    with Store(db, lock=False) as store:
        return int(store.scalar("SELECT count(*) FROM silences"))


def test_a_silence_of_a_rule_not_in_force_is_refused_and_nothing_is_kept(db: Path, tmp_path: Path) -> None:
    before = _silences(db)

    message = refused(invoke("silence", "add", "--rule", "turned_redd", "--until", "3d", "--reason", "QBR",
                                 "--db", str(db), cwd=tmp_path))

    assert "--rule 'turned_redd'" in message and "did you mean 'turned_red'" in message
    assert "alerts.yaml" in message
    assert _silences(db) == before


def test_a_silence_of_a_rule_in_force_is_kept(db: Path, tmp_path: Path) -> None:
    result = invoke("silence", "add", "--rule", "turned_red", "--until", "3d", "--reason", "QBR", "--db",
                        str(db), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "holds until" in result.stderr


def test_a_silence_of_an_owner_nobody_is_is_refused(db: Path, tmp_path: Path) -> None:
    message = refused(invoke("silence", "add", "--owner", "bob@exmple.com", "--until", "3d", "--reason",
                                 "on leave", "--db", str(db), cwd=tmp_path))

    assert "did you mean 'bob@example.com'" in message


# -- free text -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["override", "set", GLOBEX, "--value", "50"],
    ["silence", "add", "--account", GLOBEX, "--until", "3d"],
], ids=["override set", "silence add"])
def test_a_reason_longer_than_the_limit_is_refused_saying_the_limit(
        command: list[str], db: Path, tmp_path: Path) -> None:
    message = refused(invoke(*command, "--reason", "x" * (MAX_REASON + 1), "--db", str(db), cwd=tmp_path))

    assert f"--reason is {MAX_REASON + 1} characters long; at most {MAX_REASON}" in message


def test_a_blank_reason_is_refused(db: Path, tmp_path: Path) -> None:
    message = refused(invoke("override", "set", GLOBEX, "--value", "50", "--reason", "  ", "--db", str(db),
                                 cwd=tmp_path))

    assert "--reason must not be empty" in message


def test_a_reason_with_control_characters_is_refused(db: Path, tmp_path: Path) -> None:
    message = refused(invoke("override", "set", GLOBEX, "--value", "50", "--reason", "ok\x1b[2J", "--db",
                                 str(db), cwd=tmp_path))

    assert "--reason must be one line of text" in message


def test_a_name_in_by_longer_than_the_limit_is_refused(db: Path, tmp_path: Path) -> None:
    message = refused(invoke("override", "set", GLOBEX, "--value", "50", "--reason", "renewal", "--by",
                                 "y" * (MAX_NAME + 1), "--db", str(db), cwd=tmp_path))

    assert f"at most {MAX_NAME}" in message


def test_a_reason_at_the_limit_is_kept_whole(db: Path, tmp_path: Path) -> None:
    reason = "z" * MAX_REASON

    result = invoke("override", "set", GLOBEX, "--value", "50", "--reason", reason, "--db", str(db),
                        cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    with Store(db, lock=False) as store:
        assert store.scalar("SELECT reason FROM overrides WHERE account_id = ?", (GLOBEX,)) == reason


def test_a_date_typed_with_markup_is_refused_as_typed(db: Path, tmp_path: Path) -> None:
    message = refused(invoke("override", "set", GLOBEX, "--value", "50", "--reason", "renewal", "--until",
                                 "[/red]", "--db", str(db), cwd=tmp_path))

    assert "not '[/red]'" in message


# -- feedback on nudges ------------------------------------------------------------------------------------

def test_a_vote_on_a_nudge_never_queued_is_refused_and_not_recorded(db: Path) -> None:
    never = NudgeKey.parse(f"nudge:turned_red:{GLOBEX}:7:fire")
    with Store(db) as store:
        with pytest.raises(FeedbackError, match="was ever queued"):
            record_vote(store, Vote(never, "useful", "U1"), datetime.now(UTC))

        assert store.scalar("SELECT count(*) FROM feedback WHERE dedup_key = ?", (never.dedup_key,)) == 0


def test_a_vote_on_a_nudge_still_waiting_to_be_sent_is_refused(db: Path) -> None:
    waiting = NudgeKey.parse(f"nudge:turned_red:{GLOBEX}:2:fire")
    with Store(db) as store:
        with store.transaction() as conn:
            conn.execute("INSERT INTO outbox (dedup_key, kind, account_id, payload, created_at) "
                         "VALUES (?, 'slack', ?, '{}', ?)", (waiting.dedup_key, GLOBEX, iso(datetime.now(UTC))))
        with pytest.raises(FeedbackError, match="never sent"):
            record_vote(store, Vote(waiting, "not_useful", "U1"), datetime.now(UTC))
