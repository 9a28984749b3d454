"""The incremental cursor of a Salesforce stream: pure values and rules, no I/O.

A cursor is (stamp, id, run): the `SystemModstamp` and `Id` of the last record stored, and the start of the
run that stored it. Reading resumes strictly after (stamp, id) in `ORDER BY SystemModstamp, Id` order, so
records sharing a stamp (bulk updates) are neither dropped nor read again every cycle. A record can still
commit late with a stamp below a run's start, so the next run also re-reads everything stamped after that
run's start minus an overlap. The stamp never passes the run's start: what changed during a run is read
by the next one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from worker.store import iso, parse_iso


@dataclass(frozen=True)
class Cursor:
    stamp: datetime
    id: str
    run: datetime

    def dump(self) -> str:
        return json.dumps({"stamp": iso(self.stamp), "id": self.id, "run": iso(self.run)}, sort_keys=True)

    @classmethod
    def load(cls, text: str | None) -> Cursor | None:
        """Read a stored cursor; a bare timestamp (an older form) is a stamp with no id."""
        if not text:
            return None
        if text.startswith("{"):
            data = json.loads(text)
            return cls(parse_iso(data["stamp"]), str(data.get("id") or ""), parse_iso(data["run"]))
        stamp = parse_iso(text)
        return cls(stamp, "", stamp)

    def where(self, overlap: timedelta) -> str:
        """The SOQL condition for the next read (datetime literals in the `2024-01-01T00:00:00Z` form)."""
        lookback = self.run - overlap
        if lookback < self.stamp:
            return f"SystemModstamp >= {iso(lookback)}"
        if not self.id:
            return f"SystemModstamp >= {iso(self.stamp)}"
        return f"(SystemModstamp > {iso(self.stamp)} OR (SystemModstamp = {iso(self.stamp)} AND Id > '{self.id}'))"

    def after_page(self, stamp: datetime, record_id: str, run: datetime) -> Cursor:
        """Past the page's last record; capped at the run's start, where the id no longer applies."""
        if stamp >= run:
            return Cursor(run, "", run)
        return Cursor(stamp, record_id, run)

    def checked(self, run: datetime) -> Cursor:
        """A run found nothing new: the lookback now starts from this run."""
        return Cursor(self.stamp, self.id, run)
