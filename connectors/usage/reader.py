"""Daily product usage per account from files dropped in a folder (README, "Usage files").

Product usage rarely lives in the CRM, so the cheapest common denominator is a folder of CSV or JSON-lines
exports. The folder is written by other systems and by people with Excel, so nothing in it is trusted: a path
that leads out of the folder is refused before it is opened; a file is read as bytes, line by line, so one
line that is not UTF-8, too long or not CSV costs that line alone; and every value is range-checked before it
reaches SQLite, whose integers end at 2**63 - 1 and whose sums over a window must not overflow either. Reading
never raises for what a file holds: each row comes out as a `UsageRow` or a `BadUsageRow` naming the file, the
line and the field.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal

_ACCOUNT_ID = re.compile(r"[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_WHOLE = re.compile(r"([+-]?)0*([0-9]+)")
_SUFFIXES: dict[str, Literal["csv", "jsonl"]] = {".csv": "csv", ".jsonl": "jsonl"}

REQUIRED_COLUMNS = ("account_id", "date", "active_users", "events")
MAX_LINE_BYTES = 1 << 20
"""A line longer than this is not a usage row (the csv module's own field limit is 128 KiB); it is skipped
without being held in memory whole."""
EARLIEST_DAY = date(2000, 1, 1)
"""Older dates are a spreadsheet's or an epoch's zero, not product usage."""
CLOCK_SKEW = timedelta(days=1)
"""How far past "now" a date may be: files are dated in their producer's time zone, and clocks drift."""
MAX_COUNT = 10**12
"""The most `active_users`, `events` or `seats` one account can count in a day. The store keeps one row per
account and day since `EARLIEST_DAY`, so a sum over all of an account's rows stays far below SQLite's
2**63 - 1 (a value past that cannot even be stored; one just under it would overflow the first sum)."""
_MAX_DIGITS = len(str(MAX_COUNT))


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
    """A row, or with `line` None a whole file, that was not taken, and why (the reason names the field)."""

    file: str
    line: int | None
    reason: str
    raw: dict[str, Any]


@dataclass(frozen=True)
class UsageFile:
    """A regular file inside the folder (`real_path`, with every link resolved), as it was when listed."""

    path: Path
    size: int
    mtime_ns: int
    real_path: Path
    identity: tuple[int, int]  # (device, inode): what is opened must be what was listed

    @property
    def fingerprint(self) -> str:
        """What changes when the file changes: a re-read is needed only then."""
        return f"{self.size}:{self.mtime_ns}"

    @property
    def name(self) -> str:
        return shown_name(self.path)

    @property
    def kind(self) -> Literal["csv", "jsonl"]:
        return _SUFFIXES[self.path.suffix.lower()]


@dataclass(frozen=True)
class RefusedUsageFile:
    """A usage-looking name in the folder that is never opened: a link out of the folder, a pipe, a folder."""

    path: Path
    reason: str

    @property
    def name(self) -> str:
        return shown_name(self.path)


@dataclass(frozen=True)
class UsageFolder:
    files: list[UsageFile]
    refused: list[RefusedUsageFile]


class UsageFileReplaced(OSError):
    """The name now points at another file than the one listed (an exporter's atomic rename, say):
    nothing is read now, and the new file is read at the next listing."""


def shown_name(path: Path) -> str:
    """The file's name as text SQLite and a terminal can take: a name that is not UTF-8 keeps its bytes
    as `\\xNN` escapes instead of failing every insert that mentions it."""
    return os.fsencode(path.name).decode("utf-8", "backslashreplace")


def scan_usage_folder(folder: Path) -> UsageFolder:
    """Usage files in name order (a later file's row for the same day wins deterministically), and the names
    refused. Raises OSError only when the folder itself cannot be listed."""
    root = Path(os.path.realpath(folder))
    files: list[UsageFile] = []
    refused: list[RefusedUsageFile] = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in _SUFFIXES:
            found = _examine(path, root)
            if isinstance(found, UsageFile):
                files.append(found)
            else:
                refused.append(found)
    return UsageFolder(files, refused)


def list_usage_files(folder: Path) -> list[UsageFile]:
    """The files `scan_usage_folder` would read."""
    return scan_usage_folder(folder).files


def _examine(path: Path, root: Path) -> UsageFile | RefusedUsageFile:
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(root):
        return RefusedUsageFile(path, f"leads out of USAGE_DIR (to {real}); never read")
    try:
        info = os.stat(real)
    except OSError as exc:
        return RefusedUsageFile(path, f"cannot be read: {_os_reason(exc)}")
    if not stat.S_ISREG(info.st_mode):
        return RefusedUsageFile(path, "is not a regular file (a folder, pipe or device); never read")
    return UsageFile(path, info.st_size, info.st_mtime_ns, real, (info.st_dev, info.st_ino))


def open_usage_file(usage_file: UsageFile) -> io.BufferedReader:
    """Open what was listed, and only that: no link is followed at open time (the path was resolved and
    checked when listed), a pipe never blocks, and a file swapped since raises `UsageFileReplaced`."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(usage_file.real_path, flags)
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != usage_file.identity:
            raise UsageFileReplaced(f"{usage_file.name} was replaced since it was listed")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_usage_file(path: Path, *, now: datetime) -> Iterator[UsageRow | BadUsageRow]:
    """One file's rows, refused as a whole (one `BadUsageRow` with no line) when it may not or cannot be read."""
    found = _examine(path, Path(os.path.realpath(path.parent)))
    if isinstance(found, RefusedUsageFile):
        yield BadUsageRow(found.name, None, found.reason, {"file": found.name})
        return
    try:
        handle = open_usage_file(found)
    except OSError as exc:
        yield BadUsageRow(found.name, None, f"cannot be read: {_os_reason(exc)}", {"file": found.name})
        return
    with handle:
        yield from read_usage(handle, found.name, found.kind, now=now)


def read_usage(handle: BinaryIO, file: str, kind: Literal["csv", "jsonl"], *,
               now: datetime) -> Iterator[UsageRow | BadUsageRow]:
    """The rows of an open file; never raises for the file's content or a read error."""
    checks = _Checks(file, latest=(now + CLOCK_SKEW).date())
    lines = _Lines(handle)
    try:
        yield from _read_csv(lines, checks) if kind == "csv" else _read_jsonl(lines, checks)
    except OSError as exc:
        yield BadUsageRow(file, None, f"cannot be read past line {lines.number}: {_os_reason(exc)}",
                          {"file": file})


class _BadLine(Exception):
    def __init__(self, line: int, reason: str, data: bytes) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason
        self.text = data[:200].decode("utf-8", "backslashreplace")


class _Lines:
    """The file's lines as text, one at a time. A line that is not UTF-8 or is too long raises `_BadLine`
    for that line alone; the csv module's reader starts afresh at the next one."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.number = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        data = self._handle.readline(MAX_LINE_BYTES + 1)
        if not data:
            raise StopIteration
        self.number += 1
        if len(data) > MAX_LINE_BYTES:
            rest = data
            while rest and not rest.endswith(b"\n"):
                rest = self._handle.readline(MAX_LINE_BYTES)
            raise _BadLine(self.number, f"longer than {MAX_LINE_BYTES} bytes; skipped", data)
        if self.number == 1 and data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8):]  # Excel's "CSV UTF-8" starts so
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _BadLine(self.number, f"not UTF-8: byte 0x{data[exc.start]:02X} at byte {exc.start + 1} of "
                                        "the line (save the file as UTF-8)", data) from None


def _read_csv(lines: _Lines, checks: _Checks) -> Iterator[UsageRow | BadUsageRow]:
    rows = csv.reader(lines, strict=True)
    header: list[str] | None = None
    while True:
        start = lines.number + 1
        try:
            fields = next(rows)
        except StopIteration:
            break
        except _BadLine as exc:
            if header is None:
                yield checks.bad(exc.line, f"{exc.reason}: no usable header, so nothing else in the file was read",
                                 {"text": exc.text})
                return
            yield checks.bad(exc.line, exc.reason, {"text": exc.text})
            continue
        except csv.Error as exc:
            if header is None:
                yield checks.bad(start, f"not CSV ({exc}): no usable header, so nothing else in the file was read",
                                 {})
                return
            yield checks.bad(start, f"not CSV: {exc}", {})
            continue
        if header is None:
            header = [name.strip().lower() for name in fields]
            missing = [name for name in REQUIRED_COLUMNS if name not in header]
            if missing:
                yield checks.bad(start, f"no header: line 1 must name the columns {', '.join(REQUIRED_COLUMNS)} "
                                 f"(missing {', '.join(missing)}); nothing else in the file was read",
                                 {"header": _capped(",".join(fields))})
                return
            continue
        if not any(value.strip() for value in fields):
            continue
        raw: dict[str, Any] = dict(zip(header, fields, strict=False))
        extra = [value for value in fields[len(header):] if value.strip()]
        if extra:
            yield checks.bad(start, f"{len(fields)} fields, but the header names {len(header)} "
                                    "(features_used takes ';' between keys, not ',')",
                             {**raw, "extra": extra})
            continue
        raw["features_used"] = [f for f in (raw.get("features_used") or "").split(";") if f.strip()]
        yield checks.row(raw, start)
    if header is None:
        yield checks.bad(None, f"no header: the file is empty; line 1 must name the columns "
                               f"{', '.join(REQUIRED_COLUMNS)}", {})


def _read_jsonl(lines: _Lines, checks: _Checks) -> Iterator[UsageRow | BadUsageRow]:
    while True:
        try:
            text = next(lines)
        except StopIteration:
            break
        except _BadLine as exc:
            yield checks.bad(exc.line, exc.reason, {"text": exc.text})
            continue
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            yield checks.bad(lines.number, f"not valid JSON: {exc.msg}", {"text": _capped(text)})
            continue
        except (ValueError, RecursionError) as exc:  # a number past Python's digit limit; nesting too deep
            yield checks.bad(lines.number, f"not valid JSON: {str(exc).split(';')[0]}", {"text": _capped(text)})
            continue
        if not isinstance(raw, dict):
            yield checks.bad(lines.number, "expected a JSON object", {"text": _capped(text)})
            continue
        yield checks.row(raw, lines.number)


@dataclass(frozen=True)
class _Checks:
    file: str
    latest: date

    def bad(self, line: int | None, reason: str, raw: dict[str, Any]) -> BadUsageRow:
        return BadUsageRow(self.file, line, reason, {str(_capped(k)): _capped(v) for k, v in raw.items()})

    def row(self, raw: dict[str, Any], line: int) -> UsageRow | BadUsageRow:
        """A valid row, or the first problem found, naming the field."""
        given = raw.get("account_id")
        account_id = given.strip() if isinstance(given, str) else ""
        if not _ACCOUNT_ID.fullmatch(account_id):
            return self.bad(line, "account_id: expected a Salesforce Account Id (15 or 18 characters), "
                                  f"got {_shown(given or '')}", raw)
        day = self._day(raw.get("date"))
        if isinstance(day, str):
            return self.bad(line, day, raw)
        active_users = _count("active_users", raw.get("active_users"), required=True)
        if isinstance(active_users, str):
            return self.bad(line, active_users, raw)
        events = _count("events", raw.get("events"), required=True)
        if isinstance(events, str):
            return self.bad(line, events, raw)
        seats = _count("seats", raw.get("seats"), required=False)
        if isinstance(seats, str):
            return self.bad(line, seats, raw)
        active_users, events = active_users or 0, events or 0
        if seats is not None and active_users > seats:
            return self.bad(line, f"active_users: {active_users} is more than the row's seats ({seats})", raw)
        features = raw.get("features_used") or []
        if isinstance(features, str):  # JSON lines may use the CSV form
            features = features.split(";")
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            return self.bad(line, "features_used: expected a list of feature keys", raw)
        return UsageRow(account_id=account_id, day=day, active_users=active_users, events=events,
                        features_used=tuple(sorted({f.strip() for f in features if f.strip()})),
                        seats=seats, file=self.file, line=line)

    def _day(self, value: object) -> date | str:
        text = value.strip() if isinstance(value, str) else ""
        try:
            if not _DAY.fullmatch(text):
                raise ValueError(text)
            day = date.fromisoformat(text)
        except ValueError:
            return f"date: expected YYYY-MM-DD, got {_shown(value)}"
        if day > self.latest:
            return f"date: {day} is in the future (the latest day taken is {self.latest})"
        if day < EARLIEST_DAY:
            return f"date: {day} is before {EARLIEST_DAY}, older than any product usage"
        return day


def _count(name: str, value: object, *, required: bool) -> int | str | None:
    """A whole number from 0 to `MAX_COUNT`, or the reason it is not; checked on its digits before Python
    turns it into an int, so a line of a million digits costs nothing."""
    if type(value) is str and len(value) <= _MAX_DIGITS and value.isascii() and value.isdigit():
        number = int(value)  # the common case, first: plain digits, short enough to be in range or near it
        return number if number <= MAX_COUNT else f"{name}: {_shown(value)} is more than {MAX_COUNT} " \
                                                  "(the most one account counts in a day)"
    if value is None or value == "":
        return f"{name}: required, but empty" if required else None
    if isinstance(value, int) and not isinstance(value, bool):
        sign, digits = ("-" if value < 0 else ""), str(abs(value))
    elif isinstance(value, str) and (match := _WHOLE.fullmatch(value.strip())):
        sign, digits = match.group(1), match.group(2)
    else:
        return f"{name}: expected a whole number, got {_shown(value)}"
    if sign == "-" and digits != "0":
        return f"{name}: must not be negative, got {_shown(value)}"
    if len(digits) > _MAX_DIGITS or int(digits) > MAX_COUNT:
        return f"{name}: {_shown(value)} is more than {MAX_COUNT} (the most one account counts in a day)"
    return int(digits)


def _shown(value: object) -> str:
    """A value as the reason quotes it: its repr, cut short."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, default=str)
        except (ValueError, RecursionError):
            text = "(unprintable)"
    return text if len(text) <= 60 else f"{text[:57]}..."


def _capped(value: Any) -> Any:
    """A raw value as the quarantine keeps it: scalars as they are, text and structures cut to 500 characters."""
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        try:
            value = json.dumps(value, default=str)
        except (ValueError, RecursionError):
            return "(unprintable)"
        if len(value) <= 500:
            return json.loads(value)
    return value if len(value) <= 500 else f"{value[:500]}..."


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
