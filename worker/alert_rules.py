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
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from simpleeval import EvalWithCompoundTypes, InvalidExpression

from worker.config import Duration
from worker.rulefile import LoadedFile, Problem, RuleFileError, read_yaml, validate

# The names a condition may use, with a sample value of the right type for checking expressions.
SAMPLE_CONTEXT: dict[str, Any] = {
    "account_id": "001000000000001AAA", "score": 35.0, "band": "red", "computed_score": 35.0,
    "previous_score": 62.0, "trend": "↓ -27 (30d)", "reason": "No two-way touch in 41 days",
    "trend_delta": -27.0, "coverage": 0.9, "churn_risk": 71.0, "expansion_readiness": 12.0,
    "days_silent": 41.0, "overridden": False, "segment": "", "account_type": "Customer - Direct",
    "owner": "Dana Whitfield", "owner_email": "dana@example.com", "account_name": "Acme Labs",
    "measures": {"days_since_two_way_touch": 41.0},
}
FUNCTIONS = {"abs": abs, "min": min, "max": max, "round": round}


def slack_escape(value: object) -> str:
    """Slack's three control characters, escaped in every text that comes from data."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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
    except (TypeError, KeyError, ZeroDivisionError) as exc:
        raise ValueError(f"cannot be evaluated: {exc}") from None
    return expression


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    to: Literal["owner", "channel", "owner_and_channel"] = "owner"
    channel: str | None = Field(default=None, description="for to: channel / owner_and_channel")

    @model_validator(mode="after")
    def _channel_given(self) -> Route:
        if self.to != "owner" and not self.channel:
            raise ValueError(f"route to {self.to!r} needs a channel")
        return self


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
    message: str

    @field_validator("when", "resolve")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        return None if value is None else _check_expression(value)

    @field_validator("message")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            template_environment().from_string(value).render(**message_sample())
        except jinja2.TemplateError as exc:
            raise ValueError(f"template does not render against a sample account: {exc}") from None
        return value

    @model_validator(mode="after")
    def _hysteresis(self) -> AlertRule:
        if self.resolve is not None and bool(evaluate(self.when, SAMPLE_CONTEXT)) \
                and bool(evaluate(self.resolve, SAMPLE_CONTEXT)):
            raise ValueError(f"resolve ({self.resolve}) holds whenever when ({self.when}) does on the "
                                 f"sample account: the alert would flap (inverted hysteresis?)")
        return self

    @property
    def meaning_hash(self) -> str:
        """What the rule means (not how it speaks): a change here starts every account afresh."""
        meaning = {"when": self.when, "resolve": self.resolve, "for": self.for_cycles}
        return hashlib.sha256(json.dumps(meaning, sort_keys=True).encode()).hexdigest()[:12]


class AlertRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Literal[1] = 1
    rules: list[AlertRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> AlertRules:
        names = [r.name for r in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique: {', '.join(duplicates)}")
        return self


def message_sample() -> dict[str, Any]:
    return {**SAMPLE_CONTEXT, "rule": "sample", "url": "https://example.my.salesforce.com/001000000000001AAA"}


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
    return LoadedRules(validate(loaded, AlertRules), loaded)
