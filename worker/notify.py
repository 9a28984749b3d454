"""Draining the nudge outbox into Slack: sent once, never twice, never lost.

Slack has no idempotency key, so each message carries its outbox dedup key in its `metadata`. A row is
marked in flight (with the conversation it goes to) before the post; a row found in flight after a crash is
looked up in that conversation's recent history before anything is posted again. Without Slack configured,
nudges stay in the outbox, visible (`pending_outbox` view), until it is.
"""

from __future__ import annotations

import json
import logging
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
from worker.store import Store, iso

log = logging.getLogger(__name__)

EVENT_TYPE = "healthbeat_nudge"
MAX_ATTEMPTS = 8


@dataclass
class NotifyReport:
    sent: int = 0
    failed: int = 0
    waiting: int = 0
    recovered: int = 0
    to_fallback: int = 0
    errors: list[str] = field(default_factory=list)
    blocked: str | None = None  # Slack as a whole refused or failed: nothing more could be sent


@dataclass(frozen=True)
class Target:
    conversation: str
    note: str | None  # why it is not where the rule wanted it, said in the message


class NoRoute(Exception):
    """Nowhere to deliver: the owner has no Slack user and no fallback channel is set."""


def _target(slack: SlackClient, payload: dict[str, Any], fallback: str | None) -> Target:
    route = payload.get("route") or {"to": "owner"}
    if route.get("to") == "channel":
        return Target(slack.channel_id(route["channel"]), None)
    email = payload.get("owner_email")
    user_id = slack.user_id_for_email(email) if email else None
    if user_id:
        return Target(slack.open_dm(user_id), None)
    if not fallback:
        raise NoRoute(f"owner {payload.get('owner_name')} <{email}> has no Slack user and "
                      f"SLACK_FALLBACK_CHANNEL is not set")
    note = (f"For {escape_text(payload.get('owner_name') or 'the account owner')} "
            f"(no Slack user for {escape_text(email or 'their email')}):")
    return Target(slack.channel_id(fallback), note)


def send_nudges(store: Store, slack: SlackClient | None, now: datetime, *, fallback_channel: str | None,
                dry_run: bool = False) -> NotifyReport:
    report = NotifyReport()
    rows = store.query("SELECT id, dedup_key, payload, status, attempts, remote_ref FROM outbox "
                       "WHERE kind = 'slack' AND status IN ('pending', 'inflight', 'failed') "
                       "AND attempts < ? ORDER BY id", (MAX_ATTEMPTS,))
    if slack is None:
        report.waiting = len(rows)
        if rows:
            log.warning("notify: Slack is not configured (SLACK_BOT_TOKEN); %d nudges wait in the outbox",
                        len(rows))
        return report
    for row in rows:
        payload = json.loads(row["payload"])
        if dry_run:
            log.info("dry run: would send %s to %s: %s", row["dedup_key"], payload.get("owner_email"),
                     payload["text"])
            continue
        try:
            if row["status"] == "inflight" and row["remote_ref"]:
                found = slack.find_by_metadata(row["remote_ref"], event_type=EVENT_TYPE, key=row["dedup_key"])
                if found is not None:
                    _mark(store, row["id"], "sent", f"{found.channel}:{found.ts}", None, now)
                    report.recovered += 1
                    continue
            _deliver(store, slack, row, payload, fallback_channel, now, report)
        except SlackAuthError as exc:
            report.errors.append(str(exc))
            report.blocked = str(exc)
            log.error("notify: %s; nudges wait in the outbox", exc)
            break
        except SlackUnavailable as exc:
            # The post may or may not have landed: stay in flight, so the history is checked first.
            _mark(store, row["id"], "inflight", None, str(exc), now)
            report.failed += 1
            report.errors.append(str(exc))
            report.blocked = str(exc)
            log.error("notify: Slack unavailable (%s); the rest wait for the next cycle", exc)
            break
        except (SlackError, NoRoute) as exc:
            _mark(store, row["id"], "failed", None, str(exc), now)
            report.failed += 1
            report.errors.append(f"{row['dedup_key']}: {exc}")
            log.error("notify: %s could not be delivered: %s", row["dedup_key"], exc)
    return report


def _deliver(store: Store, slack: SlackClient, row: dict[str, Any], payload: dict[str, Any],
             fallback: str | None, now: datetime, report: NotifyReport) -> None:
    try:
        target = _target(slack, payload, fallback)
        _post(store, slack, row, payload, target, now)
    except SlackRecipientError as exc:
        if not fallback or (payload.get("route") or {}).get("to") == "channel":
            raise
        log.warning("notify: %s undeliverable to the owner (%s); sending to %s", row["dedup_key"],
                    exc.error, fallback)
        note = f"For {escape_text(payload.get('owner_name') or 'the account owner')} ({exc.error}):"
        target = Target(slack.channel_id(fallback), note)
        _post(store, slack, row, payload, target, now)
    if target.note:
        report.to_fallback += 1
    report.sent += 1


def _post(store: Store, slack: SlackClient, row: dict[str, Any], payload: dict[str, Any], target: Target,
          now: datetime) -> None:
    with store.transaction() as conn:
        conn.execute("UPDATE outbox SET status = 'inflight', attempts = attempts + 1, remote_ref = ? "
                     "WHERE id = ?", (target.conversation, row["id"]))
    text = f"{target.note} {payload['text']}" if target.note else payload["text"]
    blocks = payload.get("blocks") or []
    if target.note:
        blocks = [{"type": "context", "elements": [{"type": "mrkdwn", "text": target.note}]}, *blocks]
    sent = slack.post(target.conversation, text=text, blocks=blocks,
                      metadata={"event_type": EVENT_TYPE,
                                "event_payload": {"dedup_key": row["dedup_key"], "rule": payload.get("rule"),
                                                  "account_id": payload.get("account_id")}})
    _mark(store, row["id"], "sent", f"{sent.channel}:{sent.ts}", None, now)


def _mark(store: Store, row_id: int, status: str, remote_ref: str | None, error: str | None,
          now: datetime) -> None:
    with store.transaction() as conn:
        conn.execute("UPDATE outbox SET status = ?, remote_ref = coalesce(?, remote_ref), last_error = ?, "
                     "sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END WHERE id = ?",
                     (status, remote_ref, error, status, iso(now), row_id))
