"""Evaluating alert rules against the scores: the state of each (rule, account) and the nudges it owes.

State per (rule, account): inactive → pending → firing → resolved, with an episode number that grows with
every firing. A nudge is an outbox row with a unique dedup key (rule, account, episode, kind), written in the
same transaction as the state change that owes it, so a crash can neither lose it nor owe it twice; the
sender (`worker.delivery.notify`) drains the outbox.

When a rule is new, or its meaning changed, the accounts that already match it are recorded as firing
without a nudge (a baseline): the rule speaks of crossings, and a fresh install must not send a storm.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from simpleeval import InvalidExpression

from worker.alerting.message import NudgeKey, nudge_payload, record_link, render_message
from worker.alerting.rules import AlertRule, LoadedRules, evaluate, slack_escape
from worker.alerting.silences import active_silences, silenced_by
from worker.store import Store, changes, iso, outbox, parse_iso

log = logging.getLogger(__name__)


@dataclass
class AlertReport:
    fired: int = 0
    resolved: int = 0
    baselined: int = 0
    pending: int = 0
    silenced: int = 0
    errors: list[str] = field(default_factory=list)
    baselines_waiting: list[str] = field(default_factory=list)  # rules whose baseline waits for a whole sync


def account_contexts(store: Store, accounts: Collection[str] | None = None) -> list[dict[str, Any]]:
    """The facts a condition or a message may use, one mapping per scored account (or per one of `accounts`)."""
    only = "" if accounts is None else "WHERE s.account_id IN (SELECT value FROM json_each(?))"
    rows = store.query(f"""
        SELECT s.account_id, s.score, s.band, s.computed_score, s.trend, s.trend_delta, s.reason,
               s.coverage, s.churn_risk, s.expansion_readiness, s.overridden, s.measures, s.segment,
               a.name AS account_name, a.type AS account_type, a.owner_id,
               u.name AS owner, u.email AS owner_email, u.timezone AS owner_timezone,
               (SELECT min(julianday(o.close_date) - julianday(date(s.scored_at))) FROM opportunities o
                WHERE o.account_id = s.account_id AND o.is_deleted = 0 AND o.is_closed = 0
                  AND o.close_date >= date(s.scored_at)) AS days_to_renewal
        FROM scores s JOIN accounts a ON a.id = s.account_id AND a.is_deleted = 0
        LEFT JOIN users u ON u.source = 'salesforce' AND u.source_id = a.owner_id
        {only} ORDER BY s.account_id""", () if accounts is None else (json.dumps(sorted(accounts)),))
    contexts = []
    for row in rows:
        measures = {k: v["raw"] for k, v in json.loads(row["measures"] or "{}").items()}
        delta = row["trend_delta"]
        contexts.append({
            **row, "measures": measures, "overridden": bool(row["overridden"]),
            "previous_score": None if delta is None else round(row["score"] - delta, 2),
            "days_silent": measures.get("days_since_two_way_touch"),
            "segment": row["segment"] or "", "owner": row["owner"] or "",
        })
    return contexts


def _holds(expression: str, context: Mapping[str, Any]) -> bool:
    return bool(evaluate(expression, context))


# What a condition can raise on real data (a None where a number was expected, a missing measure, ...).
EVALUATION_ERRORS = (InvalidExpression, TypeError, KeyError, IndexError, ValueError, ZeroDivisionError,
                     OverflowError, AttributeError)

States = Mapping[tuple[str, str], Mapping[str, Any]]


@dataclass(frozen=True)
class Transition:
    account_id: str
    row: dict[str, Any] | None
    owed: str | None
    error: str | None = None


def step_rule(rule: AlertRule, contexts: Iterable[Mapping[str, Any]], states: States, now: datetime, *,
              baseline: bool | None = None) -> Iterator[Transition]:
    """One rule over many accounts, pure: the worker, `rules test` and `rules preview` all judge with this.

    A rule with no state under its present meaning takes a baseline on this pass (see the module doc);
    a caller holding only some accounts' states says whether the rule has any (`baseline`)."""
    known = {k: v for k, v in states.items() if k[0] == rule.name and v["rule_hash"] == rule.meaning_hash}
    if baseline is None:
        baseline = not known
    for context in contexts:
        account_id = str(context["account_id"])
        key = (rule.name, account_id)
        try:
            row, owed = _step(rule, context, known.get(key), states.get(key), now, baseline)
        except EVALUATION_ERRORS as exc:
            yield Transition(account_id, None, None, f"{type(exc).__name__}: {exc}")
            continue
        yield Transition(account_id, row, owed)


def _has_state(store: Store, rule: AlertRule) -> bool:
    return store.scalar("SELECT 1 FROM alerts WHERE rule = ? AND rule_hash = ? LIMIT 1",
                        (rule.name, rule.meaning_hash)) is not None


def _accounts_in_motion(store: Store) -> set[str]:
    """Accounts whose state can move with unchanged scores: a rule holds them pending (cycles counted by
    `for`, a cooldown running out), or they have just entered firing or resolved, states left by another
    condition than the one that entered them (`resolve`, `when`), which is checked once more."""
    return {str(a) for (a,) in store.conn.execute(
        "SELECT DISTINCT account_id FROM alerts WHERE state = 'pending' "
        "OR (since = updated_at AND state IN ('firing', 'resolved'))")}


def evaluate_alerts(store: Store, loaded: LoadedRules, now: datetime, *, record_url: str,
                    take_baselines: bool = True) -> AlertReport:
    """Every rule over the accounts whose scores were rewritten since the last pass, and those in motion;
    every account for a rule taking its baseline. State, outbox and the evaluation marks change in one
    transaction. Stepping any other account would leave it where it is (its facts did not change).

    Without `take_baselines` (the cycle's sync missed a source), a rule that has not taken its baseline yet
    (a new install, a new or changed rule) waits: a baseline taken on scores without, say, the tickets would
    record a red account as not matching, and the next whole sync would nudge its owner that it "turned red"
    when it was red all along. A baseline reads every account whenever it runs, so waiting loses nothing."""
    report = AlertReport()
    due = changes.pending(store, changes.EVALUATE, now)
    baselines = {rule.name: not _has_state(store, rule) for rule in loaded.rules.rules}
    rules = [rule for rule in loaded.rules.rules if take_baselines or not baselines[rule.name]]
    report.baselines_waiting = [rule.name for rule in loaded.rules.rules if rule not in rules]
    if report.baselines_waiting:
        log.warning("alert rules %s take their baseline at the next cycle whose sync reads every source",
                    ", ".join(report.baselines_waiting))
    accounts = None if any(baselines[rule.name] for rule in rules) else due.accounts | _accounts_in_motion(store)
    contexts = account_contexts(store, accounts)
    states = {(r["rule"], r["account_id"]): r for r in store.query(
        "SELECT * FROM alerts" + ("" if accounts is None else " WHERE account_id IN (SELECT value FROM json_each(?))"),
        () if accounts is None else (json.dumps(sorted(accounts)),))}
    state_rows: list[dict[str, Any]] = []
    outbox_rows: list[dict[str, Any]] = []
    by_account = {c["account_id"]: c for c in contexts}
    silences = active_silences(store, now)
    for rule in rules:
        for transition in step_rule(rule, contexts, states, now, baseline=baselines[rule.name]):
            account_id, row, owed = transition.account_id, transition.row, transition.owed
            if row is None:
                report.errors.append(f"{rule.name} on {account_id}: {transition.error}")
                continue
            context = by_account[account_id]
            url = record_link(record_url, account_id)
            state_rows.append(row)
            if row["state"] == "pending":
                report.pending += 1
            if owed == "baseline":
                report.baselined += 1
            elif owed and silenced_by(silences, rule.name, context) is not None:
                report.silenced += 1
                log.info("alert %s on %s: silenced (silence %s), no nudge", rule.name, account_id,
                         silenced_by(silences, rule.name, context))
            elif owed:
                text = render_message(rule, context, url) if owed == "fire" else \
                    f"{slack_escape(context['account_name'])} no longer matches {rule.name}: " \
                    f"health {context['score']} ({context['band']})."
                outbox_rows += nudges(rule, context, row["episode"], owed, text, url, now)
                if owed == "fire":
                    report.fired += 1
                else:
                    report.resolved += 1
    with store.transaction() as conn:
        store.upsert("alerts", state_rows, ("rule", "account_id"))
        outbox.owe(store, outbox_rows)
        changes.clear(conn, due)
    for error in report.errors[:10]:
        log.error("alert rule failed: %s", error)
    return report


def _step(rule: AlertRule, context: Mapping[str, Any], current: Mapping[str, Any] | None,
          previous: Mapping[str, Any] | None, now: datetime, baseline: bool
          ) -> tuple[dict[str, Any], str | None]:
    """The pure state transition for one (rule, account): the new row and what nudge, if any, it owes."""
    state = current["state"] if current else "inactive"
    pending = int(current["pending_cycles"]) if current else 0
    episode = int(previous["episode"]) if previous else 0  # episodes only grow, even across rule edits
    last = previous["last_notified_at"] if previous else None
    since = current["since"] if current else None
    owed: str | None = None
    matches = _holds(rule.when, context)
    if state == "firing":
        cleared = _holds(rule.resolve, context) if rule.resolve else not matches
        if cleared:
            # A resolve nudge only closes an episode that was announced (not a silent baseline one).
            announced = bool(last and since and last >= since)
            state, pending = "resolved", 0
            if rule.notify_on_resolve and announced:
                owed = "resolve"
    elif matches:
        pending += 1
        if baseline:
            state, owed, episode = "firing", "baseline", episode + 1
        elif pending >= rule.for_cycles and not _cooling(rule, last, now):
            state, owed, episode, last = "firing", "fire", episode + 1, iso(now)
        else:
            state = "pending"
    else:
        state, pending = ("resolved" if state == "resolved" else "inactive"), 0
    if current is None or state != current["state"]:
        since = iso(now)  # `since` is when the present state was entered
    return ({"rule": rule.name, "account_id": context["account_id"], "state": state, "since": since,
             "pending_cycles": pending, "episode": episode, "last_notified_at": last,
             "rule_hash": rule.meaning_hash, "updated_at": iso(now)}, owed)


def _cooling(rule: AlertRule, last_notified_at: str | None, now: datetime) -> bool:
    return last_notified_at is not None and parse_iso(last_notified_at) + rule.cooldown > now


def nudges(rule: AlertRule, context: Mapping[str, Any], episode: int, kind: str, text: str, url: str,
           now: datetime) -> list[dict[str, Any]]:
    """The outbox rows a nudge makes: one per destination of the rule's route, each with its own dedup key
    and, with a delivery window, the time it may go out in the owner's time zone."""
    destinations = {"owner": ["owner"], "channel": [f"channel:{rule.route.channel}"],
                    "owner_and_channel": ["owner", f"channel:{rule.route.channel}"]}[rule.route.to]
    not_before = rule.deliver.next_open(now, context.get("owner_timezone")) if rule.deliver else None
    rows = []
    for destination in destinations:
        key = NudgeKey(rule.name, str(context["account_id"]), episode, "fire" if kind == "fire" else "resolve",
                       channel_copy=destination != "owner")
        payload = nudge_payload(rule, context, key, destination, text, url)
        rows.append({"dedup_key": key.dedup_key, "kind": "slack", "account_id": context["account_id"],
                     "payload": payload.to_json(), "status": "pending", "attempts": 0,
                     "last_error": None, "remote_ref": None, "created_at": iso(now), "sent_at": None,
                     "not_before": iso(not_before) if not_before else None, "batch_key": None})
    return rows
