"""The validity benchmark (`python -m bench.validity`) at a tiny size, so that it never rots.

The figures mean nothing at 20 accounts; what is checked is that a world goes through the worker's real
sync and backtest, that the outcomes the backtest read are the world's ground truth, and that the report
and its section of BENCHMARKS.md come out whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.validity import BEGIN, END, render, run_world, write_section

RULES_DIR = Path(__file__).resolve().parents[1] / "rules"


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_world("alder", tmp_path_factory.mktemp("validity"), RULES_DIR, accounts=20)


def test_a_world_is_synced_and_backtested_and_its_outcomes_are_its_ground_truth(result: dict[str, Any]) -> None:
    assert result["outcomes_match_truth"]
    assert result["accounts"] == 20 and result["observations"] > 0 and result["activities"] > 0
    assert set(result["baselines"]) == {"recency", "support_volume", "renewal_proximity"}


def test_the_report_has_a_row_per_world_in_every_table(result: dict[str, Any]) -> None:
    text = render([result], "python -m bench.validity --accounts 20", 1.0)

    assert "| alder (101) | 20 / 22 |" in text
    assert text.count("| alder |") >= 2  # near renewal, by touch (and by mechanism when one churned)


def test_writing_the_section_replaces_only_what_lies_between_its_markers(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\n## Validity\n\nWhy.\n\n" + f"{BEGIN}\nold\n{END}\n\nAnalysis kept.\n")

    write_section(report, "new table")

    assert report.read_text() == f"# Benchmarks\n\n## Validity\n\nWhy.\n\n{BEGIN}\nnew table\n{END}\n\nAnalysis kept.\n"


def test_writing_into_a_report_without_the_section_adds_it_at_the_end(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n")

    write_section(report, "table")

    assert report.read_text() == f"# Benchmarks\n\n## Validity\n\n{BEGIN}\ntable\n{END}\n"
