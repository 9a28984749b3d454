"""`healthbeat rules test`: unit tests for the alert rules, written as data (the idea of `promtool test rules`).

A test file (`rules/tests/*.yaml`) has a fixed start time and an interval between cycles, and a list of
cases. A case gives each account's facts cycle by cycle (the inputs) and, apart from them, the nudges and
states it expects (the expectations); `expect_none_otherwise` must say whether that list is the whole
story. The cases run through the same pure transition the worker uses (`worker.alerting.engine._step`) with the
real rules from `alerts.yaml`: no HTTP, no store, no clock but the file's.

`rule_files_state` says where the rule stands when the case begins, because `evaluate_alerts` treats a rule
with no state rows at all as a *baseline*:

- `fresh` (the default): the rule has never been evaluated (just installed, or its meaning changed). Cycle 0
  is its baseline pass: an account that already matches is recorded firing *without* a nudge
  (`nudge: baseline`); only later crossings nudge.
- `baseline`: the rule took its baseline before the case begins and saw every account of the case as not
  matching. Cycle 0 is an ordinary evaluation: an account that matches at cycle 0 has crossed, and fires.

Every outcome of a cycle counts for `expect_none_otherwise`: `fire`, `resolve` and `baseline` alike.

The same folder holds the scorecard's tests (`worker.rulebook.scorecard_tests`); `rule_test_kind` tells the
two apart by content, and both report through `RuleTestReport` and `format_report`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from worker.alerting.engine import step_rule
from worker.alerting.rules import SAMPLE_CONTEXT, AlertRule, load_alert_rules
from worker.config import Duration
from worker.rulefile import LoadedFile, RuleFileError, raise_problems, read_rule_bytes, read_yaml, validate
from worker.store import iso

Nudge = Literal["fire", "resolve", "baseline", "none"]
State = Literal["inactive", "pending", "firing", "resolved"]
TestKind = Literal["alerts", "scorecard"]
FACT_NAMES = frozenset(SAMPLE_CONTEXT)  # the names a condition may use, and so the facts a case may give


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Expectation(_Strict):
    """What one rule does for one account at one cycle: the nudge it owes, the state it is in, or both."""

    at: int = Field(ge=0, description="the cycle, counted from 0 at `start`")
    rule: str
    account: str
    nudge: Nudge | None = Field(default=None, description="none: explicitly no nudge at this cycle")
    state: State | None = None

    @model_validator(mode="after")
    def _says_something(self) -> Expectation:
        if self.nudge is None and self.state is None:
            raise ValueError("give `nudge` (fire, resolve, baseline, none) or `state` "
                             "(inactive, pending, firing, resolved), or both")
        return self


class Case(_Strict):
    name: str = Field(min_length=1)
    rule_files_state: Literal["fresh", "baseline"] = "fresh"
    rules: list[str] | None = Field(default=None, min_length=1,
                                   description="the rules under test; default: the file's")
    cycles: int | None = Field(default=None, ge=1, description="needed only when every fact is a scalar")
    accounts: dict[str, dict[str, Any]] = Field(min_length=1)
    expect: list[Expectation] = Field(default_factory=list)
    expect_none_otherwise: bool = Field(description="true: any outcome not listed in `expect` is a failure")


class RuleTestFile(_Strict):
    start: AwareDatetime
    interval: Duration
    rules: list[str] | None = Field(default=None, min_length=1,
                                   description="the rules under test; default: all of them")
    tests: list[Case] = Field(min_length=1)

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("the interval between cycles must be positive")
        return value


@dataclass(frozen=True)
class CaseResult:
    file: str
    name: str
    failures: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class RuleTestReport:
    """Every case that ran, and the files (or rules) that could not be used at all."""

    results: list[CaseResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> list[CaseResult]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.failed

    def summary(self) -> str:
        if not self.results and not self.problems:
            return "no rule tests found"
        text = f"{len(self.results)} rule tests: {len(self.passed)} passed, {len(self.failed)} failed"
        problems = len(self.problems)
        return text + (f"; {problems} problem{'s' if problems > 1 else ''} in the files" if problems else "")


def format_report(report: RuleTestReport) -> str:
    """Failures and problems first, one per line, then the summary; nothing but the summary when all pass."""
    lines = [f"FAILED {r.file}: {r.name}" + "".join(f"\n  {f}" for f in r.failures) for r in report.failed]
    lines += [f"PROBLEM {p}" for p in report.problems]
    return "\n".join([*lines, report.summary()])


_SCORECARD_TESTS = re.compile(r"^scorecard_tests[ \t]*:", re.MULTILINE)


def rule_test_kind(path: Path) -> TestKind:
    """Which rules a test file tests, by its content: a top-level `scorecard_tests:` key makes it a scorecard test
    file; any other file is an alert-rule test file (whose loader says what is wrong with it, if anything)."""
    try:
        text = read_rule_bytes(path).decode("utf-8")  # never blocks on a pipe, never reads a huge file
    except (RuleFileError, ValueError):
        return "alerts"
    return "scorecard" if _SCORECARD_TESTS.search(text) else "alerts"


def rule_test_files(rules_dir: Path, kind: TestKind | None = None) -> list[Path]:
    """The test files of a rules directory (those of one kind, or all), in a stable order."""
    folder = rules_dir / "tests"
    found = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []
    return [path for path in found if kind is None or rule_test_kind(path) == kind]


def run_rule_tests(rules_dir: Path, files: Sequence[Path] | None = None) -> RuleTestReport:
    """Run the test files (default: the alert-rule tests of `rules_dir/tests/`) against the alert rules of
    `rules_dir`."""
    report = RuleTestReport()
    try:
        rules = {r.name: r for r in load_alert_rules(rules_dir).rules.rules}
    except RuleFileError as exc:
        report.problems += [str(p) for p in exc.problems]
        return report
    for path in files if files is not None else rule_test_files(rules_dir, "alerts"):
        try:
            loaded, spec = load_test_file(path, rules)
        except RuleFileError as exc:
            report.problems += [str(p) for p in exc.problems]
            continue
        for index, case in enumerate(spec.tests):
            chosen = [rules[n] for n in case.rules or spec.rules or list(rules)]
            failures = _run_case(case, chosen, spec.start, spec.interval)
            report.results.append(CaseResult(str(path), case.name, tuple(
                f"{_where(loaded, ['tests', index, *loc])}: {message}" for loc, message in failures)))
    return report


def load_test_file(path: Path, rules: Mapping[str, AlertRule]) -> tuple[LoadedFile, RuleTestFile]:
    """Read and validate one test file: its shape (pydantic) and what it refers to (rules, accounts, cycles)."""
    loaded = read_yaml(path)
    spec = validate(loaded, RuleTestFile)
    raise_problems(loaded, _cross_check(spec, rules))
    return loaded, spec


Loc = list[int | str]


def _cross_check(spec: RuleTestFile, rules: Mapping[str, AlertRule]) -> list[tuple[Loc, str]]:
    known = ", ".join(sorted(rules)) or "none"
    problems: list[tuple[Loc, str]] = [
        (["rules", i], f"no rule {name!r} in alerts.yaml (rules: {known})")
        for i, name in enumerate(spec.rules or []) if name not in rules]
    names = [case.name for case in spec.tests]
    for index, case in enumerate(spec.tests):
        at: Loc = ["tests", index]
        if names.count(case.name) > 1:
            problems.append(([*at, "name"], f"two cases are named {case.name!r}: failures would be ambiguous"))
        problems += [([*at, "rules", i], f"no rule {name!r} in alerts.yaml (rules: {known})")
                     for i, name in enumerate(case.rules or []) if name not in rules]
        under_test = set(case.rules or spec.rules or rules)
        cycles = _cycles(case)
        for account, facts in case.accounts.items():
            for name, value in facts.items():
                where: Loc = [*at, "accounts", account, name]
                if name not in FACT_NAMES:
                    problems.append((where, f"unknown name (names a rule can use: {', '.join(sorted(FACT_NAMES))})"))
                elif isinstance(value, list) and len(value) != cycles:
                    problems.append((where, f"{len(value)} values, but the case runs {cycles} cycles "
                                            f"(give one per cycle, or a single value that holds throughout)"))
        for i, expected in enumerate(case.expect):
            where = [*at, "expect", i]
            if expected.rule not in under_test:
                problems.append(([*where, "rule"], f"{expected.rule!r} is not a rule under test "
                                                   f"({', '.join(sorted(under_test)) or 'none'})"))
            if expected.account not in case.accounts:
                problems.append(([*where, "account"], f"no account {expected.account!r} in this case"))
            if expected.at >= cycles:
                problems.append(([*where, "at"], f"the case runs cycles 0..{cycles - 1}"))
    return problems


def _cycles(case: Case) -> int:
    """Given by `cycles`, else by the longest list of values (a single value holds for one cycle)."""
    if case.cycles is not None:
        return case.cycles
    lengths = [len(v) for facts in case.accounts.values() for v in facts.values() if isinstance(v, list)]
    return max(lengths, default=1) or 1


def _facts(account: str, facts: Mapping[str, Any], cycle: int) -> dict[str, Any]:
    values = {name: value[cycle] if isinstance(value, list) else value for name, value in facts.items()}
    return {"account_id": account, **values}


Outcome = tuple[str | None, str]  # the nudge owed (None: none) and the state after the cycle


def _run_case(case: Case, rules: list[AlertRule], start: datetime, interval: timedelta
              ) -> list[tuple[Loc, str]]:
    """Play the case cycle by cycle, as `evaluate_alerts` would, then hold the outcomes to the expectations."""
    states: dict[tuple[str, str], dict[str, Any]] = {}
    if case.rule_files_state == "baseline":
        states = {(rule.name, account): _watched(rule, account, start - interval)
                  for rule in rules for account in case.accounts}
    outcomes: dict[tuple[int, str, str], Outcome] = {}
    for cycle in range(_cycles(case)):
        now = start + cycle * interval
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for rule in rules:
            contexts = [_facts(account, facts, cycle) for account, facts in case.accounts.items()]
            for transition in step_rule(rule, contexts, states, now):
                account = transition.account_id
                if transition.row is None:
                    return [(["accounts", account], f"{case.name}: cycle {cycle} ({iso(now)}): {rule.name} on "
                                                    f"{account}: cannot evaluate: {transition.error} (give it "
                                                    f"under accounts.{account})")]
                rows[(rule.name, account)] = transition.row
                outcomes[(cycle, rule.name, account)] = (transition.owed, str(transition.row["state"]))
        states.update(rows)
    return _compare(case, outcomes, start, interval)


def _watched(rule: AlertRule, account: str, at: datetime) -> dict[str, Any]:
    """The row a rule leaves for an account it watched and found not matching."""
    return {"rule": rule.name, "account_id": account, "state": "inactive", "since": None, "pending_cycles": 0,
            "episode": 0, "last_notified_at": None, "rule_hash": rule.meaning_hash, "updated_at": iso(at)}


def _compare(case: Case, outcomes: Mapping[tuple[int, str, str], Outcome], start: datetime,
             interval: timedelta) -> list[tuple[Loc, str]]:
    failures: list[tuple[Loc, str]] = []

    def when(cycle: int) -> str:
        return f"{case.name}: cycle {cycle} ({iso(start + cycle * interval)})"

    for index, expected in enumerate(case.expect):
        owed, state = outcomes[(expected.at, expected.rule, expected.account)]
        got = f"got {_nudge_words(owed)}, state {state}"
        subject = f"{when(expected.at)}: {expected.rule} on {expected.account}"
        if expected.nudge is not None and (owed or "none") != expected.nudge:
            failures.append((["expect", index], f"{subject}: expected {_nudge_words(expected.nudge)}; {got}"))
        elif expected.state is not None and state != expected.state:
            failures.append((["expect", index], f"{subject}: expected state {expected.state}; {got}"))
    if case.expect_none_otherwise:
        stated = {(e.at, e.rule, e.account) for e in case.expect if e.nudge is not None}
        for (cycle, rule, account), (owed, state) in sorted(outcomes.items()):
            if owed is not None and (cycle, rule, account) not in stated:
                failures.append((["expect_none_otherwise"],
                                 f"{when(cycle)}: {rule} on {account}: unexpected {_nudge_words(owed)} "
                                 f"(state {state}); the case says nothing else happens"))
    return failures


def _nudge_words(nudge: str | None) -> str:
    return {None: "no nudge", "none": "no nudge", "baseline": "a baseline record (no nudge)"}.get(
        nudge, f"a {nudge} nudge")


def _where(loaded: LoadedFile, loc: Loc) -> str:
    line = loaded.line_of(loc)
    return f"{loaded.path}:{line}" if line else str(loaded.path)
