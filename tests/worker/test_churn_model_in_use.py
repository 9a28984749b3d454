"""The churn model in force: scores take their churn risk from it, say what drives it, follow its edits like any
rule file, and `explain` shows it. The store is built by hand at a fixed time; the model is written by hand
against whatever measures the shipped scorecard has."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from worker.analysis.churn_fit import model_text, write_model
from worker.cli import app
from worker.rulebook.in_force import RuleBook
from worker.scoring import engine
from worker.scoring.churn_model import (
    MODEL_FILE,
    RENEWAL,
    ChurnModel,
    Feature,
    LoadedChurnModel,
    Training,
    drivers,
    load_churn_model,
    measure_uses,
)
from worker.scoring.engine import _measure_raw, derived_score, score_accounts, score_changed_accounts
from worker.scoring.measures import LIBRARY, Measure
from worker.scoring.scorecard import LoadedScorecard, Scorecard, load_scorecard
from worker.store import MIGRATIONS, Store, iso
from worker.store import database as store_module

T0 = datetime(2024, 5, 10, 9, 0, tzinfo=UTC)
ACCOUNTS = [f"0010000000000{n:02d}AAA" for n in range(1, 7)]


def _activity(n: int, account: str, kind: str, at: datetime, direction: str, **extra: Any) -> dict[str, Any]:
    return {"source": "test", "source_id": f"a{n}", "kind": kind, "account_id": account, "related_id": None,
            "occurred_at": iso(at), "direction": direction, "sentiment": extra.get("sentiment"),
            "status": extra.get("status"), "priority": extra.get("priority"), "closed_at": None,
            "is_deleted": 0, "modstamp": iso(at)}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """Six accounts, each quieter than the one before, with renewals from a month to half a year away."""
    opened = Store(tmp_path / "t.db")
    opened.upsert("accounts", [{"id": a, "name": f"Account {n}", "type": "Customer", "is_deleted": 0}
                               for n, a in enumerate(ACCOUNTS)], ("id",))
    rows: list[dict[str, Any]] = []
    for index, account in enumerate(ACCOUNTS):
        for day in range(2 + 2 * index, 200, 4 + 3 * index):
            at = T0 - timedelta(days=day, hours=index)
            rows.append(_activity(len(rows), account, "email", at, "in", sentiment=0.4 - 0.15 * index))
            if day % 3:
                rows.append(_activity(len(rows), account, "email", at + timedelta(hours=4), "out"))
            if day % 5 == 0:
                rows.append(_activity(len(rows), account, "meeting", at, "both"))
            if day % 7 == 0 and index > 2:
                rows.append(_activity(len(rows), account, "ticket", at, "in", status="open", priority="urgent"))
    opened.upsert("activities", rows, ("source", "source_id"))
    opened.upsert("usage_daily", [
        {"account_id": account, "day": (T0 - timedelta(days=day)).date().isoformat(), "active_users": 6 - index,
         "events": 50, "features_used": json.dumps(["dashboards"]), "seats": 10}
        for index, account in enumerate(ACCOUNTS) for day in range(3 * index, 240, 1 + index)],
        ("account_id", "day"))
    opened.upsert("opportunities", [
        {"id": f"006{n:015d}", "account_id": account, "name": "Renewal", "type": "Renewal", "stage": "Open",
         "amount": 10_000.0, "close_date": (T0 + timedelta(days=30 + 30 * n)).date().isoformat(), "is_closed": 0,
         "is_won": 0, "is_deleted": 0, "created_at": "2024-01-01T00:00:00Z"} for n, account in enumerate(ACCOUNTS)],
        ("id",))
    yield opened
    opened.close()


@pytest.fixture
def scorecard(rules_dir: Path) -> LoadedScorecard:
    return load_scorecard(rules_dir)


# Terms of the hand-written model, where the scorecard in force has the measure: (group.measure, mean, scale, weight)
WANTED = [("usage.days_since_last_active", 2.0, 4.0, 0.9), ("engagement.meetings", 8.0, 4.0, -0.7),
          ("support.open_tickets", 1.0, 2.0, 0.6), ("engagement.days_since_two_way_touch", 5.0, 5.0, 0.4)]


def hand_model(card: Scorecard, *, intercept: float = -2.0) -> ChurnModel:
    uses = measure_uses(card)
    features = [Feature(measure=RENEWAL, within=timedelta(days=90), mean=0.4, scale=0.5, weight=1.1),
                Feature(measure=RENEWAL, cap=365.0, mean=150.0, scale=100.0, weight=-0.3)]
    features += [Feature(measure=m, uses=uses[m], mean=mean, scale=scale, weight=w)
                 for m, mean, scale, w in WANTED if m in uses]
    assert len(features) >= 4, "the shipped scorecard lost the measures this test's model reads"
    return ChurnModel(horizon=timedelta(days=90), fitted_at=datetime(2024, 5, 1, tzinfo=UTC), l2=0.01,
                      intercept=intercept, features=features,
                      training=Training.model_validate({"from": "2023-01-01", "to": "2024-04-01", "snapshots": 900,
                                                        "lost_renewals": 44, "won_renewals": 120}))


def put_model(rules: Path, model: ChurnModel) -> LoadedChurnModel:
    card = load_scorecard(rules).scorecard
    write_model(model, rules / MODEL_FILE, card, source="test", proposed=False)
    found = load_churn_model(rules, card)
    assert found is not None
    return found


def _scores(store: Store) -> dict[str, dict[str, Any]]:
    return {r["account_id"]: r for r in store.query("SELECT * FROM scores ORDER BY account_id")}


def _values(store: Store, card: Scorecard, model: ChurnModel, account: str) -> dict[str, float | None]:
    """The account's raw values as the scores table keeps them, and its days to renewal from its opportunity."""
    stored = json.loads(_scores(store)[account]["measures"])
    close = store.scalar("SELECT close_date FROM opportunities WHERE account_id = ?", (account,))
    days = float((datetime.fromisoformat(close).date() - T0.date()).days)
    return {f.measure: days if f.measure == RENEWAL else stored[f.measure.split(".", 1)[1]]["raw"]
            for f in model.features}


# -- scores made with the model ---------------------------------------------------------------------------

def test_churn_risk_is_the_models_probability_for_the_accounts_raw_values(
        store: Store, scorecard: LoadedScorecard, rules_dir: Path) -> None:
    loaded = put_model(rules_dir, hand_model(scorecard.scorecard))

    score_accounts(store, scorecard, T0, churn_model=loaded)

    risks = {a: r["churn_risk"] for a, r in _scores(store).items()}
    expected = {a: loaded.model.risk(_values(store, scorecard.scorecard, loaded.model, a)) for a in ACCOUNTS}
    assert risks == expected
    assert len(set(risks.values())) == len(ACCOUNTS) and all(0 < r < 100 for r in risks.values())


def test_the_churn_drivers_are_the_terms_that_raise_the_risk_most_largest_first(
        store: Store, scorecard: LoadedScorecard, rules_dir: Path) -> None:
    loaded = put_model(rules_dir, hand_model(scorecard.scorecard))
    model = loaded.model

    score_accounts(store, scorecard, T0, churn_model=loaded)

    for account, row in _scores(store).items():
        values = _values(store, scorecard.scorecard, model, account)
        terms: dict[str, float] = {}
        for feature in model.features:  # the renewal's two features are one driver
            name = RENEWAL if feature.measure == RENEWAL else feature.measure
            terms[name] = terms.get(name, 0.0) + feature.weight * feature.z(values.get(feature.measure))
        rising = sorted((t for t in terms.items() if round(t[1], 3) > 0), key=lambda t: -t[1])[:3]
        found = json.loads(row["churn_drivers"])
        assert [d["measure"] for d in found] == [name for name, _ in rising], account
        assert [d["contribution"] for d in found] == [round(c, 3) for _, c in rising]
        assert all(d["says"] for d in found)


def test_a_driver_says_the_raw_value_in_the_measures_own_words(scorecard: LoadedScorecard) -> None:
    model = hand_model(scorecard.scorecard)
    describe: dict[str, tuple[Measure, Any]] = {"usage.days_since_last_active": (LIBRARY["days_since_last_active"], {})}

    found = drivers(model, {RENEWAL: 12.0, "usage.days_since_last_active": 30.0}, describe)

    assert [d.says for d in found][:2] == ["Product last used 30 days ago", "Renewal in 12 days"]


def test_when_nothing_raises_the_risk_the_drivers_are_what_keeps_it_low(scorecard: LoadedScorecard) -> None:
    model = hand_model(scorecard.scorecard)
    calm = {RENEWAL: None, "usage.days_since_last_active": 0.0, "engagement.meetings": 20.0,
            "support.open_tickets": 0.0, "engagement.days_since_two_way_touch": 0.0}

    found = drivers(model, calm, {})

    assert found and all(d.contribution < 0 for d in found)
    assert [d.contribution for d in found] == sorted(d.contribution for d in found)


def test_a_new_churn_model_rescores_every_account(store: Store, scorecard: LoadedScorecard, rules_dir: Path) -> None:
    score_changed_accounts(store, scorecard, T0)
    quiet = score_changed_accounts(store, scorecard, T0 + timedelta(minutes=15))
    loaded = put_model(rules_dir, hand_model(scorecard.scorecard))

    report = score_changed_accounts(store, scorecard, T0 + timedelta(minutes=30), churn_model=loaded)

    assert (quiet.full, quiet.scored) == (False, 0)
    assert (report.full, report.scored) == (True, len(ACCOUNTS))
    assert report.full_reason == "the churn model in force changed"
    assert all(r["churn_drivers"] for r in _scores(store).values())


def test_without_a_model_churn_risk_is_the_scorecards_rule(store: Store, scorecard: LoadedScorecard) -> None:
    score_accounts(store, scorecard, T0)

    raw = _measure_raw(store, scorecard.scorecard, T0)
    for account, row in _scores(store).items():
        assert row["churn_risk"] == derived_score(scorecard.scorecard, "churn_risk", account, raw, row["score"])
        assert row["churn_drivers"] is None


def test_a_churn_risk_with_every_term_at_its_mean_is_the_intercepts_probability(scorecard: LoadedScorecard
                                                                                 ) -> None:
    model = hand_model(scorecard.scorecard, intercept=-1.5)
    at_mean = {RENEWAL: 150.0}  # the cap feature at its mean; the within-90d one reads 0, below its mean 0.4

    risk = model.risk(at_mean)

    within = next(f for f in model.features if f.within is not None)
    assert risk == round(100 / (1 + math.exp(1.5 - within.weight * (0 - 0.4) / 0.5)), 2)


# -- in force: the rule book ------------------------------------------------------------------------------------

def test_a_model_in_the_rules_folder_is_in_force_with_its_digest(rules_dir: Path, scorecard: LoadedScorecard
                                                                 ) -> None:
    put_model(rules_dir, hand_model(scorecard.scorecard))
    book = RuleBook(rules_dir)

    problems = book.reload()

    assert problems == [] and book.churn_model is not None
    assert book.churn_model.path == rules_dir / MODEL_FILE and book.churn_model.digest


def test_a_broken_edit_of_the_model_keeps_the_last_good_one_and_says_so(rules_dir: Path,
                                                                        scorecard: LoadedScorecard) -> None:
    put_model(rules_dir, hand_model(scorecard.scorecard))
    book = RuleBook(rules_dir)
    book.reload()
    good = book.churn_model
    path = rules_dir / MODEL_FILE
    path.write_text(path.read_text().replace("intercept: -2.0", "intercept: minus two"))

    problems = book.reload()

    assert book.churn_model is good
    assert any(p.startswith(f"{path}:") and "intercept" in p for p in problems)
    assert any("keeping the last good churn model" in p for p in problems)


def test_a_model_taken_out_of_the_rules_folder_gives_churn_risk_back_to_the_rule(
        rules_dir: Path, scorecard: LoadedScorecard) -> None:
    put_model(rules_dir, hand_model(scorecard.scorecard))
    book = RuleBook(rules_dir)
    book.reload()

    (rules_dir / MODEL_FILE).unlink()
    problems = book.reload()

    assert problems == [] and book.churn_model is None


def test_a_scorecard_edit_that_drops_a_measure_the_model_reads_puts_the_model_out_of_force(
        rules_dir: Path, scorecard: LoadedScorecard) -> None:
    card = scorecard.scorecard
    model = ChurnModel.model_validate({**hand_model(card).model_dump(by_alias=True), "features": [
        Feature(measure=RENEWAL, within=timedelta(days=90), mean=0.4, scale=0.5, weight=1.1),
        Feature(measure="engagement.meetings", uses=measure_uses(card)["engagement.meetings"], mean=8, scale=4,
                weight=-0.7)]})
    put_model(rules_dir, model)
    book = RuleBook(rules_dir)
    book.reload()
    path = rules_dir / "scorecard.yaml"
    text = path.read_text()
    start = text.index("      meetings:\n")
    end = text.index("      inbound_answered_share:")
    path.write_text(text[:start] + text[end:])

    problems = book.reload()

    assert book.churn_model is None
    assert any("scorecard.yaml has no measure engagement.meetings" in p for p in problems)


def test_a_new_model_beside_a_broken_scorecard_is_checked_against_the_scorecard_still_in_force(
        rules_dir: Path, scorecard: LoadedScorecard) -> None:
    book = RuleBook(rules_dir)
    book.reload()
    card = rules_dir / "scorecard.yaml"
    card.write_text(card.read_text().replace("version: 1", "version: one"))
    model = hand_model(scorecard.scorecard)
    stranger = model.model_copy(update={"features": [
        *model.features[:2], Feature(measure="usage.logins", mean=3, scale=1, weight=0.5)]})
    (rules_dir / MODEL_FILE).write_text(model_text(stranger, source="test", proposed=False))

    problems = book.reload()

    assert book.scorecard is not None and book.churn_model is None
    assert any("no measure usage.logins" in p for p in problems)


# -- explain -----------------------------------------------------------------------------------------------

def _explain(store: Store, rules: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["explain", "Account 5", "--db", str(store.path), "--rules-dir", str(rules),
                                    *args], env={"COLUMNS": "200"})


def test_explain_says_what_drives_the_learned_churn_risk(store: Store, scorecard: LoadedScorecard,
                                                         rules_dir: Path) -> None:
    loaded = put_model(rules_dir, hand_model(scorecard.scorecard))
    score_accounts(store, scorecard, T0, churn_model=loaded)
    found = json.loads(_scores(store)[ACCOUNTS[5]]["churn_drivers"])

    result = _explain(store, rules_dir)

    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "the learned model's chance of churn within 90 days, driven by " in text
    assert all(d["says"] in text for d in found)


def test_explain_after_the_model_left_the_rules_folder_still_shows_what_drove_the_stored_risk(
        store: Store, scorecard: LoadedScorecard, rules_dir: Path) -> None:
    loaded = put_model(rules_dir, hand_model(scorecard.scorecard))
    score_accounts(store, scorecard, T0, churn_model=loaded)
    (rules_dir / MODEL_FILE).unlink()

    result = _explain(store, rules_dir)

    text = " ".join(result.output.split())
    assert "from the learned churn model it was scored with (no longer in the rules folder), driven by " in text


def test_explain_as_json_lists_the_churn_drivers(store: Store, scorecard: LoadedScorecard, rules_dir: Path) -> None:
    loaded = put_model(rules_dir, hand_model(scorecard.scorecard))
    score_accounts(store, scorecard, T0, churn_model=loaded)
    row = _scores(store)[ACCOUNTS[5]]

    result = _explain(store, rules_dir, "--format", "json")

    assert result.exit_code == 0, result.output
    churn = json.loads(result.output)["churn_risk"]
    assert churn["value"] == row["churn_risk"] and churn["drivers"] == json.loads(row["churn_drivers"])
    assert churn["from"] == "the learned churn model" and churn["model"]["horizon_days"] == 90


def test_explain_without_a_model_says_churn_risk_is_the_rule(store: Store, scorecard: LoadedScorecard,
                                                             rules_dir: Path) -> None:
    score_accounts(store, scorecard, T0)

    result = _explain(store, rules_dir, "--format", "json")

    churn = json.loads(result.output)["churn_risk"]
    assert churn["from"] == "the scorecard's derived.churn_risk rule" and churn["drivers"] == []


# -- the migrations ----------------------------------------------------------------------------------------

def _migration(text: str) -> int:
    return next(n for n, sql in enumerate(MIGRATIONS) if text in sql)


def test_a_store_from_before_creation_dates_gains_them_and_reads_its_opportunities_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:_migration("opportunities ADD COLUMN created_at")])
        with Store(tmp_path / "hb.db") as old, old.transaction() as conn:
            conn.execute("INSERT INTO opportunities (id, account_id, name, close_date, is_closed, is_won, is_deleted) "
                         "VALUES ('006A', ?, 'Renewal', '2025-01-01', 0, 0, 0)", (ACCOUNTS[0],))
            for stream in ("salesforce.Opportunity", "salesforce.Account"):
                old.save_cursor(stream, "2024-05-01T00:00:00Z", 1, T0)

    with Store(tmp_path / "hb.db") as store:
        row = store.query("SELECT id, created_at FROM opportunities")
        cursors = {s: store.cursor(s) for s in ("salesforce.Opportunity", "salesforce.Account")}
        version = store.schema_version

    assert version == len(MIGRATIONS) and row == [{"id": "006A", "created_at": None}]
    assert cursors == {"salesforce.Opportunity": None, "salesforce.Account": "2024-05-01T00:00:00Z"}


def test_scores_gain_a_column_for_the_churn_drivers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:_migration("scores ADD COLUMN churn_drivers")])
        Store(tmp_path / "hb.db").close()

    with Store(tmp_path / "hb.db") as store:
        columns = [r["name"] for r in store.query("PRAGMA table_info(scores)")]

    assert "churn_drivers" in columns


def test_a_whole_rescore_in_several_processes_gives_the_same_learned_churn_risk(
        store: Store, scorecard: LoadedScorecard, rules_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "MIN_CHUNK_ACCOUNTS", 1)  # chunks of an account or two: both processes take some
    loaded = put_model(rules_dir, hand_model(scorecard.scorecard))
    score_accounts(store, scorecard, T0, churn_model=loaded, processes=1)
    alone = {a: (r["churn_risk"], r["churn_drivers"]) for a, r in _scores(store).items()}

    score_accounts(store, scorecard, T0, churn_model=loaded, processes=2, parallel_from=2)

    assert {a: (r["churn_risk"], r["churn_drivers"]) for a, r in _scores(store).items()} == alone
