"""What CSMs say about the nudges: kept as data, counted per rule, and turned into score overrides.

Every nudge carries three buttons ("Useful", "Not useful", "Score looks wrong") whose value is the nudge's
outbox dedup key, `nudge:{rule}:{account}:{episode}:{kind}`: a click names the rule, the account and the
alert episode without any lookup, and joins the outbox row that says when the nudge was sent.

One row per (nudge, user, axis). The usefulness axis holds "useful" or "not useful", so a change of mind
replaces the earlier verdict and the same click twice (a double click, a Slack retry) is one row; the score
axis holds "score looks wrong" with the reason and the score the CSM thinks right. A click that arrives
after a newer one from the same user (a late retry) changes nothing: Slack's `action_ts` orders them.

A correction with a value becomes a CSM override that expires (default 14 days):
- it **applies at once** when it comes from the account's owner, i.e. from the DM the nudge was sent to
  (only the owner can click there), and no other override is in force: it is the CSM's word, exactly what
  `healthbeat override set` does, shown as pinned everywhere and bounded by its expiry;
- it **waits as a proposal** otherwise (a nudge in a shared channel can be clicked by anyone, and one
  person must not silently replace another's override): `explain` and `feedback ls` show it until it
  expires, and `healthbeat feedback accept ID` makes it an override.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from rich.console import RenderableType
from rich.text import Text

from worker.alerting.message import NudgeKey
from worker.errors import FeedbackError
from worker.scoring import overrides
from worker.store import Store, iso
from worker.terminal import clean

__all__ = [
    "ACTIONS",
    "DEFAULT_OVERRIDE_DAYS",
    "FEEDBACK_COLUMNS",
    "LABELS",
    "VERDICTS",
    "AccountFeedback",
    "FeedbackError",
    "NudgeKey",
    "Recorded",
    "RuleStats",
    "Vote",
    "accept_proposal",
    "account_feedback",
    "list_feedback",
    "other_override_in_force",
    "owner_clicked_in_dm",
    "receipts_for",
    "record_vote",
    "remember_message",
    "remembered_message",
    "rule_stats",
]

VERDICTS: Final[Mapping[str, str]] = {"useful": "usefulness", "not_useful": "usefulness", "score_wrong": "score"}
"""Each verdict and its axis: one answer per user, nudge and axis."""
LABELS: Final[Mapping[str, str]] = {"useful": "Useful", "not_useful": "Not useful", "score_wrong": "Score looks wrong"}
ACTIONS: Final[Mapping[str, str]] = {"feedback_useful": "useful", "feedback_not_useful": "not_useful",
                                     "feedback_score_wrong": "score_wrong"}
"""The feedback buttons' action_id → the verdict each records."""
DEFAULT_OVERRIDE_DAYS: Final = 14
"""A correction from Slack pins the score this long unless the CSM picks another length: long enough to
reach the next conversation with the customer, short enough that a stale word does not outlive the data."""

@dataclass(frozen=True)
class Vote:
    """One person's answer on one nudge, as Slack delivered it."""

    nudge: NudgeKey
    verdict: str
    user_id: str
    user_name: str | None = None
    channel_id: str | None = None
    message_ts: str | None = None
    action_ts: str | None = None
    reason: str | None = None
    value: float | None = None
    until: date | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise FeedbackError(f"unknown verdict {self.verdict!r}")
        if self.value is not None and not 0 <= self.value <= 100:
            raise FeedbackError(f"a score is 0..100, not {self.value:g}")

    @property
    def setter(self) -> str:
        """How an override from this vote names who set it (`override ls`, Salesforce reason)."""
        return f"{self.user_name or self.user_id} (Slack {self.user_id})"


@dataclass(frozen=True)
class Recorded:
    """What `record_vote` did: the row, whether anything changed, and what became of a correction."""

    id: int
    changed: bool
    override: str | None = None  # applied, proposed, or None (no value given, or unchanged)
    why: str = ""


# -- recording --------------------------------------------------------------------------------------------

def record_vote(store: Store, vote: Vote, now: datetime) -> Recorded:
    """Keep one vote, idempotently, and for a correction with a value apply or propose the override.

    All in one transaction: the vote, and the override it applies, are there together or not at all.
    """
    axis = VERDICTS[vote.verdict]
    with store.transaction() as conn:
        _require_sent(store, vote.nudge)
        rows = store.query("SELECT * FROM feedback WHERE dedup_key = ? AND user_id = ? AND axis = ?",
                           (vote.nudge.dedup_key, vote.user_id, axis))
        existing = rows[0] if rows else None
        if existing is not None and (_older(vote.action_ts, existing["action_ts"]) or _same(existing, vote)):
            return Recorded(int(existing["id"]), False, None, "already recorded")
        status, why = (None, "")
        if vote.verdict == "score_wrong" and vote.value is not None:
            status, why = _decide(store, vote, now.date())
        values = {
            "verdict": vote.verdict, "user_name": vote.user_name, "channel_id": vote.channel_id,
            "message_ts": vote.message_ts, "action_ts": vote.action_ts, "reason": vote.reason,
            "proposed_value": vote.value, "proposed_until": vote.until.isoformat() if vote.until else None,
            "override_status": status, "decided_by": None, "updated_at": iso(now),
        }
        if existing is None:
            row_id = conn.execute(
                "INSERT INTO feedback (dedup_key, user_id, axis, rule, account_id, episode, kind, created_at, "
                f"{', '.join(values)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, {', '.join('?' for _ in values)})",
                (vote.nudge.dedup_key, vote.user_id, axis, vote.nudge.rule, vote.nudge.account_id,
                 vote.nudge.episode, vote.nudge.kind, iso(now), *values.values())).lastrowid
        else:
            row_id = existing["id"]
            conn.execute(f"UPDATE feedback SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                         (*values.values(), row_id))
        if status == "applied":
            assert vote.value is not None and vote.until is not None and vote.reason
            overrides.pin(store, vote.nudge.account_id, vote.value, vote.reason, vote.until, vote.setter, now)
    return Recorded(int(row_id or 0), True, status, why)


_CLICKABLE: Final = ("inflight", "sent", "confirmed")
"""Outbox states of a nudge that reached Slack, or may have (in flight when the worker stopped): a button on it
can be clicked. A pending, superseded, failed or dead row never showed its buttons to anyone."""


def _require_sent(store: Store, nudge: NudgeKey) -> None:
    """Feedback is about a nudge someone read: a key with no such message (a forged or stale button, a key
    typed by hand, a nudge pruned by retention) is refused, so `rules stats` never counts a vote on nothing."""
    rows = store.query("SELECT status FROM outbox WHERE dedup_key = ?", (nudge.dedup_key,))
    if not rows:
        raise FeedbackError(f"no nudge {nudge.dedup_key} was ever queued: feedback on it is not recorded")
    if rows[0]["status"] not in _CLICKABLE:
        raise FeedbackError(f"nudge {nudge.dedup_key} was never sent ({rows[0]['status']}): feedback on it "
                            "is not recorded")


def _older(incoming: str | None, stored: str | None) -> bool:
    """A click Slack stamped before the one we kept (a late retry) must not undo the newer one."""
    if not incoming or not stored:
        return False
    try:
        return Decimal(incoming) < Decimal(stored)
    except InvalidOperation:
        return False


def _same(row: Mapping[str, Any], vote: Vote) -> bool:
    until = vote.until.isoformat() if vote.until else None
    return (row["verdict"], row["reason"], row["proposed_value"], row["proposed_until"]) == (
        vote.verdict, vote.reason, vote.value, until)


def owner_clicked_in_dm(store: Store, vote: Vote) -> bool:
    """Whether the vote came from the DM the nudge was sent to, addressed to the owner: only they can click there."""
    if not vote.channel_id or not vote.channel_id.startswith("D") or not vote.message_ts:
        return False
    row = store.query("SELECT payload, remote_ref FROM outbox WHERE dedup_key = ?", (vote.nudge.dedup_key,))
    if not row:
        return False
    destination = json.loads(row[0]["payload"]).get("destination") or "owner"
    return destination == "owner" and row[0]["remote_ref"] == f"{vote.channel_id}:{vote.message_ts}"


def other_override_in_force(store: Store, account_id: str, setter: str, today: date) -> str | None:
    """Who holds an override on this account now, unless it is `setter` (who may change their own)."""
    return overrides.holder(store, account_id, today, besides=setter)


def _decide(store: Store, vote: Vote, today: date) -> tuple[str, str]:
    if not owner_clicked_in_dm(store, vote):
        return "proposed", "it did not come from the owner's DM, so it waits for a confirmation"
    holder = other_override_in_force(store, vote.nudge.account_id, vote.setter, today)
    if holder is not None:
        return "proposed", f"an override by {holder} is in force, so it waits for a confirmation"
    return "applied", "the owner's word: it pins the score from the next cycle"


def accept_proposal(store: Store, feedback_id: int, by: str | None, now: datetime) -> dict[str, Any]:
    """Turn a proposed correction into an override (`healthbeat feedback accept ID`); returns the row."""
    with store.transaction() as conn:
        rows = store.query("SELECT * FROM feedback WHERE id = ?", (feedback_id,))
        if not rows or rows[0]["override_status"] != "proposed":
            raise FeedbackError(f"no proposed override with id {feedback_id} (see `healthbeat feedback ls`)")
        row = rows[0]
        if row["proposed_until"] < now.date().isoformat():
            raise FeedbackError(f"proposal {feedback_id} expired on {row['proposed_until']}")
        set_by = f"{by or 'command line'}, on {row['user_name'] or row['user_id']}'s word (Slack {row['user_id']})"
        overrides.pin(store, row["account_id"], float(row["proposed_value"]), str(row["reason"]),
                        date.fromisoformat(row["proposed_until"]), set_by, now)
        conn.execute("UPDATE feedback SET override_status = 'accepted', decided_by = ?, updated_at = ? "
                     "WHERE id = ?", (by, iso(now), feedback_id))
    return {**row, "override_status": "accepted", "decided_by": by}


# -- the message a click came from (to show receipts on it) -----------------------------------------------

def remember_message(store: Store, channel_id: str, ts: str, text: str, blocks: list[dict[str, Any]],
                     now: datetime) -> None:
    """Keep a nudge message as first seen, so receipts are always drawn on the original, never stacked."""
    with store.transaction() as conn:
        conn.execute("INSERT OR IGNORE INTO feedback_messages (channel_id, message_ts, text, blocks, seen_at) "
                     "VALUES (?, ?, ?, ?, ?)", (channel_id, ts, text, json.dumps(blocks), iso(now)))


def remembered_message(store: Store, channel_id: str, ts: str) -> tuple[str, list[dict[str, Any]]] | None:
    rows = store.query("SELECT text, blocks FROM feedback_messages WHERE channel_id = ? AND message_ts = ?",
                       (channel_id, ts))
    return (str(rows[0]["text"]), list(json.loads(rows[0]["blocks"]))) if rows else None


def receipts_for(store: Store, dedup_keys: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """The votes on each of these nudges, oldest first."""
    keys = list(dict.fromkeys(dedup_keys))
    if not keys:
        return {}
    rows = store.query(f"SELECT * FROM feedback WHERE dedup_key IN ({', '.join('?' for _ in keys)}) "
                       "ORDER BY created_at, id", keys)
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        found.setdefault(row["dedup_key"], []).append(row)
    return found


# -- reading: feedback ls, rules stats, explain -----------------------------------------------------------

FEEDBACK_COLUMNS: Final = ("id", "created_at", "rule", "account_id", "account_name", "episode", "kind", "verdict",
                           "user_id", "user_name", "reason", "proposed_value", "proposed_until", "override_status")


def list_feedback(store: Store, *, rule: str | None = None, account_id: str | None = None) -> list[dict[str, Any]]:
    where, params = [], []
    for column, value in (("f.rule", rule), ("f.account_id", account_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    return store.query(
        "SELECT f.id, f.created_at, f.rule, f.account_id, a.name AS account_name, f.episode, f.kind, f.verdict, "
        "f.user_id, f.user_name, f.reason, f.proposed_value, f.proposed_until, f.override_status "
        "FROM feedback f LEFT JOIN accounts a ON a.id = f.account_id "
        + (f"WHERE {' AND '.join(where)} " if where else "") + "ORDER BY f.created_at DESC, f.id DESC", params)


@dataclass(frozen=True)
class RuleStats:
    """How one rule's nudges were received: the usefulness rate ops tune rules by."""

    rule: str
    alerts_sent: int
    useful: int
    not_useful: int
    score_wrong: int
    answered: int
    median_seconds_to_feedback: float | None

    @property
    def usefulness(self) -> float | None:
        votes = self.useful + self.not_useful
        return None if votes == 0 else self.useful / votes

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "alerts_sent": self.alerts_sent, "useful": self.useful,
                "not_useful": self.not_useful, "score_wrong": self.score_wrong, "answered": self.answered,
                "usefulness": None if self.usefulness is None else round(self.usefulness, 3),
                "median_minutes_to_feedback": None if self.median_seconds_to_feedback is None
                else round(self.median_seconds_to_feedback / 60, 1)}


def rule_stats(store: Store) -> list[RuleStats]:
    """Per rule: alerts sent (an episode posted to owner and channel counts once), votes, time to feedback.

    Time to feedback is, per nudge with any feedback, the first vote's time minus when the nudge was sent.
    """
    sent = {r["rule"]: int(r["alerts"]) for r in store.query("""
        SELECT json_extract(payload, '$.rule') AS rule,
               count(DISTINCT CASE WHEN dedup_key LIKE '%:channel' THEN substr(dedup_key, 1, length(dedup_key) - 8)
                                   ELSE dedup_key END) AS alerts
        FROM outbox WHERE kind = 'slack' AND status IN ('sent', 'confirmed')
          AND json_extract(payload, '$.kind') = 'fire'
        GROUP BY 1""")}
    votes: dict[str, dict[str, int]] = {}
    for row in store.query("SELECT rule, verdict, count(*) AS n "
                           "FROM feedback GROUP BY rule, verdict"):
        votes.setdefault(row["rule"], {})[row["verdict"]] = int(row["n"])
    answered = {r["rule"]: int(r["n"]) for r in store.query(
        "SELECT rule, count(DISTINCT dedup_key) AS n FROM feedback GROUP BY rule")}
    delays: dict[str, list[float]] = {}
    for row in store.query("""
        SELECT f.rule, (julianday(min(f.created_at)) - julianday(o.sent_at)) * 86400.0 AS seconds
        FROM feedback f JOIN outbox o ON o.dedup_key = f.dedup_key AND o.sent_at IS NOT NULL
        GROUP BY f.dedup_key"""):
        delays.setdefault(row["rule"], []).append(max(0.0, float(row["seconds"])))
    return [RuleStats(rule, sent.get(rule, 0), votes.get(rule, {}).get("useful", 0),
                      votes.get(rule, {}).get("not_useful", 0), votes.get(rule, {}).get("score_wrong", 0),
                      answered.get(rule, 0), statistics.median(delays[rule]) if delays.get(rule) else None)
            for rule in sorted(set(sent) | set(votes))]


@dataclass(frozen=True)
class AccountFeedback:
    """What CSMs said about one account's nudges, for `explain`: corrections first, then recent votes."""

    account_id: str
    corrections: list[dict[str, Any]]
    votes: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"corrections": self.corrections, "votes": self.votes}

    def lines(self) -> list[str]:
        """The feedback in sentences a CSM reads: each correction and what became of it, then the votes."""
        out = []
        for row in self.corrections:
            who = row["user_name"] or row["user_id"]
            fate = {"applied": "applied as an override.",
                    "accepted": f"accepted by {row['decided_by'] or 'the command line'} as an override.",
                    "proposed": f"proposed, waiting: `healthbeat feedback accept {row['id']}` applies it."}.get(
                        str(row["override_status"]), str(row["override_status"]))
            out.append(f"{who} says the score looks wrong ({row['reason']}) and should be "
                       f"{row['proposed_value']:g} until {row['proposed_until']}: {fate}")
        if self.votes:
            out.append("Feedback on nudges: " + ", ".join(
                f"{LABELS[v['verdict']]} by {v['user_name'] or v['user_id']} ({v['rule']}, {v['created_at'][:10]})"
                for v in self.votes))
        return out

    def render(self) -> RenderableType:
        lines = self.lines()
        if not lines:
            return Text("No feedback from Slack on this account's nudges.", style="dim")
        return Text("\n".join(clean(line) for line in lines))


def account_feedback(store: Store, account_id: str, today: date, *, recent_days: int = 90) -> AccountFeedback:
    """Corrections still in their term (proposed or applied) and the votes of the last `recent_days`."""
    corrections = store.query(
        "SELECT id, rule, user_id, user_name, reason, proposed_value, proposed_until, override_status, decided_by, "
        "created_at FROM feedback WHERE account_id = ? AND verdict = 'score_wrong' AND proposed_value IS NOT NULL "
        "AND proposed_until >= ? ORDER BY created_at DESC, id DESC", (account_id, today.isoformat()))
    votes = store.query(
        "SELECT id, rule, episode, verdict, user_id, user_name, created_at FROM feedback WHERE account_id = ? "
        "AND axis = 'usefulness' AND created_at >= ? ORDER BY created_at DESC, id DESC",
        (account_id, (today - timedelta(days=recent_days)).isoformat()))
    return AccountFeedback(account_id, corrections, votes)


# -- tables for the CLI -----------------------------------------------------------------------------------
