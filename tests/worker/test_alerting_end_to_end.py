"""Alert delivery through the Slack sandbox: digests, delivery windows, silences, routes, escaping, and a
broken rule file that must not stop the worker."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from connectors.sandboxes.world import World, advance, stir_trouble
from tests.worker.rule_files import turned_red_only
from worker.clock import ShiftedClock
from worker.cycle import Cycle
from worker.demo.harness import Sandboxes
from worker.rulebook.in_force import RuleBook
from worker.store import Store

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _rules(tmp_path: Path, old: str = "", new: str = "") -> Path:
    rules = turned_red_only(tmp_path / "rules")  # these tests follow one nudge per account turning red
    text = (rules / "alerts.yaml").read_text()
    if old:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (rules / "alerts.yaml").write_text(text)
    return rules


def _trouble(world: World, clock: ShiftedClock, accounts: list[str]) -> None:
    """Three weeks pass; these accounts go quiet and then have a bad week."""
    start = clock()
    clock.offset += timedelta(days=21)
    advance(world, start, clock(), quiet=accounts)
    stir_trouble(world, accounts, clock())


def _healthy_accounts_of(world: World, store: Store, owner_id: str) -> list[str]:
    not_red = {r["account_id"] for r in store.query("SELECT account_id FROM scores WHERE band != 'red'")}
    return [a.id for a in world.accounts if a.owner_id == owner_id and a.id in not_red]


def _owner_with_slack(world: World, store: Store, at_least: int) -> str:
    return next(owner for owner in world.slack_user_ids
                if len(_healthy_accounts_of(world, store, owner)) >= at_least)


def test_an_owner_with_several_accounts_turning_red_gets_one_digest(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock) -> None:
    cycle.run()
    owner = _owner_with_slack(world, store, 3)
    accounts = _healthy_accounts_of(world, store, owner)[:3]
    _trouble(world, clock, accounts)

    report = cycle.run()

    dms = sandboxes.slack.dms_to(world.slack_user_ids[owner])
    assert len(dms) == 1, [m.text for m in dms]
    assert all(world.account(a).name in dms[0].text for a in accounts)
    assert dms[0].text.startswith(f"{len(accounts)} of your accounts need attention") or \
        "accounts need attention" in dms[0].text
    assert report.notify is not None and report.notify.digests >= 1
    cycle.run()
    assert len(sandboxes.slack.dms_to(world.slack_user_ids[owner])) == 1


def test_a_nudge_waits_for_the_owners_delivery_window_then_goes_out_once(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock,
        tmp_path: Path) -> None:
    cycle.run()
    owner = _owner_with_slack(world, store, 1)
    account = _healthy_accounts_of(world, store, owner)[0]
    _trouble(world, clock, [account])
    tz = ZoneInfo(str(store.scalar("SELECT timezone FROM users WHERE source_id = ?", (owner,))))
    today = WEEKDAYS[clock().astimezone(tz).weekday()]
    others = [d for d in WEEKDAYS if d != today]
    cycle.rulebook = RuleBook(_rules(tmp_path, "    route: {to: owner}\n",
                                     f"    route: {{to: owner}}\n    deliver: {{hours: '00:00-23:59', "
                                     f"days: [{', '.join(others)}]}}\n"))

    first = cycle.run()
    held = len(sandboxes.slack.dms_to(world.slack_user_ids[owner]))
    clock.offset += timedelta(days=1)
    cycle.run(("notify",))

    assert first.notify is not None and first.notify.deferred >= 1
    assert held == 0
    dms = sandboxes.slack.dms_to(world.slack_user_ids[owner])
    assert len(dms) == 1 and world.account(account).name in dms[0].text


def test_a_silenced_account_turns_red_without_a_nudge_and_the_others_still_get_theirs(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock,
        tmp_path: Path) -> None:
    cycle.rulebook = RuleBook(_rules(tmp_path))
    cycle.run()
    owners = [o for o in world.slack_user_ids if _healthy_accounts_of(world, store, o)][:2]
    quiet, loud = (_healthy_accounts_of(world, store, o)[0] for o in owners)
    with store.transaction() as conn:
        conn.execute("INSERT INTO silences (rule, account_id, until, reason, created_at) VALUES "
                     "('turned_red', ?, ?, 'renewal call booked', '2026-01-01T00:00:00Z')",
                     (quiet, (clock() + timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%SZ")))
    _trouble(world, clock, [quiet, loud])

    report = cycle.run()

    texts = " ".join(m.text for m in sandboxes.slack.messages)
    assert world.account(loud).name in texts
    assert world.account(quiet).name not in texts
    assert report.alerts is not None and report.alerts.silenced == 1


def test_a_rule_routed_to_owner_and_channel_posts_to_both_once(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock,
        tmp_path: Path) -> None:
    cycle.run()
    owner = _owner_with_slack(world, store, 1)
    account = _healthy_accounts_of(world, store, owner)[0]
    cycle.rulebook = RuleBook(_rules(tmp_path, "route: {to: owner}",
                                     'route: {to: owner_and_channel, channel: "#cs-alerts"}'))
    cycle.run()
    _trouble(world, clock, [account])

    cycle.run()
    cycle.run()

    name = world.account(account).name
    assert sum(name in m.text for m in sandboxes.slack.dms_to(world.slack_user_ids[owner])) == 1
    assert sum(name in m.text for m in sandboxes.slack.messages_in(world.fallback_channel_id or "")) == 1


def test_text_from_data_is_escaped_so_an_account_name_never_pings_a_channel(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock,
        tmp_path: Path) -> None:
    cycle.rulebook = RuleBook(_rules(tmp_path))
    cycle.run()
    owner = _owner_with_slack(world, store, 1)
    account = _healthy_accounts_of(world, store, owner)[0]
    sandboxes.salesforce.update("Account", account, {"Name": "<!channel> Fish & Chips"})
    _trouble(world, clock, [account])

    cycle.run()

    [dm] = sandboxes.slack.dms_to(world.slack_user_ids[owner])
    assert "&lt;!channel&gt; Fish &amp; Chips" in dm.text
    assert "<!channel>" not in dm.text
    assert all("<!channel>" not in str(block) for block in dm.blocks or [])


def test_a_broken_rule_file_keeps_the_last_good_rules_and_says_where(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock,
        tmp_path: Path) -> None:
    rules = _rules(tmp_path)
    cycle.rulebook = RuleBook(rules)
    cycle.run()
    owner = _owner_with_slack(world, store, 1)
    account = _healthy_accounts_of(world, store, owner)[0]
    (rules / "alerts.yaml").write_text((rules / "alerts.yaml").read_text().replace("    when:", "    whn:", 1))
    _trouble(world, clock, [account])

    report = cycle.run()

    assert report.scoring is not None and report.alerts is not None
    assert any("alerts.yaml:" in p and "whn" in p for p in cycle.rulebook.problems)
    assert any(world.account(account).name in m.text for m in sandboxes.slack.messages)


def test_a_score_that_flaps_around_the_threshold_does_not_flap_messages(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock) -> None:
    cycle.run()
    owner = _owner_with_slack(world, store, 1)
    account = _healthy_accounts_of(world, store, owner)[0]
    sandboxes.slack.reset_calls()
    for score in (48, 52, 47, 53, 49, 54, 46):  # red, yellow, red, ... never back above 55
        band = "red" if score < 50 else "yellow"
        with store.transaction() as conn:
            conn.execute("UPDATE scores SET score = ?, band = ? WHERE account_id = ?", (score, band, account))
        clock.offset += timedelta(hours=1)
        cycle.run(("evaluate", "notify"))

    dms = sandboxes.slack.dms_to(world.slack_user_ids[owner])
    assert len(dms) == 1


def test_after_downtime_the_worker_judges_the_present_and_sends_no_stale_nudge(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock) -> None:
    cycle.run()
    owner = _owner_with_slack(world, store, 1)
    account = _healthy_accounts_of(world, store, owner)[0]
    # While the worker is down: a bad week, then five weeks of ordinary activity again.
    _trouble(world, clock, [account])
    start = clock()
    clock.offset += timedelta(days=35)
    advance(world, start, clock())

    cycle.run()

    assert store.scalar("SELECT band FROM scores WHERE account_id = ?", (account,)) != "red"
    assert not any(world.account(account).name in m.text for m in sandboxes.slack.messages)
