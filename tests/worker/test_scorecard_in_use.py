"""The scorecard as a CSM meets it: segments, overrides, explanations and history, through the CLI and the store."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

from connectors.sandboxes.world import World
from tests.worker.test_cli import RULES_DIR, healthbeat
from worker.clock import ShiftedClock
from worker.cycle import Cycle
from worker.demo.harness import Sandboxes, sandbox_environment
from worker.rulebook.in_force import RuleBook
from worker.scoring.scorecard import load_scorecard
from worker.store import Store


def _rules_with_segment(tmp_path: Path, segment: str) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "alerts.yaml").write_text((RULES_DIR / "alerts.yaml").read_text())
    (rules / "scorecard.yaml").write_text((RULES_DIR / "scorecard.yaml").read_text() + segment)
    return rules


def test_a_segment_scores_its_accounts_with_its_own_weights(
        world: World, cycle: Cycle, store: Store, tmp_path: Path) -> None:
    direct = {a["Id"] for a in world.salesforce.records("Account") if a["Type"] == "Customer - Direct"}
    cycle.run(("sync", "score"))
    before = {r["account_id"]: r["score"] for r in store.query("SELECT account_id, score FROM scores")}
    rules = _rules_with_segment(tmp_path, """
segments:
  - name: direct
    match: {type: ["Customer - Direct"]}
    groups:
      value: {weight: 200}
""")
    cycle.rulebook = RuleBook(rules)

    cycle.run(("score",))

    rows = store.query("SELECT account_id, score, segment, measures FROM scores")
    assert {r["account_id"] for r in rows if r["segment"] == "direct"} == direct
    changed = {r["account_id"] for r in rows if r["score"] != before[r["account_id"]]}
    assert changed and changed <= direct
    weights = json.loads(next(r for r in rows if r["segment"] == "direct")["measures"])
    assert weights["seat_utilization"]["weight"] > 0.5  # 200 of 330 group weight


def test_a_segment_that_names_an_unknown_group_is_a_rule_error(tmp_path: Path) -> None:
    rules = _rules_with_segment(tmp_path, """
segments:
  - name: direct
    match: {type: ["Customer - Direct"]}
    groups:
      valeu: {weight: 200}
""")

    result = healthbeat("rules", "check", "--rules-dir", str(rules), cwd=tmp_path)

    assert result.returncode == 1
    assert "segments.0.groups.valeu: no group 'valeu'" in result.stderr


def _env(sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> dict[str, object]:
    return sandbox_environment(sandboxes, tmp_path / "hb.db", usage_dir, RULES_DIR)


def test_an_override_pins_the_score_says_so_and_reaches_salesforce(
        world: World, sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    env = _env(sandboxes, usage_dir, tmp_path)
    healthbeat("run", "--once", env=env, cwd=tmp_path)
    account = world.accounts[0]

    pinned = healthbeat("override", "set", account.name, "--value", "20", "--reason", "Champion left",
                        "--until", (date.today() + timedelta(days=10)).isoformat(), env=env, cwd=tmp_path)
    healthbeat("run", "--once", env=env, cwd=tmp_path)

    assert pinned.returncode == 0, pinned.stderr
    record = sandboxes.salesforce.get("Account", account.id)
    assert record["Health_Score__c"] == 20
    assert record["Health_Band__c"] == "red"
    assert record["Health_Reason__c"].startswith("Pinned by CSM at 20 until ")
    assert "Champion left" in record["Health_Reason__c"] and "(computed " in record["Health_Reason__c"]


def test_an_override_expires_by_itself(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock) -> None:
    account = world.accounts[0].id
    cycle.run(("sync", "score"))
    computed = store.scalar("SELECT score FROM scores WHERE account_id = ?", (account,))
    with store.transaction() as conn:
        conn.execute("INSERT INTO overrides VALUES (?, 10, 'Escalation', ?, 'dana', '2026-01-01T00:00:00Z')",
                     (account, (clock().date() + timedelta(days=2)).isoformat()))
    cycle.run(("score",))
    assert store.scalar("SELECT score FROM scores WHERE account_id = ?", (account,)) == 10

    clock.offset += timedelta(days=3)
    cycle.run(("score",))

    assert store.scalar("SELECT overridden FROM scores WHERE account_id = ?", (account,)) == 0
    assert abs(store.scalar("SELECT score FROM scores WHERE account_id = ?", (account,)) - computed) < 25


def test_an_override_outside_0_to_100_is_refused_by_the_cli(tmp_path: Path) -> None:
    result = healthbeat("override", "set", "Acme", "--value", "140", "--reason", "x", cwd=tmp_path)

    assert result.returncode == 2
    assert "Invalid value for '--value'" in result.stderr and "100" in result.stderr


def test_explain_lists_every_measure_and_their_contributions_add_up_to_the_score(
        world: World, sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    env = _env(sandboxes, usage_dir, tmp_path)
    healthbeat("run", "--once", env=env, cwd=tmp_path)

    result = healthbeat("explain", world.accounts[1].id, "--format", "json", env=env, cwd=tmp_path)

    explanation = json.loads(result.stdout)
    measures = explanation["measures"]
    shipped = load_scorecard(RULES_DIR).scorecard
    assert len(measures) == sum(len(group.measures) for group in shipped.groups.values())
    assert abs(sum(m["contribution"] for m in measures) - explanation["account"]["computed_score"]) < 0.5
    assert all(m["says"] for m in measures)
    assert set(explanation["newest_data"]) == {"meeting", "email", "ticket", "ticket_comment", "usage"}


def test_explain_names_an_unknown_account_clearly(
        world: World, sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    env = _env(sandboxes, usage_dir, tmp_path)
    healthbeat("run", "--once", env=env, cwd=tmp_path)  # a store that holds accounts, none of them this one

    result = healthbeat("explain", "No Such Corp", env=env, cwd=tmp_path)

    assert result.returncode == 1
    assert "no account with the Id or exact name 'No Such Corp'" in result.stderr


def test_scores_filter_by_band_and_owner(
        world: World, sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    env = _env(sandboxes, usage_dir, tmp_path)
    healthbeat("run", "--once", env=env, cwd=tmp_path)
    owner = next(iter(world.owners.values()))[0]

    green = json.loads(healthbeat("scores", "--band", "green", "--format", "json", env=env, cwd=tmp_path).stdout)
    mine = json.loads(healthbeat("scores", "--owner", owner, "--format", "json", env=env, cwd=tmp_path).stdout)

    assert green and all(r["band"] == "green" for r in green)
    assert mine and all(r["owner"] == owner for r in mine)


def test_scores_history_draws_a_sparkline_and_a_png(
        world: World, sandboxes: Sandboxes, usage_dir: Path, tmp_path: Path) -> None:
    env = _env(sandboxes, usage_dir, tmp_path)
    healthbeat("run", "--once", env=env, cwd=tmp_path)
    chart = tmp_path / "history.png"

    result = healthbeat("scores", "history", world.accounts[2].name, "--png", str(chart), env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert world.accounts[2].name in result.stdout and "over 1 day" in result.stdout
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_confidence_field_says_how_fresh_the_data_is_and_drops_when_it_ages(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock) -> None:
    from connectors.sandboxes.world import advance

    cycle.run()
    account = world.accounts[0].id
    before = sandboxes.salesforce.get("Account", account)["Health_Confidence__c"]
    start = clock()
    clock.offset += timedelta(days=40)
    advance(world, start, clock(), quiet=[account])  # everyone else carries on; this account goes dark

    cycle.run()

    after = sandboxes.salesforce.get("Account", account)["Health_Confidence__c"]
    assert before.endswith("fresh data")
    assert after.endswith("no data in 30+ days")
    assert ["Low", "Medium", "High"].index(after.split(",")[0]) < ["Low", "Medium", "High"].index(before.split(",")[0])
