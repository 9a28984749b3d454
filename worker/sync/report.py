"""What a sync run says, and the errors that end one: shared by every source's module."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

MAX_TEXT = 100_000

@dataclass
class StreamStats:
    read: int = 0
    deleted: int = 0
    quarantined: int = 0
    api_calls: int = 0
    seconds: float = 0.0
    storing: float = 0.0  # of `seconds`: turning records into rows and writing them; the rest waited on the source
    windows: int = 0  # queries asked (one unless Salesforce needed the read in windows of SystemModstamp)
    narrowed: int = 0  # of those: windows Salesforce stopped (QUERY_TIMEOUT), asked for again half as wide


@dataclass
class SyncReport:
    records: dict[str, int] = field(default_factory=dict)
    streams: dict[str, StreamStats] = field(default_factory=dict)
    api_share: float | None = None  # share of Salesforce's daily API limit in use, as last reported
    quarantined: int = 0
    failed_streams: dict[str, str] = field(default_factory=dict)
    skipped_streams: dict[str, str] = field(default_factory=dict)
    unmapped_organizations: list[int] = field(default_factory=list)
    salesforce_limited: bool = False  # the daily API limit was reached: nothing more to ask this cycle
    progress: Callable[[str, int], None] | None = field(default=None, repr=False, compare=False)
    api_calls: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.records.values())

    def add(self, stream: str, count: int, *, deleted: int = 0, quarantined: int = 0) -> None:
        self.records[stream] = self.records.get(stream, 0) + count
        stats = self.streams.setdefault(stream, StreamStats())
        stats.read += count
        if self.progress is not None:
            self.progress(stream, stats.read)
        stats.deleted += deleted
        stats.quarantined += quarantined

    @contextmanager
    def storing(self, stream: str) -> Iterator[None]:
        """Time a block that turns `stream`'s records into rows and writes them. A stream's `seconds` less this
        is what it spent waiting on its source (and between pages), so a slow sync says whether the source or
        this machine held it up: a backfill whose time is mostly storing wants a faster disk or CPU, one whose
        time is mostly elsewhere wants nothing of this machine."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.streams.setdefault(stream, StreamStats()).storing += time.monotonic() - started

    def table(self) -> list[dict[str, Any]]:
        """One row per stream: what `healthbeat sync` prints at the end."""
        return [{"stream": name, "read": s.read, "deleted": s.deleted, "quarantined": s.quarantined,
                 "api_calls": s.api_calls, "windows": s.windows, "narrowed": s.narrowed,
                 "seconds": round(s.seconds, 2), "storing_seconds": round(s.storing, 2),
                 "failed": self.failed_streams.get(name, "")} for name, s in sorted(self.streams.items())]


class BudgetSpent(Exception):
    """This cycle has used its share of Salesforce's daily API limit: stop cleanly, resume next cycle."""


Row = dict[str, Any]
