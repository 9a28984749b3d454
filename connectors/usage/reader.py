"""Daily product usage per account from files dropped in a folder (README, "Usage files").

Product usage rarely lives in the CRM, so the cheapest common denominator is a folder of CSV or JSON-lines
exports. A row that fails validation becomes a `BadUsageRow` naming the file and line, and reading goes on:
one bad line must never hide a day of usage for every other account.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

_ACCOUNT_ID = re.compile(r"^[a-zA-Z0-9]{15}([a-zA-Z0-9]{3})?$")


@dataclass(frozen=True)
class UsageRow:
    account_id: str
    day: date
    active_users: int
    events: int
    features_used: tuple[str, ...]
    seats: int | None
    file: str
    line: int


@dataclass(frozen=True)
class BadUsageRow:
    file: str
    line: int
    reason: str
    raw: dict[str, Any]


@dataclass(frozen=True)
class UsageFile:
    path: Path
    size: int
    mtime_ns: int

    @property
    def fingerprint(self) -> str:
        """What changes when the file changes: a re-read is needed only then."""
        return f"{self.size}:{self.mtime_ns}"


def list_usage_files(folder: Path) -> list[UsageFile]:
    """Usage files in name order, so that a later file's row for the same day wins deterministically."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in {".csv", ".jsonl"}:
            stat = path.stat()
            found.append(UsageFile(path, stat.st_size, stat.st_mtime_ns))
    return found


def read_usage_file(path: Path) -> Iterator[UsageRow | BadUsageRow]:
    if path.suffix.lower() == ".csv":
        yield from _read_csv(path)
    else:
        yield from _read_jsonl(path)


def _read_csv(path: Path) -> Iterator[UsageRow | BadUsageRow]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for raw in reader:
            line = reader.line_num
            features = raw.get("features_used") or ""
            yield _validate({**raw, "features_used": [f for f in features.split(";") if f.strip()]},
                            path.name, line)


def _read_jsonl(path: Path) -> Iterator[UsageRow | BadUsageRow]:
    with path.open(encoding="utf-8") as handle:
        for line_no, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                yield BadUsageRow(path.name, line_no, f"not valid JSON: {exc.msg}", {"text": text[:200]})
                continue
            if not isinstance(raw, dict):
                yield BadUsageRow(path.name, line_no, "expected a JSON object", {"text": text[:200]})
                continue
            yield _validate(raw, path.name, line_no)


def _validate(raw: dict[str, Any], file: str, line: int) -> UsageRow | BadUsageRow:
    def bad(reason: str) -> BadUsageRow:
        return BadUsageRow(file, line, reason, raw)

    account_id = str(raw.get("account_id") or "").strip()
    if not _ACCOUNT_ID.match(account_id):
        return bad(f"account_id: expected a Salesforce Account Id (15 or 18 characters), got {account_id!r}")
    try:
        day = date.fromisoformat(str(raw.get("date") or "").strip())
    except ValueError:
        return bad(f"date: expected YYYY-MM-DD, got {raw.get('date')!r}")
    numbers: dict[str, int | None] = {}
    for name, required in (("active_users", True), ("events", True), ("seats", False)):
        value = raw.get(name)
        if value in (None, "") and not required:
            numbers[name] = None
            continue
        try:
            number = int(str(value).strip())
        except ValueError:
            return bad(f"{name}: expected a whole number, got {value!r}")
        if number < 0:
            return bad(f"{name}: must not be negative, got {number}")
        numbers[name] = number
    features = raw.get("features_used") or []
    if isinstance(features, str):
        features = [f for f in features.split(";") if f.strip()]
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        return bad("features_used: expected a list of feature keys")
    return UsageRow(account_id=account_id, day=day, active_users=int(numbers["active_users"] or 0),
                    events=int(numbers["events"] or 0),
                    features_used=tuple(sorted({f.strip() for f in features})),
                    seats=numbers["seats"], file=file, line=line)
