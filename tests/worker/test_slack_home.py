"""The Slack Home tab ("my accounts") over real HTTP: the Slack sandbox sends signed Events API requests to
`POST /slack/events` on a `HealthServer`, and the worker publishes the tab with `views.publish` into the
sandbox, which validates it as Slack does (tests/connectors/test_slack_views_sandbox.py).

The accounts come from a real backfill of the sandboxes' world; the nudge whose buttons the tab carries comes
from a real cycle.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from connectors.sandboxes.world import World, WorldAccount, advance, stir_trouble
from connectors.slack.client import SlackClient
from connectors.slack.sandbox import InteractionResult, slack_signature
from worker.clock import ShiftedClock
from worker.config import Settings
from worker.cycle import Cycle, record_url
from worker.delivery.home_tab import MAX_HOME_BLOCKS, home_view, owner_bands, owner_by_id, republish_home_tabs
from worker.demo.harness import Sandboxes
from worker.scoring.engine import score_accounts
from worker.scoring.scorecard import load_scorecard
from worker.service.feedback import list_feedback
from worker.service.http import HealthServer, HealthState
from worker.service.metrics import Metrics
from worker.service.slack_actions import build_slack_actions
from worker.service.slack_home import SlackEvents, build_slack_events
from worker.store import Store, iso

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
MANIFEST = Path(__file__).resolve().parents[2] / "slack" / "manifest.yaml"


@pytest.fixture
def signed_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"slack_signing_secret": SecretStr(SECRET)})


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def events(signed_settings: Settings, clock: ShiftedClock, metrics: Metrics) -> Iterator[SlackEvents]:
    handler = build_slack_events(signed_settings, metrics=metrics, clock=clock)
    yield handler
    handler.close()


def _serve(clock: ShiftedClock, handler: SlackEvents, metrics: Metrics) -> HealthServer:
    server = HealthServer(HealthState(timedelta(minutes=15), clock=clock), metrics, port=0, host="127.0.0.1")
    server.routes.add("POST", "/slack/events", handler.handle)
    return server.start()


@pytest.fixture
def server(events: SlackEvents, clock: ShiftedClock, metrics: Metrics) -> Iterator[HealthServer]:
    running = _serve(clock, events, metrics)
    yield running
    running.stop()


@pytest.fixture
def url(server: HealthServer) -> str:
    return f"{server.url}/slack/events"


@pytest.fixture
def scored(world: World, cycle: Cycle, store: Store) -> World:
    """The world after a backfill: every account scored."""
    cycle.run()
    return world


def _owner_with_most(world: World, store: Store) -> tuple[str, str]:
    """(Salesforce owner id, Slack user id) of the Slack owner with the most accounts needing attention."""
    counts = {owner: int(store.scalar(
        "SELECT count(*) FROM accounts a JOIN scores s ON s.account_id = a.id WHERE a.owner_id = ? "
        "AND s.band != 'green'", (owner,))) for owner in world.slack_user_ids}
    owner = max(sorted(counts), key=lambda o: counts[o])
    return owner, world.slack_user_ids[owner]


def _published(sandboxes: Sandboxes, user: str) -> dict[str, Any]:
    return sandboxes.slack.home_views[user]


def _texts(view: dict[str, Any]) -> str:
    return json.dumps(view["blocks"], ensure_ascii=False)


def _publishes(sandboxes: Sandboxes) -> list[str]:
    return [str(c.params.get("user_id")) for c in sandboxes.slack.calls if c.method == "views.publish" and c.ok]


# -- the Events API handshake and its refusals ----------------------------------------------------------------

def test_the_url_check_is_answered_with_its_challenge(sandboxes: Sandboxes, url: str) -> None:
    answer = sandboxes.slack.send_event(url, {"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7",
                                              "type": "url_verification"}, SECRET)

    assert answer.status == 200
    assert answer.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7"}


def _unsigned(sandboxes: Sandboxes, url: str, body: dict[str, Any]) -> InteractionResult:
    return sandboxes.slack.send_event(url, body, None)


def _altered(sandboxes: Sandboxes, url: str, body: dict[str, Any]) -> InteractionResult:
    stamp = int(time.time())
    signed = json.dumps(body).encode()
    headers = {"X-Slack-Request-Timestamp": str(stamp), "X-Slack-Signature": slack_signature(SECRET, stamp, signed),
               "Content-Type": "application/json"}
    response = httpx.post(url, content=signed.replace(b"home", b"hom\\u0065"), headers=headers, timeout=5)
    return InteractionResult(response.status_code, response.content, {}, 0.0)


REFUSALS = {
    "unsigned": _unsigned,
    "signed with another secret": lambda sb, url, body: sb.slack.send_event(url, body, "not-the-secret"),
    "stale by six minutes": lambda sb, url, body: sb.slack.send_event(url, body, SECRET,
                                                                      timestamp=int(time.time()) - 360),
    "altered after signing": _altered,
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_an_event_that_is_not_slacks_is_refused_and_publishes_nothing(
        sandboxes: Sandboxes, scored: World, store: Store, url: str, events: SlackEvents, case: str) -> None:
    _, user = _owner_with_most(scored, store)

    answer = REFUSALS[case](sandboxes, url, sandboxes.slack.app_home_opened_payload(user))
    events.flush()

    assert answer.status == 401
    assert _publishes(sandboxes) == []


def test_the_url_check_unsigned_is_refused(sandboxes: Sandboxes, url: str) -> None:
    answer = sandboxes.slack.send_event(url, {"challenge": "abc", "type": "url_verification"}, None)

    assert answer.status == 401 and b"abc" not in answer.body


def test_without_a_signing_secret_every_event_is_refused(
        sandboxes: Sandboxes, settings: Settings, clock: ShiftedClock) -> None:
    handler = build_slack_events(settings, clock=clock)  # SLACK_SIGNING_SECRET unset
    server = _serve(clock, handler, Metrics())
    try:
        answer = sandboxes.slack.send_event(f"{server.url}/slack/events",
                                            {"challenge": "abc", "type": "url_verification"}, SECRET)
    finally:
        server.stop()
        handler.close()

    assert answer.status == 401


def test_a_signed_body_that_is_not_json_is_a_bad_request(url: str) -> None:
    stamp = int(time.time())
    body = b"payload=%7B%7D"
    answer = httpx.post(url, content=body, timeout=5, headers={
        "X-Slack-Request-Timestamp": str(stamp), "X-Slack-Signature": slack_signature(SECRET, stamp, body)})

    assert answer.status_code == 400


# -- opening the tab ------------------------------------------------------------------------------------------

def test_opening_the_home_tab_is_acknowledged_before_the_view_is_published(
        sandboxes: Sandboxes, scored: World, store: Store, signed_settings: Settings, clock: ShiftedClock) -> None:
    _, user = _owner_with_most(scored, store)
    released = threading.Event()

    def stuck_in_backoff(seconds: float) -> None:
        released.wait(5)

    stuck = SlackClient(sandboxes.slack.token, base_url=sandboxes.slack.url, sleep=stuck_in_backoff)
    sandboxes.slack.fail_next("views.publish", "ratelimited", status=429, retry_after=1)
    handler = SlackEvents(Store(signed_settings.db), signing_secret=SECRET, slack=stuck,
                          instance_url=lambda s: record_url(s, signed_settings), clock=clock, owns_store=True)
    server = _serve(clock, handler, Metrics())
    try:
        answer = sandboxes.slack.app_home_opened(f"{server.url}/slack/events", user, SECRET)
        published_before_release = dict(sandboxes.slack.home_views)
        released.set()
        handler.flush()
    finally:
        server.stop()
        handler.close()

    assert answer.status == 200 and answer.seconds < 0.5, f"answered in {answer.seconds:.2f} s"
    assert published_before_release == {}
    assert user in sandboxes.slack.home_views


def test_the_owner_sees_red_then_yellow_accounts_with_score_trend_reason_and_link(
        sandboxes: Sandboxes, scored: World, store: Store, url: str, events: SlackEvents,
        signed_settings: Settings) -> None:
    owner, user = _owner_with_most(scored, store)
    sandboxes.slack.app_home_opened(url, user, SECRET)
    events.flush()

    view = _published(sandboxes, user)
    rows = store.query("SELECT a.id, a.name, s.score, s.band, s.trend, s.reason FROM accounts a "
                       "JOIN scores s ON s.account_id = a.id WHERE a.owner_id = ? AND s.band != 'green'", (owner,))
    sections = {b["block_id"].removeprefix("home:"): b for b in view["blocks"] if
                str(b.get("block_id", "")).startswith("home:") and b["block_id"] not in ("home:rest", "home:more")}
    assert set(sections) == {r["id"] for r in rows} and rows, "every account needing attention, and only those"
    order = [b["block_id"].removeprefix("home:") for b in view["blocks"] if b.get("block_id") in
             {f"home:{r['id']}" for r in rows}]
    band_of = {r["id"]: r["band"] for r in rows}
    ranks = [("red", "yellow", "unknown").index(band_of[a]) for a in order]
    assert ranks == sorted(ranks), "red first, then yellow, then unknown"
    instance = record_url(store, signed_settings).rstrip("/")
    for row in rows:
        text = sections[row["id"]]["text"]["text"]
        assert f"{round(row['score'])} ({row['band']})" in text
        assert row["trend"][:1] in text  # the arrow (or "new")
        assert str(row["reason"])[:40] in text
        link = f"{instance}/lightning/r/Account/{row['id']}/view"
        assert f"<{link}|" in text and sections[row["id"]]["accessory"]["url"] == link


def test_the_rest_are_one_line_of_green_accounts(
        sandboxes: Sandboxes, scored: World, store: Store, url: str, events: SlackEvents) -> None:
    owner, user = _owner_with_most(scored, store)
    green = store.scalar("SELECT count(*) FROM accounts a JOIN scores s ON s.account_id = a.id "
                         "WHERE a.owner_id = ? AND s.band = 'green'", (owner,))
    sandboxes.slack.app_home_opened(url, user, SECRET)
    events.flush()

    (rest,) = [b for b in _published(sandboxes, user)["blocks"] if b.get("block_id") == "home:rest"]
    assert (f"{green} green" if green else "No green accounts") in rest["text"]["text"]


def test_renewal_days_are_shown_for_an_account_with_an_open_renewal(
        sandboxes: Sandboxes, scored: World, store: Store, signed_settings: Settings, clock: ShiftedClock) -> None:
    owner, _ = _owner_with_most(scored, store)
    (account,) = store.query("SELECT a.id FROM accounts a JOIN scores s ON s.account_id = a.id "
                             "WHERE a.owner_id = ? AND s.band != 'green' ORDER BY a.id LIMIT 1", (owner,))
    close = (clock() + timedelta(days=30)).date().isoformat()
    store.upsert("opportunities", [{"id": "006HOME000000001", "account_id": account["id"], "name": "Renewal",
                                    "type": "Renewal", "stage": "Negotiation", "close_date": close, "is_closed": 0,
                                    "is_won": 0}], ["id"])
    found = owner_by_id(store, owner)
    assert found is not None

    view = home_view(store, found, record_url(store, signed_settings), clock())

    (section,) = [b for b in view["blocks"] if b.get("block_id") == f"home:{account['id']}"]
    assert "renewal in 30 days" in section["text"]["text"]


def _one_goes_bad(world: World, cycle: Cycle, store: Store, clock: ShiftedClock) -> WorldAccount:
    """Backfill, then three weeks in which one account of an owner with Slack goes bad and is nudged."""
    cycle.run()
    not_red = {r["account_id"] for r in store.query("SELECT account_id FROM scores WHERE band != 'red'")}
    account = next(a for a in world.accounts if a.owner_id in world.slack_user_ids and a.id in not_red)
    start = clock()
    clock.offset += timedelta(days=21)
    advance(world, start, clock(), quiet=[account.id])
    stir_trouble(world, [account.id], clock())
    cycle.run(("sync", "score", "evaluate", "notify"))
    return account


def test_a_nudged_account_carries_the_latest_nudges_feedback_buttons(
        sandboxes: Sandboxes, world: World, cycle: Cycle, store: Store, clock: ShiftedClock, url: str,
        events: SlackEvents) -> None:
    account = _one_goes_bad(world, cycle, store, clock)
    user = world.slack_user_ids[account.owner_id]
    latest = store.query("SELECT account_id, dedup_key FROM outbox WHERE kind = 'slack' AND status = 'sent' "
                         "ORDER BY id")
    keys = {row["account_id"]: row["dedup_key"] for row in latest}  # the last one per account wins

    sandboxes.slack.app_home_opened(url, user, SECRET)
    events.flush()

    blocks = _published(sandboxes, user)["blocks"]
    buttons = {b["block_id"].removeprefix("feedback:"): b for b in blocks if b["type"] == "actions"}
    shown = [b["block_id"].removeprefix("home:") for b in blocks if str(b.get("block_id", "")).startswith("home:0")]
    assert account.id in shown and keys[account.id] in buttons
    assert {b["elements"][0]["value"] for b in buttons.values()} == {keys[a] for a in shown if a in keys}


def test_a_click_on_the_tabs_buttons_counts_as_feedback_on_the_nudge(
        sandboxes: Sandboxes, world: World, cycle: Cycle, store: Store, clock: ShiftedClock, url: str,
        events: SlackEvents, signed_settings: Settings) -> None:
    account = _one_goes_bad(world, cycle, store, clock)
    user = world.slack_user_ids[account.owner_id]
    key = str(store.scalar("SELECT dedup_key FROM outbox WHERE kind = 'slack' AND status = 'sent' "
                           "AND account_id = ? ORDER BY id DESC LIMIT 1", (account.id,)))
    sandboxes.slack.app_home_opened(url, user, SECRET)
    events.flush()
    actions = build_slack_actions(signed_settings, clock=clock)
    server = HealthServer(HealthState(timedelta(minutes=15), clock=clock), Metrics(), port=0, host="127.0.0.1")
    server.routes.add("POST", "/slack/actions", actions.handle)
    server.start()
    try:
        payload = sandboxes.slack.home_block_actions_payload(user, "feedback_useful", value=key)
        answer = sandboxes.slack.send_interaction(f"{server.url}/slack/actions", payload, SECRET)
        actions.flush()
    finally:
        server.stop()
        actions.close()

    assert answer.status == 200
    assert [(r["verdict"], r["user_id"]) for r in list_feedback(store)] == [("useful", user)]
    assert store.scalar("SELECT dedup_key FROM feedback") == key


def test_a_slack_user_who_owns_nothing_gets_a_short_friendly_view(
        sandboxes: Sandboxes, scored: World, url: str, events: SlackEvents) -> None:
    stranger = sandboxes.slack.add_user("someone.else@example.com", "Someone Else")

    sandboxes.slack.app_home_opened(url, stranger, SECRET)
    events.flush()

    view = _published(sandboxes, stranger)
    assert len(view["blocks"]) <= 3
    assert "someone.else@example.com" in _texts(view) and "Nothing to show you yet" in _texts(view)


def test_the_messages_tab_is_not_ours(sandboxes: Sandboxes, scored: World, store: Store, url: str,
                                      events: SlackEvents) -> None:
    _, user = _owner_with_most(scored, store)

    answer = sandboxes.slack.app_home_opened(url, user, SECRET, tab="messages")
    events.flush()

    assert answer.status == 200 and _publishes(sandboxes) == []


def test_publishes_are_counted_in_metrics(sandboxes: Sandboxes, scored: World, store: Store, url: str,
                                          server: HealthServer, events: SlackEvents) -> None:
    _, user = _owner_with_most(scored, store)
    gone = sandboxes.slack.add_user("gone@example.com", "Gone", deleted=True)

    sandboxes.slack.app_home_opened(url, user, SECRET)
    sandboxes.slack.app_home_opened(url, gone, SECRET)
    events.flush()

    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert re.search(r'^healthbeat_home_views_total\{result="published"\} 1\.0$', text, re.M), text
    assert re.search(r'^healthbeat_home_views_total\{result="failed"\} 1\.0$', text, re.M), text


# -- Slack's limits -----------------------------------------------------------------------------------------

def _crowded(store: Store, accounts: int, *, nudged: bool = True) -> None:
    """One owner with `accounts` red accounts, each nudged (two blocks each) or none, and five green ones."""
    now = iso(datetime(2026, 1, 5, tzinfo=UTC))
    store.upsert("users", [{"source": "salesforce", "source_id": "005CROWD", "name": "Crowded Owner",
                            "email": "crowded@example.com", "is_active": 1}], ["source", "source_id"])
    for i in range(accounts + 5):
        account_id = f"001CROWD{i:07d}"
        band = "red" if i < accounts else "green"
        store.upsert("accounts", [{"id": account_id, "name": f"Account {i} " + "é" * 300, "owner_id": "005CROWD"}],
                     ["id"])
        store.upsert("scores", [{"account_id": account_id, "score": 20 + i % 10 if band == "red" else 80,
                                 "band": band, "trend": "↓ -12 (21d)", "reason": "R&D & support " + "&" * 1000,
                                 "scored_at": now}], ["account_id"])
        if band == "red" and nudged:
            store.upsert("outbox", [{"dedup_key": f"nudge:turned_red:{account_id}:1:fire", "kind": "slack",
                                     "account_id": account_id, "payload": "{}", "status": "sent",
                                     "created_at": now}], ["dedup_key"])


def test_a_long_list_is_cut_within_slacks_limits_and_says_where_the_rest_are(
        sandboxes: Sandboxes, settings: Settings, store: Store) -> None:
    _crowded(store, 70)
    user = sandboxes.slack.add_user("crowded@example.com", "Crowded Owner")
    owner = owner_by_id(store, "005CROWD")
    assert owner is not None

    view = home_view(store, owner, "https://acme.my.salesforce.com", datetime(2026, 1, 5, tzinfo=UTC))
    SlackClient(sandboxes.slack.token, base_url=sandboxes.slack.url, max_retries=0).publish_home(user, view)

    assert len(view["blocks"]) <= MAX_HOME_BLOCKS
    assert all(len(b["text"]["text"]) <= 3000 for b in view["blocks"] if b["type"] == "section")
    shown = sum(1 for b in view["blocks"] if str(b.get("block_id", "")).startswith("home:001"))
    (more,) = [b for b in view["blocks"] if b.get("block_id") == "home:more"]
    assert f"{70 - shown} more need attention" in more["elements"][0]["text"]
    assert 'healthbeat scores --owner "Crowded Owner"' in more["elements"][0]["text"]
    assert "5 green" in _texts(view)
    assert sandboxes.slack.home_views[user]["blocks"] == view["blocks"]


def test_red_comes_first_then_yellow_then_unknown_worst_score_first(store: Store) -> None:
    now = iso(datetime(2026, 1, 5, tzinfo=UTC))
    store.upsert("users", [{"source": "salesforce", "source_id": "005MIXED", "name": "Mixed Owner",
                            "email": "mixed@example.com", "is_active": 1}], ["source", "source_id"])
    accounts = {"001UNKNOWN": ("unknown", None), "001YELLOW": ("yellow", 55.0), "001RED30": ("red", 30.0),
                "001GREEN": ("green", 80.0), "001RED10": ("red", 10.0)}
    for account_id, (band, score) in accounts.items():
        store.upsert("accounts", [{"id": account_id, "name": account_id, "owner_id": "005MIXED"}], ["id"])
        store.upsert("scores", [{"account_id": account_id, "score": score, "band": band, "trend": "new",
                                 "reason": "why", "scored_at": now}], ["account_id"])
    owner = owner_by_id(store, "005MIXED")
    assert owner is not None

    view = home_view(store, owner, "https://acme.my.salesforce.com", datetime(2026, 1, 5, tzinfo=UTC))

    order = [b["block_id"].removeprefix("home:") for b in view["blocks"]
             if str(b.get("block_id", "")).startswith("home:001")]
    assert order == ["001RED10", "001RED30", "001YELLOW", "001UNKNOWN"]
    assert "- (unknown)" in _texts(view) and "1 green" in _texts(view)


def test_an_account_never_nudged_has_no_feedback_buttons(store: Store) -> None:
    _crowded(store, 3, nudged=False)
    owner = owner_by_id(store, "005CROWD")
    assert owner is not None

    view = home_view(store, owner, "https://acme.my.salesforce.com", datetime(2026, 1, 5, tzinfo=UTC))

    assert sum(1 for b in view["blocks"] if str(b.get("block_id", "")).startswith("home:001")) == 3
    assert [b for b in view["blocks"] if b["type"] == "actions"] == []


# -- republishing after a cycle ---------------------------------------------------------------------------------

def test_a_cycle_republishes_only_opened_tabs_whose_accounts_changed_band(
        sandboxes: Sandboxes, world: World, cycle: Cycle, store: Store, clock: ShiftedClock, url: str,
        events: SlackEvents, signed_settings: Settings) -> None:
    cycle.run()
    not_red = {r["account_id"] for r in store.query("SELECT account_id FROM scores WHERE band != 'red'")}
    account = next(a for a in world.accounts if a.owner_id in world.slack_user_ids and a.id in not_red)
    opened = {account.owner_id: world.slack_user_ids[account.owner_id]}
    opened.update(next((o, u) for o, u in sorted(world.slack_user_ids.items()) if o != account.owner_id)
                  for _ in (1,))
    for user in opened.values():
        sandboxes.slack.app_home_opened(url, user, SECRET)
    events.flush()
    bands_before = {o: _bands(store, o) for o in world.slack_user_ids}
    sandboxes.slack.reset_calls()
    start = clock()
    clock.offset += timedelta(days=21)
    advance(world, start, clock(), quiet=[account.id])
    stir_trouble(world, [account.id], clock())
    report = cycle.run(("sync", "score", "evaluate", "notify")).home  # the notify stage republishes
    changed = {u for o, u in opened.items() if _bands(store, o) != bands_before[o]}
    slack = SlackClient(sandboxes.slack.token, base_url=sandboxes.slack.url, max_retries=0)

    again = republish_home_tabs(store, slack, record_url(store, signed_settings), clock())

    assert report is not None

    assert opened[account.owner_id] in changed, "the account that went bad changed band"
    assert sorted(_publishes(sandboxes)) == sorted(changed), "only opened tabs whose bands changed"
    assert (report.published, report.failed, again.published) == (len(changed), 0, 0)
    assert account.id in _texts(_published(sandboxes, opened[account.owner_id]))


def _bands(store: Store, owner_id: str) -> dict[str, str]:
    found = owner_by_id(store, owner_id)
    return owner_bands(store, found) if found is not None else {}


def test_a_tab_nobody_opened_is_never_published(
        sandboxes: Sandboxes, world: World, cycle: Cycle, store: Store, clock: ShiftedClock,
        signed_settings: Settings) -> None:
    cycle.run()
    slack = SlackClient(sandboxes.slack.token, base_url=sandboxes.slack.url, max_retries=0)

    report = republish_home_tabs(store, slack, record_url(store, signed_settings), clock())

    assert (report.published, _publishes(sandboxes)) == (0, [])


def _opened_and_looked_at(sandboxes: Sandboxes, scored: World, store: Store, url: str, events: SlackEvents,
                          slack: SlackClient, signed_settings: Settings, clock: ShiftedClock) -> str:
    """An owner's tab opened and a pass that left every tab as it should be; then the tab's record made stale,
    so that a pass which reads the tab republishes it. The Slack user id."""
    _, user = _owner_with_most(scored, store)
    sandboxes.slack.app_home_opened(url, user, SECRET)
    events.flush()
    republish_home_tabs(store, slack, record_url(store, signed_settings), clock())
    store.conn.execute("UPDATE home_tabs SET shown = '{}'")
    sandboxes.slack.reset_calls()
    return user


def test_a_pass_after_nothing_was_scored_and_no_account_changed_reads_no_tab(
        sandboxes: Sandboxes, scored: World, store: Store, clock: ShiftedClock, url: str, events: SlackEvents,
        signed_settings: Settings) -> None:
    slack = SlackClient(sandboxes.slack.token, base_url=sandboxes.slack.url, max_retries=0)
    user = _opened_and_looked_at(sandboxes, scored, store, url, events, slack, signed_settings, clock)

    quiet = republish_home_tabs(store, slack, record_url(store, signed_settings), clock())
    score_accounts(store, load_scorecard(signed_settings.rules_dir), clock())  # the day's re-score stores scores
    after = republish_home_tabs(store, slack, record_url(store, signed_settings), clock())

    assert (quiet.published, after.published, _publishes(sandboxes)) == (0, 1, [user])


def test_a_tab_slack_refused_is_looked_at_again_at_the_next_pass(
        sandboxes: Sandboxes, scored: World, store: Store, clock: ShiftedClock, url: str, events: SlackEvents,
        signed_settings: Settings) -> None:
    slack = SlackClient(sandboxes.slack.token, base_url=sandboxes.slack.url, max_retries=0)
    user = _opened_and_looked_at(sandboxes, scored, store, url, events, slack, signed_settings, clock)
    score_accounts(store, load_scorecard(signed_settings.rules_dir), clock())
    sandboxes.slack.fail_next("views.publish", "invalid_arguments")

    refused = republish_home_tabs(store, slack, record_url(store, signed_settings), clock())
    again = republish_home_tabs(store, slack, record_url(store, signed_settings), clock())

    assert (refused.failed, again.published, _publishes(sandboxes)) == (1, 1, [user])


# -- the manifest -----------------------------------------------------------------------------------------------

def test_the_manifest_enables_the_home_tab_and_sends_app_home_opened_to_slack_events() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())

    events = manifest["settings"]["event_subscriptions"]

    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert events["request_url"].startswith("https://") and events["request_url"].endswith("/slack/events")
    assert events["bot_events"] == ["app_home_opened"]
    assert {"users:read", "users:read.email"} <= set(manifest["oauth_config"]["scopes"]["bot"])
    assert manifest["settings"]["socket_mode_enabled"] is False
