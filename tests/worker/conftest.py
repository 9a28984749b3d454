"""Fixtures for the worker's tests beyond the sandboxes of `tests/conftest.py`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SHIPPED_RULES = Path(__file__).resolve().parents[2] / "rules"


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped rule files, free to edit (a test module may define its own)."""
    folder = tmp_path / "rules"
    folder.mkdir()
    for source in SHIPPED_RULES.glob("*.yaml"):
        shutil.copy(source, folder / source.name)
    return folder
