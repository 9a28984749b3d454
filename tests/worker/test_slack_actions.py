"""`POST /slack/actions` over real HTTP: the Slack sandbox clicks the buttons of a real nudge and submits the
modal, signed as Slack signs, to a `HealthServer` on a free port.

The nudge comes from a real cycle (evaluate, then notify through slack-sdk into the sandbox), with the
feedback buttons the alerting code puts on every nudge.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from connectors.sandboxes.world import World, advance, stir_trouble
from connectors.slack.client import SlackClient
from connectors.slack.sandbox import PostedMessage, SlackSandbox, slack_signature
from worker.alerting.message import NudgePayload, digest_message, feedback_block
from worker.clock import ShiftedClock
from worker.config import Settings
from worker.cycle import Cycle
from worker.demo.harness import Sandboxes
from worker.ops.doctor import SLACK_SCOPES
from worker.service.feedback import account_feedback, list_feedback, rule_stats
from worker.service.http import HealthServer, HealthState
from worker.service.metrics import Metrics
from worker.service.slack_actions import InteractiveSlack, SlackActions, build_slack_actions, with_receipts
from worker.store import Store

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
MANIFEST = Path(__file__).resolve().parents[2] / "slack" / "manifest.yaml"


@dataclass(frozen=True)
class Nudged:
    """The one nudge a test clicks on: its account, key, Slack message, and who can click it."""

    account_id: str
    key: str
    message: PostedMessage
    clicker: str


def _nudge_one(world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock, *,
               owner_in_slack: bool) -> Nudged:
    """Backfill, then three weeks in which one account (of an owner with or without Slack) turns red."""
    cycle.run()
    not_red = {r["account_id"] for r in store.query("SELECT account_id FROM scores WHERE band != 'red'")}
    owners = set(world.slack_user_ids) if owner_in_slack else world.owners_without_slack
    account = next(a for a in world.accounts if a.owner_id in owners and a.id in not_red)
    start = clock()
    clock.offset += timedelta(days=21)
    advance(world, start, clock(), quiet=[account.id])
    stir_trouble(world, [account.id], clock())
    cycle.run(("sync", "score", "evaluate", "notify"))
    (row,) = store.query("SELECT dedup_key, remote_ref FROM outbox WHERE account_id = ? AND status = 'sent' "
                         "AND dedup_key LIKE 'nudge:turned_red:%:fire'", (account.id,))
    channel, ts = row["remote_ref"].split(":")
    message = next(m for m in sandboxes.slack.messages if (m.channel, m.ts) == (channel, ts))
    clicker = world.slack_user_ids[account.owner_id] if owner_in_slack else next(iter(world.slack_user_ids.values()))
    return Nudged(account.id, row["dedup_key"], message, clicker)


@pytest.fixture
def signed_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"slack_signing_secret": SecretStr(SECRET)})


@pytest.fixture
def actions(signed_settings: Settings, clock: ShiftedClock) -> Iterator[SlackActions]:
    handler = build_slack_actions(signed_settings, clock=clock)
    yield handler
    handler.close()


def _serve(clock: ShiftedClock, handler: SlackActions) -> HealthServer:
    server = HealthServer(HealthState(timedelta(minutes=15), clock=clock), Metrics(), port=0, host="127.0.0.1")
    server.routes.add("POST", "/slack/actions", handler.handle)
    return server.start()


@pytest.fixture
def url(actions: SlackActions, clock: ShiftedClock) -> Iterator[str]:
    server = _serve(clock, actions)
    yield f"{server.url}/slack/actions"
    server.stop()


@pytest.fixture
def in_dm(world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock) -> Nudged:
    """A nudge in the owner's DM."""
    return _nudge_one(world, sandboxes, cycle, store, clock, owner_in_slack=True)


@pytest.fixture
def in_channel(world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock) -> Nudged:
    """A nudge in the fallback channel (its owner has no Slack user), clicked by a colleague."""
    return _nudge_one(world, sandboxes, cycle, store, clock, owner_in_slack=False)


@pytest.fixture
def posted(sandboxes: Sandboxes, store: Store) -> Nudged:
    """A message with the feedback buttons in someone's DM, without running a cycle: for requests that must
    be refused before anything is looked at."""
    user = sandboxes.slack.add_user("pat@example.com", "Pat")
    key = "nudge:turned_red:001000000000001AAA:1:fire"
    client = SlackClient(sandboxes.slack.token, base_url=sandboxes.slack.url)
    sent = client.post(user, text="Acme turned red", blocks=[feedback_block(key)])
    message = next(m for m in sandboxes.slack.messages if m.ts == sent.ts)
    return Nudged("001000000000001AAA", key, message, user)


def _votes(store: Store) -> list[tuple[str, str]]:
    return [(r["verdict"], r["user_id"]) for r in list_feedback(store)]


def _updates(sandboxes: Sandboxes) -> list[dict[str, Any]]:
    return [c.params for c in sandboxes.slack.calls if c.method == "chat.update"]


def _open_modal(sandboxes: Sandboxes, url: str, nudged: Nudged) -> Any:
    answer = sandboxes.slack.click(url, nudged.message, "feedback_score_wrong", SECRET, user=nudged.clicker,
                                   value=nudged.key)
    assert answer.status == 200, answer.body
    (view,) = sandboxes.slack.views
    return view


# -- a click, once -------------------------------------------------------------------------------------------

def test_a_signed_click_is_recorded_once_even_if_sent_twice(
        sandboxes: Sandboxes, in_dm: Nudged, url: str, store: Store) -> None:
    slack = sandboxes.slack
    payload = slack.block_actions_payload(in_dm.message, "feedback_useful", user=in_dm.clicker, value=in_dm.key)

    first = slack.send_interaction(url, payload, SECRET)
    retry = slack.send_interaction(url, payload, SECRET, retry_num=1)  # Slack's retry: the same body again
    double = slack.click(url, in_dm.message, "feedback_useful", SECRET, user=in_dm.clicker, value=in_dm.key)

    assert (first.status, retry.status, double.status) == (200, 200, 200)
    assert _votes(store) == [("useful", in_dm.clicker)]


def test_the_click_is_answered_well_within_slacks_three_seconds(
        sandboxes: Sandboxes, in_dm: Nudged, url: str, actions: SlackActions) -> None:
    answer = sandboxes.slack.click(url, in_dm.message, "feedback_not_useful", SECRET, user=in_dm.clicker,
                                   value=in_dm.key)

    assert answer.status == 200
    assert answer.seconds < 0.5, f"answered in {answer.seconds:.2f} s"


def test_the_answer_does_not_wait_for_the_message_update(
        sandboxes: Sandboxes, in_dm: Nudged, signed_settings: Settings, store: Store, clock: ShiftedClock) -> None:
    released = threading.Event()

    def stuck_in_backoff(seconds: float) -> None:
        released.wait(5)

    stuck = SlackClient(sandboxes.slack.token, base_url=sandboxes.slack.url, sleep=stuck_in_backoff)
    sandboxes.slack.fail_next("chat.update", "ratelimited", status=429, retry_after=1)
    handler = SlackActions(Store(signed_settings.db), signing_secret=SECRET, updater=stuck, clock=clock,
                           owns_store=True)
    server = _serve(clock, handler)
    try:
        answer = sandboxes.slack.click(f"{server.url}/slack/actions", in_dm.message, "feedback_useful", SECRET,
                                       user=in_dm.clicker, value=in_dm.key)
        recorded_before_update = _votes(store)
        updated_before_release = [c for c in sandboxes.slack.calls if c.method == "chat.update" and c.ok]
        released.set()
        handler.flush()
    finally:
        server.stop()
        handler.close()

    assert answer.status == 200 and recorded_before_update == [("useful", in_dm.clicker)]
    assert updated_before_release == []
    assert [c.ok for c in sandboxes.slack.calls if c.method == "chat.update"] == [False, True]


def test_the_message_shows_the_feedback_and_who_gave_it(
        sandboxes: Sandboxes, in_dm: Nudged, url: str, actions: SlackActions) -> None:
    sandboxes.slack.click(url, in_dm.message, "feedback_useful", SECRET, user=in_dm.clicker, value=in_dm.key)
    actions.flush()

    (now,) = [m for m in sandboxes.slack.messages if (m.channel, m.ts) == (in_dm.message.channel, in_dm.message.ts)]
    receipts = [b for b in now.blocks or [] if str(b.get("block_id", "")).startswith("feedback_seen:")]
    assert len(receipts) == 1
    assert f"Useful: <@{in_dm.clicker}>" in receipts[0]["elements"][0]["text"]
    assert any(str(b.get("block_id", "")).startswith("feedback:") for b in now.blocks or []), "buttons stay"
    assert now.text == in_dm.message.text


def test_a_change_of_mind_shows_only_the_latest_verdict(
        sandboxes: Sandboxes, in_dm: Nudged, url: str, actions: SlackActions, store: Store) -> None:
    for action_id in ("feedback_useful", "feedback_not_useful"):
        sandboxes.slack.click(url, in_dm.message, action_id, SECRET, user=in_dm.clicker, value=in_dm.key)
    actions.flush()

    (now,) = [m for m in sandboxes.slack.messages if m.ts == in_dm.message.ts]
    text = json.dumps(now.blocks)
    assert _votes(store) == [("not_useful", in_dm.clicker)]
    assert "Not useful: <@" in text and "Useful: <@" not in text.replace("Not useful: <@", "")


def test_a_link_button_click_is_acknowledged_and_not_recorded(
        sandboxes: Sandboxes, in_dm: Nudged, url: str, store: Store) -> None:
    answer = sandboxes.slack.click(url, in_dm.message, "open_record", SECRET, user=in_dm.clicker)

    assert answer.status == 200
    assert _votes(store) == []


# -- refused -------------------------------------------------------------------------------------------------

def _altered(sandbox: SlackSandbox, url: str, payload: dict[str, Any]) -> int:
    stamp = int(time.time())
    signed = f"payload={json.dumps(payload)}".encode()
    body = signed.replace(b"feedback_not_useful", b"feedback_useful")
    headers = {"X-Slack-Request-Timestamp": str(stamp), "X-Slack-Signature": slack_signature(SECRET, stamp, signed),
               "Content-Type": "application/x-www-form-urlencoded"}
    return httpx.post(url, content=body, headers=headers, timeout=5).status_code


REFUSALS: dict[str, Callable[[SlackSandbox, str, dict[str, Any]], int]] = {
    "unsigned": lambda sb, url, p: sb.send_interaction(url, p, None).status,
    "signed with another secret": lambda sb, url, p: sb.send_interaction(url, p, "not-the-secret").status,
    "stale by six minutes": lambda sb, url, p: sb.send_interaction(url, p, SECRET,
                                                                   timestamp=int(time.time()) - 360).status,
    "from six minutes ahead": lambda sb, url, p: sb.send_interaction(url, p, SECRET,
                                                                     timestamp=int(time.time()) + 360).status,
    "altered after signing": lambda sb, url, p: _altered(sb, url, p),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_request_that_is_not_slacks_is_refused_with_nothing_recorded(
        sandboxes: Sandboxes, posted: Nudged, url: str, actions: SlackActions, store: Store, case: str) -> None:
    payload = sandboxes.slack.block_actions_payload(posted.message, "feedback_not_useful", user=posted.clicker,
                                                    value=posted.key)

    status = REFUSALS[case](sandboxes.slack, url, payload)
    actions.flush()

    assert status == 401
    assert _votes(store) == []
    assert _updates(sandboxes) == []


def test_without_a_signing_secret_every_request_is_refused(
        sandboxes: Sandboxes, posted: Nudged, settings: Settings, store: Store, clock: ShiftedClock) -> None:
    handler = build_slack_actions(settings, clock=clock)  # SLACK_SIGNING_SECRET unset
    server = _serve(clock, handler)
    try:
        answer = sandboxes.slack.click(f"{server.url}/slack/actions", posted.message, "feedback_useful", SECRET,
                                       user=posted.clicker, value=posted.key)
    finally:
        server.stop()
        handler.close()

    assert answer.status == 401
    assert _votes(store) == []


def test_a_signed_request_without_a_payload_is_a_bad_request(posted: Nudged, url: str, store: Store) -> None:
    stamp = int(time.time())
    body = b"token=x&team_id=T1"
    response = httpx.post(url, content=body, timeout=5, headers={
        "X-Slack-Request-Timestamp": str(stamp), "X-Slack-Signature": slack_signature(SECRET, stamp, body),
        "Content-Type": "application/x-www-form-urlencoded"})

    assert response.status_code == 400
    assert _votes(store) == []


# -- "Score looks wrong": the modal ----------------------------------------------------------------------

def test_score_looks_wrong_opens_a_modal_about_that_account(
        sandboxes: Sandboxes, in_dm: Nudged, world: World, url: str, store: Store) -> None:
    view = _open_modal(sandboxes, url, in_dm)

    assert view.user == in_dm.clicker
    assert json.loads(view.view["private_metadata"])["key"] == in_dm.key
    assert world.account(in_dm.account_id).name.split()[0] in json.dumps(view.view["blocks"])
    assert _votes(store) == []  # nothing is said until the modal is submitted


def test_the_owners_correction_becomes_an_override_with_expiry(
        sandboxes: Sandboxes, in_dm: Nudged, url: str, actions: SlackActions, cycle: Cycle, store: Store,
        clock: ShiftedClock) -> None:
    view = _open_modal(sandboxes, url, in_dm)

    answer = sandboxes.slack.submit_view(url, view, {"reason": "renewal signed yesterday", "value": "72",
                                                     "until": "7"}, SECRET)
    cycle.run(("score",))
    actions.flush()

    assert answer.status == 200 and answer.json() is None  # an empty 200 closes the modal
    (override,) = store.query("SELECT value, reason, until FROM overrides WHERE account_id = ?", (in_dm.account_id,))
    assert override == {"value": 72.0, "reason": "renewal signed yesterday",
                        "until": (clock().date() + timedelta(days=7)).isoformat()}
    score = store.query("SELECT score, overridden FROM scores WHERE account_id = ?", (in_dm.account_id,))[0]
    assert (score["score"], score["overridden"]) == (72.0, 1)
    assert "applied as an override" in account_feedback(store, in_dm.account_id, clock().date()).lines()[0]
    (now,) = [m for m in sandboxes.slack.messages if m.ts == in_dm.message.ts]
    assert "Score looks wrong: <@" in json.dumps(now.blocks) and "pinned" in json.dumps(now.blocks)


def test_a_correction_from_a_shared_channel_waits_as_a_proposal(
        sandboxes: Sandboxes, in_channel: Nudged, url: str, store: Store, clock: ShiftedClock) -> None:
    view = _open_modal(sandboxes, url, in_channel)

    sandboxes.slack.submit_view(url, view, {"reason": "their champion left", "value": "25"}, SECRET)

    assert store.query("SELECT * FROM overrides") == []
    (line,) = account_feedback(store, in_channel.account_id, clock().date()).lines()
    assert "proposed, waiting: `healthbeat feedback accept" in line
    assert (clock().date() + timedelta(days=14)).isoformat() in line  # the default term


def test_a_score_outside_0_to_100_is_sent_back_to_the_modal(
        sandboxes: Sandboxes, in_dm: Nudged, url: str, store: Store) -> None:
    view = _open_modal(sandboxes, url, in_dm)

    answer = sandboxes.slack.submit_view(url, view, {"reason": "far too low", "value": "140"}, SECRET)

    assert answer.status == 200
    assert answer.json() == {"response_action": "errors", "errors": {"value": "A score from 0 to 100, or leave it "
                                                                               "empty."}}
    assert _votes(store) == [] and store.query("SELECT * FROM overrides") == []


# -- counted ----------------------------------------------------------------------------------------------

def test_rules_stats_counts_the_alert_and_the_click(
        sandboxes: Sandboxes, in_dm: Nudged, url: str, store: Store) -> None:
    sandboxes.slack.click(url, in_dm.message, "feedback_useful", SECRET, user=in_dm.clicker, value=in_dm.key)

    stats = {s.rule: s for s in rule_stats(store)}
    rule = in_dm.key.split(":")[1]

    assert stats[rule].alerts_sent >= 1
    assert (stats[rule].useful, stats[rule].not_useful, stats[rule].answered) == (1, 0, 1)
    median = stats[rule].median_seconds_to_feedback
    assert median is not None and median < 60


# -- the pieces ------------------------------------------------------------------------------------------

def test_receipts_take_the_dividers_place_so_a_full_digest_stays_within_50_blocks() -> None:
    keys = [f"nudge:turned_red:001000000000{i:03d}AAA:1:fire" for i in range(15)]
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": "15 accounts"}}]
    for key in keys:
        blocks += [{"type": "section", "text": {"type": "mrkdwn", "text": key}}, feedback_block(key),
                   {"type": "divider"}]
    votes = {key: [{"verdict": "useful", "user_id": "U0HB0000001", "user_name": "dana", "proposed_value": None,
                    "proposed_until": None, "override_status": None}] for key in keys}

    drawn = with_receipts(blocks, votes)

    assert len(blocks) == len(drawn) == 46
    assert [b["type"] for b in drawn[1:4]] == ["section", "actions", "context"]
    assert with_receipts(drawn, votes) == drawn  # redrawing never stacks receipts


def test_a_digest_names_an_account_two_rules_speak_of_once_and_keeps_both_messages() -> None:
    def nudge(rule: str, account: str, name: str) -> NudgePayload:
        return NudgePayload(f"nudge:{rule}:{account}:1:fire", rule, "fire", account, name, f"{name}: {rule}",
                            f"https://example.my.salesforce.com/{account}")

    text, blocks = digest_message([nudge("turned_red", "001A", "Wayne Health"), nudge("turned_red", "001B", "Zorg"),
                                   nudge("churn_risk_high", "001B", "Zorg")])

    assert text == "2 of your accounts need attention: Wayne Health; Zorg"
    assert blocks[0]["text"]["text"] == "2 accounts need attention"
    assert [b["text"]["text"] for b in blocks if b["type"] == "section"] == [
        "Wayne Health: turned_red", "Zorg: turned_red", "Zorg: churn_risk_high"]


def test_the_manifest_asks_for_every_scope_the_worker_needs_and_sends_clicks_to_slack_actions() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())

    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    interactivity = manifest["settings"]["interactivity"]

    assert set(SLACK_SCOPES) | {"channels:read"} <= scopes
    assert interactivity["is_enabled"] is True
    assert interactivity["request_url"].startswith("https://")
    assert interactivity["request_url"].endswith("/slack/actions")
    assert manifest["features"]["bot_user"]["display_name"]


def test_views_open_goes_through_the_slack_client_wrapper(sandboxes: Sandboxes) -> None:
    user = sandboxes.slack.add_user("pat@example.com", "Pat")
    client = InteractiveSlack(sandboxes.slack.token, base_url=sandboxes.slack.url, max_retries=0)
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Hi"},
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hello"}}]}

    view_id = client.open_view(sandboxes.slack.new_trigger(user), view)

    assert view_id == sandboxes.slack.views[0].id
