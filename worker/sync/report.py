"""What a sync run says, and the errors that end one: shared by every source's module."""

from __future__ import annotations

from collections.abc import Callable
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

    def table(self) -> list[dict[str, Any]]:
        """One row per stream: what `healthbeat sync` prints at the end."""
        return [{"stream": name, "read": s.read, "deleted": s.deleted, "quarantined": s.quarantined,
                 "api_calls": s.api_calls, "windows": s.windows, "narrowed": s.narrowed,
                 "seconds": round(s.seconds, 2),
                 "failed": self.failed_streams.get(name, "")} for name, s in sorted(self.streams.items())]


class BudgetSpent(Exception):
    """This cycle has used its share of Salesforce's daily API limit: stop cleanly, resume next cycle."""


Row = dict[str, Any]
