"""`healthbeat rules preview`: what a changed rule directory would do to the accounts, on today's data.

Both rule sets score the same data at the same moment, so every difference shown is the rules' doing, not
activity that arrived since the last cycle. The work happens on an in-memory copy of the store (SQLite's
online backup), so scoring and evaluating there can never touch the live database or race the worker.

Beyond each account's score, band and churn risk, the preview shows which rules' `when` would newly match
or stop matching, and which nudges the next cycle would send under each rule set. The last matters most
to ops: moving a band threshold under an unchanged `turned_red` makes every account it moves into red a
crossing that is nudged, while a rule whose meaning changed starts fresh and records matches silently.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from worker.alerting.engine import account_contexts, step_rule
from worker.alerting.rules import AlertRule, LoadedRules, evaluate
from worker.rulebook.diff import load_rule_dir
from worker.scoring.churn_model import load_churn_model
from worker.scoring.engine import score_accounts
from worker.store import Store, iso

Pair = tuple[Any, Any]  # (live, new)
Contexts = dict[str, dict[str, Any]]
States = dict[tuple[str, str], dict[str, Any]]


@dataclass(frozen=True)
class AccountChange:
    """One account whose score, band, churn risk, matching rules or next nudges differ; pairs are (live, new)."""

    account_id: str
    name: str
    score: tuple[float | None, float | None]
    band: tuple[str | None, str | None]
    churn_risk: tuple[float | None, float | None]
    newly_matching: tuple[str, ...]
    no_longer_matching: tuple[str, ...]
    nudges_gained: tuple[str, ...]  # rules that would nudge it next cycle under the new rules only
    nudges_lost: tuple[str, ...]  # ... under the live rules only

    @property
    def score_delta(self) -> float:
        live, new = self.score
        return 0.0 if live is None or new is None else round(new - live, 2)


@dataclass(frozen=True)
class RuleOutlook:
    """One alert rule across all accounts: how many match and how many the next cycle would nudge."""

    rule: str
    status: str  # kept | starts fresh | added | removed
    matching: tuple[int, int]
    newly_matching: int
    no_longer_matching: int
    nudges: tuple[int, int]


@dataclass(frozen=True)
class Preview:
    as_of: datetime
    accounts: int
    changes: tuple[AccountChange, ...]
    band_moves: tuple[tuple[str, str, int], ...]  # (from, to, accounts), the biggest movements first
    rules: tuple[RuleOutlook, ...]
    errors: tuple[str, ...]


def preview_rules(store: Store, live_rules_dir: Path, new_rules_dir: Path, as_of: datetime) -> Preview:
    """Score and evaluate with both rule directories on a copy of `store`; raises `RuleFileError` if either
    directory does not load (with every problem of both)."""
    live_card, live_alerts = load_rule_dir(live_rules_dir)
    new_card, new_alerts = load_rule_dir(new_rules_dir)
    live_model = load_churn_model(live_rules_dir, live_card.scorecard)
    new_model = load_churn_model(new_rules_dir, new_card.scorecard)
    with snapshot(store) as copy:
        states: States = {(r["rule"], r["account_id"]): r for r in copy.query("SELECT * FROM alerts")}
        score_accounts(copy, live_card, as_of, churn_model=live_model)
        live = {c["account_id"]: c for c in account_contexts(copy)}
        score_accounts(copy, new_card, as_of, churn_model=new_model)
        new = {c["account_id"]: c for c in account_contexts(copy)}
    errors: list[str] = []
    live_match, live_nudge = _outlook(live_alerts, live, states, as_of, errors)
    new_match, new_nudge = _outlook(new_alerts, new, states, as_of, errors)
    changes = []
    for account_id in sorted(live.keys() | new.keys()):
        before, after = live.get(account_id, {}), new.get(account_id, {})
        change = AccountChange(
            account_id, str(after.get("account_name") or before.get("account_name") or account_id),
            (before.get("score"), after.get("score")), (before.get("band"), after.get("band")),
            (before.get("churn_risk"), after.get("churn_risk")),
            _sorted(new_match, live_match, account_id), _sorted(live_match, new_match, account_id),
            _sorted(new_nudge, live_nudge, account_id), _sorted(live_nudge, new_nudge, account_id))
        if _changed(change):
            changes.append(change)
    changes.sort(key=lambda c: (-abs(c.score_delta), c.name))
    moves = Counter((c.band[0] or "none", c.band[1] or "none") for c in changes if c.band[0] != c.band[1])
    return Preview(as_of, len(new), tuple(changes),
                   tuple((a, b, n) for (a, b), n in sorted(moves.items(), key=lambda m: (-m[1], m[0]))),
                   _rule_outlooks(live_alerts, new_alerts, live_match, new_match, live_nudge, new_nudge),
                   tuple(errors))


def snapshot(store: Store) -> Store:
    """A copy of the store (`Store.scratch_copy`): a consistent picture, and a place where scoring may write
    without touching the live database."""
    return store.scratch_copy()


def _outlook(rules: LoadedRules, contexts: Contexts, states: States, now: datetime, errors: list[str]
             ) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Per account: the rules whose `when` holds, and the rules that would nudge it on the next cycle
    (the worker's own transition, with its baseline for a rule that has no state under its meaning)."""
    matching: dict[str, set[str]] = {}
    nudging: dict[str, set[str]] = {}
    for rule in rules.rules.rules:
        for transition in step_rule(rule, contexts.values(), states, now):
            account_id = transition.account_id
            if transition.row is None:
                errors.append(f"{rule.name} on {account_id} ({rules.path}): {transition.error}")
                continue
            if bool(evaluate(rule.when, contexts[account_id])):
                matching.setdefault(account_id, set()).add(rule.name)
            if transition.owed in ("fire", "resolve"):
                nudging.setdefault(account_id, set()).add(rule.name)
    return matching, nudging


def _sorted(these: Mapping[str, set[str]], but_not: Mapping[str, set[str]], account_id: str) -> tuple[str, ...]:
    return tuple(sorted(these.get(account_id, set()) - but_not.get(account_id, set())))


def _changed(change: AccountChange) -> bool:
    return (change.score[0] != change.score[1] or change.band[0] != change.band[1]
            or change.churn_risk[0] != change.churn_risk[1] or bool(change.newly_matching)
            or bool(change.no_longer_matching) or bool(change.nudges_gained) or bool(change.nudges_lost))


def _rule_outlooks(live: LoadedRules, new: LoadedRules, live_match: Mapping[str, set[str]],
                   new_match: Mapping[str, set[str]], live_nudge: Mapping[str, set[str]],
                   new_nudge: Mapping[str, set[str]]) -> tuple[RuleOutlook, ...]:
    before = {r.name: r for r in live.rules.rules}
    after = {r.name: r for r in new.rules.rules}

    def count(per_account: Mapping[str, set[str]], name: str) -> int:
        return sum(1 for rules in per_account.values() if name in rules)

    def moved(into: Mapping[str, set[str]], out_of: Mapping[str, set[str]], name: str) -> int:
        return sum(1 for a, rules in into.items() if name in rules and name not in out_of.get(a, set()))

    outlooks = []
    for name in [*before, *(n for n in after if n not in before)]:
        outlooks.append(RuleOutlook(
            name, _status(before.get(name), after.get(name)),
            (count(live_match, name), count(new_match, name)), moved(new_match, live_match, name),
            moved(live_match, new_match, name), (count(live_nudge, name), count(new_nudge, name))))
    return tuple(outlooks)


def _status(live: AlertRule | None, new: AlertRule | None) -> str:
    if live is None:
        return "added"
    if new is None:
        return "removed"
    return "kept" if live.meaning_hash == new.meaning_hash else "starts fresh"


# -- output -----------------------------------------------------------------------------------------------

def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pair(pair: Pair, *, delta: bool = False) -> str:
    live, new = pair
    if live == new:
        return _number(live) if not isinstance(live, str) else live
    text = (f"{live or '-'} → {new or '-'}" if isinstance(live or new, str)
            else f"{_number(live)} → {_number(new)}")
    if delta and live is not None and new is not None:
        text += f" ({new - live:+.1f})"
    return text


def _alerts_cell(change: AccountChange) -> str:
    parts = [f"+{r}" for r in change.newly_matching] + [f"-{r}" for r in change.no_longer_matching]
    parts += [f"nudge {r}" for r in change.nudges_gained] + [f"no nudge {r}" for r in change.nudges_lost]
    return ", ".join(parts)


def summary_lines(preview: Preview) -> list[str]:
    """The preview in a few sentences: how many accounts change, band movements, each rule's outlook."""
    lines = [f"Preview as of {iso(preview.as_of)}: {preview.accounts} accounts scored, "
             f"{len(preview.changes)} would change."]
    moves = "; ".join(f"{a} → {b}: {n} account{'s' if n != 1 else ''}" for a, b, n in preview.band_moves)
    lines.append(f"Bands: {moves or 'no account changes band'}")
    moved = [c for c in preview.changes if c.score_delta]
    if moved:
        mean = sum(abs(c.score_delta) for c in moved) / len(moved)
        lines.append(f"Scores: {len(moved)} change, by {mean:.1f} points on average; the most: "
                     f"{moved[0].name} {moved[0].score_delta:+.1f}")
    else:
        lines.append("Scores: no score changes")
    for rule in preview.rules:
        lines.append(f"Alert {rule.rule} ({rule.status}): matching {rule.matching[0]} → {rule.matching[1]} "
                     f"(+{rule.newly_matching} -{rule.no_longer_matching}); nudges on the next cycle "
                     f"{rule.nudges[0]} → {rule.nudges[1]}")
    lines += [f"Error: {e}" for e in preview.errors[:10]]
    if len(preview.errors) > 10:
        lines.append(f"... and {len(preview.errors) - 10} more errors")
    return lines


def format_preview(preview: Preview, width: int = 140) -> str:
    """The summary, then a table of the accounts that would change, as plain text for the terminal."""
    table = Table(title="Accounts that would change (live → new)", title_justify="left")
    for column in ("Account", "Score", "Band", "Churn risk", "Alerts"):
        table.add_column(column, overflow="fold")
    for change in preview.changes:
        table.add_row(change.name, _pair(change.score, delta=True), _pair(change.band), _pair(change.churn_risk),
                      _alerts_cell(change))
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    console.print("\n".join(summary_lines(preview)), markup=False, highlight=False)
    if preview.changes:
        console.print(table)
    return buffer.getvalue().rstrip("\n")


def preview_as_dict(preview: Preview) -> dict[str, Any]:
    return {
        "as_of": iso(preview.as_of), "accounts_scored": preview.accounts,
        "band_moves": [{"from": a, "to": b, "accounts": n} for a, b, n in preview.band_moves],
        "rules": [{"rule": r.rule, "status": r.status, "matching": {"live": r.matching[0], "new": r.matching[1]},
                   "newly_matching": r.newly_matching, "no_longer_matching": r.no_longer_matching,
                   "nudges_next_cycle": {"live": r.nudges[0], "new": r.nudges[1]}} for r in preview.rules],
        "accounts": [{"account_id": c.account_id, "name": c.name,
                      "score": {"live": c.score[0], "new": c.score[1]},
                      "band": {"live": c.band[0], "new": c.band[1]},
                      "churn_risk": {"live": c.churn_risk[0], "new": c.churn_risk[1]},
                      "newly_matching": list(c.newly_matching), "no_longer_matching": list(c.no_longer_matching),
                      "nudges_gained": list(c.nudges_gained), "nudges_lost": list(c.nudges_lost)}
                     for c in preview.changes],
        "errors": list(preview.errors),
    }


def to_json(preview: Preview) -> str:
    return json.dumps(preview_as_dict(preview), indent=2, ensure_ascii=False)
