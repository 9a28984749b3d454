"""The house rules, checked like any other behaviour: ruff and mypy (strict on the packages) are clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", name, *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=300)


def test_ruff_finds_nothing() -> None:
    result = _tool("ruff", "check", ".")

    assert result.returncode == 0, result.stdout[-4000:]


def test_mypy_strict_finds_nothing_in_the_packages() -> None:
    result = _tool("mypy")

    assert result.returncode == 0, result.stdout[-4000:]
