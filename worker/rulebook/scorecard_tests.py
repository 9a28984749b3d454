"""`healthbeat rules test` for the scorecard: given a few accounts' activity, expect these measures, scores and
bands (the idea of `promtool test rules`, applied to `rules/scorecard.yaml`).

Why: one edit of the scorecard (a weight, a points curve, a window) moves every account at once, and `rules
preview` shows its effect only on today's data, where nobody has said what the right answer is. These tests
say it: "an account gone silent, with angry mail and urgent tickets, is red"; "an account with no data is
reported with low coverage, not as healthy". They run in `rules test` beside the alert-rule tests, and in
`rules check`, so a scorecard that breaks one of its own tests is a problem like a misspelt key.

A scorecard test file (`rules/tests/*.yaml` with a top-level `scorecard_tests:` key; the shipped files' header
comments document the format for ops) has an `as_of` time and a list of cases. A case gives each account's
rows (the inputs: the Account's fields, meetings, calls, emails, tickets, ticket comments, daily usage,
opportunities, each dated relative to `as_of`) and, apart from them, what the scorecard must make of them (the
expectations: band, score, coverage, confidence, derived scores, group scores, measures' raw values, words
of the reason). A number is expected within `TOLERANCE`, `{min, max}` is a range, and `null` says "no value".

Each case runs in a fresh in-memory store: its rows are stored as `worker.sync` stores them, a text is given its
sentiment by the real pipeline (`score_pending_texts`, VADER unless another model is passed in), and the real
engine (`score_accounts`) scores every account as of `as_of`. The expectations are held to the rows it stored,
as `healthbeat explain` reads them; group scores are worked out from those rows by `score_account`.
Nothing here knows a measure's SQL: the tests pin the scorecard's behaviour, whatever computes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from worker.rulebook.alert_tests import (
    CaseResult,
    RuleTestReport,
    rule_test_files,
    rule_test_kind,
    run_rule_tests,
)
from worker.rulefile import LoadedFile, Problem, RuleFileError, raise_problems, read_yaml, validate
from worker.scoring.engine import score_account, score_accounts
from worker.scoring.scorecard import Duration, LoadedScorecard, Scorecard, load_scorecard
from worker.scoring.sentiment import Parallelism, SentimentModel, VaderModel, score_pending_texts
from worker.store import Store, iso

TOLERANCE = 0.01  # an expected number matches an actual one this close (scores are stored to 2 decimals)

Loc = list[int | str]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the inputs ---------------------------------------------------------------------------------------------

class _Said(_Strict):
    """A message whose sentiment counts when the customer wrote it: given as a number, or as text to score."""

    sentiment: float | None = Field(default=None, ge=-1, le=1, description="-1 (angry) .. +1 (delighted)")
    text: str | None = Field(default=None, min_length=1, description="scored by the sentiment model")

    @model_validator(mode="after")
    def _one_of(self) -> _Said:
        if self.sentiment is not None and self.text is not None:
            raise ValueError("give `sentiment` or `text`, not both (the text would be scored and replace it)")
        return self


class Meeting(_Strict):
    ago: Duration


class Call(_Strict):
    ago: Duration


class Email(_Said):
    ago: Duration
    direction: Literal["in", "out"] = Field(description="in: the customer wrote to us; out: we wrote to them")
    replied_after: Duration | None = Field(default=None, description="an inbound email's answer, this much later")

    @model_validator(mode="after")
    def _replies_answer_inbound_mail(self) -> Email:
        if self.replied_after is not None and self.direction != "in":
            raise ValueError("`replied_after` is for an inbound email (direction: in): it adds our answer")
        return self


class Ticket(_Said):
    ago: Duration
    priority: str | None = Field(default=None, description="as the source says it: urgent, high, normal, low")
    status: str | None = Field(default=None, description="default: open, or solved with `closed_after`")
    closed_after: Duration | None = None


class TicketComment(_Said):
    ago: Duration
    direction: Literal["in", "out"] = Field(default="in", description="in: the customer wrote it")


class UsageDays(_Strict):
    """One usage row per day: the day `ago`, or every day `from` (the older) to `to`, both included."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    ago: Duration | None = None
    first: Duration | None = Field(default=None, alias="from")
    last: Duration | None = Field(default=None, alias="to")
    active_users: int = Field(ge=0)
    events: int = Field(ge=0)
    features: list[str] = Field(default_factory=list)
    seats: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _days(self) -> UsageDays:
        span = (self.first is not None, self.last is not None)
        if (self.ago is not None and any(span)) or (self.ago is None and not all(span)):
            raise ValueError("give the day as `ago: 3d`, or the days as `from: 28d` and `to: 15d` (both included)")
        for value in (self.ago, self.first, self.last):
            if value is not None and value % timedelta(days=1):
                raise ValueError(f"usage is daily: give whole days, not {value}")
        if self.first is not None and self.last is not None and self.first < self.last:
            raise ValueError("`from` is the older day: from 28d to 15d")
        return self

    def days_ago(self) -> range:
        if self.ago is not None:
            return range(self.ago.days, self.ago.days + 1)
        assert self.first is not None and self.last is not None  # the validator saw to it
        return range(self.last.days, self.first.days + 1)


class Opportunity(_Strict):
    close_in: Duration | None = Field(default=None, description="closes this long after as_of")
    close_ago: Duration | None = Field(default=None, description="closed (or was due) this long before as_of")
    type: str = "Renewal"
    stage: str | None = None
    amount: float | None = None
    closed: bool = False
    won: bool = False

    @model_validator(mode="after")
    def _one_date(self) -> Opportunity:
        if (self.close_in is None) == (self.close_ago is None):
            raise ValueError("give the close date as `close_in: 45d` or `close_ago: 10d` (one of them)")
        if self.won and not self.closed:
            raise ValueError("a won opportunity is closed: add `closed: true`")
        return self

    def close_date(self, as_of: datetime) -> str:
        moment = as_of + self.close_in if self.close_in is not None else as_of - (self.close_ago or timedelta())
        return moment.date().isoformat()


class AccountRows(_Strict):
    """An account: the Salesforce Account's fields, then its activity. The key in `accounts` is its Id."""

    name: str | None = Field(default=None, description="default: the key")
    type: str | None = None
    industry: str | None = None
    contracted_seats: float | None = Field(default=None, ge=0)
    meetings: list[Meeting] = Field(default_factory=list)
    calls: list[Call] = Field(default_factory=list)
    emails: list[Email] = Field(default_factory=list)
    tickets: list[Ticket] = Field(default_factory=list)
    ticket_comments: list[TicketComment] = Field(default_factory=list)
    usage: list[UsageDays] = Field(default_factory=list)
    opportunities: list[Opportunity] = Field(default_factory=list)

    def has_text(self) -> bool:
        return any(m.text is not None for m in (*self.emails, *self.tickets, *self.ticket_comments))


# --- the expectations ---------------------------------------------------------------------------------------

class Bounds(_Strict):
    """A range, both ends included; either end alone says "at least" or "at most"."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _a_range(self) -> Bounds:
        if self.min is None and self.max is None:
            raise ValueError("give `min`, `max` or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


Number = float | Bounds | None  # None: expected to have no value (no data, no score)


class Expected(_Strict):
    """What the scorecard makes of one account; only what is given is checked."""

    band: Literal["red", "yellow", "green", "unknown"] | None = None
    score: Number = None
    coverage: Number = Field(default=None, description="share of the scorecard's weight that had data (0..1)")
    confidence: str | None = Field(default=None, description="a level (High, Medium, Low) or the whole text")
    churn_risk: Number = None
    expansion_readiness: Number = None
    segment: str | None = None
    groups: dict[str, Number] = Field(default_factory=dict, description="group scores; null: no data in it")
    measures: dict[str, Number] = Field(default_factory=dict, description="raw values; null: no data")
    reason_contains: list[str] = Field(default_factory=list, description="words the reason must contain")

    @model_validator(mode="after")
    def _says_something(self) -> Expected:
        if not self.model_fields_set:
            raise ValueError("say what to expect: band, score, coverage, confidence, churn_risk, "
                             "expansion_readiness, segment, groups, measures or reason_contains")
        return self


class Case(_Strict):
    name: str = Field(min_length=1)
    as_of: AwareDatetime | None = Field(default=None, description="default: the file's")
    accounts: dict[str, AccountRows] = Field(min_length=1)
    expect: dict[str, Expected] = Field(min_length=1)


class ScorecardTestFile(_Strict):
    as_of: AwareDatetime
    scorecard_tests: list[Case] = Field(min_length=1)


# --- running ------------------------------------------------------------------------------------------------

def run_all_rule_tests(rules_dir: Path, files: Sequence[Path] | None = None,
                       *, sentiment: SentimentModel | None = None) -> RuleTestReport:
    """`rules test`: every test file (default: `rules_dir/tests/*.yaml`), each run by its kind, told apart by
    content (`rule_test_kind`): alert-rule tests against `alerts.yaml`, scorecard tests against `scorecard.yaml`;
    one report. With only scorecard test files, the alert rules are not loaded, and the other way round."""
    kinds = {path: rule_test_kind(path) for path in (files if files is not None else rule_test_files(rules_dir))}
    alert_files = [path for path, kind in kinds.items() if kind == "alerts"]
    scorecard_files = [path for path, kind in kinds.items() if kind == "scorecard"]
    report = run_rule_tests(rules_dir, alert_files) if alert_files or not scorecard_files else RuleTestReport()
    if scorecard_files:
        scorecard = run_scorecard_tests(rules_dir, scorecard_files, sentiment=sentiment)
        report.results += scorecard.results
        report.problems += scorecard.problems
    return report


def run_scorecard_tests(rules_dir: Path, files: Sequence[Path] | None = None,
                        *, sentiment: SentimentModel | None = None) -> RuleTestReport:
    """Run the scorecard test files (default: those of `rules_dir/tests/`) against `rules_dir/scorecard.yaml`.

    `sentiment` scores the texts the cases give (default: VADER, loaded only if a case has a text)."""
    report = RuleTestReport()
    paths = list(files) if files is not None else rule_test_files(rules_dir, "scorecard")
    if not paths:
        return report
    try:
        loaded_scorecard = load_scorecard(rules_dir)
    except RuleFileError as exc:
        report.problems += [str(p) for p in exc.problems]
        return report
    model = sentiment
    for path in paths:
        try:
            loaded, spec = load_scorecard_test_file(path, loaded_scorecard.scorecard)
        except RuleFileError as exc:
            report.problems += [str(p) for p in exc.problems]
            continue
        for index, case in enumerate(spec.scorecard_tests):
            if model is None and any(rows.has_text() for rows in case.accounts.values()):
                model = VaderModel()  # its lexicon loads only when a case has a text to score
            outcomes = score_case(case, loaded_scorecard, case.as_of or spec.as_of, model)
            report.results.append(CaseResult(str(path), case.name, tuple(
                _at(loaded, ["scorecard_tests", index, *loc], message)
                for loc, message in _compare(case, outcomes))))
    return report


def load_scorecard_test_file(path: Path, scorecard: Scorecard) -> tuple[LoadedFile, ScorecardTestFile]:
    """Read and validate one scorecard test file: its shape (pydantic) and what it names (accounts, groups and
    measures of the scorecard), every problem with file, line and field."""
    loaded = read_yaml(path)
    spec = validate(loaded, ScorecardTestFile)
    raise_problems(loaded, _cross_check(spec, scorecard))
    return loaded, spec


def _cross_check(spec: ScorecardTestFile, scorecard: Scorecard) -> list[tuple[Loc, str]]:
    groups = ", ".join(scorecard.groups)
    measures = {key for group in scorecard.groups.values() for key in group.measures}
    segments = {segment.name for segment in scorecard.segments}
    names = [case.name for case in spec.scorecard_tests]
    problems: list[tuple[Loc, str]] = []
    for index, case in enumerate(spec.scorecard_tests):
        at: Loc = ["scorecard_tests", index]
        if names.count(case.name) > 1:
            problems.append(([*at, "name"], f"two cases are named {case.name!r}: failures would be ambiguous"))
        for account, expected in case.expect.items():
            where: Loc = [*at, "expect", account]
            if account not in case.accounts:
                problems.append((where, f"no account {account!r} in this case's accounts "
                                        f"({', '.join(case.accounts)})"))
            problems += [([*where, "groups", name], f"no group {name!r} in scorecard.yaml (groups: {groups})")
                         for name in expected.groups if name not in scorecard.groups]
            problems += [([*where, "measures", key], f"no measure {key!r} in scorecard.yaml's groups "
                                                     f"(measures: {', '.join(sorted(measures))})")
                         for key in expected.measures if key not in measures]
            if expected.segment is not None and expected.segment not in segments:
                problems.append(([*where, "segment"], f"no segment {expected.segment!r} in scorecard.yaml "
                                                      f"(segments: {', '.join(sorted(segments)) or 'none'})"))
    return problems


@dataclass(frozen=True)
class Outcome:
    """What the engine stored for one account, and the group scores worked out from it."""

    row: Mapping[str, Any]
    measures: Mapping[str, float | None]  # raw values by measure key
    groups: Mapping[str, float | None]

    def summary(self) -> str:
        return f"score {_show(self.row['score'])}, {self.row['band']}: {self.row['reason']}"


def score_case(case: Case, loaded: LoadedScorecard, as_of: datetime, sentiment: SentimentModel | None
               ) -> dict[str, Outcome]:
    """Store the case's rows in a fresh in-memory store, give texts their sentiment, score every account as of
    `as_of` with the real engine, and read back what it stored."""
    with Store(":memory:") as store:
        with store.transaction():
            for account, rows in case.accounts.items():
                _store_rows(store, account, rows, as_of)
        if sentiment is not None:
            score_pending_texts(store, sentiment, parallel=Parallelism(workers=0))
        score_accounts(store, loaded, as_of, processes=1)
        stored = store.query("SELECT * FROM scores ORDER BY account_id")
    scorecard = loaded.scorecard
    segments = {segment.name: segment for segment in scorecard.segments}
    outcomes = {}
    for row in stored:
        account = str(row["account_id"])
        values = json.loads(row["measures"] or "{}")
        raw = {key: item.get("raw") for key, item in values.items()}
        card = scorecard.for_segment(segments.get(row["segment"]))
        by_measure = {f"{g}.{key}": {account: value} if (value := raw.get(key)) is not None else {}
                      for g, group in card.groups.items() for key in group.measures}
        _, _, _, groups = score_account(account, by_measure, card)
        outcomes[account] = Outcome(row, raw, groups)
    return outcomes


def _store_rows(store: Store, account: str, rows: AccountRows, as_of: datetime) -> None:
    """The rows as `worker.sync` stores them (see `worker/sync/`): one account, its activity, usage and deals."""
    store.upsert("accounts", [{"id": account, "name": rows.name or account, "type": rows.type,
                               "industry": rows.industry, "contracted_seats": rows.contracted_seats,
                               "is_deleted": 0}], ("id",))
    activities = list(_activities(account, rows, as_of))
    for number, activity in enumerate(activities, start=1):
        activity["source_id"] = f"{account}:{activity['kind']}:{number}"
    store.upsert("activities", activities, ("source", "source_id"))
    usage = {day: item for item in rows.usage for day in item.days_ago()}  # a later row replaces an earlier one
    store.upsert("usage_daily", [{
        "account_id": account, "day": (as_of - timedelta(days=day)).date().isoformat(),
        "active_users": item.active_users, "events": item.events, "features_used": json.dumps(item.features),
        "seats": item.seats} for day, item in sorted(usage.items())], ("account_id", "day"))
    store.upsert("opportunities", [{
        "id": f"{account}:opportunity:{number}", "account_id": account, "name": f"{account} {o.type}",
        "type": o.type, "stage": o.stage, "amount": o.amount,
        "close_date": o.close_date(as_of),
        "is_closed": int(o.closed), "is_won": int(o.won), "is_deleted": 0}
        for number, o in enumerate(rows.opportunities, start=1)], ("id",))


def _activities(account: str, rows: AccountRows, as_of: datetime) -> Iterator[dict[str, Any]]:
    def row(kind: str, ago: timedelta, direction: str, said: _Said | None = None, **extra: Any) -> dict[str, Any]:
        return {"source": "test", "source_id": "", "kind": kind, "account_id": account,
                "occurred_at": iso(as_of - ago), "direction": direction,
                "text": said.text if said else None, "sentiment": said.sentiment if said else None,
                "status": None, "priority": None, "closed_at": None, "is_deleted": 0} | extra

    for meeting in rows.meetings:
        yield row("meeting", meeting.ago, "both")
    for call in rows.calls:
        yield row("call", call.ago, "both")
    for email in rows.emails:
        yield row("email", email.ago, email.direction, email)
        if email.replied_after is not None:
            yield row("email", email.ago - email.replied_after, "out")
    for ticket in rows.tickets:
        closed = ticket.closed_after
        yield row("ticket", ticket.ago, "in", ticket, priority=ticket.priority,
                  status=ticket.status or ("solved" if closed is not None else "open"),
                  closed_at=iso(as_of - ticket.ago + closed) if closed is not None else None)
    for comment in rows.ticket_comments:
        yield row("ticket_comment", comment.ago, comment.direction, comment)


# --- comparing ----------------------------------------------------------------------------------------------

def _compare(case: Case, outcomes: Mapping[str, Outcome]) -> list[tuple[Loc, str]]:
    failures: list[tuple[Loc, str]] = []
    for account, expected in case.expect.items():
        got = outcomes.get(account)
        if got is None:
            failures.append((["expect", account], f"{case.name}: {account}: was not scored"))
            continue
        failures += [(["expect", account, *loc], f"{case.name}: {account}: {message}")
                     for loc, message in _compare_account(expected, got)]
    return failures


def _compare_account(expected: Expected, got: Outcome) -> list[tuple[Loc, str]]:
    """Each expectation that does not hold: what, expected, got, and the account's score and reason for context
    (the reason alone, when the reason was what was expected)."""
    row, given = got.row, expected.model_fields_set
    found: list[tuple[Loc, str, str, str, str]] = []  # loc, what, expected, got, context
    if expected.band is not None and row["band"] != expected.band:
        found.append((["band"], "band", expected.band, str(row["band"]), got.summary()))
    for name in ("score", "coverage", "churn_risk", "expansion_readiness"):
        want = getattr(expected, name)
        if name in given and not _matches(want, row[name]):
            found.append(([name], name.replace("_", " "), _show(want), _show(row[name]), got.summary()))
    if expected.confidence is not None and not _same_confidence(expected.confidence, row["confidence"]):
        found.append((["confidence"], "confidence", repr(expected.confidence), repr(row["confidence"]),
                      f"coverage {_show(row['coverage'])}"))
    if "segment" in given and row["segment"] != expected.segment:
        found.append((["segment"], "segment", _show(expected.segment), _show(row["segment"]), got.summary()))
    for name, want in expected.groups.items():
        if not _matches(want, got.groups.get(name)):
            found.append((["groups", name], f"group {name}", _show(want), _show(got.groups.get(name)),
                          got.summary()))
    for key, want in expected.measures.items():
        if not _matches(want, got.measures.get(key)):
            found.append((["measures", key], f"measure {key} (raw value)", _show(want),
                          _show(got.measures.get(key)), got.summary()))
    for index, words in enumerate(expected.reason_contains):
        if words not in (row["reason"] or ""):
            found.append((["reason_contains", index], "reason", f"the words {words!r}", repr(row["reason"]),
                          f"score {_show(row['score'])}, {row['band']}"))
    return [(loc, f"{what}: expected {want}; got {actual} ({context})") for loc, what, want, actual, context in found]


def _matches(want: Number, actual: float | None) -> bool:
    if want is None or actual is None:
        return want is None and actual is None
    if isinstance(want, Bounds):
        return (want.min is None or actual >= want.min) and (want.max is None or actual <= want.max)
    return abs(actual - want) <= TOLERANCE + 1e-9


def _same_confidence(want: str, actual: str | None) -> bool:
    """`Low` matches "Low, no activity data"; a whole text must match exactly."""
    return actual is not None and (actual == want or actual.split(",")[0] == want)


def _show(value: Number | str) -> str:
    if value is None:
        return "no value"
    if isinstance(value, Bounds):
        if value.min is not None and value.max is not None:
            return f"between {value.min:g} and {value.max:g}"
        return f"at least {value.min:g}" if value.min is not None else f"at most {value.max:g}"
    if isinstance(value, str):
        return value
    return f"{round(value, 4):g}"


def _at(loaded: LoadedFile, loc: Loc, message: str) -> str:
    return str(Problem(str(loaded.path), loaded.line_of(loc), "", message))
