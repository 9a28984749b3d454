"""What time it is, from one place: the worker's stages take "now" from a clock, never from the system.

A clock is any callable that answers an aware UTC datetime. The worker runs on `system_clock`; the demo and
the tests run on a `ShiftedClock`, which lets weeks pass in seconds for the sandboxes and the worker alike,
so a replayed history or a three-week demo exercises the same code as production.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Now, in UTC, to the second: the precision of every stamp the store keeps."""
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class ShiftedClock:
    """Real time plus an offset: the demo lets weeks pass in seconds, for the sandboxes and the worker alike."""

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return (datetime.now(UTC) + self.offset).replace(microsecond=0)

    def clear_of_midnight(self, span: timedelta) -> timedelta:
        """Move past the next midnight UTC if the coming `span` would cross it; the shift made (none if it would
        not). For a run that lets cycles pass and must not see the day turn unless it turns it itself: a day's
        score counts whole days, so a cycle on a new day re-scores, writes back and snapshots every account."""
        now = self()
        midnight = datetime.combine(now.date() + timedelta(days=1), time(), UTC)
        if now + span < midnight:
            return timedelta(0)
        shift = midnight - now + timedelta(minutes=1)
        self.offset += shift
        return shift
