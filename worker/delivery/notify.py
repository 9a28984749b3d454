"""Draining the nudge outbox into Slack: sent once, never twice, never lost.

Slack has no idempotency key, so each message carries a key in its `metadata`: the outbox row's dedup key,
or for a digest (one message for several nudges to one owner) a key derived from all of them. Rows are
marked in flight (with the conversation they go to) before the post; a row found in flight later, after a
crash or a post whose answer was lost, is looked up in that conversation's recent history before anything
is posted again. Rows wait for their delivery window (`not_before`). Without Slack configured, nudges stay in
the outbox, visible (`pending_outbox` view), until it is.

What goes wrong stays as small as it is: a conversation whose history cannot be read (a private fallback
channel without `groups:history`) keeps its own rows in flight, unposted, and the other nudges go on; a post
Slack refused for its rate (429) was not posted, so its rows wait as pending, not in flight; a message over
Slack's limits is cut to fit, with a pointer to `healthbeat explain`; a row out of attempts is `dead`,
counted and named, never silently dropped.
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
    SlackScopeError,
    SlackUnavailable,
    escape_text,
)
from worker.alerting.message import NudgePayload, cut_to_fit, digest_message
from worker.store import Store, iso, outbox

log = logging.getLogger(__name__)

EVENT_TYPE = "healthbeat_nudge"
MAX_ATTEMPTS = 8
DIGEST_MAX_ITEMS = 15  # Slack allows 50 blocks a message: a header and three blocks an item stay inside
TOO_BIG = frozenset({"msg_too_long", "invalid_blocks", "invalid_blocks_format"})
"""Slack's refusals of a message for its size or its blocks: the nudge is cut to fit and posted again."""


@dataclass
class NotifyReport:
    sent: int = 0
    failed: int = 0
    waiting: int = 0
    deferred: int = 0
    recovered: int = 0
    to_fallback: int = 0
    digests: int = 0
    cut_to_fit: int = 0
    dead: list[str] = field(default_factory=list)  # accounts whose nudge ran out of attempts this run
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
        except (SlackScopeError, SlackRecipientError) as exc:
            # This conversation's history cannot be read: whether these were posted is unknown, so they
            # stay in flight (never posted twice) and say why; every other nudge goes on.
            _mark(store, [r["id"] for r in batch], "inflight", None, f"cannot check whether it was posted: {exc}",
                  now)
            report.failed += len(batch)
            report.errors.append(f"{key}: cannot check whether it was posted: {exc}")
            log.error("notify: %s: cannot check %s for an earlier post (%s); it stays in flight until it can",
                      key, batch[0]["remote_ref"], exc)
            settled.update(r["id"] for r in batch)
            continue
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
            _post(store, slack, group, payloads, target, now, report)
        except SlackRecipientError as exc:
            if not fallback or not payloads[0].to_owner:
                raise
            log.warning("notify: %s undeliverable to the owner (%s); sending to %s", group[0]["dedup_key"],
                        exc.error, fallback)
            target = _fallback(slack, payloads[0], fallback, exc.error)
            _post(store, slack, group, payloads, target, now, report)
    except SlackUnavailable as exc:
        if exc.rate_limited:
            # Slack refused for its rate: nothing was posted (`_post` gave the rows back). Try next cycle.
            report.waiting += len(group)
            log.warning("notify: Slack rate-limited the posts (%s); %d nudges wait for the next cycle",
                        exc, len(group))
            raise _Stop from None
        # The post may or may not have landed: stay in flight, so the history is checked first next time.
        _mark(store, ids, "inflight", None, str(exc), now)
        report.failed += len(group)
        _stop_if_global(exc, report)
        return
    except (SlackError, NoRoute) as exc:
        if isinstance(exc, SlackError):
            _stop_if_global(exc, report)
        _fail(store, group, payloads, str(exc), now, report)
        return
    report.sent += len(group)
    report.digests += 1 if len(group) > 1 else 0
    report.to_fallback += len(group) if target.note else 0


def _fail(store: Store, group: list[Row], payloads: list[NudgePayload], error: str, now: datetime,
          report: NotifyReport) -> None:
    """Refused: retried next cycle, until a row has had its attempts; then it is dead, and said so by name."""
    dead = [r["id"] for r in group if r["attempts"] + 1 >= MAX_ATTEMPTS]
    alive = [r["id"] for r in group if r["id"] not in dead]
    _mark(store, alive, "failed", None, error, now)
    _mark(store, dead, "dead", None, error, now)
    report.failed += len(group)
    report.errors.append(f"{group[0]['dedup_key']}: {error}")
    for row, payload in zip(group, payloads, strict=True):
        if row["id"] in dead:
            report.dead.append(payload.account_name or payload.account_id)
            log.error("notify: the nudge %s for %s is dead after %d attempts: %s", row["dedup_key"],
                      payload.account_name or payload.account_id, MAX_ATTEMPTS, error)
    if alive:
        log.error("notify: %s could not be delivered: %s (kept in the outbox, retried next cycle)",
                  ", ".join(r["dedup_key"] for r in group if r["id"] in alive), error)


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
          now: datetime, report: NotifyReport) -> None:
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
    metadata = {"event_type": EVENT_TYPE,
                "event_payload": {"dedup_key": key, "rule": payloads[0].rule, "accounts": len(payloads)}}
    try:
        try:
            sent = slack.post(target.conversation, text=text, blocks=blocks, metadata=metadata)
        except SlackError as exc:
            if exc.error not in TOO_BIG:
                raise
            log.warning("notify: Slack refused %s as too big (%s); posting it cut to fit", key, exc.error)
            text, blocks = cut_to_fit(text, [p.account_id for p in payloads], note=target.note)
            sent = slack.post(target.conversation, text=text, blocks=blocks, metadata=metadata)
            report.cut_to_fit += len(group)
    except SlackUnavailable as exc:
        if exc.rate_limited:
            with store.transaction() as conn:
                outbox.give_back(conn, [r["id"] for r in group])
        raise
    _mark(store, [r["id"] for r in group], "sent", f"{sent.channel}:{sent.ts}", None, now)


def _mark(store: Store, ids: Sequence[int], status: outbox.Status, remote_ref: str | None, error: str | None,
          now: datetime) -> None:
    with store.transaction() as conn:
        outbox.settle(conn, ids, status, now, remote_ref=remote_ref, error=error)
