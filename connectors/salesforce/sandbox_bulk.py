"""Bulk API 2.0 query jobs in the Salesforce sandbox: ``/services/data/vXX.X/jobs/query``.

As Salesforce documents them (Bulk API 2.0 and Bulk API Developer Guide, "Bulk API 2.0 Query"):

- ``POST jobs/query`` with ``{"operation": "query"|"queryAll", "query": ...}`` creates a job in state
  ``UploadComplete``; ``GET jobs/query/{id}`` reports it ``InProgress`` for :attr:`BulkJobs.polls_in_progress`
  polls, then ``JobComplete`` (or ``Failed`` with an ``errorMessage``, or ``Aborted``, when a failure was
  injected with :meth:`BulkJobs.fail_next`); ``PATCH`` with ``{"state": "Aborted"}`` aborts it, ``DELETE``
  deletes it (204), ``GET jobs/query`` lists the jobs.
- ``GET jobs/query/{id}/results?locator=&maxRecords=`` answers CSV (a header of the fields in the order asked
  for, every value quoted, null as empty, datetimes ``2024-01-01T00:00:00.000Z``, booleans ``true``/``false``)
  with ``Sforce-NumberOfRecords`` and ``Sforce-Locator`` (an opaque string; ``null`` after the last set). A job
  not complete answers 412 ``JOB_NOT_COMPLETE``; a version other than the job's answers 409.
- A query Bulk API 2.0 does not support is refused when the job is created: aggregate functions such as
  ``COUNT()`` and ``OFFSET`` (``GROUP BY``, ``TYPEOF``, relationship paths and sub-queries the SOQL evaluator
  refuses for every endpoint).
- The org's allocations show in ``/limits``: ``DailyBulkV2QueryJobs`` (10,000 jobs a rolling day) and
  ``DailyBulkV2QueryFileStorageMB`` (1 TB of results a rolling day); a job created beyond the first is
  refused.

The query runs when the job is created, over the records as they are then (Salesforce's snapshot is taken
while the job runs; for a test the difference does not show). A job never answers ``QUERY_TIMEOUT``: Bulk
API 2.0 splits large queries itself (PK chunking), which is why a worker turns to it for large objects.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from connectors.salesforce.ids import make_id
from connectors.salesforce.schema import Schema, format_datetime
from connectors.salesforce.soql import BoundQuery, SoqlError, compile_query

__all__ = ["DAILY_QUERY_JOBS", "DAILY_RESULTS_MB", "BulkJobs", "BulkReply"]

DAILY_QUERY_JOBS: Final = 10_000
"""Query jobs an org may create per rolling 24 hours (``DailyBulkV2QueryJobs``)."""
DAILY_RESULTS_MB: Final = 1_048_576
"""Megabytes of query results an org may generate per rolling 24 hours: 1 TB (``DailyBulkV2QueryFileStorageMB``)."""
DEFAULT_MAX_RECORDS: Final = 50_000
"""Records in a set of results when the request names no ``maxRecords`` (Salesforce picks its own number)."""
_DELIMITERS: Final = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`"}
_LINE_ENDINGS: Final = {"LF": "\n", "CRLF": "\r\n"}
_TERMINAL: Final = frozenset({"JobComplete", "Failed", "Aborted"})
_STATUS: Final = {"UploadComplete": "UPLOAD_COMPLETE", "InProgress": "IN_PROGRESS", "Failed": "FAILED",
                  "Aborted": "ABORTED"}
"""How the 412 answer names a job's state (``Current status: IN_PROGRESS`` in the guide's example)."""


@dataclass
class BulkReply:
    """One answer: JSON (``body``), CSV bytes (``csv``), or nothing (``status`` 204)."""

    status: int
    body: Any = None
    csv: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Job:
    id: str
    operation: str
    sobject: str
    version: str
    created: str
    delimiter: str
    line_ending: str
    fields: list[tuple[str, str]]  # (column, field type)
    rows: list[dict[str, Any]]
    polls: int = 0
    state: str = "UploadComplete"
    ends_as: str = "JobComplete"
    error_message: str = ""

    def info(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id, "operation": self.operation, "object": self.sobject, "createdById": "005000000000000AAA",
            "createdDate": self.created, "systemModstamp": self.created, "state": self.state,
            "concurrencyMode": "Parallel", "contentType": "CSV", "apiVersion": float(self.version),
            "jobType": "V2Query", "lineEnding": self.line_ending,
            "columnDelimiter": next(k for k, v in _DELIMITERS.items() if v == self.delimiter),
            "numberRecordsProcessed": len(self.rows) if self.state == "JobComplete" else 0,
            "retries": 0, "totalProcessingTime": 0}
        if self.state == "Failed":
            body["errorMessage"] = self.error_message
        return body


def _error(status: int, code: str, message: str) -> BulkReply:
    return BulkReply(status, [{"errorCode": code, "message": message}])


def _csv_value(kind: str, value: Any) -> str:
    """A value as Bulk API 2.0 writes it into CSV."""
    if value is None:
        return ""
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "datetime" and isinstance(value, str) and value.endswith("+0000"):
        return f"{value[:-5]}Z"
    return str(value)


def _locator(offset: int) -> str:
    """Salesforce's locators are opaque strings (``MTAwMDA`` in its example: base64 of the offset)."""
    return base64.b64encode(str(offset).encode()).decode().rstrip("=")


def _offset(locator: str) -> int | None:
    try:
        text = base64.b64decode(locator + "=" * (-len(locator) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


Rows = Callable[[BoundQuery, bool], list[dict[str, Any]]]
"""The sandbox's answer to a bound query, deleted records included or not."""


class BulkJobs:
    """The org's query jobs, answering the ``jobs/query`` resources for the sandbox (``schema`` its org, ``rows``
    its records)."""

    def __init__(self, schema: Schema, rows: Rows, *, polls_in_progress: int = 1,
                 default_max_records: int = DEFAULT_MAX_RECORDS) -> None:
        self.schema = schema
        self._rows = rows
        self.polls_in_progress = polls_in_progress
        """``GET jobs/query/{id}`` calls that find a job ``InProgress`` before it completes."""
        self.default_max_records = default_max_records
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._sequence = 0
        self._lock = threading.RLock()
        self._failures: list[tuple[str, str]] = []
        self.jobs_created = 0
        """Jobs created (refused ones not counted): what ``DailyBulkV2QueryJobs`` counts."""
        self.results_bytes = 0
        """Bytes of results served: what ``DailyBulkV2QueryFileStorageMB`` counts, roughly."""
        self.daily_jobs = DAILY_QUERY_JOBS

    # --- Python side -------------------------------------------------------------------------

    def fail_next(self, state: str = "Failed", message: str = "InternalServerError : retried more than 15 times",
                  *, times: int = 1) -> None:
        """Make the next ``times`` jobs end ``Failed`` (with ``message``) or ``Aborted`` instead of ``JobComplete``."""
        if state not in ("Failed", "Aborted"):
            raise ValueError("a job fails as Failed or Aborted")
        with self._lock:
            self._failures.extend([(state, message)] * times)

    def delete_all(self) -> None:
        """Every job gone, as seven days after they ended: a locator kept from one of them no longer answers."""
        with self._lock:
            self._jobs.clear()

    @property
    def job_ids(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    def limits(self) -> dict[str, Any]:
        used_mb = -(-self.results_bytes // 1_048_576)
        return {"DailyBulkV2QueryJobs": {"Max": self.daily_jobs,
                                         "Remaining": max(0, self.daily_jobs - self.jobs_created)},
                "DailyBulkV2QueryFileStorageMB": {"Max": DAILY_RESULTS_MB,
                                                  "Remaining": max(0, DAILY_RESULTS_MB - used_mb)}}

    # --- HTTP side ---------------------------------------------------------------------------

    def route(self, method: str, version: str, parts: list[str], params: Mapping[str, list[str]], body: bytes,
              now: Callable[[], datetime]) -> BulkReply:
        """``parts`` follow ``jobs/query``: none, a job id, or a job id and ``results``."""
        if not parts:
            if method == "POST":
                return self.create(version, body, now)
            if method == "GET":
                with self._lock:
                    return BulkReply(200, {"done": True, "records": [j.info() for j in self._jobs.values()],
                                           "nextRecordsUrl": None})
            return _error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are GET,POST")
        with self._lock:
            job = self._jobs.get(parts[0])
        if job is None:
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        if len(parts) == 2 and parts[1] == "results" and method == "GET":
            return self.results(job, version, params)
        if len(parts) != 1:
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        if method == "GET":
            return BulkReply(200, self.poll(job))
        if method == "PATCH":
            return self.abort(job, body)
        if method == "DELETE":
            with self._lock:
                self._jobs.pop(job.id, None)
            return BulkReply(204)
        return _error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are GET,PATCH,DELETE")

    def create(self, version: str, body: bytes, now: Callable[[], datetime]) -> BulkReply:
        try:
            request = json.loads(body or b"null")
        except ValueError:
            return _error(400, "JSON_PARSER_ERROR", "The request body is not JSON")
        if not isinstance(request, dict):
            return _error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        operation, soql = request.get("operation"), request.get("query")
        if operation not in ("query", "queryAll"):
            return _error(400, "INVALIDJOB", f"Invalid operation: {operation!r}; use query or queryAll")
        if not isinstance(soql, str) or not soql.strip():
            return _error(400, "INVALIDJOB", "A query job needs a query")
        delimiter = _DELIMITERS.get(str(request.get("columnDelimiter", "COMMA")))
        line_ending = str(request.get("lineEnding", "LF"))
        if delimiter is None or line_ending not in _LINE_ENDINGS or request.get("contentType", "CSV") != "CSV":
            return _error(400, "INVALIDJOB", "contentType must be CSV, columnDelimiter one of "
                                             f"{', '.join(_DELIMITERS)} and lineEnding LF or CRLF")
        try:
            bound = compile_query(soql, self.schema)
        except SoqlError as exc:
            return _error(400, exc.error_code, exc.message)
        refused = _unsupported(bound)
        if refused is not None:
            return _error(400, "API_ERROR", refused)
        with self._lock:
            if self.jobs_created >= self.daily_jobs:
                return _error(400, "LIMIT_EXCEEDED", f"You have exceeded the limit of {self.daily_jobs} query jobs "
                                                     "in a rolling 24-hour period")
            rows = self._rows(bound, operation == "queryAll")
            self._sequence += 1
            self.jobs_created += 1
            job = _Job(make_id("750", self._sequence, pod="R0"), operation, bound.sobject.name, version,
                       format_datetime(now()), delimiter, line_ending,
                       [(spec.name, spec.type) for spec in bound.fields], rows)
            if self._failures:
                job.ends_as, job.error_message = self._failures.pop(0)
            self._jobs[job.id] = job
            return BulkReply(200, job.info())

    def poll(self, job: _Job) -> dict[str, Any]:
        with self._lock:
            if job.state not in _TERMINAL:
                job.polls += 1
                job.state = "InProgress" if job.polls <= self.polls_in_progress else job.ends_as
            return job.info()

    def abort(self, job: _Job, body: bytes) -> BulkReply:
        try:
            request = json.loads(body or b"null")
        except ValueError:
            return _error(400, "JSON_PARSER_ERROR", "The request body is not JSON")
        if not isinstance(request, dict) or request.get("state") != "Aborted":
            return _error(400, "INVALIDJOB", "A query job can only be aborted: send {\"state\": \"Aborted\"}")
        with self._lock:
            if job.state in _TERMINAL:
                return _error(400, "INVALIDJOB", f"Job is already {job.state}; it cannot be aborted")
            job.state = "Aborted"
            return BulkReply(200, job.info())

    def results(self, job: _Job, version: str, params: Mapping[str, list[str]]) -> BulkReply:
        if version != job.version:
            return _error(409, "API_ERROR", f"Use API version {job.version} (the job's) to get its results")
        if job.state != "JobComplete":
            status = _STATUS.get(job.state, job.state)
            return _error(412, "JOB_NOT_COMPLETE", "can only download query results of successfully completed bulk "
                                                   f"job with status: JOB_COMPLETE. Current status: {status}")
        size_text = params.get("maxRecords", [""])[0]
        if size_text and (not size_text.isdigit() or int(size_text) < 1):
            return _error(400, "API_ERROR", f"maxRecords must be a positive whole number, not {size_text!r}")
        size = int(size_text) if size_text else self.default_max_records
        locator = params.get("locator", [""])[0]
        start = _offset(locator) if locator else 0
        if start is None or start > len(job.rows):
            return _error(400, "API_ERROR", f"Invalid locator: {locator!r}")
        end = min(start + size, len(job.rows))
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=job.delimiter, lineterminator=_LINE_ENDINGS[job.line_ending],
                            quoting=csv.QUOTE_ALL)
        writer.writerow([name for name, _ in job.fields])
        for row in job.rows[start:end]:
            writer.writerow([_csv_value(kind, row.get(name)) for name, kind in job.fields])
        payload = buffer.getvalue().encode()
        with self._lock:
            self.results_bytes += len(payload)
        return BulkReply(200, csv=payload, headers={
            "Sforce-NumberOfRecords": str(end - start),
            "Sforce-Locator": _locator(end) if end < len(job.rows) else "null"})


def _unsupported(bound: BoundQuery) -> str | None:
    """Why Bulk API 2.0 refuses a query the REST API would answer, or None."""
    if bound.is_count:
        return "Bulk API 2.0 doesn't support queries with aggregate functions such as COUNT()"
    if bound.offset:
        return "Bulk API 2.0 doesn't support queries with an OFFSET clause"
    return None
