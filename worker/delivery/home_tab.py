"""Healthbeat's Home tab in Slack: "my accounts", for the account owner who opens it.

What an owner sees: their accounts that need attention, red first, then yellow, then those whose score is
`unknown` (too little data), each with its score, trend arrow, reason, days to the renewal when one is open, a
button to the Salesforce record and, when the account was nudged, the nudge's feedback buttons (so a vote
from the Home tab lands on the same nudge, `/slack/actions` records it); then one line for the rest ("31
green"). Slack allows 100 blocks in a Home view and 3000 characters in a text: a long list is cut, saying how
many more there are and the command that lists them all.

A Slack user is matched to an owner by email, as nudges are (the owner's Salesforce email is their Slack
email): the Slack user's email from `users.info`, then the Salesforce users with it. The users who opened the
tab are remembered in `home_tabs` with the bands their tab showed; after each cycle's nudges,
`republish_home_tabs` publishes again only the tabs whose bands changed, and never a tab nobody opened.
This module is the only writer of `home_tabs`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from connectors.slack.client import SlackClient, SlackError, SlackUnavailable, escape_text
from worker.alerting.message import feedback_block, record_link
from worker.store import Store, changes, iso

__all__ = [
    "ATTENTION_BANDS",
    "MAX_HOME_BLOCKS",
    "MAX_PUBLISHES_PER_CYCLE",
    "HomeReport",
    "Owner",
    "home_opened",
    "home_view",
    "owner_bands",
    "owner_by_id",
    "owner_by_slack_user",
    "republish_home_tabs",
]

log = logging.getLogger(__name__)

MAX_HOME_BLOCKS: Final = 100
"""Slack's limit on a Home tab view's blocks (docs.slack.dev/reference/views/home-tab-views)."""
MAX_TEXT: Final = 3000
"""Slack's limit on a section's text."""
MAX_REASON: Final = 600
MAX_PUBLISHES_PER_CYCLE: Final = 100
"""`views.publish` is Tier 4 (100+ a minute): a cycle republishes at most a minute's worth, the rest next cycle."""
ATTENTION_BANDS: Final = ("red", "yellow", "unknown")
"""The bands listed one by one, in this order; green accounts are one line."""
_EMOJI: Final = {"red": ":red_circle:", "yellow": ":large_yellow_circle:", "unknown": ":white_circle:"}
_FIXED_BLOCKS: Final = 2  # the header and the line under it
_TAIL_BLOCKS: Final = 2  # "31 green" and "N more..."
_CLICKABLE: Final = ("inflight", "sent", "confirmed")
"""Outbox states of a nudge whose buttons may be on someone's screen: the ones `/slack/actions` accepts."""


@dataclass(frozen=True)
class Owner:
    """A Salesforce account owner: their user ids (one email can name several users) and name."""

    ids: tuple[str, ...]
    name: str | None
    email: str


@dataclass
class HomeReport:
    """What a republish pass did: tabs published, failed, and the errors in words."""

    published: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


# -- who is who ---------------------------------------------------------------------------------------------

def _owner(store: Store, email: str) -> Owner | None:
    rows = store.query("SELECT source_id, name FROM users WHERE source = 'salesforce' AND email IS NOT NULL "
                       "AND lower(email) = lower(?) ORDER BY is_active DESC, source_id", (email.strip(),))
    if not rows:
        return None
    name = next((str(r["name"]) for r in rows if r["name"]), None)
    return Owner(tuple(str(r["source_id"]) for r in rows), name, email.strip())


def owner_by_slack_user(store: Store, slack: SlackClient, user_id: str) -> tuple[Owner | None, str | None]:
    """The owner this Slack user is, by their email, and the email (None when Slack shows none)."""
    email = slack.email_of(user_id)
    return (_owner(store, email) if email else None), email


def owner_by_id(store: Store, owner_id: str) -> Owner | None:
    """The owner a remembered tab belongs to, from one of their Salesforce user ids."""
    email = store.scalar("SELECT email FROM users WHERE source = 'salesforce' AND source_id = ?", (owner_id,))
    return _owner(store, str(email)) if email else None


# -- the view -----------------------------------------------------------------------------------------------

def _accounts(store: Store, owner: Owner, today: str) -> list[dict[str, Any]]:
    marks = ", ".join("?" for _ in owner.ids)
    clickable = ", ".join("?" for _ in _CLICKABLE)
    return store.query(
        f"""SELECT a.id, a.name, s.score, coalesce(s.band, 'unknown') AS band, s.trend, s.reason, s.overridden,
                   (SELECT min(julianday(o.close_date) - julianday(?)) FROM opportunities o
                    WHERE o.account_id = a.id AND o.is_deleted = 0 AND o.is_closed = 0 AND o.close_date >= ?)
                   AS renewal_days,
                   (SELECT x.dedup_key FROM outbox x WHERE x.kind = 'slack' AND x.account_id = a.id
                    AND x.dedup_key LIKE 'nudge:%' AND x.status IN ({clickable}) ORDER BY x.id DESC LIMIT 1)
                   AS nudge_key
            FROM accounts a JOIN scores s ON s.account_id = a.id
            WHERE a.is_deleted = 0 AND a.owner_id IN ({marks})
            ORDER BY s.score, a.name""", (today, today, *_CLICKABLE, *owner.ids))


def owner_bands(store: Store, owner: Owner) -> dict[str, str]:
    """account id → band of the owner's scored accounts: what a tab shows, compared to decide a republish."""
    marks = ", ".join("?" for _ in owner.ids)
    return {str(r["id"]): str(r["band"]) for r in store.query(
        f"SELECT a.id, coalesce(s.band, 'unknown') AS band FROM accounts a JOIN scores s ON s.account_id = a.id "
        f"WHERE a.is_deleted = 0 AND a.owner_id IN ({marks}) ORDER BY a.id", owner.ids)}


def _plain(text: str, most: int) -> str:
    return text if len(text) <= most else text[:most - 1] + "…"


def _renewal(days: float | None) -> str:
    if days is None:
        return ""
    whole = round(days)
    return "  ·  renewal today" if whole <= 0 else f"  ·  renewal in {whole} day{'s' if whole != 1 else ''}"


def _account_blocks(row: Mapping[str, Any], instance_url: str) -> list[dict[str, Any]]:
    band = str(row["band"])
    score = "-" if row["score"] is None else str(round(float(row["score"])))
    url = record_link(instance_url, str(row["id"]))
    name = escape_text(_plain(str(row["name"] or row["id"]), 200))
    trend = escape_text(_plain(str(row["trend"] or "new"), 60))
    pinned = "  ·  pinned" if row["overridden"] else ""
    head = (f"{_EMOJI.get(band, ':white_circle:')} *<{url}|{name}>*  ·  {score} ({escape_text(band)})  ·  {trend}"
            f"{_renewal(row['renewal_days'])}{pinned}\n")
    raw, most = str(row["reason"] or "no reason recorded"), MAX_REASON
    reason = escape_text(_plain(raw, most))
    while len(head) + len(reason) > MAX_TEXT and most > 1:  # escaping lengthens: "&" is "&amp;"
        most //= 2
        reason = escape_text(_plain(raw, most))
    text = (head + reason)[:MAX_TEXT]
    blocks: list[dict[str, Any]] = [{
        "type": "section", "block_id": _plain(f"home:{row['id']}", 255), "text": {"type": "mrkdwn", "text": text},
        "accessory": {"type": "button", "action_id": "open_record", "url": url,
                      "text": {"type": "plain_text", "text": "Open in Salesforce"}}}]
    if row["nudge_key"]:
        blocks.append(feedback_block(str(row["nudge_key"])))
    return blocks


def _rest_line(rows: Sequence[Mapping[str, Any]]) -> str:
    green = sum(1 for r in rows if r["band"] == "green")
    other = sum(1 for r in rows if r["band"] not in (*ATTENTION_BANDS, "green"))
    line = f":large_green_circle: {green} green" if green else "No green accounts"
    return line + (f"  ·  {other} in other bands" if other else "")


def home_view(store: Store, owner: Owner | None, instance_url: str, now: datetime, *,
              email: str | None = None) -> dict[str, Any]:
    """The Home tab for this owner (None: a Slack user who owns nothing here), within Slack's limits."""
    if owner is None:
        why = (f"Healthbeat found no Salesforce account owner with your Slack email ({escape_text(email)})."
               if email else "Healthbeat cannot see your Slack email, so it cannot tell which accounts are yours.")
        return {"type": "home", "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Your accounts"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": (
                f"Nothing to show you yet. {why} When you own accounts in Salesforce, this tab lists the ones "
                "that need attention, with their health score and why.")}}]}
    rows = _accounts(store, owner, now.date().isoformat())
    attention = sorted((r for r in rows if r["band"] in ATTENTION_BANDS),
                       key=lambda r: ATTENTION_BANDS.index(str(r["band"])))  # stable: by score within a band
    counts = {band: sum(1 for r in attention if r["band"] == band) for band in ATTENTION_BANDS}
    summary = "  ·  ".join(f"{n} {band}" for band, n in counts.items() if n) or "none need attention"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Your accounts"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _plain(
            f"{escape_text(owner.name or owner.email)}: {len(rows)} scored account{'s' if len(rows) != 1 else ''}"
            f", {summary}. Updated {now:%Y-%m-%d %H:%M} UTC.", MAX_TEXT)}]},
    ]
    room = MAX_HOME_BLOCKS - _FIXED_BLOCKS - _TAIL_BLOCKS
    shown = 0
    for row in attention:
        more = _account_blocks(row, instance_url)
        if len(blocks) - _FIXED_BLOCKS + len(more) > room:
            break
        blocks.extend(more)
        shown += 1
    blocks.append({"type": "section", "block_id": "home:rest",
                   "text": {"type": "mrkdwn", "text": _rest_line(rows)}})
    if shown < len(attention):
        who = (owner.name or owner.email).replace('"', "")
        blocks.append({"type": "context", "block_id": "home:more", "elements": [{"type": "mrkdwn", "text": _plain(
            f"{len(attention) - shown} more need attention and are not shown here (Slack shows at most "
            f"{MAX_HOME_BLOCKS} blocks): `healthbeat scores --owner \"{escape_text(who)}\"` lists them all.",
            MAX_TEXT)}]})
    return {"type": "home", "callback_id": "healthbeat_home", "blocks": blocks}


# -- publishing ---------------------------------------------------------------------------------------------

def home_opened(store: Store, slack: SlackClient, user_id: str, instance_url: str, now: datetime) -> None:
    """The tab of a Slack user who just opened it: found as an owner, published, and remembered for republishes.

    Raises the `SlackError` of a failed call (recorded on the user's row first).
    """
    owner, email = owner_by_slack_user(store, slack, user_id)
    view = home_view(store, owner, instance_url, now, email=email)
    bands = owner_bands(store, owner) if owner is not None else {}
    with store.transaction() as conn:
        conn.execute("INSERT INTO home_tabs (slack_user_id, owner_id, opened_at) VALUES (?, ?, ?) "
                     "ON CONFLICT (slack_user_id) DO UPDATE SET owner_id = excluded.owner_id, "
                     "opened_at = excluded.opened_at", (user_id, owner.ids[0] if owner else None, iso(now)))
    _publish(store, slack, user_id, view, bands, now)


def _publish(store: Store, slack: SlackClient, user_id: str, view: dict[str, Any], bands: Mapping[str, str],
             now: datetime) -> None:
    try:
        slack.publish_home(user_id, view)
    except SlackError as exc:
        with store.transaction() as conn:
            conn.execute("UPDATE home_tabs SET last_error = ? WHERE slack_user_id = ?", (str(exc)[:500], user_id))
        raise
    with store.transaction() as conn:
        conn.execute("UPDATE home_tabs SET published_at = ?, shown = ?, last_error = NULL WHERE slack_user_id = ?",
                     (iso(now), json.dumps(dict(bands), sort_keys=True), user_id))


def republish_home_tabs(store: Store, slack: SlackClient | None, instance_url: str, now: datetime, *,
                        dry_run: bool = False, limit: int = MAX_PUBLISHES_PER_CYCLE) -> HomeReport:
    """Publish again the Home tabs whose accounts changed band since they were last published: after a cycle's
    nudges, so the tab agrees with them. Only users who opened the tab; at most `limit` a pass (Slack's Tier 4),
    the rest at the next pass (their bands still differ from those shown). A refusal for one user is recorded
    and the pass goes on; Slack unavailable (after the client's retries, 429s included) ends the pass."""
    report = HomeReport()
    if slack is None or dry_run:
        return report
    inputs = _republish_inputs(store)
    if store.cursor(_REPUBLISHED_FROM) == inputs:
        return report  # nothing a tab shows has moved since a pass that left every tab as it should be
    tabs = store.query("SELECT slack_user_id, owner_id, shown FROM home_tabs WHERE owner_id IS NOT NULL "
                       "ORDER BY opened_at DESC")
    for tab in tabs:
        if report.published + report.failed >= limit:
            break
        owner = owner_by_id(store, str(tab["owner_id"]))
        if owner is None:
            continue
        bands = owner_bands(store, owner)
        if tab["shown"] is not None and json.loads(str(tab["shown"])) == bands:
            continue
        user_id = str(tab["slack_user_id"])
        try:
            _publish(store, slack, user_id, home_view(store, owner, instance_url, now), bands, now)
        except SlackUnavailable as exc:
            report.failed += 1
            report.errors.append(f"{user_id}: {exc}")
            log.warning("home tab: Slack unavailable (%s); the remaining tabs wait for the next cycle", exc)
            break
        except SlackError as exc:
            report.failed += 1
            report.errors.append(f"{user_id}: {exc}")
            log.warning("home tab: could not republish the tab of %s: %s", user_id, exc)
            continue
        report.published += 1
    if report.published or report.failed:
        log.info("home tab: republished %d tab(s) whose bands changed (%d failed)", report.published, report.failed)
    if not report.failed and report.published < limit:  # else the next pass looks at every tab again
        with store.transaction():
            store.save_cursor(_REPUBLISHED_FROM, inputs, len(tabs), now)
    return report


_REPUBLISHED_FROM = "slack.home_tabs_republished_from"


def _republish_inputs(store: Store) -> str:
    """What the tabs' bands depend on, in a few figures read from a cursor, an index and the (small) table of
    tabs, never from every account (a pass is asked each cycle): when scores were last stored, the newest
    change of an Account (one that changed owner, or was deleted) and the tabs opened."""
    tabs = store.conn.execute("SELECT count(*), max(opened_at), group_concat(owner_id) FROM home_tabs").fetchone()
    return json.dumps([store.cursor(changes.SCORES_STORED), *changes.accounts_moved(store), *tabs])
