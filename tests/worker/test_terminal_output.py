"""What the commands print: data from Salesforce, Zendesk and Slack shown as text and never obeyed by the
terminal, tables that read at 80 columns and in a pipe, json exact and csv safe to open in a spreadsheet.

The commands run as a user runs them: a real process, its output a pipe (no terminal), over a store that holds
hostile names, reasons and ids in every table a listing reads.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from worker.alerting import silences
from worker.cli import app
from worker.rulebook.in_force import RuleBook
from worker.scoring import overrides
from worker.scoring.engine import score_accounts
from worker.store import Quarantined, Store, iso
from worker.terminal import clean, counted, spreadsheet_safe

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
NOW = datetime.now(UTC).replace(microsecond=0)
ACME = "001000000000001AAA"
GLOBEX = "001000000000002AAA"
INITECH = "001000000000003AAA"
FORMULA = "001000000000004AAA"

TAG = "Acme [/bar] Inc"
LINK = "Globex [link=https://evil.example]click here[/link]"
CONTROLS = "Ini\x1b[2J\x07tech\u202etxt.exe\x9b\x00 Corp"
CONTROLS_SHOWN = "Ini[2Jtechtxt.exe Corp"
SPREADSHEET = '=HYPERLINK("https://evil.example","open")'
OWNER = "Ann [i]Lee[/b]"
REASON = "renewal [/signed] \x1b]8;;https://evil.example\x1b\\next week\u202e"
REASON_SHOWN = "renewal [/signed] ]8;;https://evil.example\\next week"
RULE = "turned_red[/x]"
BIDI_AND_CONTROLS = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0), 0x202A, 0x202B, 0x202C, 0x202D, 0x202E,
                                      0x2066, 0x2067, 0x2068, 0x2069, 0x200E, 0x200F)} - {"\n"}


def build_store(path: Path) -> None:
    """Accounts, owners, an override, a silence, a sent nudge with feedback and a quarantined ticket, each
    carrying markup, a link, escape sequences or a bidi override where a person or a vendor wrote text."""
    rulebook = RuleBook(RULES_DIR)
    rulebook.reload()
    scorecard, _ = rulebook.require()
    with Store(path) as store:
        with store.transaction() as conn:
            conn.executemany("INSERT INTO users (source, source_id, name, email) VALUES ('salesforce', ?, ?, ?)",
                             [("005A", OWNER, "ann@example.com"), ("005B", "Bob Stone", "bob@example.com")])
            conn.executemany("INSERT INTO accounts (id, name, owner_id) VALUES (?, ?, ?)",
                             [(ACME, TAG, "005A"), (GLOBEX, LINK, "005A"), (INITECH, CONTROLS, "005B"),
                              (FORMULA, SPREADSHEET, "005B")])
            conn.execute("INSERT INTO activities (source, source_id, kind, account_id, occurred_at) "
                         "VALUES ('salesforce', '00U1', 'meeting', ?, ?)", (ACME, iso(NOW - timedelta(hours=26))))
        score_accounts(store, scorecard, NOW)
        overrides.pin(store, ACME, 70, REASON, NOW.date() + timedelta(days=7), OWNER, NOW)
        silences.add_silence(store, rule=RULE, account_id=GLOBEX, owner=OWNER, until=NOW + timedelta(days=3),
                             reason=REASON, by=OWNER, now=NOW)
        key = f"nudge:turned_red:{ACME}:1:fire"
        with store.transaction() as conn:
            conn.execute("INSERT INTO outbox (dedup_key, kind, account_id, payload, status, remote_ref, created_at, "
                         "sent_at) VALUES (?, 'slack', ?, ?, 'sent', 'D1:1.1', ?, ?)",
                         (key, ACME, json.dumps({"rule": RULE, "kind": "fire"}), iso(NOW), iso(NOW)))
            conn.execute("INSERT INTO feedback (dedup_key, user_id, axis, verdict, rule, account_id, episode, kind, "
                         "user_name, reason, proposed_value, proposed_until, override_status, created_at, "
                         "updated_at) VALUES (?, 'U1', 'score', 'score_wrong', ?, ?, 1, 'fire', ?, ?, 65, ?, "
                         "'proposed', ?, ?)", (key, RULE, ACME, OWNER, REASON,
                                               (NOW.date() + timedelta(days=14)).isoformat(), iso(NOW), iso(NOW)))
        store.quarantine([Quarantined("zendesk", "tickets", "[/id]\x1b[31m42", f"subject {REASON}",
                                      {"subject": SPREADSHEET})], NOW)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "hb.db"
    build_store(path)
    return path


def _environment(columns: int | None, env: dict[str, str] | None) -> dict[str, str | None]:
    """Only the given settings (None unsets a variable), and COLUMNS as asked."""
    settings: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith(("HEALTHBEAT_", "SALESFORCE_", "ZENDESK_", "SLACK_", "USAGE_"))
        or k in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR")}
    settings.update({"HEALTHBEAT_RULES_DIR": str(RULES_DIR), **(env or {})})
    if columns is not None:
        settings["COLUMNS"] = str(columns)
    return settings


def healthbeat(*args: str, columns: int | None = 200, env: dict[str, str] | None = None,
               cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command in a fresh process with its output to a pipe and no terminal anywhere (stdin closed), for
    what depends on the terminal; `columns=None` leaves COLUMNS unset, as in a cron job."""
    environment = {k: v for k, v in {**os.environ, **_environment(columns, env)}.items() if v is not None}
    return subprocess.run([sys.executable, "-c", "from worker.cli import main; main()", *args],
                          capture_output=True, text=True, env=environment, cwd=cwd, stdin=subprocess.DEVNULL,
                          timeout=60, check=False)


def invoke(*args: str, columns: int = 200, env: dict[str, str] | None = None,
           cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command run in this process (a fresh process costs a second), its stdout and stderr apart and any
    exception raised, not hidden: output and exit status are the same as the console script's."""
    previous = Path.cwd()
    os.chdir(cwd)  # no .env from the repository
    try:
        result = CliRunner().invoke(app, list(args), env=_environment(columns, env), catch_exceptions=False,
                                    prog_name="healthbeat")
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


# -- names are data, never markup ------------------------------------------------------------------------------

SHOWN = [
    (["scores"], [TAG, LINK, CONTROLS_SHOWN, OWNER]),
    (["explain", ACME], [TAG, OWNER]),
    (["explain", INITECH], [CONTROLS_SHOWN]),
    (["scores", "history", GLOBEX], [LINK]),
    (["override", "ls"], [TAG, REASON_SHOWN, OWNER]),
    (["silence", "ls"], [RULE, OWNER, REASON_SHOWN]),
    (["feedback", "ls"], [RULE, TAG, OWNER, REASON_SHOWN]),
    (["rules", "stats"], [RULE]),
    (["quarantine", "ls"], ["[/id][31m42", f"subject {REASON_SHOWN}"]),
]


@pytest.mark.parametrize(("command", "shown"), SHOWN, ids=[" ".join(command) for command, _ in SHOWN])
def test_data_is_shown_as_written_and_never_obeyed_by_the_terminal(
        command: list[str], shown: list[str], db: Path, tmp_path: Path) -> None:
    result = invoke(*command, "--db", str(db), columns=400, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for text in shown:
        assert text in result.stdout, f"{text!r} is not shown as written"
    assert not BIDI_AND_CONTROLS & set(result.stdout + result.stderr), "a control character reached the terminal"


def test_a_link_in_a_name_is_shown_as_text_never_as_a_hidden_terminal_link(db: Path, tmp_path: Path) -> None:
    result = healthbeat("scores", "--db", str(db), columns=400, env={"TTY_COMPATIBLE": "1"}, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "\x1b]8;" not in result.stdout, "an OSC 8 hyperlink was written"
    assert "[link=https://evil.example]click here[/link]" in result.stdout


def test_json_keeps_every_name_exactly_as_the_crm_holds_it(db: Path, tmp_path: Path) -> None:
    result = invoke("scores", "--format", "json", "--db", str(db), cwd=tmp_path)

    names = {row["account_id"]: row["name"] for row in json.loads(result.stdout)}
    assert names == {ACME: TAG, GLOBEX: LINK, INITECH: CONTROLS, FORMULA: SPREADSHEET}


def test_csv_makes_a_cell_a_spreadsheet_would_run_inert_and_leaves_the_rest_as_it_is(
        db: Path, tmp_path: Path) -> None:
    result = invoke("scores", "--format", "csv", "--db", str(db), cwd=tmp_path)

    names = {row["account_id"]: row["name"] for row in csv.DictReader(io.StringIO(result.stdout))}
    assert names[FORMULA] == "'" + SPREADSHEET
    assert (names[ACME], names[GLOBEX], names[INITECH]) == (TAG, LINK, CONTROLS)


def test_csv_guards_every_formula_prefix_and_no_number() -> None:
    rows = [{"a": "=1+1", "b": "+1", "c": "-1", "d": "@SUM(A1)", "e": "\tx", "f": "\rx", "g": -4.5, "h": "a=b"}]

    assert spreadsheet_safe(rows) == [{"a": "'=1+1", "b": "'+1", "c": "'-1", "d": "'@SUM(A1)", "e": "'\tx",
                                       "f": "'\rx", "g": -4.5, "h": "a=b"}]


@given(st.text())
def test_clean_leaves_no_control_bidi_or_break_character(text: str) -> None:
    assert not (BIDI_AND_CONTROLS | {"\n", "\u2028", "\u2029"}) & set(clean(text))


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"),
                             blacklist_characters="\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                                                  "\u2066\u2067\u2068\u2069")))
def test_clean_keeps_printable_text_in_any_script_as_it_is(text: str) -> None:
    assert clean(text) == text


def test_clean_turns_a_line_break_into_a_space_so_a_name_cannot_forge_a_line() -> None:
    assert clean("Acme\nHealth 99 green\r\n\tok") == "Acme Health 99 green ok"
    assert unicodedata.category(clean("\u2028")) == "Zs"


# -- tables that read at 80 columns and in a pipe --------------------------------------------------------------

def _reason_words(db: Path) -> set[str]:
    with Store(db, lock=False) as store:
        return {word for (reason,) in store.conn.execute("SELECT reason FROM scores") for word in reason.split()}


def test_at_80_columns_no_line_is_wider_and_no_word_of_a_reason_is_broken(db: Path, tmp_path: Path) -> None:
    result = invoke("scores", "--db", str(db), columns=80, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    shown = set(result.stdout.split())
    assert _reason_words(db) <= shown, f"broken: {_reason_words(db) - shown}"


def test_piped_without_a_terminal_the_table_fits_80_columns_and_names_the_columns_left_out(
        db: Path, tmp_path: Path) -> None:
    result = healthbeat("scores", "--db", str(db), columns=None, cwd=tmp_path)

    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert _reason_words(db) <= set(result.stdout.split())
    assert "Not shown at 80 columns: Owner, Churn, Expansion, Confidence" in " ".join(result.stdout.split())


def test_a_wide_terminal_shows_every_column_and_each_account_on_one_line(db: Path, tmp_path: Path) -> None:
    result = invoke("scores", "--db", str(db), columns=300, cwd=tmp_path)

    header = next(line for line in result.stdout.splitlines() if line.startswith("Account"))
    assert header.split() == ["Account", "Owner", "Score", "Band", "Trend", "Churn", "Expansion", "Confidence",
                              "Reason"]
    assert "Not shown" not in result.stdout
    assert sum(TAG in line for line in result.stdout.splitlines()) == 1


# -- words ------------------------------------------------------------------------------------------------------

def test_a_history_of_one_day_says_one_day(db: Path, tmp_path: Path) -> None:
    result = invoke("scores", "history", ACME, "--db", str(db), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "over 1 day" in result.stdout and "over 1 days" not in result.stdout


def test_explain_says_a_meeting_yesterday_was_1_day_ago(db: Path, tmp_path: Path) -> None:
    result = invoke("explain", ACME, "--db", str(db), cwd=tmp_path)

    assert "(1 day ago)" in result.stdout


@pytest.mark.parametrize(("count", "words"), [(0, "0 days"), (1, "1 day"), (2, "2 days"), (1.5, "1.5 days")])
def test_a_count_agrees_with_its_noun(count: float, words: str) -> None:
    assert counted(count, "day") == words


def test_a_backtest_of_single_days_and_accounts_says_so_in_the_singular() -> None:
    from worker.analysis.backtest import (
        Backtest,
        BandRate,
        BandShares,
        Discrimination,
        LeadTime,
        Plan,
        RuleFigures,
        format_backtest,
        summary_lines,
    )

    plan = Plan(until=NOW, period=timedelta(days=0), step=timedelta(days=1), horizon=timedelta(days=1))
    backtest = Backtest(
        plan, snapshots=1, accounts=1,
        discrimination=Discrimination(None, None, None, observations=1, accounts=1, churn_events=1, positives=1,
                                      roc=()),
        bands=(BandRate("red", 1, 1),),
        lead=LeadTime(churned_accounts=1, red_before=1, median_days=1.0, days=(), red_share_at=((1, 1.0, 1),)),
        rules=(RuleFigures("turned_red", 1, 1, 1, 1, 1, 1.0, 1.0, 1),),
        distribution=(BandShares(NOW.date(), 1, {"red": 1.0, "yellow": 0.0, "green": 0.0}, ()),),
        curve=(), notes=())

    text = "\n".join(summary_lines(backtest)) + format_backtest(backtest)

    assert "1 snapshot every 1 day, 1 account; churn within 1 day." in text
    assert "over 1 account-snapshot of 1 account, 1 churn event (1 snapshot before a churn)" in text
    assert "1 of 1 churned account was red before churning, median 1 day ahead; red at 1 day before" in text
    assert "0 of 1 snapshot outside" in text
    assert not any(slip in text for slip in (" 1 days", " 1 snapshots", " 1 accounts", " 1 churn events"))
