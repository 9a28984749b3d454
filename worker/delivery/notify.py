"""Draining the nudge outbox into Slack: sent once, never twice, never lost.

Slack has no idempotency key, so each message carries a key in its `metadata`: the outbox row's dedup key,
or for a digest (one message for several nudges to one owner) a key derived from all of them. Rows are
marked in flight (with the conversation they go to) before the post; a row found in flight later, after a
crash or a post whose answer was lost, is looked up in that conversation's recent history before anything
is posted again. Rows wait for their delivery window (`not_before`). Without Slack configured, nudges stay in
the outbox, visible (`pending_outbox` view), until it is.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.slack.client import (
    SlackAuthError,
    SlackClient,
    SlackError,
    SlackRecipientError,
    SlackUnavailable,
    escape_text,
)
from worker.alerting.message import NudgePayload, digest_message
from worker.store import Store, iso, outbox

log = logging.getLogger(__name__)

EVENT_TYPE = "healthbeat_nudge"
MAX_ATTEMPTS = 8
DIGEST_MAX_ITEMS = 15  # Slack allows 50 blocks a message: a header and three blocks an item stay inside


@dataclass
class NotifyReport:
    sent: int = 0
    failed: int = 0
    waiting: int = 0
    deferred: int = 0
    recovered: int = 0
    to_fallback: int = 0
    digests: int = 0
    errors: list[str] = field(default_factory=list)
    blocked: str | None = None  # Slack as a whole refused or failed: nothing more could be sent


@dataclass(frozen=True)
class Target:
    conversation: str
    note: str | None  # why it is not where the rule wanted it, said in the message


class NoRoute(Exception):
    """Nowhere to deliver: the owner has no Slack user and no fallback channel is set."""


class _Stop(Exception):
    """Slack as a whole is unusable for this run."""


Row = dict[str, Any]


def _target(slack: SlackClient, payload: NudgePayload, fallback: str | None) -> Target:
    if payload.channel is not None:
        return Target(slack.channel_id(payload.channel), None)
    email = payload.owner_email
    user_id = slack.user_id_for_email(email) if email else None
    if user_id:
        return Target(slack.open_dm(user_id), None)
    return _fallback(slack, payload, fallback, f"no Slack user for {email or 'their email'}")


def _fallback(slack: SlackClient, payload: NudgePayload, fallback: str | None, why: str) -> Target:
    if not fallback:
        raise NoRoute(f"owner {payload.owner_name} <{payload.owner_email}>: {why}, and "
                      f"SLACK_FALLBACK_CHANNEL is not set")
    owner = escape_text(payload.owner_name or "the account owner")
    return Target(slack.channel_id(fallback), f"For {owner} ({escape_text(why)}):")


def send_nudges(store: Store, slack: SlackClient | None, now: datetime, *, fallback_channel: str | None,
                digest_min: int = 3, dry_run: bool = False) -> NotifyReport:
    """Recover what was in flight, then deliver what is due: a digest to an owner with `digest_min` or more
    nudges waiting, single messages otherwise."""
    report = NotifyReport()
    rows = store.query("SELECT id, dedup_key, payload, status, attempts, remote_ref, batch_key, not_before "
                       "FROM outbox WHERE kind = 'slack' AND status IN ('pending', 'inflight', 'failed') "
                       "AND attempts < ? ORDER BY id", (MAX_ATTEMPTS,))
    if slack is None:
        report.waiting = len(rows)
        if rows:
            log.warning("notify: Slack is not configured (SLACK_BOT_TOKEN); %d nudges wait in the outbox",
                        len(rows))
        return report
    due = [r for r in rows if not r["not_before"] or r["not_before"] <= iso(now)]
    report.deferred = len(rows) - len(due)
    if dry_run:
        for row in due:
            payload = NudgePayload.from_json(row["payload"])
            log.info("dry run: would send %s to %s: %s", row["dedup_key"], payload.owner_email, payload.text)
        return report
    try:
        due = _recover(store, slack, due, now, report)
        for group in _groups(due, digest_min):
            _deliver_group(store, slack, group, fallback_channel, now, report)
    except _Stop:
        pass
    return report


def _recover(store: Store, slack: SlackClient, rows: list[Row], now: datetime, report: NotifyReport
             ) -> list[Row]:
    """Rows left in flight: already in Slack (confirm them) or not (deliver them again, below)."""
    inflight: dict[str, list[Row]] = {}
    for row in rows:
        if row["status"] == "inflight" and row["remote_ref"]:
            inflight.setdefault(row["batch_key"] or row["dedup_key"], []).append(row)
    settled: set[int] = set()
    for key, batch in inflight.items():
        try:
            found = slack.find_by_metadata(batch[0]["remote_ref"], event_type=EVENT_TYPE, key=key)
        except SlackError as exc:
            _stop_if_global(exc, report)
            continue
        if found is not None:
            _mark(store, [r["id"] for r in batch], "sent", f"{found.channel}:{found.ts}", None, now)
            report.recovered += len(batch)
            settled.update(r["id"] for r in batch)
    return [r for r in rows if r["id"] not in settled]


def _groups(rows: list[Row], digest_min: int) -> list[list[Row]]:
    """One group per message: an owner's nudges together when there are enough of them, else one by one."""
    by_owner: dict[str, list[Row]] = {}
    singles: list[list[Row]] = []
    for row in rows:
        payload = NudgePayload.from_json(row["payload"])
        if payload.to_owner and payload.kind == "fire":
            by_owner.setdefault(str(payload.owner_email), []).append(row)
        else:
            singles.append([row])
    groups = []
    for owner_rows in by_owner.values():
        if len(owner_rows) >= digest_min:
            groups += [owner_rows[i:i + DIGEST_MAX_ITEMS] for i in range(0, len(owner_rows), DIGEST_MAX_ITEMS)]
        else:
            singles += [[row] for row in owner_rows]
    return sorted(groups + singles, key=lambda g: g[0]["id"])


def _deliver_group(store: Store, slack: SlackClient, group: list[Row], fallback: str | None, now: datetime,
                   report: NotifyReport) -> None:
    payloads = [NudgePayload.from_json(r["payload"]) for r in group]
    ids = [r["id"] for r in group]
    try:
        try:
            target = _target(slack, payloads[0], fallback)
            _post(store, slack, group, payloads, target, now)
        except SlackRecipientError as exc:
            if not fallback or not payloads[0].to_owner:
                raise
            log.warning("notify: %s undeliverable to the owner (%s); sending to %s", group[0]["dedup_key"],
                        exc.error, fallback)
            target = _fallback(slack, payloads[0], fallback, exc.error)
            _post(store, slack, group, payloads, target, now)
    except SlackUnavailable as exc:
        # The post may or may not have landed: stay in flight, so the history is checked first next time.
        _mark(store, ids, "inflight", None, str(exc), now)
        report.failed += len(group)
        _stop_if_global(exc, report)
        return
    except (SlackError, NoRoute) as exc:
        if isinstance(exc, SlackError):
            _stop_if_global(exc, report)
        _mark(store, ids, "failed", None, str(exc), now)
        report.failed += len(group)
        report.errors.append(f"{group[0]['dedup_key']}: {exc}")
        log.error("notify: %s could not be delivered: %s (kept in the outbox, retried next cycle)",
                  ", ".join(r["dedup_key"] for r in group), exc)
        return
    report.sent += len(group)
    report.digests += 1 if len(group) > 1 else 0
    report.to_fallback += len(group) if target.note else 0


def _stop_if_global(exc: SlackError, report: NotifyReport) -> None:
    """Bad credentials or Slack down: nothing else will go through this run, and the operator must hear it."""
    if isinstance(exc, SlackAuthError | SlackUnavailable):
        report.errors.append(str(exc))
        report.blocked = str(exc)
        log.error("notify: %s; the nudges wait in the outbox", exc)
        raise _Stop from None


def _batch_key(group: Sequence[Row]) -> str | None:
    if len(group) == 1:
        return None
    joined = "\n".join(sorted(r["dedup_key"] for r in group))
    return "digest:" + hashlib.sha256(joined.encode()).hexdigest()[:24]


def _post(store: Store, slack: SlackClient, group: list[Row], payloads: list[NudgePayload], target: Target,
          now: datetime) -> None:
    batch_key = _batch_key(group)
    with store.transaction() as conn:
        outbox.take(conn, [r["id"] for r in group], conversation=target.conversation, batch_key=batch_key)
    if batch_key is None:
        text, blocks = payloads[0].text, list(payloads[0].blocks)
        key = group[0]["dedup_key"]
    else:
        text, blocks = digest_message(payloads)
        key = batch_key
    if target.note:
        text = f"{target.note} {text}"
        blocks = [{"type": "context", "elements": [{"type": "mrkdwn", "text": target.note}]}, *blocks]
    sent = slack.post(target.conversation, text=text, blocks=blocks,
                      metadata={"event_type": EVENT_TYPE,
                                "event_payload": {"dedup_key": key, "rule": payloads[0].rule,
                                                  "accounts": len(payloads)}})
    _mark(store, [r["id"] for r in group], "sent", f"{sent.channel}:{sent.ts}", None, now)


def _mark(store: Store, ids: Sequence[int], status: outbox.Status, remote_ref: str | None, error: str | None,
          now: datetime) -> None:
    with store.transaction() as conn:
        outbox.settle(conn, ids, status, now, remote_ref=remote_ref, error=error)
