"""The pure state transition of one (rule, account): `inactive → pending → firing → resolved`, and the nudge owed.

Each test plays a short story of cycles against `_step`, feeding each new row back as the stored state, the
way `evaluate_alerts` does. Stories are data: the score on each cycle and the moment it runs; the expected
states and nudges are stated apart, and "no nudge" is stated explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.alerting.engine import _step
from worker.alerting.rules import SAMPLE_CONTEXT, AlertRule
from worker.store import iso

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
CYCLE = timedelta(minutes=15)
MESSAGE = "{{ account_name }} turned red"


def make_rule(**fields: Any) -> AlertRule:
    """Red below 50 (the shipped bands); fields as the YAML would give them."""
    return AlertRule.model_validate({"name": "went_red", "when": "score < 50", "message": MESSAGE,
                                     "cooldown": "7d", **fields})


def account(score: float) -> dict[str, Any]:
    band = "red" if score < 50 else "yellow" if score < 75 else "green"
    return {**SAMPLE_CONTEXT, "score": score, "band": band}


@dataclass
class Story:
    """One account under one rule, cycle after cycle; the stored row carries over as `_step` expects."""

    rule: AlertRule
    row: dict[str, Any] | None = None

    def cycle(self, score: float, at: datetime, *, baseline: bool = False) -> str | None:
        current = self.row if self.row and self.row["rule_hash"] == self.rule.meaning_hash else None
        self.row, owed = _step(self.rule, account(score), current, self.row, at, baseline)
        return owed

    def cycles(self, scores: list[float], start: datetime) -> list[str | None]:
        return [self.cycle(score, start + n * CYCLE) for n, score in enumerate(scores)]

    @property
    def state(self) -> str:
        assert self.row is not None
        return str(self.row["state"])

    @property
    def episode(self) -> int:
        assert self.row is not None
        return int(self.row["episode"])


def fired_at(start: datetime, rule: AlertRule | None = None) -> Story:
    """A story in which the account crossed into red at `start` and the owner was nudged."""
    story = Story(rule or make_rule())
    story.cycle(80, start - CYCLE)
    assert story.cycle(40, start) == "fire"
    return story


# --- a new rule: the baseline -------------------------------------------------------------------------------

def test_a_new_rule_records_an_account_already_matching_as_firing_without_a_nudge() -> None:
    story = Story(make_rule())

    owed = story.cycle(40, T0, baseline=True)

    assert owed == "baseline"
    assert story.state == "firing"
    assert story.row is not None and story.row["last_notified_at"] is None


def test_a_baselined_account_opens_an_episode() -> None:
    story = Story(make_rule())

    story.cycle(40, T0, baseline=True)

    assert story.episode == 1


def test_a_new_rule_leaves_an_account_not_matching_inactive() -> None:
    story = Story(make_rule())

    owed = story.cycle(80, T0, baseline=True)

    assert (owed, story.state, story.episode) == (None, "inactive", 0)


def test_a_baselined_account_that_stays_red_is_never_nudged() -> None:
    story = Story(make_rule())
    story.cycle(40, T0, baseline=True)

    assert story.cycles([40, 35, 30], T0 + CYCLE) == [None, None, None]
    assert story.state == "firing"


def test_the_row_carries_the_rules_meaning_hash_and_the_time() -> None:
    rule = make_rule()
    story = Story(rule)

    story.cycle(80, T0)

    assert story.row is not None
    assert (story.row["rule"], story.row["rule_hash"], story.row["updated_at"]) == \
        ("went_red", rule.meaning_hash, iso(T0))


# --- a crossing ---------------------------------------------------------------------------------------------

def test_a_crossing_fires_once_with_a_new_episode() -> None:
    story = Story(make_rule())
    story.cycle(80, T0)

    owed = story.cycle(40, T0 + CYCLE)

    assert owed == "fire"
    assert (story.state, story.episode) == ("firing", 1)
    assert story.row is not None
    assert story.row["last_notified_at"] == story.row["since"] == iso(T0 + CYCLE)


def test_a_firing_alert_that_still_matches_owes_no_second_nudge() -> None:
    story = fired_at(T0)

    assert story.cycles([40, 30, 45, 20], T0 + CYCLE) == [None, None, None, None]
    assert (story.state, story.episode) == ("firing", 1)
    assert story.row is not None and story.row["since"] == iso(T0)


def test_an_account_that_never_matches_stays_inactive_and_silent() -> None:
    story = Story(make_rule())

    assert story.cycles([80, 70, 60, 90], T0) == [None, None, None, None]
    assert (story.state, story.episode) == ("inactive", 0)


# --- `for`: consecutive cycles ------------------------------------------------------------------------------

def test_for_3_waits_two_cycles_in_pending_and_fires_on_the_third() -> None:
    story = Story(make_rule(**{"for": 3}))
    story.cycle(80, T0)

    owed = story.cycles([40, 40, 40], T0 + CYCLE)

    assert owed == [None, None, "fire"]
    assert (story.state, story.episode) == ("firing", 1)


def test_a_pending_alert_counts_its_cycles_and_keeps_the_time_it_entered() -> None:
    story = Story(make_rule(**{"for": 3}))

    story.cycles([40, 40], T0)

    assert story.row is not None
    assert (story.state, story.row["pending_cycles"], story.row["since"]) == ("pending", 2, iso(T0))


def test_for_3_starts_counting_again_when_the_condition_breaks() -> None:
    story = Story(make_rule(**{"for": 3}))

    owed = story.cycles([40, 40, 60, 40, 40], T0)

    assert owed == [None, None, None, None, None]
    assert story.row is not None
    assert (story.state, story.row["pending_cycles"]) == ("pending", 2)


def test_for_3_fires_after_three_unbroken_cycles_following_a_break() -> None:
    story = Story(make_rule(**{"for": 3}))

    owed = story.cycles([40, 40, 60, 40, 40, 40], T0)

    assert owed == [None, None, None, None, None, "fire"]


def test_a_lapsed_pending_alert_is_inactive_with_no_count() -> None:
    story = Story(make_rule(**{"for": 3}))

    story.cycles([40, 40, 60], T0)

    assert story.row is not None
    assert (story.state, story.row["pending_cycles"], story.episode) == ("inactive", 0, 0)


def test_a_lapsed_pending_alert_records_when_it_became_inactive() -> None:
    story = Story(make_rule(**{"for": 3}))

    story.cycles([40, 40, 60], T0)

    assert story.row is not None and story.row["since"] == iso(T0 + 2 * CYCLE)


# --- cooldown -----------------------------------------------------------------------------------------------

def test_a_recrossing_during_the_cooldown_waits_in_pending() -> None:
    story = fired_at(T0)
    story.cycle(80, T0 + timedelta(days=1))

    owed = story.cycle(40, T0 + timedelta(days=2))

    assert (owed, story.state, story.episode) == (None, "pending", 1)


def test_a_recrossing_held_by_the_cooldown_fires_when_the_cooldown_ends() -> None:
    story = fired_at(T0)
    story.cycle(80, T0 + timedelta(days=1))
    story.cycle(40, T0 + timedelta(days=2))
    story.cycle(40, T0 + timedelta(days=6, hours=23))

    owed = story.cycle(40, T0 + timedelta(days=7))

    assert (owed, story.state, story.episode) == ("fire", "firing", 2)
    assert story.row is not None and story.row["last_notified_at"] == iso(T0 + timedelta(days=7))


def test_a_recrossing_after_the_cooldown_fires_at_once() -> None:
    story = fired_at(T0)
    story.cycle(80, T0 + timedelta(days=1))

    owed = story.cycle(40, T0 + timedelta(days=8))

    assert (owed, story.state, story.episode) == ("fire", "firing", 2)


def test_the_cooldown_counts_from_the_last_nudge_not_from_the_resolve() -> None:
    story = fired_at(T0, make_rule(cooldown="2d"))
    story.cycle(80, T0 + timedelta(days=1, hours=23))

    owed = story.cycle(40, T0 + timedelta(days=2, hours=1))

    assert owed == "fire"


# --- resolving and hysteresis -------------------------------------------------------------------------------

def test_without_resolve_the_alert_clears_when_the_condition_stops_holding() -> None:
    story = fired_at(T0)

    owed = story.cycle(52, T0 + CYCLE)

    assert (owed, story.state) == (None, "resolved")
    assert story.row is not None
    assert (story.row["since"], story.row["pending_cycles"]) == (iso(T0 + CYCLE), 0)


def test_with_resolve_the_alert_keeps_firing_until_resolve_holds() -> None:
    story = fired_at(T0, make_rule(resolve="score >= 55"))

    assert story.cycles([52, 54, 49, 53], T0 + CYCLE) == [None, None, None, None]
    assert story.state == "firing"


def test_with_resolve_the_alert_clears_once_resolve_holds() -> None:
    story = fired_at(T0, make_rule(resolve="score >= 55"))
    story.cycle(52, T0 + CYCLE)

    owed = story.cycle(56, T0 + 2 * CYCLE)

    assert (owed, story.state, story.episode) == (None, "resolved", 1)


def test_a_resolved_account_that_stays_healthy_stays_resolved() -> None:
    story = fired_at(T0)
    story.cycle(80, T0 + CYCLE)

    assert story.cycles([80, 90], T0 + 2 * CYCLE) == [None, None]
    assert story.state == "resolved"
    assert story.row is not None and story.row["since"] == iso(T0 + CYCLE)


# --- notify_on_resolve --------------------------------------------------------------------------------------

def test_notify_on_resolve_owes_a_resolve_nudge_for_the_notified_episode() -> None:
    story = fired_at(T0, make_rule(notify_on_resolve=True))

    owed = story.cycle(80, T0 + CYCLE)

    assert (owed, story.state, story.episode) == ("resolve", "resolved", 1)


def test_without_notify_on_resolve_clearing_is_silent() -> None:
    story = fired_at(T0)

    assert story.cycle(80, T0 + CYCLE) is None


def test_notify_on_resolve_owes_nothing_when_a_baselined_episode_clears() -> None:
    story = Story(make_rule(notify_on_resolve=True))
    story.cycle(40, T0, baseline=True)

    owed = story.cycle(80, T0 + CYCLE)

    assert (owed, story.state) == (None, "resolved")


def test_notify_on_resolve_owes_nothing_when_an_episode_baselined_after_a_rule_edit_clears() -> None:
    story = fired_at(T0, make_rule(notify_on_resolve=True))  # episode 1, notified
    story.rule = make_rule(notify_on_resolve=True, when="score < 45")  # an edit: a new meaning
    story.cycle(40, T0 + CYCLE, baseline=True)  # episode 2, baselined without a nudge

    owed = story.cycle(80, T0 + 2 * CYCLE)

    assert (owed, story.state, story.episode) == (None, "resolved", 2)


# --- rule edits ---------------------------------------------------------------------------------------------

def test_a_rule_edit_rebaselines_an_account_still_matching_without_a_nudge() -> None:
    story = fired_at(T0)
    story.rule = make_rule(when="score < 45")

    owed = story.cycle(40, T0 + CYCLE, baseline=True)

    assert (owed, story.state) == ("baseline", "firing")


def test_episodes_keep_growing_across_a_rule_meaning_change() -> None:
    story = fired_at(T0)  # episode 1
    story.rule = make_rule(when="score < 45")
    story.cycle(40, T0 + CYCLE, baseline=True)  # episode 2, baselined
    story.cycle(80, T0 + 2 * CYCLE)

    owed = story.cycle(40, T0 + timedelta(days=8))

    assert (owed, story.episode) == ("fire", 3)


def test_an_episode_number_survives_a_rule_edit_that_finds_the_account_healthy() -> None:
    story = fired_at(T0)
    story.cycle(80, T0 + CYCLE)
    story.rule = make_rule(when="score < 45")

    story.cycle(80, T0 + 2 * CYCLE, baseline=True)

    assert (story.state, story.episode) == ("inactive", 1)


def test_a_message_edit_is_not_a_new_meaning_and_does_not_rebaseline() -> None:
    story = fired_at(T0)
    story.rule = make_rule(message="{{ account_name }} is now red")

    assert story.cycle(40, T0 + CYCLE) is None
    assert (story.state, story.episode) == ("firing", 1)
