"""One full cycle through the real clients over real HTTP(S) to the sandboxes: the walking skeleton's promises."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr

from connectors.sandboxes.world import World, advance, stir_trouble
from tests.worker.rule_files import turned_red_only
from worker.clock import ShiftedClock
from worker.config import Settings
from worker.cycle import Cycle, build_clients
from worker.demo.harness import Sandboxes, pick_changes
from worker.rulebook.in_force import RuleBook
from worker.scoring.sentiment import VaderModel
from worker.store import Store


def _composite_calls(sandboxes: Sandboxes) -> int:
    return sum(1 for call in sandboxes.salesforce.calls if "composite/sobjects" in call.path)


def _posts(sandboxes: Sandboxes) -> int:
    return sum(1 for call in sandboxes.slack.calls if call.method == "chat.postMessage")


def _bad_weeks(world: World, store: Store, clock: ShiftedClock, *, also: tuple[str, ...] = ()
               ) -> tuple[list[str], str]:
    """Three weeks pass: a bad week for three accounts (and `also`), silence for one."""
    troubled, silent = pick_changes(store)
    troubled = [*troubled, *(a for a in also if a not in troubled and a != silent)]
    start = clock()
    clock.offset += timedelta(days=21)
    advance(world, start, clock(), quiet=[silent, *troubled])
    stir_trouble(world, troubled, clock())
    return troubled, silent


def test_first_cycle_scores_every_live_account_and_writes_each_back(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store) -> None:
    report = cycle.run()

    assert report.ok, report.summary()
    live = {a["Id"] for a in sandboxes.salesforce.records("Account")}
    scored = {r["account_id"]: r for r in store.query("SELECT * FROM scores")}
    assert set(scored) == live
    for account_id in live:
        record = sandboxes.salesforce.get("Account", account_id)
        assert 0 <= record["Health_Score__c"] <= 100
        assert record["Health_Score__c"] == scored[account_id]["score"]
        assert record["Health_Band__c"] in ("red", "yellow", "green")
        assert record["Health_Reason__c"]
    assert _composite_calls(sandboxes) == math.ceil(len(live) / 200)


def test_second_cycle_without_change_writes_nothing_and_posts_nothing(
        world: World, sandboxes: Sandboxes, cycle: Cycle) -> None:
    cycle.run()
    sandboxes.salesforce.reset_calls()
    sandboxes.slack.reset_calls()

    report = cycle.run()

    assert report.ok, report.summary()
    assert _composite_calls(sandboxes) == 0
    assert _posts(sandboxes) == 0


def test_accounts_that_turn_red_nudge_their_owner_once_with_the_reason(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock, tmp_path: Path) -> None:
    cycle.rulebook = RuleBook(turned_red_only(tmp_path / "rules"))
    cycle.run()
    troubled, _ = _bad_weeks(world, store, clock)
    sandboxes.slack.reset_calls()

    cycle.run()

    bands = {r["account_id"]: r for r in store.query("SELECT account_id, band, reason FROM scores")}
    assert all(bands[a]["band"] == "red" for a in troubled), {a: bands[a] for a in troubled}
    fired = store.query("SELECT account_id FROM alerts WHERE rule = 'turned_red' AND last_notified_at IS NOT NULL")
    assert {r["account_id"] for r in fired} >= set(troubled)
    messages = sandboxes.slack.messages
    assert len(messages) == len(fired)
    for account_id in troubled:
        account = world.account(account_id)
        about = [m for m in messages if account.name in m.text]
        assert len(about) == 1, f"{account.name}: {len(about)} messages"
        slack_user = world.slack_user_ids.get(account.owner_id)
        if slack_user:
            assert about[0].kind == "im" and about[0].user == slack_user
        else:
            assert about[0].channel == world.fallback_channel_id
        assert bands[account_id]["reason"].split(";")[0] in about[0].text


def test_an_owner_without_a_slack_user_is_nudged_in_the_fallback_channel(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock) -> None:
    cycle.run()
    lonely_owner = next(iter(world.owners_without_slack))
    not_red = {r["account_id"] for r in store.query("SELECT account_id FROM scores WHERE band != 'red'")}
    victim = next(a for a in world.accounts if a.owner_id == lonely_owner and a.id in not_red)
    _bad_weeks(world, store, clock, also=(victim.id,))

    cycle.run()

    in_fallback = sandboxes.slack.messages_in(world.fallback_channel_id or "")
    owner_name = world.owners[lonely_owner][0]
    assert any(victim.name in m.text and owner_name in m.text for m in in_fallback)


def test_a_third_cycle_sends_nothing_more(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock) -> None:
    cycle.run()
    _bad_weeks(world, store, clock)
    cycle.run()
    sent = len(sandboxes.slack.messages)
    sandboxes.salesforce.reset_calls()

    report = cycle.run()

    assert report.ok, report.summary()
    assert len(sandboxes.slack.messages) == sent
    assert _composite_calls(sandboxes) == 0


def test_wrong_zendesk_credentials_fail_the_cycle_naming_zendesk_and_the_rest_still_runs(
        world: World, sandboxes: Sandboxes, settings: Settings, store: Store, clock: ShiftedClock,
        vader: VaderModel) -> None:
    wrong = settings.model_copy(update={"zendesk_api_token": SecretStr("not-the-token")})
    clients = build_clients(wrong)
    cycle = Cycle(store, wrong, RuleBook(wrong.rules_dir), clients, clock=clock, sentiment=vader)

    report = cycle.run()

    assert not report.ok
    assert any(p.startswith("zendesk: Zendesk at") and "ZENDESK_API_TOKEN" in p for p in report.problems())
    assert "not-the-token" not in " ".join(report.problems())
    assert report.scoring is not None and report.scoring.scored == len(world.accounts)


def test_wrong_slack_token_fails_the_cycle_naming_slack_and_keeps_the_nudges(
        world: World, sandboxes: Sandboxes, settings: Settings, store: Store, clock: ShiftedClock,
        vader: VaderModel) -> None:
    wrong = settings.model_copy(update={"slack_bot_token": SecretStr("xoxb-not-the-token")})
    clients = build_clients(wrong)
    cycle = Cycle(store, wrong, RuleBook(wrong.rules_dir), clients, clock=clock, sentiment=vader)
    cycle.run()
    _bad_weeks(world, store, clock)

    report = cycle.run()

    assert not report.ok
    assert any(p.startswith("notify: ") and "Slack" in p for p in report.problems())
    assert store.scalar("SELECT count(*) FROM outbox WHERE kind = 'slack' AND status = 'pending'") >= 3
