"""Helpers the rule-file tests share: exact edits of a copied file, and the problems its loader reports."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from worker.rulefile import Problem, RuleFileError

SHIPPED = Path(__file__).resolve().parents[2] / "rules"


def edit(path: Path, old: str, new: str) -> None:
    """Replace one exact, unique piece of the file's text (so an edit can never silently miss)."""
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def lines_with(path: Path, fragment: str) -> list[int]:
    """The 1-based lines that contain `fragment` (or are exactly it, when it ends with a newline)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if fragment.endswith("\n"):
        return [n for n, line in enumerate(lines, 1) if line == fragment[:-1]]
    return [n for n, line in enumerate(lines, 1) if fragment in line]


def line_with(path: Path, fragment: str) -> int:
    """The 1-based line of the one line that contains `fragment`."""
    lines = lines_with(path, fragment)
    assert len(lines) == 1, f"{fragment!r} is on lines {lines}"
    return lines[0]


def problems_from(load: Callable[[Path], Any], rules_dir: Path) -> list[Problem]:
    """What the loader refuses the directory for (it must refuse it)."""
    with pytest.raises(RuleFileError) as caught:
        load(rules_dir)
    return caught.value.problems


def turned_red_only(folder: Path) -> Path:
    """The shipped scorecard and alert rules with turned_red alone, in `folder`: for tests of how one nudge
    travels, which the other shipped rules (another nudge about the same account) would blur."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scorecard.yaml").write_text((SHIPPED / "scorecard.yaml").read_text())
    head, *rules = re.split(r"(?m)^(?=  - name: )", (SHIPPED / "alerts.yaml").read_text())
    (folder / "alerts.yaml").write_text(head + next(r for r in rules if r.startswith("  - name: turned_red\n")))
    return folder
