"""Fixtures for the worker's tests beyond the sandboxes of `tests/conftest.py`."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
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


@pytest.fixture(autouse=True)
def root_logging_restored() -> Iterator[None]:
    """A command run in this process (typer's CliRunner) sets up its logging as the console script does: it
    replaces the root logger's handlers with one writing to the runner's stderr, closed once the command
    returns. Left in place, every later test's log line would fail to write ("--- Logging error ---" and a
    traceback on stderr) and escape pytest's capture."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
