"""One fake clock for a sandbox (datetime), a client (Unix seconds) and the worker: sleeping advances it, so
tests of pacing and rate limits take no real time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

START = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


class FakeTime:
    def __init__(self, start: datetime = START) -> None:
        self.now = start.timestamp()
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta).total_seconds()
