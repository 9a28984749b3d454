"""The rule book: what it loads again each cycle, and what it keeps when a file breaks."""

from __future__ import annotations

from pathlib import Path

from worker.rulebook.in_force import RuleBook


def test_unchanged_rule_files_are_not_parsed_again(rules_dir: Path) -> None:
    book = RuleBook(rules_dir)
    book.reload()
    first = book.scorecard, book.alerts

    book.reload()

    assert (book.scorecard, book.alerts) == first
    assert book.scorecard is first[0] and book.alerts is first[1]


def test_an_edited_rule_file_is_loaded_at_the_next_reload(rules_dir: Path) -> None:
    book = RuleBook(rules_dir)
    book.reload()
    before = book.scorecard
    path = rules_dir / "scorecard.yaml"
    path.write_text(path.read_text().replace("red: 55", "red: 45"))

    book.reload()

    assert book.scorecard is not before and book.scorecard is not None
    assert book.scorecard.scorecard.bands.red == 45


def test_a_broken_file_left_unchanged_still_reports_its_problem_and_keeps_the_good_rules(rules_dir: Path) -> None:
    book = RuleBook(rules_dir)
    book.reload()
    good = book.scorecard
    path = rules_dir / "scorecard.yaml"
    path.write_text(path.read_text().replace("red: 55", "red: fifty"))

    first, second = book.reload(), book.reload()

    assert first == second and any("scorecard.yaml" in problem for problem in second)
    assert book.scorecard is good
