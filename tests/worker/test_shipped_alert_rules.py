"""The alert rules Healthbeat ships (rules/alerts.yaml): each one tested, fed by measures the scorecard
computes, silent on accounts it knows too little about, described in the README, and quiet on a first install.

A shipped rule reaches every new user on day one: a rule that cannot judge a real account (a gap where it
expects a number), reads a measure the scorecard no longer has, or nudges on an install's first cycle is
noise or silence in every workspace at once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.sandboxes.world import World
from worker.alerting.engine import account_contexts
from worker.alerting.rules import AlertRule, evaluate, load_alert_rules, template_environment
from worker.cycle import Cycle
from worker.demo.harness import Sandboxes
from worker.rulebook.alert_tests import format_report, load_test_file, run_rule_tests
from worker.scoring.scorecard import load_scorecard
from worker.store import Store

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
README = Path(__file__).resolve().parents[2] / "README.md"
SHIPPED: list[AlertRule] = load_alert_rules(RULES_DIR).rules.rules
MEASURE_NAME = re.compile(r"""measures(?:\.get\(|\[)\s*["']([a-z0-9_]+)["']""")


def test_healthbeat_ships_a_rule_for_every_seed_signal() -> None:
    assert [rule.name for rule in SHIPPED] == \
        ["turned_red", "churn_risk_high", "expansion_ready", "gone_silent", "sharp_drop"]


def test_every_shipped_rule_has_a_test_file_of_its_own_and_its_cases_pass() -> None:
    rules = {rule.name: rule for rule in SHIPPED}
    files = [RULES_DIR / "tests" / f"{name}.yaml" for name in rules]

    missing = [str(path) for path in files if not path.is_file()]
    assert not missing, f"shipped rules without a rules/tests file: {missing}"
    for path in files:
        _, spec = load_test_file(path, rules)
        assert spec.rules == [path.stem], f"{path.name} should test {path.stem} alone"
        assert len(spec.tests) >= 5, f"{path.name}: crossing, hysteresis, cooldown, baseline, unknown band"
    report = run_rule_tests(RULES_DIR, files)
    assert report.ok, format_report(report)


def test_every_measure_a_shipped_rule_reads_is_one_the_shipped_scorecard_computes() -> None:
    # A renamed or removed measure would not break the rule: its `.get` would read None and the rule would
    # silently never fire again.
    scorecard = load_scorecard(RULES_DIR).scorecard
    computed = {key for group in scorecard.groups.values() for key in group.measures}
    read = {name for rule in SHIPPED for text in (rule.when, rule.resolve or "", rule.message)
            for name in MEASURE_NAME.findall(text)}

    assert read, "the shipped rules read no measure: the pattern above no longer finds them"
    assert read <= computed, f"measures no group of the scorecard computes: {sorted(read - computed)}"


def _number(low: float, high: float) -> st.SearchStrategy[float | None]:
    return st.none() | st.floats(low, high, allow_nan=False)


ACCOUNTS = st.fixed_dictionaries({
    "account_id": st.just("001000000000001AAA"), "account_name": st.just("Acme Labs"),
    "score": st.floats(0, 100), "computed_score": st.floats(0, 100),
    "band": st.sampled_from(["red", "yellow", "green", "unknown"]),
    "previous_score": _number(0, 100), "trend_delta": _number(-100, 100), "trend": st.just("↓ -27 (30d)"),
    "reason": st.just("No two-way touch in 41 days"), "coverage": st.floats(0, 1),
    "churn_risk": _number(0, 100), "expansion_readiness": _number(0, 100), "days_silent": _number(0, 400),
    "days_to_renewal": _number(0, 800),
    "overridden": st.booleans(), "segment": st.just(""), "account_type": st.just("Customer - Direct"),
    "owner": st.just("Dana Whitfield"), "owner_email": st.just("dana@example.com"),
    "measures": st.fixed_dictionaries({
        "days_since_two_way_touch": _number(0, 400), "two_way_touches_vs_usual": _number(0, 5),
        "meetings": _number(0, 30), "seat_utilization": _number(0, 1.5)}),
})


@settings(max_examples=300, deadline=None)
@given(account=ACCOUNTS)
def test_every_shipped_rule_judges_any_account_gaps_included_and_leaves_unknown_ones_alone(
        account: dict[str, Any]) -> None:
    for rule in SHIPPED:
        matches = bool(evaluate(rule.when, account))  # raises (a rule error, no nudge) on a gap it cannot take
        if rule.resolve:
            evaluate(rule.resolve, account)
        if account["band"] == "unknown":
            assert not matches, f"{rule.name} would nudge on an account we know too little about"


def test_the_readme_shows_each_shipped_rule_with_an_example_message() -> None:
    section = README.read_text().split("## Alert rules", 1)[1].split("\n## ", 1)[0]

    for rule in SHIPPED:
        assert f"`{rule.name}`" in section, f"README, Alert rules: no word on {rule.name}"


def test_a_first_install_records_every_rule_s_baseline_and_nudges_nobody(
        world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store) -> None:
    report = cycle.run()

    assert report.alerts is not None
    assert report.alerts.errors == []
    assert report.alerts.fired == 0
    assert sandboxes.slack.messages == []
    watched = store.query("SELECT rule, count(*) AS accounts FROM alerts GROUP BY rule ORDER BY rule")
    scored = store.scalar("SELECT count(*) FROM scores")
    assert {r["rule"]: r["accounts"] for r in watched} == {rule.name: scored for rule in SHIPPED}


def test_every_shipped_message_renders_on_every_account_of_a_world(cycle: Cycle, world: World, store: Store) -> None:
    cycle.run()
    contexts = account_contexts(store)

    assert len(contexts) == len(world.accounts)
    for rule in SHIPPED:
        template = template_environment().from_string(rule.message)
        for context in contexts:
            text = template.render(**context, rule=rule.name, url="https://example.my.salesforce.com/x").strip()
            assert context["account_name"] in text and "None" not in text, (rule.name, text)


def test_a_condition_reads_the_days_to_the_open_renewal_as_of_the_score(cycle: Cycle, world: World,
                                                                          store: Store) -> None:
    cycle.run()
    open_renewals = {r["account_id"]: r["days"] for r in store.query(
        "SELECT o.account_id, min(julianday(o.close_date) - julianday(date(s.scored_at))) AS days "
        "FROM opportunities o JOIN scores s USING (account_id) WHERE o.is_closed = 0 AND o.is_deleted = 0 "
        "AND o.close_date >= date(s.scored_at) GROUP BY o.account_id")}

    contexts = {c["account_id"]: c["days_to_renewal"] for c in account_contexts(store)}

    assert open_renewals and contexts == {a: open_renewals.get(a) for a in contexts}  # None without one
