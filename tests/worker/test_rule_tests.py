"""`rules test`: alert-rule unit tests as data, run through the worker's own state transition.

Each test writes a small test file next to a copy of the shipped rules, runs it, and reads the report the
way an ops engineer would: which case, which cycle, what was expected and what happened.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from worker.rulebook.alert_tests import RuleTestReport, format_report, run_rule_tests

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
HEADER = "start: 2026-01-05T09:00:00Z\ninterval: 1d\nrules: [turned_red]\ntests:\n"

Run = Callable[[str], RuleTestReport]


# The rule under test is the test's own (the shipped turned_red as it stands), so that tuning the shipped
# rule never changes what these tests mean; the shipped rule has its own tests, run below.
ALERTS = """\
version: 1
rules:
  - name: turned_red
    when: band == "red"
    resolve: score >= 55
    cooldown: 7d
    message: "{{ account_name }} turned red"
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A rules folder with `turned_red` and an empty tests folder."""
    folder = tmp_path / "rules"
    (folder / "tests").mkdir(parents=True)
    (folder / "alerts.yaml").write_text(ALERTS)
    return folder


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """A copy of the shipped rules and their tests, for a test to break a rule in."""
    return Path(shutil.copytree(RULES_DIR, tmp_path / "shipped"))


@pytest.fixture
def run(rules_dir: Path) -> Run:
    """Write `cases` (YAML under `tests:`) as rules/tests/case.yaml and run every test file."""
    def run_cases(cases: str) -> RuleTestReport:
        (rules_dir / "tests" / "case.yaml").write_text(HEADER + textwrap.indent(textwrap.dedent(cases), "  "))
        return run_rule_tests(rules_dir)
    return run_cases


TURNS_RED = """
- name: turns red
  accounts:
    acme: {score: [80, 45, 40], band: [green, red, red]}
  expect:
    - {at: 1, rule: turned_red, account: acme, nudge: fire}
  expect_none_otherwise: true
"""


# --- the shipped tests --------------------------------------------------------------------------------------

def test_the_shipped_rule_tests_pass_against_the_shipped_rules() -> None:
    report = run_rule_tests(RULES_DIR)

    assert report.ok, format_report(report)
    assert len(report.passed) >= 5


def test_the_shipped_tests_catch_a_rule_without_hysteresis(shipped: Path) -> None:
    alerts = shipped / "alerts.yaml"
    # turned_red's, the first rule's (the other shipped rules' tests would catch theirs too)
    alerts.write_text(re.sub(r"\n +resolve: .*\n", "\n", alerts.read_text(), count=1))

    report = run_rule_tests(shipped)

    assert [r.name for r in report.failed] == \
        ["hysteresis - neither 45 (red) nor 57 (yellow, below 60) resolves, so red again is no new nudge"]


def test_the_shipped_tests_catch_a_shorter_cooldown(shipped: Path) -> None:
    alerts = shipped / "alerts.yaml"
    # turned_red's, the first rule's (the other shipped rules' tests would catch theirs too)
    alerts.write_text(re.sub(r"\n    cooldown: .*\n", "\n    cooldown: 2d\n", alerts.read_text(), count=1))

    report = run_rule_tests(shipped)

    assert [r.name for r in report.failed] == \
        ["cooldown - red again within 7 days of the nudge waits, then fires once the 7 days are over"]


# --- passing and failing ------------------------------------------------------------------------------------

def test_a_case_whose_expectations_hold_passes(run: Run) -> None:
    report = run(TURNS_RED)

    assert report.ok, format_report(report)
    assert [r.name for r in report.passed] == ["turns red"]


def test_a_missing_nudge_fails_naming_the_file_line_case_and_cycle(run: Run, rules_dir: Path) -> None:
    report = run(TURNS_RED.replace("at: 1", "at: 2"))

    failure = report.failed[0].failures[0]
    assert failure.startswith(f"{rules_dir / 'tests' / 'case.yaml'}:10: turns red: cycle 2 (2026-01-07T09:00:00Z)")
    assert "expected a fire nudge; got no nudge, state firing" in failure


def test_a_nudge_nobody_expected_fails_when_nothing_else_may_happen(run: Run) -> None:
    report = run(TURNS_RED.replace("    - {at: 1, rule: turned_red, account: acme, nudge: fire}\n", "")
                 .replace("expect:", "expect: []"))

    [failure] = report.failed[0].failures
    assert "cycle 1 (2026-01-06T09:00:00Z): turned_red on acme: unexpected a fire nudge" in failure


def test_an_unlisted_nudge_passes_when_the_case_does_not_claim_to_be_complete(run: Run) -> None:
    report = run(TURNS_RED.replace("    - {at: 1, rule: turned_red, account: acme, nudge: fire}\n", "")
                 .replace("expect:", "expect: []").replace("expect_none_otherwise: true",
                                                           "expect_none_otherwise: false"))

    assert report.ok, format_report(report)


def test_a_wrong_state_fails_saying_what_the_state_was(run: Run) -> None:
    report = run(TURNS_RED.replace("nudge: fire}", "nudge: fire}\n    - {at: 2, rule: turned_red, account: acme, "
                                                   "state: resolved}"))

    [failure] = report.failed[0].failures
    assert "cycle 2 (2026-01-07T09:00:00Z): turned_red on acme: expected state resolved; got no nudge, " \
           "state firing" in failure


def test_nudge_none_fails_when_a_nudge_is_owed(run: Run) -> None:
    report = run(TURNS_RED.replace("nudge: fire", "nudge: none"))

    [failure] = report.failed[0].failures
    assert "expected no nudge; got a fire nudge" in failure


def test_one_failing_case_leaves_the_others_passing(run: Run) -> None:
    report = run(TURNS_RED + TURNS_RED.replace("turns red", "turns red later").replace("at: 1", "at: 2"))

    assert ([r.name for r in report.passed], [r.name for r in report.failed]) == (["turns red"], ["turns red later"])
    assert not report.ok


def test_a_fact_a_rule_needs_but_the_case_omits_fails_the_case_by_name(run: Run) -> None:
    report = run(TURNS_RED.replace("score: [80, 45, 40], ", ""))  # the resolve condition needs the score

    [failure] = report.failed[0].failures
    assert "turns red: cycle 2 (2026-01-07T09:00:00Z): turned_red on acme: cannot evaluate" in failure
    assert "'score' is not defined" in failure and "give it under accounts.acme" in failure


# --- fresh and baseline -------------------------------------------------------------------------------------

ALREADY_RED = """
- name: already red
  rule_files_state: {state}
  accounts:
    acme: {{score: 40, band: red}}
  cycles: 3
  expect:
    - {{at: 0, rule: turned_red, account: acme, nudge: {nudge}, state: firing}}
  expect_none_otherwise: true
"""


def test_a_fresh_rule_records_an_account_already_matching_without_a_nudge(run: Run) -> None:
    report = run(ALREADY_RED.format(state="fresh", nudge="baseline"))

    assert report.ok, format_report(report)


def test_a_rule_that_already_watched_the_account_fires_on_a_match_at_the_first_cycle(run: Run) -> None:
    report = run(ALREADY_RED.format(state="baseline", nudge="fire"))

    assert report.ok, format_report(report)


def test_the_baseline_record_counts_as_an_outcome_when_nothing_else_may_happen(run: Run) -> None:
    report = run(ALREADY_RED.format(state="fresh", nudge="baseline").replace(
        "    - {at: 0, rule: turned_red, account: acme, nudge: baseline, state: firing}\n", "")
        .replace("expect:", "expect: []"))

    [failure] = report.failed[0].failures
    assert "unexpected a baseline record (no nudge)" in failure


RED_AGAIN = """
- name: red, resolved, red again two cycles after the nudge
  accounts:
    acme: {score: [80, 40, 60, 40], band: [green, red, yellow, red]}
  expect:
    - {at: 1, rule: turned_red, account: acme, nudge: fire}
    - {at: 3, rule: turned_red, account: acme, nudge: %s}
  expect_none_otherwise: true
"""


@pytest.mark.parametrize(("interval", "second"), [("1d", "none"), ("4d", "fire")])
def test_cycles_are_the_files_interval_apart_so_the_cooldown_counts_in_time(
        rules_dir: Path, interval: str, second: str) -> None:
    header = HEADER.replace("interval: 1d", f"interval: {interval}")
    (rules_dir / "tests" / "case.yaml").write_text(header + textwrap.indent(RED_AGAIN % second, "  "))

    report = run_rule_tests(rules_dir)

    assert report.ok, format_report(report)


# --- problems in the files ----------------------------------------------------------------------------------

def _problems(report: RuleTestReport) -> str:
    assert not report.results and not report.ok
    return "\n".join(report.problems)


def test_a_misspelt_key_is_a_problem_with_file_line_and_field(run: Run, rules_dir: Path) -> None:
    report = run(TURNS_RED.replace("expect_none_otherwise", "expect_nothing_else"))

    assert f"{rules_dir / 'tests' / 'case.yaml'}:11: tests.0.expect_nothing_else: unknown key" in _problems(report)


def test_leaving_out_expect_none_otherwise_is_a_problem(run: Run) -> None:
    report = run(TURNS_RED.replace("  expect_none_otherwise: true\n", ""))

    assert "tests.0.expect_none_otherwise: Field required" in _problems(report)


def test_a_misspelt_fact_name_is_a_problem_naming_the_names_a_rule_can_use(run: Run) -> None:
    report = run(TURNS_RED.replace("band:", "bnad:"))

    problems = _problems(report)
    assert "case.yaml:8: tests.0.accounts.acme.bnad: unknown name (names a rule can use: " in problems
    assert "band" in problems


def test_lists_of_different_lengths_are_a_problem(run: Run) -> None:
    report = run(TURNS_RED.replace("[green, red, red]", "[green, red]"))

    assert "tests.0.accounts.acme.band: 2 values, but the case runs 3 cycles" in _problems(report)


def test_an_expectation_for_a_rule_that_does_not_exist_is_a_problem(run: Run) -> None:
    report = run(TURNS_RED.replace("rule: turned_red", "rule: turned_redd"))

    assert "tests.0.expect.0.rule: 'turned_redd' is not a rule under test (turned_red)" in _problems(report)


def test_a_rule_under_test_that_does_not_exist_is_a_problem(run: Run) -> None:
    report = run(TURNS_RED.replace("  accounts:", "  rules: [went_red]\n  accounts:"))

    assert "tests.0.rules.0: no rule 'went_red' in alerts.yaml (rules: turned_red)" in _problems(report)


def test_an_expectation_for_an_account_not_in_the_case_is_a_problem(run: Run) -> None:
    report = run(TURNS_RED.replace("account: acme", "account: globex"))

    assert "tests.0.expect.0.account: no account 'globex' in this case" in _problems(report)


def test_an_expectation_after_the_last_cycle_is_a_problem(run: Run) -> None:
    report = run(TURNS_RED.replace("at: 1", "at: 3"))

    assert "tests.0.expect.0.at: the case runs cycles 0..2" in _problems(report)


def test_an_expectation_that_expects_nothing_is_a_problem(run: Run) -> None:
    report = run(TURNS_RED.replace(", nudge: fire", ""))

    assert "give `nudge`" in _problems(report)


def test_two_cases_with_one_name_are_a_problem(run: Run) -> None:
    report = run(TURNS_RED + TURNS_RED)

    assert "tests.1.name: two cases are named 'turns red'" in _problems(report)


def test_broken_alert_rules_are_a_problem_and_no_case_runs(run: Run, rules_dir: Path) -> None:
    (rules_dir / "alerts.yaml").write_text(ALERTS.replace('band == "red"', "band =="))

    report = run(TURNS_RED)

    assert "alerts.yaml:4: rules.0.when: not a valid expression" in _problems(report)


def test_a_rules_directory_without_tests_passes_and_says_so(rules_dir: Path) -> None:
    report = run_rule_tests(rules_dir)

    assert report.ok
    assert format_report(report) == "no rule tests found"


def test_the_report_lists_each_failure_under_its_case_then_the_summary(run: Run) -> None:
    report = run(TURNS_RED + TURNS_RED.replace("turns red", "turns red later").replace("at: 1", "at: 2"))

    lines = format_report(report).splitlines()
    assert lines[0].endswith("case.yaml: turns red later") and lines[0].startswith("FAILED ")
    assert lines[1].startswith("  ") and "cycle 2" in lines[1]
    assert lines[-1] == "2 rule tests: 1 passed, 1 failed"
