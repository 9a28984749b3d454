"""Alert rules (`rules/alerts.yaml`): conditions in a small safe expression language, checked on load.

Conditions are simpleeval expressions over a fixed set of names (never Python `eval`); messages are Jinja2
templates in a sandbox with strict undefined. Both are checked when the file loads, against a sample
account, so a typo in a name is an error with file, line and field rather than a silent never-firing rule.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from simpleeval import EvalWithCompoundTypes, InvalidExpression

from connectors.slack.client import escape_text
from worker.config import Duration
from worker.rulefile import LoadedFile, Problem, RuleFileError, raise_problems, read_yaml, validate

# The names a condition may use, with a sample value of the right type for checking expressions.
SAMPLE_CONTEXT: dict[str, Any] = {
    "account_id": "001000000000001AAA", "score": 35.0, "band": "red", "computed_score": 35.0,
    "previous_score": 62.0, "trend": "↓ -27 (30d)", "reason": "No two-way touch in 41 days",
    "trend_delta": -27.0, "coverage": 0.9, "churn_risk": 71.0, "expansion_readiness": 12.0,
    "days_silent": 41.0, "days_to_renewal": 40.0, "overridden": False, "segment": "",
    "account_type": "Customer - Direct",
    "owner": "Dana Whitfield", "owner_email": "dana@example.com", "account_name": "Acme Labs",
    "measures": {"days_since_two_way_touch": 41.0},
}
FUNCTIONS = {"abs": abs, "min": min, "max": max, "round": round}


def slack_escape(value: object) -> str:
    """Slack's three control characters, escaped in every text that comes from data."""
    return escape_text(str(value))


def template_environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, finalize=slack_escape, autoescape=False,
                                keep_trailing_newline=False)


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    evaluator = EvalWithCompoundTypes(names=dict(context), functions=FUNCTIONS)
    return evaluator.eval(expression)


def _check_expression(expression: str) -> str:
    try:
        ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a valid expression: {exc.msg} at column {exc.offset}") from None
    try:
        evaluate(expression, SAMPLE_CONTEXT)
    except InvalidExpression as exc:
        raise ValueError(f"{exc} (names you can use: {', '.join(sorted(SAMPLE_CONTEXT))})") from None
    except Exception as exc:  # any failure on the sample is the expression's: say so, never crash the load
        raise ValueError(f"cannot be evaluated on a sample account: {type(exc).__name__}: {exc}") from None
    return expression


def sample_contexts() -> list[dict[str, Any]]:
    """The sample account, then variants that sweep each number over its range (and a first score with no
    history), so checks see the values a rule will meet, not one lucky account."""
    samples = [dict(SAMPLE_CONTEXT), {**SAMPLE_CONTEXT, "previous_score": None, "trend_delta": None,
                                      "days_silent": None, "days_to_renewal": None}]
    ranges = {"score": range(0, 101, 5), "computed_score": range(0, 101, 5), "churn_risk": range(0, 101, 5),
              "expansion_readiness": range(0, 101, 5), "coverage": [i / 20 for i in range(21)],
              "trend_delta": range(-60, 61, 5), "days_silent": range(0, 121, 5),
              "days_to_renewal": range(0, 366, 15),
              "previous_score": range(0, 101, 5)}
    bands = {"red": range(0, 50), "yellow": range(50, 75), "green": range(75, 101)}
    for name, values in ranges.items():
        for value in values:
            sample = {**SAMPLE_CONTEXT, name: value}
            if name == "score":
                sample["band"] = next(b for b, r in bands.items() if int(value) in r)
            samples.append(sample)
    samples.append({**SAMPLE_CONTEXT, "band": "unknown", "coverage": 0.1})  # too little data to call it
    return samples


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    to: Literal["owner", "channel", "owner_and_channel"] = "owner"
    channel: str | None = Field(default=None, description="for to: channel / owner_and_channel")

    @model_validator(mode="after")
    def _channel_given(self) -> Route:
        if self.to != "owner" and not self.channel:
            raise ValueError(f"route to {self.to!r} needs a channel")
        return self


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class DeliveryWindow(BaseModel):
    """When a nudge may reach a person, in the account owner's time zone (Salesforce User.TimeZoneSidKey)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hours: str = Field(default="09:00-18:00", pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$")
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS[:5]), min_length=1)

    @field_validator("hours")
    @classmethod
    def _real_hours(cls, value: str) -> str:
        start, end = value.split("-")
        for part in (start, end):
            hour, minute = int(part[:2]), int(part[3:])
            if hour > 23 or minute > 59:
                raise ValueError(f"{part} is not a time of day")
        if start >= end:
            raise ValueError(f"the window must end after it starts ({value})")
        return value

    def opens(self) -> tuple[time, time]:
        start, end = self.hours.split("-")
        return time.fromisoformat(start), time.fromisoformat(end)

    def next_open(self, moment: datetime, timezone: str | None) -> datetime | None:
        """None when `moment` is inside the window, else the next time it opens (UTC)."""
        zone = _zone(timezone)
        local = moment.astimezone(zone)
        start, end = self.opens()
        for offset in range(8):
            day = (local + timedelta(days=offset)).date()
            if WEEKDAYS[day.weekday()] not in self.days:
                continue
            opening = datetime.combine(day, start, zone)
            closing = datetime.combine(day, end, zone)
            if offset == 0 and opening <= local < closing:
                return None
            if local < opening:
                return opening.astimezone(UTC)
        return None  # unreachable with at least one day listed


def _zone(name: str | None) -> tzinfo:
    try:
        return ZoneInfo(name) if name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


class AlertRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    description: str = ""
    when: str
    resolve: str | None = Field(default=None, description="default: when the condition no longer holds")
    for_cycles: int = Field(default=1, ge=1, alias="for")
    cooldown: Duration = timedelta(days=7)
    notify_on_resolve: bool = False
    route: Route = Route()
    deliver: DeliveryWindow | None = Field(default=None, description="hold nudges to this window")
    message: str

    @field_validator("when", "resolve")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        return None if value is None else _check_expression(value)

    @field_validator("message")
    @classmethod
    def _template(cls, value: str) -> str:
        for sample in message_samples():
            try:
                template_environment().from_string(value).render(**sample)
            except Exception as exc:  # a template that cannot render here would fail on real data too
                missing = [k for k, v in sample.items() if v is None]
                note = f" (with {', '.join(missing)} empty, as on a first score)" if missing else ""
                raise ValueError(f"template does not render against a sample account{note}: "
                                 f"{type(exc).__name__}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _hysteresis(self) -> AlertRule:
        if self.resolve is None:
            return self
        for sample in sample_contexts():
            try:
                flaps = bool(evaluate(self.when, sample)) and bool(evaluate(self.resolve, sample))
            except Exception:  # noqa: S112 - a sample the expressions cannot judge proves nothing
                continue
            if flaps:
                shown = ", ".join(f"{k}={sample[k]}" for k in ("score", "band", "churn_risk", "days_silent"))
                raise ValueError(f"resolve ({self.resolve}) holds while when ({self.when}) does, e.g. at "
                                 f"{shown}: the alert would fire and resolve at once (inverted hysteresis?)")
        return self

    @property
    def meaning_hash(self) -> str:
        """What the rule means (not how it speaks): a change here starts every account afresh."""
        meaning = {"when": self.when, "resolve": self.resolve, "for": self.for_cycles}
        return hashlib.sha256(json.dumps(meaning, sort_keys=True).encode()).hexdigest()[:12]


class Digest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    min: int = Field(default=3, ge=2, description="an owner with this many nudges due gets one message")


class AlertRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Literal[1] = 1
    digest: Digest = Digest()
    rules: list[AlertRule] = Field(default_factory=list)



def semantic_problems(rules: AlertRules) -> list[tuple[tuple[str | int, ...], str]]:
    problems: list[tuple[tuple[str | int, ...], str]] = []
    names = [rule.name for rule in rules.rules]
    for index, name in enumerate(names):
        if name in names[:index]:
            problems.append((("rules", index, "name"), f"rule {name!r} is defined twice (names must be unique)"))
    return problems


def message_samples() -> list[dict[str, Any]]:
    extra = {"rule": "sample", "url": "https://example.my.salesforce.com/001000000000001AAA"}
    return [{**sample, **extra} for sample in sample_contexts()[:2]]


class LoadedRules:
    def __init__(self, rules: AlertRules, source: LoadedFile) -> None:
        self.rules = rules
        self.path = source.path
        self.digest = source.digest


def load_alert_rules(rules_dir: Path) -> LoadedRules:
    loaded = read_yaml(rules_dir / "alerts.yaml")
    if isinstance(loaded.data, dict) and not isinstance(loaded.data.get("rules", []), list):
        raise RuleFileError([Problem(str(loaded.path), loaded.line_of(["rules"]), "rules",
                                     "expected a list of rules")])
    rules = validate(loaded, AlertRules)
    raise_problems(loaded, semantic_problems(rules))
    return LoadedRules(rules, loaded)
