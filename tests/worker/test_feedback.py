"""Feedback as data: votes kept once, corrections turned into overrides or proposals, and counted per rule.

These tests work on the store alone (no HTTP): a nudge is an outbox row as `worker.delivery.notify` leaves it once
sent; a vote is what the Slack handler hands `record_vote`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from worker.alerting.message import NudgeKey as Nudge
from worker.errors import FeedbackError
from worker.rulebook.in_force import RuleBook
from worker.scoring.engine import score_accounts
from worker.service.feedback import Vote, accept_proposal, account_feedback, list_feedback, record_vote, rule_stats
from worker.store import Store, iso

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
NOW = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
ACME = "001000000000001AAA"
GLOBEX = "001000000000002AAA"
DM = "D0HB0000001"
CHANNEL = "C0HB0000002"
OWNER = "U0HBOWNER01"
COLLEAGUE = "U0HBCOLL001"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "feedback.db") as opened:
        with opened.transaction() as conn:
            conn.executemany("INSERT INTO accounts (id, name) VALUES (?, ?)", [(ACME, "Acme"), (GLOBEX, "Globex")])
        yield opened


def sent_nudge(store: Store, account_id: str = ACME, *, rule: str = "turned_red", episode: int = 1,
               conversation: str = DM, ts: str = "1717405200.000100", destination: str = "owner",
               sent_at: datetime = NOW, copy: bool = False) -> Nudge:
    """An outbox row as notify leaves it after posting the nudge."""
    key = f"nudge:{rule}:{account_id}:{episode}:fire" + (":channel" if copy else "")
    payload = {"dedup_key": key, "rule": rule, "kind": "fire", "account_id": account_id, "destination": destination}
    with store.transaction() as conn:
        conn.execute("INSERT INTO outbox (dedup_key, kind, account_id, payload, status, remote_ref, created_at, "
                     "sent_at) VALUES (?, 'slack', ?, ?, 'sent', ?, ?, ?)",
                     (key, account_id, json.dumps(payload), f"{conversation}:{ts}", iso(sent_at), iso(sent_at)))
    return Nudge.parse(key)


def vote(nudge: Nudge, verdict: str, user: str = OWNER, *, channel: str = DM, ts: str = "1717405200.000100",
         action_ts: str | None = None, value: float | None = None, days: int = 14, reason: str | None = None) -> Vote:
    until = NOW.date() + timedelta(days=days) if value is not None else None
    if verdict == "score_wrong" and reason is None:
        reason = "renewal signed last week"
    return Vote(nudge, verdict, user, user.lower(), channel, ts, action_ts, reason, value, until)


def overrides(store: Store) -> list[dict[str, object]]:
    return store.query("SELECT account_id, value, reason, until, set_by FROM overrides ORDER BY account_id")


# -- the button's value --------------------------------------------------------------------------------------

def test_a_nudge_key_reads_back_into_rule_account_episode_and_kind() -> None:
    nudge = Nudge.parse(f"nudge:turned_red:{ACME}:3:fire:channel")

    assert (nudge.rule, nudge.account_id, nudge.episode, nudge.kind) == ("turned_red", ACME, 3, "fire")


@pytest.mark.parametrize("key", ["", "nudge:turned_red", f"digest:{ACME}", f"nudge:Turned-Red:{ACME}:1:fire",
                                 f"nudge:turned_red:{ACME}:one:fire", f"nudge:turned_red:{ACME}:1:fire; DROP"])
def test_a_value_that_is_not_a_nudge_key_is_refused(key: str) -> None:
    with pytest.raises(FeedbackError):
        Nudge.parse(key)


# -- votes ------------------------------------------------------------------------------------------------

def test_the_same_click_twice_is_one_vote(store: Store) -> None:
    nudge = sent_nudge(store)

    first = record_vote(store, vote(nudge, "useful", action_ts="1717405300.000001"), NOW)
    again = record_vote(store, vote(nudge, "useful", action_ts="1717405300.000001"), NOW + timedelta(seconds=4))
    double = record_vote(store, vote(nudge, "useful", action_ts="1717405301.000001"), NOW + timedelta(seconds=5))

    assert first.changed and not again.changed and not double.changed
    assert [(r["verdict"], r["user_id"]) for r in list_feedback(store)] == [("useful", OWNER)]


def test_a_change_of_mind_replaces_the_earlier_verdict(store: Store) -> None:
    nudge = sent_nudge(store)
    record_vote(store, vote(nudge, "useful", action_ts="1717405300.000001"), NOW)

    record_vote(store, vote(nudge, "not_useful", action_ts="1717405400.000001"), NOW + timedelta(minutes=2))

    assert [r["verdict"] for r in list_feedback(store)] == ["not_useful"]


def test_a_late_retry_of_an_older_click_does_not_undo_a_newer_one(store: Store) -> None:
    nudge = sent_nudge(store)
    record_vote(store, vote(nudge, "not_useful", action_ts="1717405400.000001"), NOW)

    late = record_vote(store, vote(nudge, "useful", action_ts="1717405300.000001"), NOW + timedelta(seconds=30))

    assert not late.changed
    assert [r["verdict"] for r in list_feedback(store)] == ["not_useful"]


def test_usefulness_and_a_score_correction_are_separate_answers(store: Store) -> None:
    nudge = sent_nudge(store)

    record_vote(store, vote(nudge, "useful"), NOW)
    record_vote(store, vote(nudge, "score_wrong"), NOW)

    assert sorted(r["verdict"] for r in list_feedback(store)) == ["score_wrong", "useful"]


# -- corrections: override or proposal -------------------------------------------------------------------------

def test_the_owners_correction_in_their_dm_becomes_an_override_that_expires(store: Store) -> None:
    nudge = sent_nudge(store)

    recorded = record_vote(store, vote(nudge, "score_wrong", value=65, days=7), NOW)

    assert recorded.override == "applied"
    assert overrides(store) == [{"account_id": ACME, "value": 65.0, "reason": "renewal signed last week",
                                 "until": "2024-06-10", "set_by": f"{OWNER.lower()} (Slack {OWNER})"}]


def test_a_correction_without_a_value_is_kept_but_pins_nothing(store: Store) -> None:
    nudge = sent_nudge(store)

    recorded = record_vote(store, vote(nudge, "score_wrong"), NOW)

    assert recorded.override is None and overrides(store) == []
    assert list_feedback(store)[0]["reason"] == "renewal signed last week"


def test_a_correction_clicked_in_a_shared_channel_waits_as_a_proposal(store: Store) -> None:
    nudge = sent_nudge(store, conversation=CHANNEL)  # the owner has no Slack user: the fallback channel got it

    recorded = record_vote(store, vote(nudge, "score_wrong", COLLEAGUE, channel=CHANNEL, value=30), NOW)

    assert recorded.override == "proposed" and "owner's DM" in recorded.why
    assert overrides(store) == []


@pytest.mark.parametrize("holder", ["command line", "salesforce"])
def test_a_correction_never_replaces_another_override_in_force(store: Store, holder: str) -> None:
    nudge = sent_nudge(store)
    with store.transaction() as conn:
        if holder == "salesforce":
            conn.execute("UPDATE accounts SET override_value = 80, override_until = '2024-07-01' WHERE id = ?",
                         (ACME,))
        else:
            conn.execute("INSERT INTO overrides VALUES (?, 80, 'exec sponsor call', '2024-07-01', 'ops', ?)",
                         (ACME, iso(NOW)))

    recorded = record_vote(store, vote(nudge, "score_wrong", value=65), NOW)

    assert recorded.override == "proposed"
    assert store.scalar("SELECT count(*) FROM overrides WHERE value = 65") == 0


def test_the_owner_may_change_their_own_correction(store: Store) -> None:
    nudge = sent_nudge(store)
    record_vote(store, vote(nudge, "score_wrong", value=65), NOW)

    again = record_vote(store, vote(nudge, "score_wrong", value=70, reason="and the champion is back"), NOW)

    assert again.override == "applied"
    assert [(o["value"], o["reason"]) for o in overrides(store)] == [(70.0, "and the champion is back")]


def test_accepting_a_proposal_writes_the_override(store: Store) -> None:
    nudge = sent_nudge(store, conversation=CHANNEL)
    proposal = record_vote(store, vote(nudge, "score_wrong", COLLEAGUE, channel=CHANNEL, value=30), NOW)

    accept_proposal(store, proposal.id, "ops-lead", NOW + timedelta(hours=1))

    (override,) = overrides(store)
    assert (override["value"], override["until"]) == (30.0, "2024-06-17")
    assert "ops-lead" in str(override["set_by"]) and COLLEAGUE in str(override["set_by"])
    assert list_feedback(store)[0]["override_status"] == "accepted"


def test_an_expired_proposal_cannot_be_accepted(store: Store) -> None:
    nudge = sent_nudge(store, conversation=CHANNEL)
    proposal = record_vote(store, vote(nudge, "score_wrong", COLLEAGUE, channel=CHANNEL, value=30, days=7), NOW)

    with pytest.raises(FeedbackError, match="expired"):
        accept_proposal(store, proposal.id, "ops-lead", NOW + timedelta(days=8))
    assert overrides(store) == []


def test_scoring_pins_the_corrected_score_until_it_expires(store: Store) -> None:
    rulebook = RuleBook(RULES_DIR)
    rulebook.reload()
    scorecard, _ = rulebook.require()
    nudge = sent_nudge(store)
    record_vote(store, vote(nudge, "score_wrong", value=65, days=7), NOW)

    score_accounts(store, scorecard, NOW + timedelta(days=7))
    pinned = store.query("SELECT score, overridden, reason FROM scores WHERE account_id = ?", (ACME,))[0]
    score_accounts(store, scorecard, NOW + timedelta(days=8))
    expired = store.query("SELECT score, overridden FROM scores WHERE account_id = ?", (ACME,))[0]

    assert (pinned["score"], pinned["overridden"]) == (65.0, 1)
    assert "renewal signed last week" in pinned["reason"]
    assert expired["overridden"] == 0


# -- reading it back ---------------------------------------------------------------------------------------

def test_rules_stats_counts_alerts_votes_and_the_median_time_to_feedback(store: Store) -> None:
    answered_fast = sent_nudge(store, ACME, episode=1)
    answered_slow = sent_nudge(store, GLOBEX, episode=1, ts="1717405200.000200")
    sent_nudge(store, ACME, episode=2, ts="1717405200.000300")  # never answered
    record_vote(store, vote(answered_fast, "useful"), NOW + timedelta(minutes=10))
    record_vote(store, vote(answered_fast, "useful", COLLEAGUE), NOW + timedelta(minutes=50))
    record_vote(store, vote(answered_slow, "not_useful", ts="1717405200.000200"), NOW + timedelta(minutes=30))

    (stats,) = rule_stats(store)

    assert (stats.rule, stats.alerts_sent, stats.answered) == ("turned_red", 3, 2)
    assert (stats.useful, stats.not_useful, stats.score_wrong) == (2, 1, 0)
    assert stats.usefulness == pytest.approx(2 / 3)
    assert stats.median_seconds_to_feedback == pytest.approx(20 * 60)  # median of 10 and 30 minutes


def test_an_alert_posted_to_the_owner_and_a_channel_counts_once(store: Store) -> None:
    sent_nudge(store)
    sent_nudge(store, conversation=CHANNEL, ts="1717405200.000200", destination="channel:#cs-alerts", copy=True)

    (stats,) = rule_stats(store)

    assert stats.alerts_sent == 1


def test_a_rule_with_no_feedback_has_no_usefulness_rate(store: Store) -> None:
    sent_nudge(store)

    (stats,) = rule_stats(store)

    assert (stats.usefulness, stats.median_seconds_to_feedback) == (None, None)
    assert stats.as_json()["usefulness"] is None


def test_explain_shows_a_pending_proposal_until_it_expires(store: Store) -> None:
    nudge = sent_nudge(store, conversation=CHANNEL)
    proposal = record_vote(store, vote(nudge, "score_wrong", COLLEAGUE, channel=CHANNEL, value=30, days=7), NOW)

    shown = account_feedback(store, ACME, NOW.date() + timedelta(days=7))
    gone = account_feedback(store, ACME, NOW.date() + timedelta(days=8))

    assert [c["id"] for c in shown.corrections] == [proposal.id]
    assert f"healthbeat feedback accept {proposal.id}" in shown.lines()[0]
    assert gone.corrections == []


def test_feedback_ls_lists_the_newest_first_with_the_account_name(store: Store) -> None:
    record_vote(store, vote(sent_nudge(store, ACME), "useful"), NOW)
    record_vote(store, vote(sent_nudge(store, GLOBEX, ts="1717405200.000200"), "not_useful",
                            ts="1717405200.000200"), NOW + timedelta(minutes=1))

    rows = list_feedback(store)

    assert [(r["account_name"], r["verdict"]) for r in rows] == [("Globex", "not_useful"), ("Acme", "useful")]
    assert [r["account_name"] for r in list_feedback(store, account_id=ACME)] == ["Acme"]


def test_a_score_outside_0_to_100_is_not_a_vote() -> None:
    with pytest.raises(FeedbackError, match=r"0\.\.100"):
        Vote(Nudge.parse(f"nudge:turned_red:{ACME}:1:fire"), "score_wrong", OWNER, value=140,
             until=date(2024, 7, 1))
