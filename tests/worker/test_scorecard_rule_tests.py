"""`rules test` for the scorecard: scorecard tests as data, run through the real store and scoring engine.

Most tests write a small test file next to a small scorecard of their own (so that tuning the shipped scorecard
never changes what they mean), run it, and read the report the way an ops engineer would: which file and line,
which case and account, what was expected and what came out. The shipped scorecard has its own tests, run
below, and the CLI runs both kinds of test file.

The test scorecard, worked out once: score = mean of the groups with data; engagement = 25 points a meeting
(90 days, 4 or more: 100); support = 100 - 25 per open ticket; sentiment = 50 + 50 x the recency-weighted
sentiment; usage = 100 x the share of the last 30 days with an active user. Bands: below 40 red, below 70
yellow.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.worker.rule_files import edit, line_with
from tests.worker.test_cli import healthbeat
from worker.alerting.rules import load_alert_rules
from worker.rulebook.alert_tests import RuleTestReport, format_report, rule_test_kind, run_rule_tests
from worker.rulebook.scorecard_tests import run_all_rule_tests, run_scorecard_tests
from worker.scoring.sentiment import SentimentModel

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
HEADER = "as_of: 2026-03-02T09:00:00Z\nscorecard_tests:\n"

SCORECARD = """\
version: 1
bands: {red: 40, yellow: 70}
groups:
  engagement:
    weight: 50
    measures:
      meetings: {window: 90d, weight: 100, points: [[0, 0], [4, 100]]}
  support:
    weight: 50
    measures:
      open_tickets: {weight: 100, points: [[0, 100], [4, 0]]}
  sentiment:
    weight: 50
    measures:
      inbound_sentiment: {half_life: 14d, window: 180d, weight: 100, points: [[-1, 0], [1, 100]]}
  usage:
    weight: 50
    measures:
      usage_frequency: {window: 30d, weight: 100, points: [[0, 0], [1, 100]]}
"""

# Two meetings (50) and one open ticket (75), no messages and no usage (left out): 62.5, yellow.
YELLOW = """
- name: two meetings and an open ticket are yellow
  accounts:
    acme:
      meetings: [{ago: 3d}, {ago: 40d}]
      tickets: [{ago: 5d, priority: urgent}]
  expect:
    acme:
      band: yellow
      score: 62.5
      groups: {engagement: 50, support: 75}
      measures: {meetings: 2, open_tickets: 1}
"""

Run = Callable[..., RuleTestReport]


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The test scorecard, the shipped alert rules, and an empty tests folder."""
    folder = tmp_path / "rules"
    (folder / "tests").mkdir(parents=True)
    (folder / "scorecard.yaml").write_text(SCORECARD)
    shutil.copy(RULES_DIR / "alerts.yaml", folder / "alerts.yaml")
    return folder


@pytest.fixture
def case_file(rules_dir: Path) -> Path:
    return rules_dir / "tests" / "case.yaml"


@pytest.fixture
def run(rules_dir: Path, case_file: Path) -> Run:
    """Write `cases` (YAML under `scorecard_tests:`) as rules/tests/case.yaml and run the scorecard tests."""
    def run_cases(cases: str, sentiment: SentimentModel | None = None) -> RuleTestReport:
        case_file.write_text(HEADER + textwrap.indent(textwrap.dedent(cases), "  "))
        return run_scorecard_tests(rules_dir, sentiment=sentiment)
    return run_cases


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """A copy of the shipped rules and their tests, for a test to change a weight in."""
    return Path(shutil.copytree(RULES_DIR, tmp_path / "shipped"))


# --- the shipped tests --------------------------------------------------------------------------------------

def test_the_shipped_scorecard_tests_pass_against_the_shipped_scorecard() -> None:
    report = run_scorecard_tests(RULES_DIR)

    assert report.ok, format_report(report)
    assert len(report.passed) >= 5


def test_the_shipped_tests_catch_a_heavier_support_weight_where_the_band_moves(shipped: Path) -> None:
    # Support 5 -> 60 of 155: the swamped account's support 22.82 now weighs twelve times as much: yellow.
    edit(shipped / "scorecard.yaml", "  support:\n    weight: 5", "  support:\n    weight: 60")

    result = healthbeat("rules", "test", "--rules-dir", str(shipped), cwd=shipped.parent)

    assert result.returncode == 1
    assert "FAILED " in result.stdout and "scorecard_signals.yaml: support trouble" in result.stdout
    assert "swamped: band: expected green; got yellow (score 68.89, yellow: " in result.stdout


# --- passing and failing ------------------------------------------------------------------------------------

def test_a_case_whose_expectations_hold_passes(run: Run) -> None:
    report = run(YELLOW)

    assert report.ok, format_report(report)
    assert [r.name for r in report.passed] == ["two meetings and an open ticket are yellow"]


def test_a_wrong_measure_fails_naming_file_line_case_account_measure_expected_and_actual(
        run: Run, case_file: Path) -> None:
    report = run(YELLOW.replace("{meetings: 2,", "{meetings: 3,"))

    [failure] = report.failed[0].failures
    assert failure.startswith(f"{case_file}:{line_with(case_file, '{meetings: 3,')}: two meetings and an open "
                              f"ticket are yellow: acme: measure meetings (raw value): expected 3; got 2 ")


def test_a_wrong_band_fails_with_the_score_and_the_reason_that_came_out(run: Run) -> None:
    report = run(YELLOW.replace("band: yellow", "band: green"))

    [failure] = report.failed[0].failures
    assert "acme: band: expected green; got yellow (score 62.5, yellow: 2 meetings in 90 days" in failure


def test_a_wrong_group_score_fails_naming_the_group(run: Run) -> None:
    report = run(YELLOW.replace("support: 75}", "support: 100}"))

    [failure] = report.failed[0].failures
    assert "acme: group support: expected 100; got 75" in failure


@pytest.mark.parametrize(("score", "ok"), [("62.51", True), ("62.49", True), ("62.52", False), ("62", False)])
def test_a_number_matches_within_a_hundredth(run: Run, score: str, ok: bool) -> None:
    report = run(YELLOW.replace("score: 62.5", f"score: {score}"))

    assert report.ok is ok, format_report(report)


@pytest.mark.parametrize(("bounds", "ok"), [("{min: 60}", True), ("{max: 62.5}", True), ("{min: 60, max: 65}", True),
                                            ("{min: 65}", False), ("{max: 40}", False)])
def test_a_range_holds_for_values_within_it_both_ends_included(run: Run, bounds: str, ok: bool) -> None:
    report = run(YELLOW.replace("score: 62.5", f"score: {bounds}"))

    assert report.ok is ok, format_report(report)


def test_a_range_that_fails_says_the_range(run: Run) -> None:
    report = run(YELLOW.replace("score: 62.5", "score: {min: 65, max: 80}"))

    [failure] = report.failed[0].failures
    assert "acme: score: expected between 65 and 80; got 62.5" in failure


def test_null_expects_no_data(run: Run) -> None:
    report = run(YELLOW.replace("open_tickets: 1}", "open_tickets: 1, inbound_sentiment: null}")
                 .replace("support: 75}", "support: 75, sentiment: null, usage: null}"))

    assert report.ok, format_report(report)


def test_null_fails_when_there_is_data(run: Run) -> None:
    report = run(YELLOW.replace("{meetings: 2,", "{meetings: null,"))

    [failure] = report.failed[0].failures
    assert "acme: measure meetings (raw value): expected no value; got 2" in failure


def test_coverage_and_confidence_are_checked(run: Run) -> None:
    # Engagement and support had data, sentiment and usage did not: half the weight, Medium confidence.
    report = run(YELLOW.replace("band: yellow",
                                "band: yellow\n      coverage: 0.5\n      confidence: Medium, fresh data"))

    assert report.ok, format_report(report)


def test_a_confidence_level_alone_is_matched_against_the_level(run: Run) -> None:
    report = run(YELLOW.replace("band: yellow", "band: yellow\n      confidence: High"))

    [failure] = report.failed[0].failures
    assert "acme: confidence: expected 'High'; got 'Medium, fresh data' (coverage 0.5)" in failure


def test_words_the_reason_must_contain(run: Run) -> None:
    report = run(YELLOW.replace("band: yellow",
                                "band: yellow\n      reason_contains: [2 meetings in 90 days, 9 meetings]"))

    [failure] = report.failed[0].failures
    assert "acme: reason: expected the words '9 meetings'; got '" in failure


def test_one_failing_case_leaves_the_others_passing(run: Run) -> None:
    report = run(YELLOW + YELLOW.replace("are yellow", "are green").replace("band: yellow", "band: green"))

    assert ([r.name for r in report.passed], [r.name for r in report.failed]) == (
        ["two meetings and an open ticket are yellow"], ["two meetings and an open ticket are green"])
    assert not report.ok


def test_each_case_starts_from_an_empty_store(run: Run) -> None:
    report = run(YELLOW + textwrap.dedent("""
        - name: the same account without the first case's rows
          accounts:
            acme: {}
          expect:
            acme: {measures: {meetings: 0, open_tickets: 0}}
        """))

    assert report.ok, format_report(report)


# --- the inputs ---------------------------------------------------------------------------------------------

def test_times_count_back_from_as_of_and_a_90_day_window_holds_90_days_but_not_91(run: Run) -> None:
    report = run(YELLOW.replace("[{ago: 3d}, {ago: 40d}]", "[{ago: 36h}, {ago: 90d}, {ago: 91d}]"))

    assert report.ok, format_report(report)


MIDNIGHT = """
- name: a meeting 90 days and 4 hours ago
  as_of: %s
  accounts:
    acme: {meetings: [{ago: 2164h}]}
  expect:
    acme: {measures: {meetings: %d}}
"""


@pytest.mark.parametrize(("as_of", "meetings"), [("2026-03-02T09:00:00Z", 1), ("2026-03-02T02:00:00Z", 0)])
def test_a_case_may_set_its_own_as_of_and_windows_start_at_midnight(run: Run, as_of: str, meetings: int) -> None:
    # From 09:00 the meeting falls at 05:00 on the window's first day; from 02:00, at 22:00 the day before.
    report = run(MIDNIGHT % (as_of, meetings))

    assert report.ok, format_report(report)


def test_usage_from_and_to_give_one_row_for_each_day_between(run: Run) -> None:
    report = run("""
        - name: used half the days of the month
          accounts:
            acme:
              usage: [{from: 14d, to: 0d, active_users: 3, events: 40}]
          expect:
            acme:
              measures: {usage_frequency: 0.5}
        """)

    assert report.ok, format_report(report)


def test_a_solved_ticket_is_not_open_and_an_inbound_comment_counts_for_sentiment_where_ours_does_not(
        run: Run) -> None:
    report = run("""
        - name: a solved ticket and two comments
          accounts:
            acme:
              tickets: [{ago: 5d, closed_after: 1d}, {ago: 2d, status: closed}]
              ticket_comments: [{ago: 5d, sentiment: -0.4}, {ago: 5d, direction: out, sentiment: 0.9}]
          expect:
            acme:
              measures: {open_tickets: 0, inbound_sentiment: -0.4}
        """)

    assert report.ok, format_report(report)


class _Keywords:
    """A sentiment model for tests: "late" is -0.5, anything else +0.5."""

    name = "keywords-test"

    def compound(self, text: str) -> float:
        return -0.5 if "late" in text else 0.5


TEXTS = """
- name: the customer says it is late
  accounts:
    acme:
      emails:
        - {ago: 2d, direction: in, text: "Your release is late again, we are very unhappy and angry about it."}
  expect:
    acme:
      measures: {inbound_sentiment: %s}
"""


def test_a_text_is_given_its_sentiment_by_the_model_passed_in(run: Run) -> None:
    report = run(TEXTS % "-0.5", sentiment=_Keywords())

    assert report.ok, format_report(report)


def test_a_text_is_scored_by_vader_by_default(run: Run) -> None:
    report = run(TEXTS % "{max: -0.3}")

    assert report.ok, format_report(report)


# --- problems in the files ----------------------------------------------------------------------------------

def _problems(report: RuleTestReport) -> str:
    assert not report.results and not report.ok
    return "\n".join(report.problems)


def test_a_misspelt_key_is_a_problem_with_file_line_and_field(run: Run, case_file: Path) -> None:
    report = run(YELLOW.replace("meetings: [", "meeting: ["))

    assert (f"{case_file}:{line_with(case_file, 'meeting: [')}: scorecard_tests.0.accounts.acme.meeting: "
            f"unknown key") in _problems(report)


def test_an_expected_measure_the_scorecard_does_not_have_is_a_problem_naming_those_it_has(
        run: Run, case_file: Path) -> None:
    report = run(YELLOW.replace("{meetings: 2,", "{meetngs: 2,"))

    assert (f"case.yaml:{line_with(case_file, 'meetngs')}: scorecard_tests.0.expect.acme.measures.meetngs: "
            f"no measure 'meetngs' in scorecard.yaml's groups (measures: inbound_sentiment, meetings, "
            f"open_tickets, usage_frequency)") in _problems(report)


def test_an_expected_group_the_scorecard_does_not_have_is_a_problem(run: Run) -> None:
    report = run(YELLOW.replace("support: 75}", "suport: 75}"))

    assert "scorecard_tests.0.expect.acme.groups.suport: no group 'suport' in scorecard.yaml" in _problems(report)


def test_an_expectation_for_an_account_not_in_the_case_is_a_problem(run: Run) -> None:
    report = run(YELLOW.replace("  expect:\n    acme:", "  expect:\n    globex:"))

    assert "scorecard_tests.0.expect.globex: no account 'globex' in this case's accounts (acme)" in _problems(report)


def test_a_time_without_a_unit_is_a_problem(run: Run) -> None:
    report = run(YELLOW.replace("ago: 5d", "ago: 5"))

    assert "scorecard_tests.0.accounts.acme.tickets.0.ago: give a unit: 5d for days" in _problems(report)


def test_usage_from_must_be_the_older_day(run: Run) -> None:
    report = run(YELLOW.replace("meetings: [", "usage: [{from: 0d, to: 14d, active_users: 1, events: 1}]\n"
                                               "      meetings: ["))

    assert "scorecard_tests.0.accounts.acme.usage.0: `from` is the older day" in _problems(report)


def test_usage_in_hours_is_a_problem(run: Run) -> None:
    report = run(YELLOW.replace("meetings: [", "usage: [{ago: 36h, active_users: 1, events: 1}]\n      meetings: ["))

    assert "usage is daily: give whole days" in _problems(report)


def test_a_sentiment_and_a_text_on_one_message_are_a_problem(run: Run) -> None:
    report = run(YELLOW.replace("priority: urgent}", "priority: urgent, sentiment: -0.5, text: Broken again.}"))

    assert "scorecard_tests.0.accounts.acme.tickets.0: give `sentiment` or `text`, not both" in _problems(report)


def test_an_expectation_that_says_nothing_is_a_problem(run: Run) -> None:
    report = run("""
        - name: says nothing
          accounts:
            acme: {}
          expect:
            acme: {}
        """)

    assert "scorecard_tests.0.expect.acme: say what to expect" in _problems(report)


def test_two_cases_with_one_name_are_a_problem(run: Run) -> None:
    report = run(YELLOW + YELLOW)

    assert "scorecard_tests.1.name: two cases are named 'two meetings and an open ticket are yellow'" \
        in _problems(report)


def test_a_broken_scorecard_is_a_problem_and_no_case_runs(run: Run, rules_dir: Path) -> None:
    edit(rules_dir / "scorecard.yaml", "bands: {red: 40, yellow: 70}", "bands: {red: 80, yellow: 70}")

    report = run(YELLOW)

    assert "scorecard.yaml:2: bands: red (80.0) must be below yellow (70.0)" in _problems(report)


# --- the two kinds of test file -----------------------------------------------------------------------------

def test_a_file_with_scorecard_tests_is_a_scorecard_test_file_and_any_other_an_alert_test_file(
        tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("# scorecard_tests: in a comment does not count\nstart: x\ntests: []\n")
    (tmp_path / "s.yaml").write_text("as_of: 2026-03-02T09:00:00Z\nscorecard_tests: []\n")

    assert [rule_test_kind(tmp_path / name) for name in ("a.yaml", "s.yaml", "missing.yaml")] == \
        ["alerts", "scorecard", "alerts"]


def test_the_alert_tests_leave_the_scorecard_tests_alone() -> None:
    report = run_rule_tests(RULES_DIR)

    assert report.ok, format_report(report)
    assert {Path(r.file).name for r in report.results} == \
        {f"{rule.name}.yaml" for rule in load_alert_rules(RULES_DIR).rules.rules}


def test_all_rule_tests_run_each_file_by_its_kind_in_one_report(run: Run, rules_dir: Path) -> None:
    run(YELLOW)
    shutil.copy(RULES_DIR / "tests" / "turned_red.yaml", rules_dir / "tests" / "turned_red.yaml")

    report = run_all_rule_tests(rules_dir)

    alerts = len(run_rule_tests(RULES_DIR, [RULES_DIR / "tests" / "turned_red.yaml"]).results)
    assert report.ok, format_report(report)
    assert format_report(report) == f"{alerts + 1} rule tests: {alerts + 1} passed, 0 failed"


# --- through the CLI ----------------------------------------------------------------------------------------

def test_rules_test_runs_the_shipped_alert_and_scorecard_tests(tmp_path: Path) -> None:
    cases = len(run_rule_tests(RULES_DIR).results) + len(run_scorecard_tests(RULES_DIR).results)

    result = healthbeat("rules", "test", "--rules-dir", str(RULES_DIR), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{cases} rule tests: {cases} passed, 0 failed"


def test_rules_test_given_a_scorecard_test_file_runs_that_file(tmp_path: Path) -> None:
    file = RULES_DIR / "tests" / "scorecard_bands.yaml"

    result = healthbeat("rules", "test", str(file), "--rules-dir", str(RULES_DIR), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "3 rule tests: 3 passed, 0 failed"


def test_rules_test_exits_1_naming_a_failing_scorecard_case(run: Run, rules_dir: Path, tmp_path: Path) -> None:
    run(YELLOW.replace("band: yellow", "band: red"))

    result = healthbeat("rules", "test", "--rules-dir", str(rules_dir), cwd=tmp_path)

    assert result.returncode == 1
    assert "FAILED " in result.stdout and "case.yaml: two meetings and an open ticket are yellow" in result.stdout
    assert "acme: band: expected red; got yellow" in result.stdout
    assert result.stdout.strip().endswith("1 rule tests: 0 passed, 1 failed")


def test_rules_check_runs_the_shipped_scorecard_tests(tmp_path: Path) -> None:
    cases = len(run_scorecard_tests(RULES_DIR).results)

    result = healthbeat("rules", "check", "--rules-dir", str(RULES_DIR), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert f"{cases} scorecard tests pass" in result.stdout


def test_rules_check_fails_on_a_malformed_scorecard_test_file_with_file_line_and_field(
        run: Run, rules_dir: Path, case_file: Path, tmp_path: Path) -> None:
    run(YELLOW.replace("{meetings: 2,", "{meetngs: 2,"))

    result = healthbeat("rules", "check", "--rules-dir", str(rules_dir), cwd=tmp_path)

    assert result.returncode == 1
    assert (f"{case_file}:{line_with(case_file, 'meetngs')}: scorecard_tests.0.expect.acme.measures.meetngs: "
            f"no measure 'meetngs'") in result.stderr


def test_rules_check_fails_when_a_scorecard_test_fails(run: Run, rules_dir: Path, case_file: Path,
                                                       tmp_path: Path) -> None:
    run(YELLOW.replace("score: 62.5", "score: 70"))

    result = healthbeat("rules", "check", "--rules-dir", str(rules_dir), cwd=tmp_path)

    assert result.returncode == 1
    assert (f"{case_file}:{line_with(case_file, 'score: 70')}: two meetings and an open ticket are yellow: acme: "
            f"score: expected 70; got 62.5") in result.stderr
