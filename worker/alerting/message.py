"""A nudge as it travels: its key, its payload in the outbox, and its Slack message (Block Kit).

Built here and read back here, so the writer (alert evaluation), the sender (`worker.delivery.notify`) and
the button handler (`worker.service.slack_actions`) cannot drift apart on a format:

- `NudgeKey` is the outbox row's dedup key, `nudge:{rule}:{account}:{episode}:{kind}[:channel]`. It is also
  the value of every feedback button, so a click names the rule, the account and the alert episode without a
  lookup, and a forged or truncated value is refused (`NotANudgeKey`).
- `NudgePayload` is the outbox row's `payload` column: what the sender needs to route and post the nudge
  with no access to the scores (which may have moved on by the time it goes out).
- `build_blocks`, `feedback_block` and `digest_message` are the messages themselves. Every value from data
  is escaped for Slack (`slack_escape`), and every text stays inside Slack's limits.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

from worker.alerting.rules import AlertRule, slack_escape, template_environment
from worker.errors import NotANudgeKey

log = logging.getLogger(__name__)

NudgeKind = Literal["fire", "resolve"]

_KEY = re.compile(r"^nudge:(?P<rule>[a-z0-9_]+):(?P<account>[A-Za-z0-9]{15,18}):(?P<episode>\d{1,18})"
                  r":(?P<kind>fire|resolve)(?P<copy>:channel)?\Z")  # an episode SQLite can hold; no trailing newline

FEEDBACK_LABELS: Final[Mapping[str, str]] = {"feedback_useful": "Useful", "feedback_not_useful": "Not useful",
                                             "feedback_score_wrong": "Score looks wrong"}
"""The feedback buttons on every nudge: action_id → label, in the order they are shown."""
FEEDBACK_BLOCK: Final = "feedback:"
"""Prefix of the buttons' block_id (then the dedup key), so the receipts can be drawn next to them."""
MAX_TEXT: Final = 3000
"""Slack's limit on a section's or a context element's text, and on a button's url."""
MAX_BLOCKS: Final = 50
"""Slack's limit on blocks in one message."""


@dataclass(frozen=True)
class NudgeKey:
    """Which nudge: one rule's alert episode on one account, firing or resolved, to the owner or a channel."""

    rule: str
    account_id: str
    episode: int
    kind: NudgeKind
    channel_copy: bool = False

    @property
    def dedup_key(self) -> str:
        return f"nudge:{self.rule}:{self.account_id}:{self.episode}:{self.kind}" + \
            (":channel" if self.channel_copy else "")

    def __str__(self) -> str:
        return self.dedup_key

    @classmethod
    def parse(cls, text: str) -> NudgeKey:
        match = _KEY.match(text)
        if match is None:
            raise NotANudgeKey(f"not a nudge key: {text[:200]!r}")
        kind: NudgeKind = "fire" if match["kind"] == "fire" else "resolve"
        return cls(match["rule"], match["account"], int(match["episode"]), kind, bool(match["copy"]))


@dataclass(frozen=True)
class NudgePayload:
    """The outbox row's payload for a Slack nudge: where it goes and what it says, fixed when it was owed."""

    dedup_key: str
    rule: str
    kind: str
    account_id: str
    account_name: str | None
    text: str
    url: str
    destination: str = "owner"  # "owner", or "channel:<name or id>"
    owner_name: str | None = None
    owner_email: str | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def to_owner(self) -> bool:
        return self.destination == "owner"

    @property
    def channel(self) -> str | None:
        return self.destination.removeprefix("channel:") if self.destination.startswith("channel:") else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NudgePayload:
        """Read a payload back; rows written before a field existed get its default."""
        data: dict[str, Any] = json.loads(text)
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["destination"] = known.get("destination") or "owner"
        known["blocks"] = list(known.get("blocks") or [])
        known.setdefault("account_name", None)
        known.setdefault("url", "")
        return cls(**known)


def record_link(instance_url: str, account_id: str) -> str:
    """The Lightning page of the Account, which is where a CSM reads it."""
    return f"{instance_url.rstrip('/')}/lightning/r/Account/{account_id}/view"


def render_message(rule: AlertRule, context: Mapping[str, Any], url: str) -> str:
    """The rule's template; if it cannot render, a plain message with the facts (and a logged error)."""
    try:
        return template_environment().from_string(rule.message).render(
            **context, rule=rule.name, url=url).strip()
    except Exception as exc:  # whatever the data does to the template, the owner still hears the facts
        log.error("alert %s: message template failed for %s (%s); sending the plain facts instead",
                  rule.name, context.get("account_id"), exc)
        return (f"{slack_escape(context.get('account_name'))}: health {context.get('score')} "
                f"({context.get('band')}). {slack_escape(context.get('reason'))}")


def build_blocks(rule: AlertRule, context: Mapping[str, Any], text: str, url: str, kind: str) -> list[dict[str, Any]]:
    """Block Kit: the message, the facts at a glance (score, change, churn risk), the rule, and a button to
    the Salesforce record. Every value from data is escaped; texts stay inside Slack's limits."""
    score = context.get("score")
    change = ""
    if context.get("previous_score") is not None and score is not None:
        change = f"  ·  *Change* {round(context['previous_score'])} → {round(score)} " \
                 f"({slack_escape(context.get('trend') or '')})"
    churn = context.get("churn_risk")
    facts = (f"*Health* {'-' if score is None else round(score)} ({slack_escape(context.get('band'))}){change}"
             f"  ·  *Churn risk* {'-' if churn is None else round(churn)}"
             f"  ·  *Coverage* {round(100 * float(context.get('coverage') or 0))}%")
    lead = f":white_check_mark: Resolved: {text}" if kind == "resolve" else text
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": lead[:MAX_TEXT]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": facts[:MAX_TEXT]},
                                         {"type": "mrkdwn", "text": f"Rule: {rule.name}"}]},
        {"type": "actions", "elements": [{"type": "button", "action_id": "open_record",
                                          "text": {"type": "plain_text", "text": "Open in Salesforce"},
                                          "url": url[:MAX_TEXT]}]},
    ]


def feedback_block(dedup_key: str) -> dict[str, Any]:
    """The three feedback buttons for one nudge (Block Kit); each button's value is the nudge's dedup key."""
    def button(action_id: str) -> dict[str, Any]:
        return {"type": "button", "action_id": action_id, "value": dedup_key,
                "text": {"type": "plain_text", "text": FEEDBACK_LABELS[action_id]}}
    return {"type": "actions", "block_id": (FEEDBACK_BLOCK + dedup_key)[:255],
            "elements": [button(action_id) for action_id in FEEDBACK_LABELS]}


def nudge_payload(rule: AlertRule, context: Mapping[str, Any], key: NudgeKey, destination: str, text: str,
                  url: str) -> NudgePayload:
    """The payload of one nudge to one destination, its message and buttons included."""
    return NudgePayload(
        dedup_key=key.dedup_key, rule=rule.name, kind=key.kind, account_id=str(context["account_id"]),
        account_name=context["account_name"], owner_name=context.get("owner") or None,
        owner_email=context.get("owner_email"), destination=destination, text=text, url=url,
        blocks=[*build_blocks(rule, context, text, url, key.kind), feedback_block(key.dedup_key)])


def digest_message(payloads: Sequence[NudgePayload]) -> tuple[str, list[dict[str, Any]]]:
    """One message listing several accounts: the same facts as single nudges, without the flood. An account two
    rules speak of at once (turned red, and its churn risk high) is counted and named once, each rule's message
    kept below."""
    names = list(dict.fromkeys(p.account_name or p.account_id for p in payloads))
    count = len(names)
    what = f"{count} of your accounts need attention" if count > 1 else "One of your accounts needs attention"
    text = f"{what}: " + "; ".join(slack_escape(name) for name in names)
    heading = f"{count} accounts need attention" if count > 1 else f"{len(payloads)} nudges about one account"
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": heading}}]
    for payload in payloads:
        blocks += [
            {"type": "section", "text": {"type": "mrkdwn", "text": payload.text[:MAX_TEXT]},
             "accessory": {"type": "button", "action_id": f"open_{payload.account_id}",
                           "text": {"type": "plain_text", "text": "Open"}, "url": payload.url}},
            feedback_block(payload.dedup_key),
            {"type": "divider"}]
    return text[:MAX_TEXT], blocks[:MAX_BLOCKS]


def cut_to_fit(text: str, account_ids: Sequence[str], *, note: str | None = None
               ) -> tuple[str, list[dict[str, Any]]]:
    """A message Slack refused as too big, cut to fit: the start of its text in one section, and where the
    whole story is (`healthbeat explain`), so the nudge still lands and says where to read on."""
    where = ", ".join(f"`healthbeat explain {account_id}`" for account_id in account_ids[:5])
    tail = f"… (cut to fit Slack's limits; the whole reason: {where})"
    room = MAX_TEXT - len(tail)
    lead = text if len(text) <= room else text[:room].rstrip()
    short = lead + ("" if lead == text else tail)
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": short}}]
    if note:
        blocks.insert(0, {"type": "context", "elements": [{"type": "mrkdwn", "text": note[:MAX_TEXT]}]})
    if lead == text:  # the text fitted: the blocks were what Slack refused
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"Details: {where}"[:MAX_TEXT]}]})
    return short, blocks
