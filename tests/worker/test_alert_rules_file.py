"""Loading `rules/alerts.yaml`: safe conditions, checked templates, Slack-escaped data, and a meaning hash.

Each test copies the shipped rule files into a temporary directory, writes or edits a rule in the text, and
states what `load_alert_rules` must say about it. A condition is a small expression language, never Python:
anything that reaches for Python's internals is refused when the file loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from simpleeval import InvalidExpression

from tests.worker.rule_files import line_with, problems_from
from worker.alerting.message import render_message
from worker.alerting.rules import (
    SAMPLE_CONTEXT,
    AlertRule,
    LoadedRules,
    evaluate,
    load_alert_rules,
    slack_escape,
    template_environment,
)
from worker.rulefile import Problem

MESSAGE = "*{{ account_name }}*: health {{ score | round | int }}. {{ reason }}."


@pytest.fixture
def alerts_file(rules_dir: Path) -> Path:
    return rules_dir / "alerts.yaml"


def rule_yaml(name: str = "went_red", when: str = 'band == "red"', resolve: str | None = None,
              message: str = MESSAGE, extra: str = "") -> str:
    """One rule as the YAML an ops engineer would write; quoted with single quotes, as expressions have `"`."""
    text = f"  - name: {name}\n    when: '{when}'\n"
    if resolve is not None:
        text += f"    resolve: '{resolve}'\n"
    return text + f"    message: '{message}'\n" + extra


def write_rules(alerts_file: Path, *rules: str) -> None:
    alerts_file.write_text("version: 1\nrules:\n" + "".join(rules), encoding="utf-8")




def problems(rules_dir: Path) -> list[Problem]:
    return problems_from(load_alert_rules, rules_dir)


def only_problem(rules_dir: Path) -> Problem:
    found = problems(rules_dir)
    assert len(found) == 1, found
    return found[0]


def make_rule(**fields: Any) -> AlertRule:
    return AlertRule.model_validate({"name": "went_red", "when": 'band == "red"', "message": MESSAGE, **fields})


# --- the shipped file and the shape of a rule ---------------------------------------------------------------

def test_the_shipped_alert_rules_load(rules_dir: Path) -> None:
    loaded = load_alert_rules(rules_dir)

    assert isinstance(loaded, LoadedRules)
    assert [r.name for r in loaded.rules.rules] == \
        ["turned_red", "churn_risk_high", "expansion_ready", "gone_silent", "sharp_drop"]


def test_a_file_without_rules_loads_as_no_rules(rules_dir: Path, alerts_file: Path) -> None:
    alerts_file.write_text("version: 1\n", encoding="utf-8")

    assert load_alert_rules(rules_dir).rules.rules == []


def test_rules_given_as_a_mapping_are_refused_at_their_line(rules_dir: Path, alerts_file: Path) -> None:
    alerts_file.write_text("version: 1\nrules:\n  went_red: {when: score < 40}\n", encoding="utf-8")

    problem = only_problem(rules_dir)

    assert (problem.field, problem.message) == ("rules", "expected a list of rules")
    assert problem.line == line_with(alerts_file, "rules:")


def test_a_misspelt_key_in_a_rule_is_rejected_at_its_line(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(extra="    cooldwn: 3d\n"))

    problem = only_problem(rules_dir)

    assert (problem.field, problem.line) == ("rules.0.cooldwn", line_with(alerts_file, "cooldwn"))
    assert problem.message.startswith("unknown key")


def test_errors_name_the_rule_by_its_position(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(), rule_yaml(name="went_silent", when="days_silent > 30",
                                                    extra="    for: 0\n"))

    assert only_problem(rules_dir).field == "rules.1.for"


def test_errors_in_two_rules_are_both_reported(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(when="scroe < 40"), rule_yaml(name="went_silent", extra="    for: 0\n"))

    assert {p.field for p in problems(rules_dir)} == {"rules.0.when", "rules.1.for"}


@pytest.mark.parametrize("name", ["Went_Red", "went red", "went-red", ""])
def test_a_rule_name_is_lowercase_letters_digits_and_underscores(
        rules_dir: Path, alerts_file: Path, name: str) -> None:
    write_rules(alerts_file, rule_yaml(name=f'"{name}"'))

    assert only_problem(rules_dir).field == "rules.0.name"


def test_duplicate_rule_names_are_refused_and_named(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(), rule_yaml(name="went_silent", when="days_silent > 30"), rule_yaml())

    problem = only_problem(rules_dir)

    assert "names must be unique" in problem.message
    assert "went_red" in problem.message
    assert "went_silent" not in problem.message


def test_a_duplicate_rule_name_is_reported_at_the_repeated_rule(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(), rule_yaml(name="went_silent", when="days_silent > 30"),
                rule_yaml(name="went_red  # again"))

    problem = only_problem(rules_dir)

    assert (problem.field, problem.line) == ("rules.2.name", line_with(alerts_file, "# again"))


@pytest.mark.parametrize("cycles", ["0", "-1"])
def test_for_must_be_at_least_one_cycle(rules_dir: Path, alerts_file: Path, cycles: str) -> None:
    write_rules(alerts_file, rule_yaml(extra=f"    for: {cycles}\n"))

    problem = only_problem(rules_dir)

    assert (problem.field, problem.line) == ("rules.0.for", line_with(alerts_file, "for:"))
    assert "greater than or equal to 1" in problem.message


def test_for_is_read_from_the_yaml_key_for(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(extra="    for: 3\n"))

    assert load_alert_rules(rules_dir).rules.rules[0].for_cycles == 3


def test_a_cooldown_that_is_not_a_duration_is_refused(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(extra="    cooldown: a week\n"))

    assert only_problem(rules_dir).field == "rules.0.cooldown"


@pytest.mark.parametrize("to", ["channel", "owner_and_channel"])
def test_a_route_to_a_channel_needs_the_channel(rules_dir: Path, alerts_file: Path, to: str) -> None:
    write_rules(alerts_file, rule_yaml(extra=f"    route: {{to: {to}}}\n"))

    problem = only_problem(rules_dir)

    assert problem.field == "rules.0.route"
    assert "needs a channel" in problem.message


# --- conditions: syntax and names ---------------------------------------------------------------------------

def test_a_condition_with_bad_syntax_is_refused_at_its_line(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(when="score < < 40"))

    problem = only_problem(rules_dir)

    assert (problem.field, problem.line) == ("rules.0.when", line_with(alerts_file, "when:"))
    assert problem.message.startswith("not a valid expression")


def test_a_resolve_condition_with_bad_syntax_is_refused(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(resolve="score >= "))

    problem = only_problem(rules_dir)

    assert (problem.field, problem.line) == ("rules.0.resolve", line_with(alerts_file, "resolve:"))


def test_an_unknown_name_is_refused_and_the_usable_names_listed(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(when="scroe < 40"))

    problem = only_problem(rules_dir)

    assert problem.field == "rules.0.when"
    assert "'scroe' is not defined" in problem.message
    assert all(name in problem.message for name in SAMPLE_CONTEXT)


def test_an_unknown_measure_name_is_refused(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(when='measures["days_since_touch"] > 30'))

    problem = only_problem(rules_dir)

    assert problem.field == "rules.0.when"
    assert "days_since_touch" in problem.message


def test_a_comparison_of_mismatched_types_is_refused(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(when='score < "40"'))

    assert only_problem(rules_dir).message.startswith("cannot be evaluated")


@pytest.mark.parametrize("when", [
    'score < 40 and band == "red"', "trend_delta <= -15", 'measures["days_since_two_way_touch"] > 30',
    "abs(trend_delta) > 10 or coverage < 0.5", 'band in ["red", "yellow"] and not overridden',
])
def test_conditions_over_the_documented_names_load(rules_dir: Path, alerts_file: Path, when: str) -> None:
    write_rules(alerts_file, rule_yaml(when=when))

    assert load_alert_rules(rules_dir).rules.rules[0].when == when


# --- conditions: no way out to Python -----------------------------------------------------------------------

ESCAPES = [
    '__import__("os").system("true")',
    "score.__class__",
    "band.__class__.__mro__",
    'band.__len__() > 1',
    '"".__class__.__base__.__subclasses__()',
    'open("/etc/passwd")',
    'eval("1")',
    'getattr(score, "real")',
    "type(score)",
    "(lambda: 1)()",
    "band.format_map",
]


@pytest.mark.parametrize("when", ESCAPES)
def test_a_condition_reaching_for_python_is_refused(rules_dir: Path, alerts_file: Path, when: str) -> None:
    write_rules(alerts_file, rule_yaml(when=when))

    assert only_problem(rules_dir).field == "rules.0.when"


@pytest.mark.parametrize("resolve", ESCAPES[:3])
def test_a_resolve_condition_reaching_for_python_is_refused(
        rules_dir: Path, alerts_file: Path, resolve: str) -> None:
    write_rules(alerts_file, rule_yaml(resolve=resolve))

    assert only_problem(rules_dir).field == "rules.0.resolve"


@pytest.mark.parametrize("expression", ESCAPES[:3])
def test_evaluating_an_escape_raises_instead_of_running_it(expression: str) -> None:
    with pytest.raises(InvalidExpression):
        evaluate(expression, SAMPLE_CONTEXT)


def test_a_huge_string_is_refused_rather_than_built(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(when='"a" * 100000000 == ""'))

    assert only_problem(rules_dir).field == "rules.0.when"


def test_an_index_out_of_range_is_a_rule_error_not_a_crash(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(when='account_id[40] == "A"'))

    assert only_problem(rules_dir).field == "rules.0.when"


def test_an_overflowing_number_is_a_rule_error_not_a_crash(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(when="score ** 400.0 > 1"))

    assert only_problem(rules_dir).field == "rules.0.when"


# --- hysteresis ---------------------------------------------------------------------------------------------

def test_hysteresis_with_a_resolve_beyond_the_threshold_loads(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(when="score < 50", resolve="score >= 55"))

    assert load_alert_rules(rules_dir).rules.rules[0].resolve == "score >= 55"


def test_inverted_hysteresis_is_refused(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(when="score < 50", resolve="score < 55"))

    problem = only_problem(rules_dir)

    assert problem.field == "rules.0"
    assert "inverted hysteresis" in problem.message
    assert problem.line == line_with(alerts_file, "name: went_red")


def test_inverted_hysteresis_is_refused_when_the_sample_does_not_match(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(when="churn_risk >= 80", resolve="churn_risk >= 60"))

    assert "inverted hysteresis" in only_problem(rules_dir).message


# --- message templates --------------------------------------------------------------------------------------

def test_a_template_naming_an_unknown_value_is_refused_at_its_line(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(message="{{ acount_name }} turned red"))

    problem = only_problem(rules_dir)

    assert (problem.field, problem.line) == ("rules.0.message", line_with(alerts_file, "message:"))
    assert "does not render against a sample account" in problem.message
    assert "acount_name" in problem.message


def test_a_template_with_bad_syntax_is_refused(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(message="{{ account_name turned red"))

    assert only_problem(rules_dir).field == "rules.0.message"


@pytest.mark.parametrize("message", ["{{ score.__class__ }}", "{{ account_name.__class__.__mro__ }}",
                                     "{{ cycler.__init__.__globals__ }}"])
def test_a_template_reaching_for_python_is_refused(rules_dir: Path, alerts_file: Path, message: str) -> None:
    write_rules(alerts_file, rule_yaml(message=message))

    problem = only_problem(rules_dir)

    assert problem.field == "rules.0.message"
    assert "unsafe" in problem.message


def test_a_template_that_fails_arithmetic_on_the_sample_is_refused(rules_dir: Path, alerts_file: Path) -> None:
    write_rules(alerts_file, rule_yaml(message="{{ score / 0 }}"))

    assert only_problem(rules_dir).field == "rules.0.message"


def test_a_template_that_fails_on_real_data_falls_back_to_the_plain_facts() -> None:
    rule = make_rule(message="{{ account_name }}: {{ 100 / (score - 37) }}")  # fine on the sample (35)
    context = {**SAMPLE_CONTEXT, "score": 37.0}

    text = render_message(rule, context, "https://example.my.salesforce.com/001000000000001AAA")

    assert text == "Acme Labs: health 37.0 (red). No two-way touch in 41 days"


def test_the_shipped_turned_red_message_never_shows_a_red_score_at_the_red_threshold(rules_dir: Path) -> None:
    """Red is below 55: a nudge that says "turned red: health 55" reads as a mistake to the owner."""
    rule = next(r for r in load_alert_rules(rules_dir).rules.rules if r.name == "turned_red")
    context = {**SAMPLE_CONTEXT, "score": 54.6, "previous_score": 58.2, "band": "red"}

    text = render_message(rule, context, "https://example.my.salesforce.com/001000000000001AAA")

    assert "turned red: health 54 (was 58)." in text


def test_a_template_missing_a_value_at_send_time_falls_back_to_the_plain_facts() -> None:
    rule = make_rule(message="{{ account_name }} is owned by {{ owner_email }}")
    context = {k: v for k, v in SAMPLE_CONTEXT.items() if k != "owner_email"}

    text = render_message(rule, context, "https://example.my.salesforce.com/001000000000001AAA")

    assert text == "Acme Labs: health 35.0 (red). No two-way touch in 41 days"


# --- Slack escaping -----------------------------------------------------------------------------------------

def test_slack_escape_escapes_its_three_control_characters() -> None:
    assert slack_escape("Fish & Chips <Ltd> <!channel>") == "Fish &amp; Chips &lt;Ltd&gt; &lt;!channel&gt;"


def test_slack_escape_escapes_an_ampersand_once() -> None:
    assert slack_escape("R&amp;D") == "R&amp;amp;D"


def test_data_in_a_template_is_escaped_for_slack() -> None:
    template = template_environment().from_string("*{{ account_name }}*: {{ reason }}")

    text = template.render(account_name="Fish & Chips <Ltd>", reason="Said \"<!here> we leave\"")

    assert text == "*Fish &amp; Chips &lt;Ltd&gt;*: Said \"&lt;!here&gt; we leave\""


def test_data_is_escaped_after_filters_are_applied() -> None:
    template = template_environment().from_string("{{ account_name | upper }}")

    assert template.render(account_name="a<b") == "A&lt;B"


def test_the_templates_own_markup_is_left_for_slack() -> None:
    template = template_environment().from_string("<{{ url }}|{{ account_name }}> <!here>")

    text = template.render(url="https://example.com/x?a=1&b=2", account_name="A&B")

    assert text == "<https://example.com/x?a=1&amp;b=2|A&amp;B> <!here>"


def test_a_rules_message_escapes_data_when_rendered_for_an_account() -> None:
    rule = make_rule(message="*{{ account_name }}* turned red. {{ reason }}.")
    context = {**SAMPLE_CONTEXT, "account_name": "Ben & Jerry's <EU>", "reason": "3 urgent tickets > 2"}

    text = render_message(rule, context, "https://example.my.salesforce.com/001000000000001AAA")

    assert text == "*Ben &amp; Jerry's &lt;EU&gt;* turned red. 3 urgent tickets &gt; 2."


# --- meaning hash -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change", [{"when": "score < 45"}, {"resolve": "score >= 60"}, {"for": 2}],
                         ids=["when", "resolve", "for"])
def test_the_meaning_hash_changes_when_what_the_rule_means_changes(change: dict[str, Any]) -> None:
    assert make_rule(**change).meaning_hash != make_rule().meaning_hash


@pytest.mark.parametrize("change", [
    {"message": "{{ account_name }} is red"}, {"description": "reworded"}, {"cooldown": "1d"},
    {"route": {"to": "channel", "channel": "#cs"}}, {"notify_on_resolve": True},
], ids=["message", "description", "cooldown", "route", "notify_on_resolve"])
def test_the_meaning_hash_ignores_how_the_rule_speaks(change: dict[str, Any]) -> None:
    assert make_rule(**change).meaning_hash == make_rule().meaning_hash


def test_the_meaning_hash_is_stable_across_loads(rules_dir: Path) -> None:
    first = load_alert_rules(rules_dir).rules.rules[0].meaning_hash

    assert load_alert_rules(rules_dir).rules.rules[0].meaning_hash == first
