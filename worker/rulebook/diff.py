"""`healthbeat rules diff`: what changed between two rule directories, in words an ops reviewer can check.

The validated models are compared, not the text, so moved keys, comments and quoting make no difference,
and a defaulted value reads the same as a written one. Each alert rule change says whether the rule's
alerts start fresh (its meaning — `when`, `resolve`, `for` — changed, so `evaluate_alerts` records the
accounts that already match without a nudge) or keep their state (wording, route, cooldown). The churn model
(`churn_model.yaml`, optional) is compared too: added or removed (churn risk learned, or back to the
scorecard's rule), refitted (its training and held-out figures), and each feature whose weight or
standardisation moved.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from worker.alerting.rules import AlertRule, AlertRules, LoadedRules, load_alert_rules
from worker.rulefile import Problem, RuleFileError
from worker.scoring.churn_model import ChurnModel, Feature, LoadedChurnModel, load_churn_model
from worker.scoring.scorecard import LoadedScorecard, Scorecard, duration_text, load_scorecard


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()
MEANING = ("when", "resolve", "for_cycles")  # the fields `AlertRule.meaning_hash` covers
Path_ = tuple[str, ...]


def diff_rules(old_dir: Path, new_dir: Path) -> list[str]:
    """Every change from `old_dir` to `new_dir`, one sentence each; empty when they mean the same.

    Raises `RuleFileError` with the problems of both directories if either does not load."""
    problems: list[Problem] = []
    loaded = []
    models: list[LoadedChurnModel | None] = []
    for rules_dir in (old_dir, new_dir):
        try:
            card, alerts = load_rule_dir(rules_dir)
            loaded.append((card, alerts))
            models.append(load_churn_model(rules_dir, card.scorecard))
        except RuleFileError as exc:
            problems += exc.problems
    if problems:
        raise RuleFileError(problems)
    (old_card, old_alerts), (new_card, new_alerts) = loaded
    old_model, new_model = (m.model if m else None for m in models)
    return [*diff_scorecards(old_card.scorecard, new_card.scorecard),
            *diff_alert_rules(old_alerts.rules, new_alerts.rules),
            *diff_churn_models(old_model, new_model)]


def load_rule_dir(rules_dir: Path) -> tuple[LoadedScorecard, LoadedRules]:
    """Both rule files of a directory, or a `RuleFileError` listing every problem in either."""
    problems: list[Problem] = []
    scorecard = alerts = None
    try:
        scorecard = load_scorecard(rules_dir)
    except RuleFileError as exc:
        problems += exc.problems
    try:
        alerts = load_alert_rules(rules_dir)
    except RuleFileError as exc:
        problems += exc.problems
    if scorecard is None or alerts is None:
        raise RuleFileError(problems)
    return scorecard, alerts


# -- scorecard --------------------------------------------------------------------------------------------

def diff_scorecards(old: Scorecard, new: Scorecard) -> list[str]:
    shared = _shared_measure_keys(old) | _shared_measure_keys(new)
    return [_scorecard_sentence(path, a, b, shared) for path, a, b in _walk((), old.model_dump(), new.model_dump())]


def _walk(path: Path_, old: Any, new: Any) -> Iterator[tuple[Path_, Any, Any]]:
    """(path, old, new) for each differing leaf; a key on one side only is yielded whole, ABSENT on the other."""
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            yield from _walk((*path, str(key)), old.get(key, ABSENT), new.get(key, ABSENT))
        return
    yield path, old, new


def _shared_measure_keys(scorecard: Scorecard) -> set[str]:
    """Measure keys used in more than one group: those need their group named to be unambiguous."""
    keys = [key for group in scorecard.groups.values() for key in group.measures]
    return {key for key in keys if keys.count(key) > 1}


def _scorecard_sentence(path: Path_, old: Any, new: Any, shared: set[str]) -> str:
    change = f"{_show(old)} → {_show(new)}"
    match path:
        case ("bands", band):
            return f"band {band} threshold {change}"
        case ("missing",):
            return f"missing-data policy {change}"
        case ("features",):
            return "features: " + _list_change(old, new)
        case ("trend" | "confidence" as part, name):
            return f"{part} {name} {change}"
        case ("groups", group):
            return _added_or_removed(f"group {group}", old, new)
        case ("groups", group, "weight"):
            return f"groups.{group}.weight {change}"
        case ("groups", group, "measures", key):
            label = f"measure {group}.{key}" if key in shared else f"measure {key}"
            return _added_or_removed(label, old, new, place=f"group {group}")
        case ("groups", group, "measures", key, name):
            label = f"measure {group}.{key}" if key in shared else f"measure {key}"
            return f"{label}: {_field(name)} {change}"
        case ("derived", derived):
            return _added_or_removed(f"derived score {derived}", old, new)
        case ("derived", derived, "description"):
            return f"derived score {derived}: description changed"
        case ("derived", derived, "measures", key):
            return _added_or_removed(f"{derived} measure {key}", old, new)
        case ("derived", derived, "measures", key, name):
            return f"{derived} measure {key}: {_field(name)} {change}"
    return f"{'.'.join(path)} {change}"


def _field(name: str) -> str:
    return {"measure": "library measure", "missing": "missing-data policy", "half_life": "half-life"}.get(name, name)


def _added_or_removed(label: str, old: Any, new: Any, *, place: str = "") -> str:
    where = f" {'to' if old is ABSENT else 'from'} {place}" if place else ""
    if old is ABSENT:
        weight = new.get("weight") if isinstance(new, dict) else None
        return f"{label} added{where}" + (f" (weight {_show(weight)})" if weight is not None else "")
    return f"{label} removed{where}"


def _list_change(old: list[Any], new: list[Any]) -> str:
    added = [x for x in new if x not in old]
    removed = [x for x in old if x not in new]
    parts = [f"added {', '.join(map(str, added))}"] if added else []
    parts += [f"removed {', '.join(map(str, removed))}"] if removed else []
    return "; ".join(parts) or f"reordered {_show(old)} → {_show(new)}"


def _show(value: Any) -> str:
    """A value as the YAML would say it: 90d, 35 (not 35.0), [[0, 100], [14, 85]], "(default)"."""
    if value is ABSENT:
        return "(none)"
    if value is None:
        return "(default)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, timedelta):
        return duration_text(value)
    if isinstance(value, float | int):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


# -- alert rules ------------------------------------------------------------------------------------------

def diff_alert_rules(old: AlertRules, new: AlertRules) -> list[str]:
    before = {rule.name: rule for rule in old.rules}
    after = {rule.name: rule for rule in new.rules}
    lines: list[str] = []
    for name in [*before, *(n for n in after if n not in before)]:
        if name not in after:
            lines.append(f"alert {name} removed")
        elif name not in before:
            lines.append(f"alert {name} added: when `{after[name].when}` (accounts that already match "
                         f"are recorded without a nudge)")
        else:
            lines += _rule_changes(before[name], after[name])
    return lines


def _rule_changes(old: AlertRule, new: AlertRule) -> list[str]:
    fresh = old.meaning_hash != new.meaning_hash
    lines = []
    for name in AlertRule.model_fields:
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        if name in ("when", "resolve"):
            text = f"{name} changed from `{_condition(a)}` to `{_condition(b)}`"
        elif name in ("message", "description"):
            text = f"{name} changed"
        elif name == "for_cycles":
            text = f"for {a} → {b} cycles"
        elif name == "notify_on_resolve":
            text = f"notify on resolve {_show(a)} → {_show(b)}"
        elif name == "route":
            text = f"route {_route(a)} → {_route(b)}"
        else:
            text = f"{name} {_show(a)} → {_show(b)}"
        suffix = {(True, True): " (its alerts start fresh)", (False, False): " (state kept)"}.get(
            (name in MEANING, fresh), "")
        lines.append(f"alert {new.name}: {text}{suffix}")
    return lines


def _condition(expression: str | None) -> str:
    return "the when condition no longer holds" if expression is None else expression


def _route(route: Any) -> str:
    return str(route.to) if route.channel is None else f"{route.to} {route.channel}"


# -- churn model ------------------------------------------------------------------------------------------

def diff_churn_models(old: ChurnModel | None, new: ChurnModel | None) -> list[str]:
    """The churn model added, removed, or refitted: its figures, and each feature that moved."""
    if old is None and new is None:
        return []
    if new is None:
        return ["churn model removed: churn risk goes back to the scorecard's derived.churn_risk rule"]
    if old is None:
        return [f"churn model added: churn risk becomes the learned probability of churn within {new.horizon_days} "
                f"days ({_model_facts(new)})"]
    lines = []
    if old.horizon != new.horizon:
        lines.append(f"churn model horizon {old.horizon_days}d → {new.horizon_days}d")
    if (old.fitted_at, old.training) != (new.fitted_at, new.training):
        lines.append(f"churn model refitted: {_model_facts(old)} → {_model_facts(new)}")
    if old.l2 != new.l2:
        lines.append(f"churn model l2 {_show(old.l2)} → {_show(new.l2)}")
    if old.intercept != new.intercept:
        lines.append(f"churn model intercept {_show(old.intercept)} → {_show(new.intercept)}")
    before = {_feature_key(f): f for f in old.features}
    after = {_feature_key(f): f for f in new.features}
    for key in [*before, *(k for k in after if k not in before)]:
        a, b = before.get(key), after.get(key)
        if b is None:
            lines.append(f"churn model feature {key} removed")
        elif a is None:
            lines.append(f"churn model feature {key} added (weight {_show(b.weight)})")
        elif a != b:
            moved = [f"{name} {_show(getattr(a, name))} → {_show(getattr(b, name))}"
                     for name in ("weight", "mean", "scale", "uses") if getattr(a, name) != getattr(b, name)]
            lines.append(f"churn model feature {key}: " + ", ".join(moved))
    return lines


def _feature_key(feature: Feature) -> str:
    return feature.label


def _model_facts(model: ChurnModel) -> str:
    held = model.validation.auc if model.validation else None
    return (f"fitted {model.fitted_at.date()} on {model.training.from_} to {model.training.to}, "
            f"{model.training.lost_renewals} lost and {model.training.won_renewals} won renewals, held-out AUC "
            f"{'-' if held is None else f'{held:.2f}'}")
