"""Scoring and evaluating only what changed: the same results as doing everything, for a fraction of the work.

The store marks an account for scoring whatever path changed its data (see the `account_changes` migration);
`score_changed_accounts` scores every account on the first cycle of a day or of a scorecard, then only the
marked ones; `evaluate_alerts` steps the accounts whose scores were rewritten and those in motion. Each test
builds a small store by hand at a fixed time and states which accounts a stage looked at.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.worker.conftest import SHIPPED_RULES
from worker.alerting.engine import evaluate_alerts
from worker.alerting.rules import load_alert_rules
from worker.delivery.writeback import plan_writeback
from worker.scoring import engine
from worker.scoring.engine import (
    _measure_raw,
    band_of,
    derived_score,
    explain,
    live_accounts,
    score_account,
    score_accounts,
    score_changed_accounts,
)
from worker.scoring.measures import LIBRARY, account_scope
from worker.scoring.scorecard import LoadedScorecard, load_scorecard
from worker.store import Store, changes, iso

T0 = datetime(2024, 5, 10, 9, 0, tzinfo=UTC)  # a Friday morning
CYCLE = timedelta(minutes=15)
ACCOUNTS = [f"0010000000000{n:02d}AAA" for n in range(1, 7)]
ACME, BETA, GAMMA = ACCOUNTS[:3]


def _activity(n: int, account: str, kind: str, at: datetime, direction: str | None = "in", **extra: Any
              ) -> dict[str, Any]:
    return {"source": "test", "source_id": f"a{n}", "kind": kind, "account_id": account, "related_id": None,
            "occurred_at": iso(at), "direction": direction, "sentiment": extra.get("sentiment"),
            "status": extra.get("status"), "priority": extra.get("priority"), "closed_at": extra.get("closed_at"),
            "is_deleted": 0, "modstamp": iso(extra.get("modstamp", at))}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """Six accounts with two months of meetings, emails, tickets, usage and a renewal each, all different."""
    opened = Store(tmp_path / "t.db")
    opened.upsert("accounts", [{"id": a, "name": f"Account {n}", "type": "Customer", "is_deleted": 0}
                               for n, a in enumerate(ACCOUNTS)], ("id",))
    rows, n = [], 0
    for index, account in enumerate(ACCOUNTS):
        for day in range(2 + index, 60, 3 + index):
            at = T0 - timedelta(days=day, hours=index)
            n += 1
            rows.append(_activity(n, account, "email", at, "in", sentiment=0.5 - 0.2 * index))
            if day % 2:
                n += 1
                rows.append(_activity(n, account, "email", at + timedelta(hours=5), "out"))
            if day % 7 == 0:
                n += 1
                rows.append(_activity(n, account, "meeting", at, "both"))
            if day % 11 == 0:
                n += 1
                rows.append(_activity(n, account, "ticket", at, "in", status="open",
                                      priority="urgent" if index > 3 else "normal"))
    opened.upsert("activities", rows, ("source", "source_id"))
    opened.upsert("usage_daily", [
        {"account_id": account, "day": (T0 - timedelta(days=day)).date().isoformat(), "active_users": 3 + index,
         "events": 100 - 10 * index + day, "features_used": json.dumps(["dashboards", "alerts"][: 1 + index % 2]),
         "seats": 10} for index, account in enumerate(ACCOUNTS) for day in range(0, 40, 1 + index)],
        ("account_id", "day"))
    opened.upsert("opportunities", [
        {"id": f"006{n:015d}", "account_id": account, "name": "Renewal", "type": "Renewal", "stage": "Open",
         "amount": 10_000 * (n + 1), "close_date": (T0 + timedelta(days=30 * (n + 1))).date().isoformat(),
         "is_closed": 0, "is_won": 0, "is_deleted": 0} for n, account in enumerate(ACCOUNTS)], ("id",))
    yield opened
    opened.close()


@pytest.fixture
def scorecard(rules_dir: Path) -> LoadedScorecard:
    return load_scorecard(rules_dir)


def _scores(store: Store) -> dict[str, dict[str, Any]]:
    return {r["account_id"]: r for r in store.query("SELECT * FROM scores ORDER BY account_id")}


def _copy(store: Store, path: Path) -> Store:
    target = sqlite3.connect(path)
    store.conn.backup(target)
    target.close()
    return Store(path)


# --- scoring many accounts at once ----------------------------------------------------------------------------

def test_accounts_scored_together_get_what_each_gets_alone(store: Store, rules_dir: Path) -> None:
    """Scoring computes a measure at a time over all accounts of a segment; each account must come out as if
    scored on its own: two segments, one pinned score, every stored figure compared."""
    with (rules_dir / "scorecard.yaml").open("a") as handle:
        handle.write("segments:\n  - name: direct\n    match: {type: [\"Customer - Direct\"]}\n"
                     "    groups:\n      value: {weight: 200}\n")
    store.conn.execute("UPDATE accounts SET type = 'Customer - Direct' WHERE id IN (?, ?)", (BETA, ACCOUNTS[4]))
    store.conn.execute("UPDATE accounts SET override_value = 35, override_reason = 'exec escalation' WHERE id = ?",
                       (GAMMA,))
    loaded = load_scorecard(rules_dir)
    score_accounts(store, loaded, T0)

    base, raw, stored = loaded.scorecard, _measure_raw(store, loaded.scorecard, T0), _scores(store)
    for account in live_accounts(store):
        account_id = account["id"]
        segment = base.segment_of(account)
        card = base.for_segment(segment)
        computed, coverage, results, _ = score_account(account_id, raw, card)
        score = 35.0 if account_id == GAMMA else computed
        reason = explain(results, band_of(score, card), card.max_reasons)
        alone = {"segment": segment.name if segment else None, "computed_score": computed, "score": score,
                 "coverage": coverage, "churn_risk": derived_score(card, "churn_risk", account_id, raw, score),
                 "expansion_readiness": derived_score(card, "expansion_readiness", account_id, raw, score),
                 "reason": f"Pinned by CSM at 35: exec escalation (computed {round(computed)}: {reason})"
                           if account_id == GAMMA else reason,
                 "measures": json.dumps({r.key: {"raw": r.raw, "points": r.points, "weight": round(r.weight, 4)}
                                         for r in results}, sort_keys=True)}
        assert {key: stored[account_id][key] for key in alone} == alone, account_id
    assert {r["segment"] for r in stored.values()} == {None, "direct"}


# --- which accounts scoring looks at -------------------------------------------------------------------------

def test_the_first_scoring_scores_every_account(store: Store, scorecard: LoadedScorecard) -> None:
    report = score_changed_accounts(store, scorecard, T0)

    assert (report.full, report.scored, report.full_reason) == (True, 6, "no whole re-score on record")


def test_a_cycle_without_change_scores_no_account(store: Store, scorecard: LoadedScorecard) -> None:
    score_changed_accounts(store, scorecard, T0)

    report = score_changed_accounts(store, scorecard, T0 + CYCLE)

    assert (report.full, report.scored) == (False, 0)
    assert sum(report.bands.values()) == 6  # the bands still describe every account


def test_a_new_email_rescores_only_its_account(store: Store, scorecard: LoadedScorecard) -> None:
    score_changed_accounts(store, scorecard, T0)
    store.upsert("activities", [_activity(9001, BETA, "email", T0 + timedelta(minutes=5), "in", sentiment=-0.9)],
                 ("source", "source_id"))

    report = score_changed_accounts(store, scorecard, T0 + CYCLE)

    assert (report.full, report.scored) == (False, 1)
    assert _scores(store)[BETA]["scored_at"] == iso(T0 + CYCLE)
    assert _scores(store)[ACME]["scored_at"] == iso(T0)


def test_the_first_cycle_of_a_day_rescores_every_account(store: Store, scorecard: LoadedScorecard) -> None:
    score_changed_accounts(store, scorecard, T0)

    report = score_changed_accounts(store, scorecard, T0 + timedelta(days=1))

    assert (report.full, report.scored) == (True, 6)
    assert report.full_reason == "a new day (ages and windows move with the date)"


def test_a_changed_scorecard_rescores_every_account(store: Store, scorecard: LoadedScorecard,
                                                    rules_dir: Path) -> None:
    score_changed_accounts(store, scorecard, T0)
    path = rules_dir / "scorecard.yaml"
    path.write_text(path.read_text().replace("red: 55", "red: 45"))

    report = score_changed_accounts(store, load_scorecard(rules_dir), T0 + CYCLE)

    assert (report.full, report.full_reason) == (True, "the scorecard changed")


def test_a_clock_gone_back_rescores_every_account(store: Store, scorecard: LoadedScorecard) -> None:
    score_changed_accounts(store, scorecard, T0 + CYCLE)

    report = score_changed_accounts(store, scorecard, T0)

    assert (report.full, report.full_reason) == (True, "the clock went back")


def test_a_scheduled_meeting_rescores_its_account_when_it_starts(store: Store, scorecard: LoadedScorecard) -> None:
    score_changed_accounts(store, scorecard, T0)
    start = T0 + timedelta(hours=3)
    store.upsert("activities", [_activity(9002, GAMMA, "meeting", start, "both", modstamp=T0)],
                 ("source", "source_id"))

    before = score_changed_accounts(store, scorecard, T0 + CYCLE)
    after = score_changed_accounts(store, scorecard, start + CYCLE)

    assert before.scored == 0  # it has not happened yet: nothing to score
    assert after.scored == 1
    assert json.loads(_scores(store)[GAMMA]["measures"])["meetings"]["raw"] >= 1


# --- every path that changes data marks its account ----------------------------------------------------------

def _new_email(store: Store) -> None:
    store.upsert("activities", [_activity(9100, ACME, "email", T0, "in")], ("source", "source_id"))


def _ticket_closed(store: Store) -> None:
    store.conn.execute("UPDATE activities SET status = 'solved', closed_at = ? WHERE kind = 'ticket' "
                       "AND account_id = ?", (iso(T0), ACME))


def _activity_deleted_in_source(store: Store) -> None:
    store.conn.execute("UPDATE activities SET is_deleted = 1 WHERE source_id = "
                       "(SELECT min(source_id) FROM activities WHERE account_id = ?)", (ACME,))


def _activity_pruned(store: Store) -> None:
    store.conn.execute("DELETE FROM activities WHERE source_id = "
                       "(SELECT min(source_id) FROM activities WHERE account_id = ?)", (ACME,))


def _sentiment_scored(store: Store) -> None:
    store.conn.execute("UPDATE activities SET sentiment = -0.8 WHERE source_id = "
                       "(SELECT min(source_id) FROM activities WHERE account_id = ?)", (ACME,))


def _usage_day(store: Store) -> None:
    store.upsert("usage_daily", [{"account_id": ACME, "day": T0.date().isoformat(), "active_users": 0, "events": 0,
                                  "features_used": "[]", "seats": 10}], ("account_id", "day"))


def _renewal_moved(store: Store) -> None:
    store.conn.execute("UPDATE opportunities SET close_date = '2024-05-20' WHERE account_id = ?", (ACME,))


def _override_set(store: Store) -> None:
    store.conn.execute("INSERT INTO overrides (account_id, value, reason, set_at) VALUES (?, 20, 'x', ?)",
                       (ACME, iso(T0)))


def _segment_changed(store: Store) -> None:
    store.conn.execute("UPDATE accounts SET type = 'Partner' WHERE id = ?", (ACME,))


def _account_deleted(store: Store) -> None:
    store.conn.execute("UPDATE accounts SET is_deleted = 1 WHERE id = ?", (ACME,))


def _email_moved_to_another_account(store: Store) -> None:
    store.conn.execute("UPDATE activities SET account_id = ? WHERE source_id = "
                       "(SELECT min(source_id) FROM activities WHERE account_id = ?)", (BETA, ACME))


PATHS: dict[str, Callable[[Store], None]] = {
    "new email": _new_email, "ticket closed": _ticket_closed, "deleted in the source": _activity_deleted_in_source,
    "pruned": _activity_pruned, "sentiment scored": _sentiment_scored, "usage day": _usage_day,
    "renewal moved": _renewal_moved, "override set": _override_set, "segment changed": _segment_changed,
    "account deleted": _account_deleted, "email moved to another account": _email_moved_to_another_account,
}


@pytest.mark.parametrize("path", PATHS)
def test_every_kind_of_change_marks_the_account_for_scoring(store: Store, scorecard: LoadedScorecard,
                                                            path: str) -> None:
    score_changed_accounts(store, scorecard, T0)

    PATHS[path](store)

    marked = changes.pending(store, changes.SCORE, T0 + CYCLE).accounts
    assert ACME in marked and marked <= {ACME, BETA}


def test_a_record_read_again_unchanged_marks_nothing(store: Store, scorecard: LoadedScorecard) -> None:
    """Our own write-back makes Salesforce send every written Account again: that must not re-score them."""
    score_changed_accounts(store, scorecard, T0)
    again = store.query("SELECT * FROM accounts")
    store.upsert("accounts", again, ("id",))
    store.upsert("activities", store.query("SELECT * FROM activities WHERE account_id = ?", (ACME,)),
                 ("source", "source_id"))

    assert changes.pending(store, changes.SCORE, T0 + CYCLE).accounts == frozenset()


def test_scoring_the_changed_accounts_gives_the_scores_of_a_whole_rescore(
        store: Store, scorecard: LoadedScorecard, tmp_path: Path) -> None:
    score_changed_accounts(store, scorecard, T0)
    for change in PATHS.values():
        if change is not _account_deleted:
            change(store)
    store.upsert("activities", [_activity(9200, GAMMA, "ticket", T0, "in", status="open", priority="urgent")],
                 ("source", "source_id"))
    whole = _copy(store, tmp_path / "whole.db")

    incremental = score_changed_accounts(store, scorecard, T0 + CYCLE)
    score_accounts(whole, scorecard, T0 + CYCLE)

    assert (incremental.full, incremental.scored) == (False, 3)
    expected = _scores(whole)
    for row in expected.values():
        if row["account_id"] not in (ACME, BETA, GAMMA):
            row["scored_at"] = iso(T0)  # not touched by the incremental run
    assert _scores(store) == expected
    whole.close()


def test_a_deleted_account_loses_its_score(store: Store, scorecard: LoadedScorecard) -> None:
    score_changed_accounts(store, scorecard, T0)
    _account_deleted(store)

    score_changed_accounts(store, scorecard, T0 + CYCLE)

    assert ACME not in _scores(store)


def test_a_mark_made_again_while_scoring_survives_for_the_next_cycle(
        store: Store, scorecard: LoadedScorecard) -> None:
    """A Slack button can set an override while the cycle scores: the next cycle must see it."""
    score_changed_accounts(store, scorecard, T0)
    _override_set(store)
    read = changes.pending(store, changes.SCORE, T0 + CYCLE)
    store.conn.execute("UPDATE overrides SET value = 30 WHERE account_id = ?", (ACME,))  # meanwhile

    score_accounts(store, scorecard, T0 + CYCLE, only=read)

    assert changes.pending(store, changes.SCORE, T0 + 2 * CYCLE).accounts == {ACME}


# --- the measures can be asked for a few accounts ------------------------------------------------------------

def test_every_measure_can_be_limited_to_the_accounts_being_scored() -> None:
    """A usage measure is an expression over the usage pass, whose query carries the scope (`query_usage`)."""
    assert [name for name, measure in LIBRARY.items()
            if "SCOPE(" not in measure.sql and not measure.over_usage_days] == []


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_a_measure_limited_to_some_accounts_gives_their_values_of_the_whole_query(
        store: Store, scorecard: LoadedScorecard, name: str) -> None:
    params: dict[str, Any] = {"features": ("dashboards", "alerts", "api")} if "features" in LIBRARY[name].needs else {}
    whole = LIBRARY[name].query(store, params, T0)
    some = {ACME, GAMMA, ACCOUNTS[5]}

    with account_scope(store, some):
        limited = LIBRARY[name].query(store, params, T0, scoped=True)

    assert limited == {a: v for a, v in whole.items() if a in some}


# --- alert evaluation looks at rewritten scores and accounts in motion ----------------------------------------

@pytest.fixture
def alert_rules(rules_dir: Path) -> Callable[[str], Any]:
    def write(extra: str = "") -> Any:
        (rules_dir / "alerts.yaml").write_text(
            "version: 1\ndigest: {min: 3}\nrules:\n"
            "  - name: unhappy\n    when: score < 101\n    for: 3\n    cooldown: 7d\n    route: {to: owner}\n"
            "    message: \"{{ account_name }} looks unhappy\"\n" + extra)
        return load_alert_rules(rules_dir)
    return write


def _states(store: Store) -> dict[str, tuple[str, int]]:
    return {r["account_id"]: (r["state"], r["pending_cycles"])
            for r in store.query("SELECT * FROM alerts WHERE rule = 'unhappy'")}


def test_evaluation_after_a_quiet_cycle_steps_only_accounts_in_motion(
        store: Store, scorecard: LoadedScorecard, alert_rules: Callable[[str], Any]) -> None:
    rules = alert_rules("")
    score_changed_accounts(store, scorecard, T0)
    evaluate_alerts(store, rules, T0, record_url="https://x")  # a new rule: its baseline, every account firing
    store.conn.execute("UPDATE alerts SET state = 'inactive', pending_cycles = 0, since = '2024-01-01T00:00:00Z'")
    store.conn.execute("UPDATE alerts SET state = 'pending', pending_cycles = 1 WHERE account_id = ?", (BETA,))

    score_changed_accounts(store, scorecard, T0 + CYCLE)
    report = evaluate_alerts(store, rules, T0 + CYCLE, record_url="https://x")

    states = _states(store)
    assert states[BETA] == ("pending", 2)  # `for: 3` keeps counting without a score change
    assert states[ACME] == ("inactive", 0)  # not stepped: its facts did not change
    assert report.pending == 1


def test_an_account_held_pending_fires_on_its_third_cycle_without_a_score_change(
        store: Store, scorecard: LoadedScorecard, alert_rules: Callable[[str], Any]) -> None:
    rules = alert_rules("")
    score_changed_accounts(store, scorecard, T0)
    evaluate_alerts(store, rules, T0, record_url="https://x")
    store.conn.execute("UPDATE alerts SET state = 'inactive', pending_cycles = 0, since = '2024-01-01T00:00:00Z'")
    store.conn.execute("UPDATE alerts SET state = 'pending', pending_cycles = 1 WHERE account_id = ?", (BETA,))

    fired = [evaluate_alerts(store, rules, T0 + n * CYCLE, record_url="https://x").fired for n in (1, 2)]

    assert fired == [0, 1]  # pending for 2 cycles, then the third: `for: 3`
    assert _states(store)[BETA][0] == "firing"
    assert store.scalar("SELECT count(*) FROM outbox WHERE kind = 'slack' AND account_id = ?", (BETA,)) >= 1


def test_a_rescored_account_is_evaluated_once_and_its_mark_cleared(
        store: Store, scorecard: LoadedScorecard, alert_rules: Callable[[str], Any]) -> None:
    rules = alert_rules("")
    score_changed_accounts(store, scorecard, T0)
    evaluate_alerts(store, rules, T0, record_url="https://x")
    _new_email(store)
    score_changed_accounts(store, scorecard, T0 + CYCLE)

    assert changes.pending(store, changes.EVALUATE, T0 + CYCLE).accounts == {ACME}
    evaluate_alerts(store, rules, T0 + CYCLE, record_url="https://x")
    assert changes.pending(store, changes.EVALUATE, T0 + CYCLE).accounts == frozenset()


def test_a_rule_added_later_takes_its_baseline_over_every_account(
        store: Store, scorecard: LoadedScorecard, alert_rules: Callable[[str], Any]) -> None:
    evaluate_alerts(store, alert_rules(""), T0, record_url="https://x")
    score_changed_accounts(store, scorecard, T0)
    evaluate_alerts(store, alert_rules(""), T0, record_url="https://x")
    added = alert_rules("  - name: any_score\n    when: score >= 0\n    for: 1\n    cooldown: 7d\n"
                        "    route: {to: owner}\n    message: \"{{ account_name }}\"\n")

    report = evaluate_alerts(store, added, T0 + CYCLE, record_url="https://x")

    assert report.baselined == 6 and report.fired == 0


def test_a_rule_waits_for_a_whole_sync_to_take_its_baseline_and_then_nudges_no_account_matching_all_along(
        store: Store, scorecard: LoadedScorecard, alert_rules: Callable[[str], Any]) -> None:
    """A baseline taken on scores that missed a source (tickets, say) would record a red account as not matching,
    and the next whole sync would tell its owner it "turned red" when it was red all along."""
    rules = alert_rules(
        "  - name: any_score\n    when: score >= 0\n    for: 1\n    cooldown: 7d\n"
        "    route: {to: owner}\n    message: \"{{ account_name }}\"\n")
    score_changed_accounts(store, scorecard, T0)

    partial = evaluate_alerts(store, rules, T0, record_url="https://x", take_baselines=False)
    assert partial.baselines_waiting == ["unhappy", "any_score"]
    assert store.scalar("SELECT count(*) FROM alerts") == 0

    whole = evaluate_alerts(store, rules, T0 + CYCLE, record_url="https://x")
    assert (whole.baselined, whole.fired, whole.baselines_waiting) == (12, 0, [])


def test_a_partial_sync_still_steps_the_rules_that_have_their_baseline(
        store: Store, scorecard: LoadedScorecard, alert_rules: Callable[[str], Any]) -> None:
    rules = alert_rules("")
    score_changed_accounts(store, scorecard, T0)
    evaluate_alerts(store, rules, T0, record_url="https://x")
    store.conn.execute("UPDATE alerts SET state = 'inactive', pending_cycles = 0, since = '2024-01-01T00:00:00Z'")
    store.conn.execute("UPDATE alerts SET state = 'pending', pending_cycles = 1 WHERE account_id = ?", (BETA,))

    report = evaluate_alerts(store, rules, T0 + CYCLE, record_url="https://x", take_baselines=False)

    assert report.baselines_waiting == [] and _states(store)[BETA] == ("pending", 2)


# --- write-back planning looks at changed score rows -----------------------------------------------------------

def test_a_rescore_that_changes_no_score_marks_nothing_for_evaluation_or_write_back(
        store: Store, scorecard: LoadedScorecard) -> None:
    score_changed_accounts(store, scorecard, T0)
    plan_writeback(store, T0)
    evaluate_alerts(store, load_alert_rules(SHIPPED_RULES), T0, record_url="https://x")

    report = score_accounts(store, scorecard, T0 + CYCLE)  # every account again, same data, same day

    assert report.scored == 6
    assert changes.pending(store, changes.EVALUATE, T0 + CYCLE).accounts == frozenset()
    assert changes.pending(store, changes.WRITEBACK, T0 + CYCLE).accounts == frozenset()


def test_write_back_plans_the_accounts_whose_scores_changed_and_clears_their_marks(
        store: Store, scorecard: LoadedScorecard) -> None:
    score_changed_accounts(store, scorecard, T0)
    assert plan_writeback(store, T0) == 6
    store.conn.execute("UPDATE scores SET score = score + 1 WHERE account_id = ?", (GAMMA,))

    planned = plan_writeback(store, T0 + CYCLE)

    assert planned == 1
    assert store.scalar("SELECT count(*) FROM outbox WHERE kind = 'salesforce' AND account_id = ?", (GAMMA,)) == 2
    assert changes.pending(store, changes.WRITEBACK, T0 + CYCLE).accounts == frozenset()


# --- a whole re-score split over processes ---------------------------------------------------------------------

def test_a_whole_rescore_leaves_the_database_writable_between_its_parts(
        store: Store, scorecard: LoadedScorecard, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "MIN_CHUNK_ACCOUNTS", 1)
    click = sqlite3.connect(store.path, timeout=0)  # a click on a nudge, had it no time to wait at all
    writes = []
    own = store.transaction

    @contextmanager
    def watched() -> Iterator[sqlite3.Connection]:
        click.execute("BEGIN IMMEDIATE")  # 'database is locked' if the part before still held the write
        click.execute("ROLLBACK")
        writes.append(True)
        with own() as conn:
            yield conn

    monkeypatch.setattr(store, "transaction", watched)
    score_accounts(store, scorecard, T0, processes=2, parallel_from=0)
    click.close()

    assert len(writes) > 2  # a transaction per part, and the last that clears the marks


def test_a_whole_rescore_cut_short_between_parts_is_done_again_and_marks_nothing_twice(
        store: Store, scorecard: LoadedScorecard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "MIN_CHUNK_ACCOUNTS", 1)
    whole = _copy(store, tmp_path / "whole.db")
    stored = []
    own = engine._Scored.history_rows

    def crash_at_the_third(part: Any) -> Iterator[tuple[Any, ...]]:
        stored.append(part)
        if len(stored) == 3:
            raise KeyboardInterrupt  # the worker stopped between two parts
        return own(part)

    monkeypatch.setattr(engine._Scored, "history_rows", crash_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        score_accounts(store, scorecard, T0, processes=2, parallel_from=0)
    monkeypatch.setattr(engine._Scored, "history_rows", own)
    partly = len(_scores(store))

    again = score_changed_accounts(store, scorecard, T0)
    score_changed_accounts(whole, scorecard, T0)

    assert 0 < partly < len(ACCOUNTS) and again.full_reason is not None
    assert _scores(store) == _scores(whole)
    marks = "SELECT stage, account_id, version FROM account_changes ORDER BY stage, account_id"
    assert store.query(marks) == whole.query(marks)
    whole.close()


def test_a_whole_rescore_hands_out_every_account_once_in_chunks_that_shrink_to_the_end() -> None:
    ids = [f"001{n:06d}" for n in range(100_000)]
    chunks = engine._Chunks(ids, processes=2)

    sizes = []
    while (chunk := chunks.next()) is not None:
        sizes.append(len(chunk))
        assert chunk == ids[sum(sizes[:-1]):sum(sizes)]

    assert sum(sizes) == len(ids)
    assert max(sizes) == engine.MAX_CHUNK_ACCOUNTS  # a process holds one chunk's scores, whatever the org's size
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-1] <= engine.MIN_CHUNK_ACCOUNTS  # the last, which another process may wait for, is small


def test_a_whole_rescore_in_two_processes_gives_the_scores_of_one(
        store: Store, scorecard: LoadedScorecard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alone = _copy(store, tmp_path / "alone.db")
    monkeypatch.setattr(engine, "MIN_CHUNK_ACCOUNTS", 1)  # chunks of an account or two: both processes take some

    split = score_accounts(store, scorecard, T0, processes=2, parallel_from=0)
    single = score_accounts(alone, scorecard, T0, processes=1)

    assert (split.scored, split.changed, split.bands) == (single.scored, single.changed, single.bands)
    assert _scores(store) == _scores(alone)
    assert store.query("SELECT * FROM score_history ORDER BY account_id") == \
        alone.query("SELECT * FROM score_history ORDER BY account_id")
    alone.close()
