"""Bulk API 2.0 query jobs, the values: a job's state, a set of results, and CSV rows made REST's typed records.

Bulk API 2.0 answers CSV: every value text, null as an empty string, datetimes as ``2024-01-01T00:00:00.000Z``,
booleans ``true``/``false``, a parent's field as an ``Account.Name`` column. The REST API answers JSON: null,
numbers, booleans, datetimes as ``2024-01-01T00:00:00.000+0000``, a parent as a nested object. A row of CSV is
made the record the REST API would have sent, by the field types ``describe`` gives, so that whatever reads
records (the sync's row mappers, quarantine, cursors) is written once for both. Salesforce keeps no empty
text (a field cleared is null), so an empty CSV value is null whatever the field's type.

The client's methods that speak to ``jobs/query`` are on :class:`connectors.salesforce.client.SalesforceClient`.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["TERMINAL_STATES", "BulkAllocation", "BulkJob", "BulkResults", "bulk_allocation", "csv_records"]

TERMINAL_STATES: Final = frozenset({"JobComplete", "Failed", "Aborted"})
"""The states a query job ends in; ``UploadComplete`` and ``InProgress`` mean it is still to run or running."""


@dataclass(frozen=True)
class BulkJob:
    """A query job as Salesforce last described it."""

    id: str
    state: str
    error_message: str = ""
    records: int = 0  # numberRecordsProcessed, once complete

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def from_info(cls, info: Any) -> BulkJob:
        if not isinstance(info, dict) or not isinstance(info.get("id"), str) or not isinstance(info.get("state"), str):
            raise ValueError("not a query job's information")
        processed = info.get("numberRecordsProcessed")
        return cls(info["id"], info["state"], str(info.get("errorMessage") or ""),
                   processed if isinstance(processed, int) else 0)


@dataclass(frozen=True)
class BulkResults:
    """One set of a job's results: its records (REST's form), and the locator of the next set (None: the last)."""

    records: list[dict[str, Any]]
    next_locator: str | None
    size: int  # bytes of CSV


def _boolean(value: str) -> bool | None:
    return None if value == "" else value == "true"


def _integer(value: str) -> int | None:
    return int(value) if value else None


def _decimal(value: str) -> float | None:
    return float(value) if value else None


def _datetime(value: str) -> str | None:
    if not value:
        return None
    return f"{value[:-1]}+0000" if value.endswith("Z") else value


_CONVERTERS: Final[Mapping[str, Callable[[str], Any]]] = {
    "boolean": _boolean, "int": _integer, "double": _decimal, "currency": _decimal, "percent": _decimal,
    "datetime": _datetime,
}


def csv_records(payload: bytes, types: Mapping[str, str], *, delimiter: str = ",") -> list[dict[str, Any]]:
    """The records of one set of CSV results, typed as REST sends them by ``types`` (field name → describe type;
    a column of a parent's field, ``Account.Name``, becomes a nested record, null when all its fields are)."""
    reader = csv.reader(io.StringIO(payload.decode("utf-8")), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return []
    typed = [(index, name, _CONVERTERS[types[name]]) for index, name in enumerate(header)
             if types.get(name) in _CONVERTERS]
    parents = sorted({name.split(".", 1)[0] for name in header if "." in name})
    records = []
    for row in reader:
        if len(row) != len(header):
            raise ValueError(f"a CSV row of {len(row)} values under a header of {len(header)}")
        record: dict[str, Any] = dict(zip(header, [value or None for value in row], strict=True))
        for index, name, convert in typed:
            with contextlib.suppress(ValueError):  # else kept as text: the reader refuses it, as it would REST's
                record[name] = convert(row[index])
        for parent in parents:
            nested = {name.split(".", 1)[1]: record.pop(name) for name in header if name.startswith(f"{parent}.")}
            record[parent] = nested if any(value is not None for value in nested.values()) else None
        records.append(record)
    return records


# --- The org's allocation, for `doctor` and /metrics ----------------------------------------
#
# Each job counts against the org's 10,000 a rolling day (`DailyBulkV2QueryJobs`) and its results against
# `DailyBulkV2QueryFileStorageMB`, shared with every other integration (Data Loader, Fivetran...): with none
# left, the worker reads large objects over REST, slower.


@dataclass(frozen=True)
class BulkAllocation:
    """Query jobs and megabytes of results left today, of the org's allocation."""

    jobs_left: int
    jobs_max: int
    mb_left: int
    mb_max: int

    @property
    def spent(self) -> bool:
        return self.jobs_left <= 0 or self.mb_left <= 0

    def sentence(self) -> str:
        return (f"Bulk API 2.0: {self.jobs_left:,} of {self.jobs_max:,} query jobs and {self.mb_left:,} of "
                f"{self.mb_max:,} MB of results left today")


def _pair(limits: Mapping[str, Any], name: str) -> tuple[int, int] | None:
    entry = limits.get(name)
    if not isinstance(entry, dict):
        return None
    left, most = entry.get("Remaining"), entry.get("Max")
    return (left, most) if isinstance(left, int) and isinstance(most, int) else None


def bulk_allocation(limits: Mapping[str, Any]) -> BulkAllocation | None:
    """The Bulk API 2.0 query allocation in an answer of ``/limits``, or None when it does not say (an older
    API version)."""
    jobs, storage = _pair(limits, "DailyBulkV2QueryJobs"), _pair(limits, "DailyBulkV2QueryFileStorageMB")
    if jobs is None or storage is None:
        return None
    return BulkAllocation(jobs[0], jobs[1], storage[0], storage[1])
