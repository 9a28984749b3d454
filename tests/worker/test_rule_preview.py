"""`rules preview`: a changed rule directory scored and evaluated on a copy of a real store.

The store comes from one real cycle against the sandboxes (the `world` and `cycle` fixtures); the preview
then runs at the moment that cycle scored, so the live rules reproduce the stored scores exactly and every
difference is the changed rules' doing.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from connectors.sandboxes.world import World
from worker.cycle import Cycle
from worker.rulebook.preview import Preview, format_preview, preview_rules, to_json
from worker.rulefile import RuleFileError
from worker.store import Store, parse_iso

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
LIVE_BANDS = (55.0, 75.0)  # the shipped bands
NEW_BANDS = (65.0, 90.0)


def band(score: float, bands: tuple[float, float]) -> str:
    return "red" if score < bands[0] else "yellow" if score < bands[1] else "green"


def rules_copy(folder: Path, bands: tuple[float, float], *edits: tuple[str, str]) -> Path:
    """The shipped rules with the given bands, and each (pattern, replacement) applied once to either file."""
    shutil.copytree(RULES_DIR, folder)
    scorecard = folder / "scorecard.yaml"
    text, count = re.subn(r"(?m)^bands: \{red: [\d.]+, yellow: [\d.]+",
                          f"bands: {{red: {bands[0]:g}, yellow: {bands[1]:g}", scorecard.read_text())
    assert count == 1
    scorecard.write_text(text)
    for pattern, replacement in edits:
        for path in (scorecard, folder / "alerts.yaml"):
            text, count = re.subn(pattern, replacement, path.read_text(), count=1)
            path.write_text(text)
            if count:
                break
        else:
            pytest.fail(f"{pattern!r} is in neither rule file")
    return folder


@pytest.fixture
def as_of(world: World, cycle: Cycle, store: Store) -> datetime:
    """One real cycle has run; the moment it scored."""
    report = cycle.run()
    assert report.ok, report.summary()
    return parse_iso(store.scalar("SELECT max(scored_at) FROM scores"))


@pytest.fixture
def live(tmp_path: Path) -> Path:
    return rules_copy(tmp_path / "live", LIVE_BANDS)


@pytest.fixture
def moved_bands(tmp_path: Path) -> Path:
    return rules_copy(tmp_path / "new", NEW_BANDS)


def stored_scores(store: Store) -> dict[str, float]:
    return {r["account_id"]: r["score"] for r in store.query("SELECT account_id, score FROM scores")}


def test_the_same_rules_change_nothing(store: Store, as_of: datetime, live: Path) -> None:
    preview = preview_rules(store, live, live, as_of)

    assert (preview.accounts, preview.changes, preview.band_moves, preview.errors) == (18, (), (), ())


def test_moved_bands_move_exactly_the_accounts_between_the_old_and_new_thresholds(
        store: Store, as_of: datetime, live: Path, moved_bands: Path) -> None:
    expected = Counter((band(s, LIVE_BANDS), band(s, NEW_BANDS)) for s in stored_scores(store).values()
                       if band(s, LIVE_BANDS) != band(s, NEW_BANDS))
    assert expected, "the world should have accounts between the thresholds"

    preview = preview_rules(store, live, moved_bands, as_of)

    assert {(a, b): n for a, b, n in preview.band_moves} == expected


def test_moved_bands_leave_every_score_alone(store: Store, as_of: datetime, live: Path, moved_bands: Path) -> None:
    preview = preview_rules(store, live, moved_bands, as_of)

    assert preview.changes
    assert all(c.score[0] == c.score[1] == stored_scores(store)[c.account_id] for c in preview.changes)


def test_accounts_a_band_move_turns_red_match_the_unchanged_rule_and_would_be_nudged(
        store: Store, as_of: datetime, live: Path, moved_bands: Path) -> None:
    preview = preview_rules(store, live, moved_bands, as_of)

    into_red = [c for c in preview.changes if c.band[1] == "red"]
    assert into_red
    assert all((c.newly_matching, c.nudges_gained) == (("turned_red",), ("turned_red",)) for c in into_red)
    rule = next(r for r in preview.rules if r.rule == "turned_red")
    assert (rule.rule, rule.status, rule.nudges, rule.newly_matching) == \
        ("turned_red", "kept", (0, len(into_red)), len(into_red))


def test_a_rule_whose_meaning_changed_starts_fresh_and_nudges_no_account_already_matching(
        store: Store, as_of: datetime, live: Path, tmp_path: Path) -> None:
    new = rules_copy(tmp_path / "new", LIVE_BANDS, (r"(?m)^    when: .*", "    when: score < 60"),
                     (r"(?m)^    resolve: .*", "    resolve: score >= 65"))
    below = sum(1 for s in stored_scores(store).values() if s < 60)
    red = store.scalar("SELECT count(*) FROM scores WHERE band = 'red'")
    assert below > red

    preview = preview_rules(store, live, new, as_of)

    rule = next(r for r in preview.rules if r.rule == "turned_red")
    assert (rule.status, rule.matching, rule.nudges) == ("starts fresh", (red, below), (0, 0))
    assert all(c.newly_matching == ("turned_red",) and not c.nudges_gained for c in preview.changes)


def test_a_weight_change_shows_each_changed_score_with_both_values(
        store: Store, as_of: datetime, live: Path, tmp_path: Path) -> None:
    new = rules_copy(tmp_path / "new", LIVE_BANDS, (r"(  engagement:\n    weight: )\d+", r"\g<1>200"))

    preview = preview_rules(store, live, new, as_of)

    assert preview.changes
    stored = stored_scores(store)
    for change in preview.changes:
        live_score, new_score = change.score
        assert live_score == stored[change.account_id]
        assert new_score is not None and change.score_delta == round(new_score - live_score, 2)
    deltas = [abs(c.score_delta) for c in preview.changes]
    assert deltas == sorted(deltas, reverse=True)
    assert f"the most: {preview.changes[0].name} {preview.changes[0].score_delta:+.1f}" in format_preview(preview)


def test_the_live_database_is_never_written(store: Store, as_of: datetime, live: Path, moved_bands: Path) -> None:
    watcher = sqlite3.connect(store.path)  # another connection sees any commit as a new data_version
    before = (store.conn.total_changes, watcher.execute("PRAGMA data_version").fetchone(),
              store.query("SELECT * FROM scores ORDER BY account_id"),
              store.query("SELECT * FROM score_history ORDER BY account_id, day"),
              store.query("SELECT * FROM alerts ORDER BY rule, account_id"))

    preview_rules(store, live, moved_bands, as_of)

    after = (store.conn.total_changes, watcher.execute("PRAGMA data_version").fetchone(),
             store.query("SELECT * FROM scores ORDER BY account_id"),
             store.query("SELECT * FROM score_history ORDER BY account_id, day"),
             store.query("SELECT * FROM alerts ORDER BY rule, account_id"))
    watcher.close()
    assert after == before


def test_json_carries_the_accounts_moves_and_rules(store: Store, as_of: datetime, live: Path,
                                                   moved_bands: Path) -> None:
    preview = preview_rules(store, live, moved_bands, as_of)

    data = json.loads(to_json(preview))

    assert [a["account_id"] for a in data["accounts"]] == [c.account_id for c in preview.changes]
    assert data["band_moves"] == [{"from": a, "to": b, "accounts": n} for a, b, n in preview.band_moves]
    assert data["rules"][0]["rule"] == "turned_red"
    assert data["accounts"][0]["band"] == {"live": preview.changes[0].band[0], "new": preview.changes[0].band[1]}


def test_the_table_says_each_band_movement_and_lists_each_changed_account(
        store: Store, as_of: datetime, live: Path, moved_bands: Path) -> None:
    preview = preview_rules(store, live, moved_bands, as_of)

    text = format_preview(preview)

    for a, b, n in preview.band_moves:
        assert f"{a} → {b}: {n} account{'s' if n > 1 else ''}" in text
    assert all(c.name in text for c in preview.changes)
    assert "Alert turned_red (kept): matching" in text


def _empty_preview(tmp_path: Path, new: Path) -> Preview:
    with Store(tmp_path / "empty.db") as empty:
        return preview_rules(empty, RULES_DIR, new, parse_iso("2026-01-05T09:00:00Z"))


def test_an_empty_store_previews_no_change(tmp_path: Path) -> None:
    preview = _empty_preview(tmp_path, RULES_DIR)

    assert (preview.accounts, preview.changes) == (0, ())
    assert "0 accounts scored, 0 would change" in format_preview(preview)


def test_a_broken_new_rules_directory_raises_every_problem_with_file_and_line(tmp_path: Path) -> None:
    new = rules_copy(tmp_path / "new", (50, 40))

    with pytest.raises(RuleFileError) as raised:
        _empty_preview(tmp_path, new)

    assert f"{new / 'scorecard.yaml'}:" in str(raised.value) and "must be below yellow" in str(raised.value)
