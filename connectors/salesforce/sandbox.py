"""A local Salesforce: an HTTPS server on 127.0.0.1 that speaks the REST API the worker uses.

Tests, the demo and the benchmarks run the real simple-salesforce against it, so it follows
Salesforce's documented wire formats rather than our client's expectations: OAuth 2.0
client-credentials tokens, ``query``/``queryAll`` with server-side cursors and
``nextRecordsUrl`` paging, ``describe``, ``limits``, sObject Collections updates with
per-record results, ``Sforce-Limit-Info`` on every response and Salesforce's error bodies
(``[{"message": ..., "errorCode": ...}]``). Queries run through a real SOQL evaluator
(:mod:`connectors.salesforce.soql`) over the org described in :mod:`connectors.salesforce.schema`;
a query whose WHERE bounds SystemModstamp (an incremental sync's from below, a window's from both sides)
reads only the records in that range, from a sorted index, as Salesforce answers it from its SystemModstamp
index. With ``query_timeout_rows``, a query that would scan more records than that answers ``QUERY_TIMEOUT``,
as Salesforce stops a query that runs for more than about two minutes: a whole large object times out, a
narrow window of it does not. A deleted record stays in the recycle bin, where ``queryAll`` finds it, for
15 days by the sandbox's clock, then is gone for good, as after Salesforce empties the bin. Bulk API 2.0
query jobs (``jobs/query``, CSV results by locator) are served by :mod:`connectors.salesforce.sandbox_bulk`.

TLS comes from a throw-away CA made with ``trustme`` (simple-salesforce only speaks https);
clients trust it through :attr:`SalesforceSandbox.ca_cert_path`.

Faults are injected on demand and consumed by the next matching requests: error statuses
(:meth:`~SalesforceSandbox.fail_next`), slow responses for client timeouts
(:meth:`~SalesforceSandbox.stall_next`), dropped connections
(:meth:`~SalesforceSandbox.drop_next`), session expiry (:meth:`~SalesforceSandbox.expire_sessions`)
and per-record write failures (:meth:`~SalesforceSandbox.fail_records_next_update`,
:meth:`~SalesforceSandbox.fail_keys_next_upsert`).

Upserts on an external id (``PATCH composite/sobjects/{sObject}/{externalIdField}``) create or update
records matched on that field, up to 200 a call, each answered with Salesforce's UpsertResult.

Usage::

    with SalesforceSandbox(batch_size=3) as sf:
        account_id = sf.insert("Account", {"Name": "Acme"})
        ...  # point a client at sf.url, trusting sf.ca_cert_path
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import ssl
import tempfile
import threading
from bisect import bisect_left, insort
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final, cast
from urllib.parse import parse_qs, urlsplit

import trustme

from connectors.salesforce.ids import is_salesforce_id, make_id, to_18
from connectors.salesforce.sandbox_bulk import BulkJobs, BulkReply
from connectors.salesforce.sandbox_oauth import ConnectedApp, answer_token_request
from connectors.salesforce.schema import (
    SNAPSHOT_OBJECT,
    FieldSpec,
    FieldValueError,
    Schema,
    SObjectSpec,
    build_schema,
    format_datetime,
    normalize_value,
)
from connectors.salesforce.soql import BoundQuery, SoqlError, compile_query

__all__ = ["ApiCall", "SalesforceSandbox"]

TOKEN_PATH: Final = "/services/oauth2/token"  # noqa: S105 - a path, not a secret
MAX_COLLECTION_SIZE: Final = 200
MAX_OPEN_CURSORS: Final = 10
"""Salesforce keeps a user's ten newest query cursors; older ``nextRecordsUrl`` locators die."""
RECYCLE_BIN: Final = timedelta(days=15)
"""How long a deleted record stays in the recycle bin, where ``queryAll`` still finds it; then it is gone."""
_DATA_PATH = re.compile(r"^/services/data/v(?P<version>\d+\.\d)(?P<rest>/.*)?$")
_LOCATOR = re.compile(r"^(?P<locator>01g[0-9A-Za-z]{15})-(?P<offset>\d+)$")
_STAMP_FIELDS: Final = ("LastModifiedDate", "SystemModstamp")
_INDEXED_FIELD: Final = "SystemModstamp"
_CLOSED_TASK_STATUSES: Final = frozenset({"Completed"})
"""The Task statuses whose TaskStatus record is marked closed in a new org: a Task's IsClosed follows its Status."""
_QUERY_TIMEOUT: Final = "Your query request was running for too long."
_ROLLED_BACK: Final = "Record rolled back because not all records were valid and the request was using AllOrNone header"
_READ_ONLY: Final = (
    "Unable to create/update fields: {field}. Please check the security settings of this field and verify "
    "that it is read/write for your profile or permission set."
)


@dataclass(frozen=True)
class ApiCall:
    """One HTTP request the sandbox answered (or dropped: ``status`` 0)."""

    method: str
    path: str
    query: str
    status: int
    record_count: int | None = None  # records in a composite/sobjects request


@dataclass
class _Fault:
    path_contains: str
    remaining: int
    status: int = 0
    error_code: str = ""
    message: str = ""
    seconds: float = 0.0

    def matches(self, path: str) -> bool:
        return self.remaining > 0 and self.path_contains in path


@dataclass
class _Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    record_count: int | None = None


@dataclass
class _Cursor:
    rows: list[dict[str, Any]]
    batch_size: int


def _errors(status: int, error_code: str, message: str) -> _Response:
    return _Response(status, [{"message": message, "errorCode": error_code}])


def _not_found() -> _Response:
    return _errors(404, "NOT_FOUND", "The requested resource does not exist")


def _now() -> datetime:
    return datetime.now(UTC)


class SalesforceSandbox:
    """An emulated Salesforce org over HTTPS, with a Python data API for generators and tests."""

    def __init__(
        self,
        *,
        client_id: str = "sandbox-client",
        client_secret: str = "sandbox-secret",  # noqa: S107 - the sandbox's own test credential
        app: ConnectedApp | None = None,
        api_version: str = "59.0",
        batch_size: int = 2000,
        daily_api_limit: int = 15000,
        clock: Callable[[], datetime] | None = None,
        missing_fields: Mapping[str, set[str]] | None = None,
        read_only_fields: Mapping[str, set[str]] | None = None,
        query_timeout_rows: int | None = None,
        bulk_polls_in_progress: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.query_timeout_rows = query_timeout_rows
        """A query that would scan more records than this answers QUERY_TIMEOUT; None: no query times out."""
        self.app = app if app is not None else ConnectedApp(client_id, client_secret)
        """How the org lets the worker log in (:mod:`connectors.salesforce.sandbox_oauth`)."""
        self.api_version = api_version
        self.batch_size = batch_size
        self.daily_api_limit = daily_api_limit
        self.schema: Schema = build_schema(missing_fields, read_only_fields)
        self._clock = clock or _now
        self._lock = threading.RLock()
        self._data: dict[str, dict[str, dict[str, Any]]] = {o.name: {} for o in self.schema}
        self._indexes: dict[str, _StampIndex] = {o.name: _StampIndex() for o in self.schema}
        """Every stored record is added to its object's index, and every change of a stored record is reported
        to it (:meth:`_restamped`), its SystemModstamp moved or not: queries trust the index to find them, and
        a query worked out outside the lock learns from it whether a record changed meanwhile."""
        self._recycle_bin: deque[tuple[datetime, str, str]] = deque()  # (deleted at, sObject, Id), oldest first
        self._sequence = 0
        self._cursor_sequence = 0
        self._case_number = 1000
        self._tokens: set[str] = set()
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._calls: list[ApiCall] = []
        self._api_calls_used = 0
        self._faults: list[_Fault] = []
        self._stalls: list[_Fault] = []
        self._drops: list[_Fault] = []
        self._failing_records: dict[str, tuple[str, str]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: str | None = None
        self._stopping = threading.Event()
        self._api = _Api(self)
        self.bulk = BulkJobs(self.schema, lambda bound, deleted: self._bulk_rows(bound, include_deleted=deleted),
                             polls_in_progress=bulk_polls_in_progress)
        """Bulk API 2.0 query jobs (:mod:`connectors.salesforce.sandbox_bulk`): failures to inject, jobs to count."""
        self.url = ""
        self.ca_cert_path = ""

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Bind a free port on 127.0.0.1, write the CA file and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("sandbox already started")
        ca = trustme.CA()
        self._tmpdir = tempfile.mkdtemp(prefix="sf-sandbox-")
        ca_path = Path(self._tmpdir) / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        server = _Server(("127.0.0.1", 0), _Handler, self)
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._stopping.clear()
        self._server = server
        self.url = f"https://127.0.0.1:{server.server_address[1]}"
        self.ca_cert_path = str(ca_path)
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="salesforce-sandbox",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close open connections, release the port and delete the CA file."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> SalesforceSandbox:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- data API (Python side; never counted as API calls) ----------------------------------

    def insert(self, sobject: str, fields: Mapping[str, Any]) -> str:
        """Create a record and return its 18-character Id.

        ``CreatedDate``, ``LastModifiedDate`` and ``SystemModstamp`` default to the clock, unless
        given (generators back-date history; giving one modification stamp sets both).
        """
        spec = self._spec(sobject)
        values = self._normalize(spec, fields)
        with self._lock:
            record_id = self._new_id(spec, values.pop("Id", None))
            now = format_datetime(self._clock())
            record: dict[str, Any] = {name: f.default for name, f in spec.fields.items()}
            record.update(values)
            record["Id"] = record_id
            self._default_stamps(record, values, now, creating=True)
            _derive(spec.name, record)
            if "CaseNumber" in spec.fields and record["CaseNumber"] is None:
                self._case_number += 1
                record["CaseNumber"] = f"{self._case_number:08d}"
            if spec.name == SNAPSHOT_OBJECT and record["Name"] is None:  # its Auto Number name field
                record["Name"] = f"HS-{len(self._data[spec.name]) + 1:06d}"
            self._data[spec.name][record_id] = record
            self._indexes[spec.name].add(record)
            return record_id

    def update(self, sobject: str, record_id: str, fields: Mapping[str, Any]) -> None:
        """Change fields of a record (any field but Id), bumping its stamps unless given."""
        spec = self._spec(sobject)
        values = self._normalize(spec, fields)
        if "Id" in values:
            raise ValueError("the Id of a record cannot be changed")
        with self._lock:
            record = self._record(spec, record_id)
            old_stamp = record.get(_INDEXED_FIELD)
            record.update(values)
            _derive(spec.name, record)
            self._default_stamps(record, values, format_datetime(self._clock()), creating=False)
            self._restamped(spec.name, record, old_stamp)

    def delete(self, sobject: str, record_id: str) -> None:
        """Soft-delete a record (``IsDeleted=True``, to the recycle bin), as Salesforce does: ``queryAll`` finds
        it for :data:`RECYCLE_BIN` (by the sandbox's clock), then it is gone for good (:meth:`purge`)."""
        spec = self._spec(sobject)
        if not spec.has_is_deleted:
            raise ValueError(f"{spec.name} records cannot be deleted in Salesforce (deactivate users instead)")
        with self._lock:
            record = self._record(spec, record_id)
            old_stamp = record.get(_INDEXED_FIELD)
            record["IsDeleted"] = True
            moment = self._clock()
            record["LastModifiedDate"] = record["SystemModstamp"] = format_datetime(moment)
            self._restamped(spec.name, record, old_stamp)
            self._recycle_bin.append((moment, spec.name, record["Id"]))

    def purge(self, sobject: str, record_id: str) -> None:
        """Delete a record for good, as emptying the recycle bin does (or a mass delete that overflows it):
        neither ``query`` nor ``queryAll`` returns it any more."""
        spec = self._spec(sobject)
        with self._lock:
            record = self._record(spec, record_id)
            del self._data[spec.name][record["Id"]]
            self._indexes[spec.name].remove(record)

    def _empty_recycle_bin(self) -> None:
        """Purge the records deleted more than :data:`RECYCLE_BIN` ago (and still deleted)."""
        horizon = self._clock() - RECYCLE_BIN
        while self._recycle_bin and self._recycle_bin[0][0] <= horizon:
            _, sobject, record_id = self._recycle_bin.popleft()
            record = self._data[sobject].get(record_id)
            if record is not None and record.get("IsDeleted"):
                self.purge(sobject, record_id)

    def get(self, sobject: str, record_id: str) -> dict[str, Any]:
        """A copy of one record, deleted or not; ``KeyError`` if there is none."""
        spec = self._spec(sobject)
        with self._lock:
            return dict(self._record(spec, record_id))

    def records(self, sobject: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Copies of an object's records in insertion order."""
        spec = self._spec(sobject)
        with self._lock:
            self._empty_recycle_bin()
            return [dict(r) for r in self._rows(spec, include_deleted=include_deleted)]

    # --- observation -----------------------------------------------------------------------

    @property
    def calls(self) -> list[ApiCall]:
        """Every HTTP request answered so far, oldest first (a copy)."""
        with self._lock:
            return list(self._calls)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    @property
    def api_calls_used(self) -> int:
        """REST calls counted against ``daily_api_limit`` (every data API call but OAuth)."""
        with self._lock:
            return self._api_calls_used

    @api_calls_used.setter
    def api_calls_used(self, value: int) -> None:
        with self._lock:
            self._api_calls_used = value

    # --- fault injection ---------------------------------------------------------------------

    def fail_next(self, status: int, error_code: str, message: str, *, path_contains: str = "", times: int = 1) -> None:
        """Answer the next ``times`` requests whose path contains ``path_contains`` with an error.

        The body is Salesforce's (``[{"message", "errorCode"}]``), or OAuth's
        (``{"error", "error_description"}``) for the token endpoint.
        """
        with self._lock:
            self._faults.append(_Fault(path_contains, times, status, error_code, message))

    def stall_next(self, seconds: float, *, path_contains: str = "", times: int = 1) -> None:
        """Delay the next matching responses by ``seconds`` (to trip client timeouts)."""
        with self._lock:
            self._stalls.append(_Fault(path_contains, times, seconds=seconds))

    def drop_next(self, *, path_contains: str = "", times: int = 1) -> None:
        """Close the connection of the next matching requests without answering."""
        with self._lock:
            self._drops.append(_Fault(path_contains, times))

    @property
    def client_id(self) -> str:
        return self.app.client_id

    @property
    def client_secret(self) -> str:
        return self.app.client_secret

    def expire_sessions(self) -> None:
        """Invalidate every issued token: the next data call gets 401 ``INVALID_SESSION_ID``."""
        with self._lock:
            self._tokens.clear()

    def fail_records_next_update(
        self,
        record_ids: Iterable[str],
        error_code: str = "UNABLE_TO_LOCK_ROW",
        message: str = "unable to obtain exclusive access to this record",
    ) -> None:
        """Make the next composite update of each of ``record_ids`` fail for that record only."""
        with self._lock:
            for record_id in record_ids:
                self._failing_records[to_18(record_id)] = (error_code, message)

    def fail_keys_next_upsert(
        self, keys: Iterable[str], error_code: str = "UNABLE_TO_LOCK_ROW",
        message: str = "unable to obtain exclusive access to this record",
    ) -> None:
        """Make the next collection upsert of each record with one of these external id values fail for that
        record only."""
        with self._lock:
            for key in keys:
                self._failing_records[key] = (error_code, message)

    # --- internals shared with the request handler -------------------------------------------

    def _spec(self, sobject: str) -> SObjectSpec:
        spec = self.schema.sobject(sobject)
        if spec is None:
            raise KeyError(f"this org has no sObject {sobject!r}")
        return spec

    def _normalize(self, spec: SObjectSpec, fields: Mapping[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, value in fields.items():
            field_spec = spec.field(name)
            if field_spec is None:
                raise KeyError(f"{spec.name} has no field {name!r}")
            values[field_spec.name] = normalize_value(field_spec, value)
        return values

    def _new_id(self, spec: SObjectSpec, wanted: str | None) -> str:
        if wanted is not None:
            if wanted[:3] != spec.key_prefix:
                raise ValueError(f"{wanted!r} is not a {spec.name} id (key prefix {spec.key_prefix})")
            if wanted in self._data[spec.name]:
                raise ValueError(f"duplicate Id {wanted!r}")
            return wanted
        while True:
            self._sequence += 1
            record_id = make_id(spec.key_prefix, self._sequence)
            if record_id not in self._data[spec.name]:
                return record_id

    @staticmethod
    def _default_stamps(record: dict[str, Any], given: Mapping[str, Any], now: str, *, creating: bool) -> None:
        stamp = given.get("SystemModstamp") or given.get("LastModifiedDate") or now
        for name in _STAMP_FIELDS:
            if name not in given:
                record[name] = stamp
        if creating and "CreatedDate" not in given:
            record["CreatedDate"] = given.get("LastModifiedDate") or stamp

    def _record(self, spec: SObjectSpec, record_id: str) -> dict[str, Any]:
        key = to_18(record_id) if is_salesforce_id(record_id) else record_id
        try:
            return self._data[spec.name][key]
        except KeyError:
            raise KeyError(f"no {spec.name} with Id {record_id!r}") from None

    def _rows(self, spec: SObjectSpec, *, include_deleted: bool) -> list[dict[str, Any]]:
        rows = self._data[spec.name].values()
        if include_deleted or not spec.has_is_deleted:
            return list(rows)
        return [r for r in rows if not r["IsDeleted"]]

    def _restamped(self, sobject: str, record: dict[str, Any], old_stamp: Any) -> None:
        self._indexes[sobject].restamped(record, old_stamp)

    def _candidates(self, bound: BoundQuery, *, include_deleted: bool) -> tuple[list[dict[str, Any]], int]:
        """The records ``bound`` must look at, in insertion order as :meth:`_rows` gives them (or any order
        when ORDER BY is total), and how many records Salesforce would scan to find them: when its WHERE
        bounds SystemModstamp, only those stamped in that range, as Salesforce reads an incremental or a
        windowed query from the SystemModstamp index; otherwise every record of the object.
        """
        spec = bound.sobject
        floor = bound.lower_bounds.get(_INDEXED_FIELD)
        ceiling = bound.upper_bounds.get(_INDEXED_FIELD)
        if floor is None and ceiling is None:
            return self._rows(spec, include_deleted=include_deleted), len(self._data[spec.name])
        index = self._indexes[spec.name]
        start, end = index.span(floor, ceiling)
        rows = index.since(floor, ceiling=ceiling, insertion_order=not bound.order_is_total)
        scanned = end - start
        if include_deleted or not spec.has_is_deleted:
            return rows, scanned
        return [r for r in rows if not r["IsDeleted"]], scanned

    def _bulk_rows(self, bound: BoundQuery, *, include_deleted: bool) -> list[dict[str, Any]]:
        """The rows a Bulk API 2.0 query job answers: as a REST query's, but never stopped for its size."""
        rows = self._query_rows(bound, include_deleted=include_deleted, scan_limit=None)
        assert rows is not None
        return rows

    def _query_rows(self, bound: BoundQuery, *, include_deleted: bool, scan_limit: int | None
                    ) -> list[dict[str, Any]] | None:
        """``bound``'s rows, or None if it would scan more than ``scan_limit`` records (a QUERY_TIMEOUT).

        Worked out outside the lock, so that other calls are answered meanwhile, as Salesforce answers them
        ("There isn't a limit on the number of concurrent requests shorter than 20 seconds", API Request
        Limits and Allocations). A record is changed in place, so if one of the object's records changed
        meanwhile (a test writing beside a query), the rows are worked out again under the lock: they are
        always the records as they were at one moment."""
        index = self._indexes[bound.sobject.name]
        with self._lock:
            self._empty_recycle_bin()
            candidates = self._scanned(bound, include_deleted=include_deleted, scan_limit=scan_limit)
            if candidates is None:
                return None
            changes = index.changes
        rows = bound.run(candidates)
        with self._lock:
            if index.changes == changes:
                return rows
            candidates = self._scanned(bound, include_deleted=include_deleted, scan_limit=scan_limit)
            return None if candidates is None else bound.run(candidates)

    def _scanned(self, bound: BoundQuery, *, include_deleted: bool, scan_limit: int | None
                 ) -> list[dict[str, Any]] | None:
        """The records ``bound`` looks at, or None if it would scan more than ``scan_limit`` (a QUERY_TIMEOUT): a
        query worked out again after a change is held to the limit too, as if asked after it."""
        candidates, scanned = self._candidates(bound, include_deleted=include_deleted)
        return None if scan_limit is not None and scanned > scan_limit else candidates

    def _issue(self, access_token: str) -> None:
        with self._lock:
            self._tokens.add(access_token)

    def _take_fault(self, faults: list[_Fault], path: str) -> _Fault | None:
        with self._lock:
            for fault in faults:
                if fault.matches(path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        faults.remove(fault)
                    return fault
        return None

    def _record_call(self, call: ApiCall) -> None:
        with self._lock:
            self._calls.append(call)

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)


class _Api:
    """The REST API's behaviour, independent of HTTP plumbing: request in, ``_Response`` out."""

    def __init__(self, sandbox: SalesforceSandbox) -> None:
        self.sb = sandbox

    def handle(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> _Response:
        """Answer one request; ``headers`` keys are lower-case."""
        fault = self.sb._take_fault(self.sb._faults, path)
        if fault is not None:
            if path.rstrip("/") == TOKEN_PATH:
                return _Response(fault.status, {"error": fault.error_code, "error_description": fault.message})
            return self._with_usage(_errors(fault.status, fault.error_code, fault.message))
        if path.rstrip("/") == TOKEN_PATH:
            return self.token(method, body)
        match = _DATA_PATH.match(path)
        if path.rstrip("/") == "/services/data":
            return self.versions() if method == "GET" else self.not_allowed(method, "GET")
        if match is None:
            return _not_found()
        if not self.supported(match["version"]):
            return _not_found()
        if not self.authorized(headers):
            return _errors(401, "INVALID_SESSION_ID", "Session expired or invalid")
        with self.sb._lock:
            if self.sb._api_calls_used >= self.sb.daily_api_limit:
                return self._with_usage(_errors(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
            self.sb._api_calls_used += 1
        rest = (match["rest"] or "/").rstrip("/") or "/"
        batch_hint = _batch_size_option(headers.get("sforce-query-options", ""))
        return self._with_usage(self.route(method, match["version"], rest, parse_qs(query), body, batch_hint))

    def _with_usage(self, response: _Response) -> _Response:
        response.headers["Sforce-Limit-Info"] = f"api-usage={self.sb.api_calls_used}/{self.sb.daily_api_limit}"
        return response

    def supported(self, version: str) -> bool:
        return 20.0 <= float(version) <= float(self.sb.api_version)

    def authorized(self, headers: Mapping[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        with self.sb._lock:
            return scheme in ("Bearer", "OAuth") and token.strip() in self.sb._tokens

    @staticmethod
    def not_allowed(method: str, allowed: str) -> _Response:
        return _errors(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are {allowed}")

    # --- OAuth ---------------------------------------------------------------------------

    def token(self, method: str, body: bytes) -> _Response:
        status, answer = answer_token_request(self.sb.app, method, body, instance_url=self.sb.url,
                                              now=self.sb._clock, issue=self.sb._issue)
        return _Response(status, answer)

    # --- data API routes -----------------------------------------------------------------

    def route(
        self, method: str, version: str, rest: str, params: dict[str, list[str]], body: bytes, batch_hint: int | None
    ) -> _Response:
        parts = rest.strip("/").split("/") if rest != "/" else []
        head = parts[0] if parts else ""
        if method == "PATCH" and parts == ["composite", "sobjects"]:
            return self.composite_update(body)
        if method == "PATCH" and len(parts) == 4 and parts[:2] == ["composite", "sobjects"]:
            return self.composite_upsert(parts[2], parts[3], body)
        if parts == ["composite", "sobjects"]:
            return self.not_allowed(method, "PATCH")
        if parts[:2] == ["jobs", "query"]:
            return _from_bulk(self.sb.bulk.route(method, version, parts[2:], params, body, self.sb._clock))
        if method != "GET":
            return (
                self.not_allowed(method, "GET")
                if head in ("query", "queryAll", "limits", "sobjects", "")
                else _not_found()
            )
        if not parts:
            return _Response(
                200,
                {
                    name: f"/services/data/v{version}/{name}"
                    for name in ("sobjects", "query", "queryAll", "limits", "composite")
                },
            )
        if head in ("query", "queryAll") and len(parts) == 1:
            return self.query(version, head, params.get("q", [""])[0], batch_hint)
        if head in ("query", "queryAll") and len(parts) == 2:
            return self.query_more(version, head, parts[1])
        if head == "limits" and len(parts) == 1:
            return self.limits()
        if head == "sobjects":
            return self.sobjects(version, parts[1:], params)
        return _not_found()

    def versions(self) -> _Response:
        top = int(float(self.sb.api_version))
        return _Response(
            200,
            [{"label": f"API {v}.0", "url": f"/services/data/v{v}.0", "version": f"{v}.0"} for v in range(20, top + 1)],
        )

    def limits(self) -> _Response:
        used, limit = self.sb.api_calls_used, self.sb.daily_api_limit
        return _Response(
            200,
            {
                "DailyApiRequests": {"Max": limit, "Remaining": max(0, limit - used)},
                "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
                **self.sb.bulk.limits(),
            },
        )

    def sobjects(self, version: str, parts: list[str], params: dict[str, list[str]]) -> _Response:
        if not parts:
            return _Response(
                200,
                {
                    "encoding": "UTF-8",
                    "maxBatchSize": MAX_COLLECTION_SIZE,
                    "sobjects": [_versioned(o.summary(), version) for o in self.sb.schema],
                },
            )
        spec = self.sb.schema.sobject(parts[0])
        if spec is None:
            return _not_found()
        if len(parts) == 1:
            return _Response(200, {"objectDescribe": _versioned(spec.summary(), version), "recentItems": []})
        if parts[1:] == ["describe"]:
            return _Response(200, _versioned(spec.describe(), version))
        if len(parts) == 2:
            return self.retrieve(version, spec, parts[1], params)
        return _not_found()

    def retrieve(self, version: str, spec: SObjectSpec, record_id: str, params: dict[str, list[str]]) -> _Response:
        with self.sb._lock:
            try:
                record = dict(self.sb._record(spec, record_id))
            except KeyError:
                return _not_found()
        if record.get("IsDeleted"):
            return _not_found()
        names = [n.strip() for n in params.get("fields", [""])[0].split(",") if n.strip()]
        if names:
            chosen = {}
            for name in names:
                field_spec = spec.field(name)
                if field_spec is None:
                    return _errors(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {spec.name}")
                chosen[field_spec.name] = record[field_spec.name]
            record = chosen
        return _Response(200, _serialize(spec.name, record, version))

    # --- queries -----------------------------------------------------------------------------

    def query(self, version: str, endpoint: str, soql: str, batch_hint: int | None) -> _Response:
        if not soql.strip():
            return _errors(400, "MALFORMED_QUERY", "A query string has to be specified")
        try:
            bound = compile_query(soql, self.sb.schema)
        except SoqlError as exc:
            return _errors(400, exc.error_code, exc.message)
        rows = self.sb._query_rows(bound, include_deleted=endpoint == "queryAll", scan_limit=self.sb.query_timeout_rows)
        if rows is None:
            return _errors(400, "QUERY_TIMEOUT", _QUERY_TIMEOUT)
        if bound.is_count:
            return _Response(200, {"totalSize": len(rows), "done": True, "records": []})
        snapshot = [_serialize(bound.sobject.name, row, version) for row in rows]
        with self.sb._lock:
            self.sb._cursor_sequence += 1
            locator = make_id("01g", self.sb._cursor_sequence, pod="D0")
            cursor = _Cursor(snapshot, min(self.sb.batch_size, batch_hint or self.sb.batch_size))
            self.sb._cursors[locator] = cursor
            while len(self.sb._cursors) > MAX_OPEN_CURSORS:
                self.sb._cursors.popitem(last=False)
        return self.page(version, endpoint, locator, cursor, 0)

    def query_more(self, version: str, endpoint: str, token: str) -> _Response:
        match = _LOCATOR.match(token)
        with self.sb._lock:
            cursor = self.sb._cursors.get(match["locator"]) if match else None
        if match is None or cursor is None or int(match["offset"]) >= len(cursor.rows):
            return _errors(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self.page(version, endpoint, match["locator"], cursor, int(match["offset"]))

    @staticmethod
    def page(version: str, endpoint: str, locator: str, cursor: _Cursor, offset: int) -> _Response:
        end = offset + cursor.batch_size
        body: dict[str, Any] = {"totalSize": len(cursor.rows), "done": end >= len(cursor.rows)}
        if not body["done"]:
            body["nextRecordsUrl"] = f"/services/data/v{version}/{endpoint}/{locator}-{end}"
        body["records"] = cursor.rows[offset:end]
        return _Response(200, body)

    # --- sObject Collections update ------------------------------------------------------

    def composite_update(self, body: bytes) -> _Response:
        try:
            payload = json.loads(body or b"null")
        except ValueError as exc:
            return _errors(400, "JSON_PARSER_ERROR", f"Unexpected character in request body: {exc}")
        if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
            return _errors(400, "JSON_PARSER_ERROR", "The request body must be an object with a records list")
        records = payload["records"]
        all_or_none = payload.get("allOrNone", False) is True
        if len(records) > MAX_COLLECTION_SIZE:
            return _Response(
                400,
                [
                    {
                        "message": "record limit reached. cannot submit more than 200 records into this call",
                        "errorCode": "EXCEEDED_ID_LIMIT",
                    }
                ],
                record_count=len(records),
            )
        with self.sb._lock:
            try:
                prepared = [_prepare_update(self.sb, record, index) for index, record in enumerate(records)]
            except FieldValueError as exc:
                return _Response(400, [{"message": exc.message, "errorCode": exc.code}], record_count=len(records))
            _mark_duplicates(prepared)
            failed = any(p.errors for p in prepared)
            now = format_datetime(self.sb._clock())
            results = []
            for update in prepared:
                if update.errors:
                    results.append({"id": update.known_id, "success": False, "errors": update.errors})
                elif all_or_none and failed:
                    results.append(
                        {
                            "id": update.known_id,
                            "success": False,
                            "errors": [
                                _error(
                                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                                    _ROLLED_BACK,
                                )
                            ],
                        }
                    )
                else:
                    assert update.record is not None
                    old_stamp = update.record.get(_INDEXED_FIELD)
                    update.record.update(update.changes)
                    _derive(update.sobject, update.record)
                    update.record["LastModifiedDate"] = update.record["SystemModstamp"] = now
                    self.sb._restamped(update.sobject, update.record, old_stamp)
                    results.append({"id": update.known_id, "success": True, "errors": []})
        return _Response(200, results, record_count=len(records))

    # --- sObject Collections upsert on an external id ------------------------------------

    def composite_upsert(self, sobject: str, external_id: str, body: bytes) -> _Response:
        """``PATCH composite/sobjects/{sobject}/{externalIdField}``: create or update up to 200 records matched
        on the external id, each answered on its own with an UpsertResult (``id``, ``success``, ``errors``,
        ``created``)."""
        spec = self.sb.schema.sobject(sobject)
        if spec is None:
            return _not_found()
        key_spec = spec.field(external_id)
        if key_spec is None or not key_spec.external_id:
            return _errors(400, "INVALID_FIELD",
                           f"Field name provided, {external_id} is not an External ID or indexed field for {spec.name}")
        try:
            payload = json.loads(body or b"null")
        except ValueError as exc:
            return _errors(400, "JSON_PARSER_ERROR", f"Unexpected character in request body: {exc}")
        if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
            return _errors(400, "JSON_PARSER_ERROR", "The request body must be an object with a records list")
        records = payload["records"]
        if len(records) > MAX_COLLECTION_SIZE:
            return _Response(400, [{"message": "record limit reached. cannot submit more than 200 records into this "
                                               "call", "errorCode": "EXCEEDED_ID_LIMIT"}], record_count=len(records))
        all_or_none = payload.get("allOrNone", False) is True
        with self.sb._lock:
            try:
                prepared = [_prepare_upsert(self.sb, spec, key_spec.name, raw, index)
                            for index, raw in enumerate(records)]
            except FieldValueError as exc:
                return _Response(400, [{"message": exc.message, "errorCode": exc.code}], record_count=len(records))
            counts: dict[str, int] = {}
            for upsert in prepared:
                if upsert.key is not None:
                    counts[upsert.key] = counts.get(upsert.key, 0) + 1
            for upsert in prepared:
                if upsert.key is not None and counts[upsert.key] > 1 and not upsert.errors:
                    upsert.errors.append(_error("DUPLICATE_EXTERNAL_ID",
                                                f"Duplicate external id specified: {upsert.key}", [key_spec.name]))
            failed = any(u.errors for u in prepared)
            held = {str(r[key_spec.name]).lower(): r for r in self.sb._rows(spec, include_deleted=False)
                    if r.get(key_spec.name) is not None}
            results: list[dict[str, Any]] = []
            for upsert in prepared:
                if upsert.errors:
                    results.append({"id": None, "success": False, "errors": upsert.errors, "created": False})
                elif all_or_none and failed:
                    results.append({"id": None, "success": False, "created": False,
                                    "errors": [_error("ALL_OR_NONE_OPERATION_ROLLED_BACK", _ROLLED_BACK)]})
                else:
                    assert upsert.key is not None
                    record = held.get(upsert.key.lower())
                    if record is None:
                        record_id = self.sb.insert(spec.name, {**upsert.changes, key_spec.name: upsert.key})
                        held[upsert.key.lower()] = self.sb._data[spec.name][record_id]
                        results.append({"id": record_id, "success": True, "errors": [], "created": True})
                    else:
                        self.sb.update(spec.name, record["Id"], upsert.changes)
                        results.append({"id": record["Id"], "success": True, "errors": [], "created": False})
        return _Response(200, results, record_count=len(records))


@dataclass
class _Upsert:
    key: str | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)


def _prepare_upsert(sb: SalesforceSandbox, spec: SObjectSpec, key_field: str, raw: Any, index: int) -> _Upsert:
    """Check one record of a collection upsert; raise FieldValueError when the JSON itself is bad."""
    if not isinstance(raw, dict):
        raise FieldValueError("JSON_PARSER_ERROR", f"records[{index}] is not an object", "")
    upsert = _Upsert()
    type_name = _type_of(raw)
    if type_name is None:
        upsert.errors.append(_error("INVALID_TYPE", "Must specify a type in attributes"))
        return upsert
    if type_name.lower() != spec.name.lower():
        upsert.errors.append(_error("INVALID_TYPE", f"This request can only upsert {spec.name} records, "
                                                    f"not {type_name}"))
        return upsert
    key_name = next((k for k in raw if k.lower() == key_field.lower()), None)
    key = raw.get(key_name) if key_name else None
    if not isinstance(key, str) or not key.strip():
        upsert.errors.append(_error("MISSING_ARGUMENT", f"{key_field} not specified", [key_field]))
        return upsert
    upsert.key = key

    def live_target(field_spec: FieldSpec, stored: Any) -> dict[str, Any] | None:
        """A lookup must name a record that exists and is not in the recycle bin."""
        if field_spec.type != "reference" or stored is None:
            return None
        target = next((sb._data[t].get(stored) for t in field_spec.reference_to if t in sb._data), None)
        if target is None:
            return _error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [field_spec.name])
        if target.get("IsDeleted"):
            return _error("ENTITY_IS_DELETED", "entity is deleted", [field_spec.name])
        return None

    upsert.changes, error = _written_values(spec, raw, ("attributes", key_name), live_target)
    if error is not None:
        upsert.errors.append(error)
        return upsert
    injected = sb._failing_records.pop(key, None)
    if injected is not None:
        upsert.errors.append(_error(*injected))
    return upsert


@dataclass
class _Update:
    sobject: str = ""
    known_id: str | None = None
    record: dict[str, Any] | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)


def _error(code: str, message: str, fields: Iterable[str] = ()) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": list(fields)}


def _type_of(raw: dict[str, Any]) -> str | None:
    """The sObject type a collection record names in its ``attributes``, or None when it names none."""
    attributes = raw.get("attributes")
    type_name = attributes.get("type") if isinstance(attributes, dict) else None
    return type_name if isinstance(type_name, str) else None


def _written_values(spec: SObjectSpec, raw: dict[str, Any], skip: tuple[str | None, ...],
                    check: Callable[[FieldSpec, Any], dict[str, Any] | None] | None = None
                    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The fields a collection record (update or upsert) writes, by API name with their values as stored, or
    the first error Salesforce answers for the record, in the record's field order: a field the object does
    not have, one the user may not edit, a value of the wrong type, or what ``check`` refuses. Raises
    FieldValueError when the JSON itself is bad (the whole request fails)."""
    changes: dict[str, Any] = {}
    for name, value in raw.items():
        if name in skip:
            continue
        field_spec = spec.field(name)
        if field_spec is None:
            return changes, _error("INVALID_FIELD", f"No such column '{name}' on sobject of type {spec.name}", [name])
        if not field_spec.updateable:
            return changes, _error("INVALID_FIELD_FOR_INSERT_UPDATE", _READ_ONLY.format(field=field_spec.name),
                                   [field_spec.name])
        try:
            stored = normalize_value(field_spec, value)
        except FieldValueError as exc:
            if exc.code == "JSON_PARSER_ERROR":
                raise
            return changes, _error(exc.code, exc.message, [field_spec.name])
        refused = check(field_spec, stored) if check is not None else None
        if refused is not None:
            return changes, refused
        changes[field_spec.name] = stored
    return changes, None


def _prepare_update(sb: SalesforceSandbox, raw: Any, index: int) -> _Update:
    """Check one record of a collection update; raise FieldValueError when the JSON itself is bad."""
    if not isinstance(raw, dict):
        raise FieldValueError("JSON_PARSER_ERROR", f"records[{index}] is not an object", "")
    update = _Update()
    type_name = _type_of(raw)
    if type_name is None:
        update.errors.append(_error("INVALID_TYPE", "Must specify a type in attributes"))
        return update
    spec = sb.schema.sobject(type_name)
    if spec is None:
        update.errors.append(_error("INVALID_TYPE", f"sObject type '{type_name}' is not supported."))
        return update
    id_key = next((k for k in raw if k.lower() == "id"), None)
    record_id = raw.get(id_key) if id_key else None
    if not isinstance(record_id, str) or not record_id:
        update.errors.append(_error("MISSING_ARGUMENT", "Id not specified in an update call"))
        return update
    if not is_salesforce_id(record_id) or record_id[:3] != spec.key_prefix:
        update.errors.append(_error("MALFORMED_ID", f"{spec.name} ID: id value of incorrect type: {record_id}", ["Id"]))
        return update
    record_id = to_18(record_id)
    record = sb._data[spec.name].get(record_id)
    if record is None:
        update.errors.append(_error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"))
        return update
    update.known_id = record_id
    update.sobject = spec.name
    if record.get("IsDeleted"):
        update.errors.append(_error("ENTITY_IS_DELETED", "entity is deleted"))
        return update
    update.changes, error = _written_values(spec, raw, ("attributes", id_key))
    if error is not None:
        update.errors.append(error)
        return update
    injected = sb._failing_records.pop(record_id, None)
    if injected is not None:
        update.errors.append(_error(*injected))
        return update
    update.record = record
    return update


def _mark_duplicates(updates: list[_Update]) -> None:
    seen: set[str] = set()
    for update in updates:
        if update.errors or update.known_id is None:
            continue
        if update.known_id in seen:
            update.errors.append(_error("DUPLICATE_VALUE", f"Duplicate id in list: {update.known_id}"))
            update.record = None
        seen.add(update.known_id)


def _from_bulk(reply: BulkReply) -> _Response:
    """A Bulk API 2.0 answer: CSV results go out as bytes (``text/csv``), the rest as JSON."""
    if reply.csv is not None:
        return _Response(reply.status, reply.csv, {"Content-Type": "text/csv", **reply.headers})
    return _Response(reply.status, reply.body, dict(reply.headers))


def _derive(sobject: str, record: dict[str, Any]) -> None:
    """Fields Salesforce computes from others: a Task is closed when its Status is a closed one."""
    if sobject == "Task":
        record["IsClosed"] = record.get("Status") in _CLOSED_TASK_STATUSES


def _batch_size_option(header: str) -> int | None:
    """``Sforce-Query-Options: batchSize=N``: Salesforce takes 200..2000 and treats it as a hint."""
    match = re.search(r"batchSize=(\d+)", header)
    return None if match is None else max(200, min(2000, int(match.group(1))))


def _versioned(value: Any, version: str) -> Any:
    """Fill ``{version}`` into the URL templates of schema descriptions."""
    if isinstance(value, str):
        return value.replace("{version}", version)
    if isinstance(value, dict):
        return {k: _versioned(v, version) for k, v in value.items()}
    if isinstance(value, list):
        return [_versioned(v, version) for v in value]
    return value


def _serialize(sobject: str, row: Mapping[str, Any], version: str) -> dict[str, Any]:
    record_id = row.get("Id")
    attributes: dict[str, Any] = {"type": sobject}
    if record_id is not None:
        attributes["url"] = f"/services/data/v{version}/sobjects/{sobject}/{record_id}"
    return {"attributes": attributes, **row}


# --- the SystemModstamp index --------------------------------------------------------------

_MERGE_AT: Final = 4096
"""Pending entries are merged once more than this many (or an eighth of the index) wait, so loads merge in steps."""
_INSORT_AT: Final = 64
"""Up to this many pending entries are inserted one by one (a memmove each); more are merged by one sort."""
_POSITION_DIGITS: Final = 10


class _StampIndex:
    """One object's records sorted by SystemModstamp, so a range query reads a slice instead of every record.

    An entry is the stamp, a NUL and the record's position in insertion order, zero-padded: one string, so
    entries sort by stamp then position with plain string comparisons (several times faster to sort than
    tuples), and a stamp alone bisects to its first entry. Insertion order is kept because rows come in that
    order when ORDER BY leaves ties.

    A changed stamp adds an entry rather than moving the old one, which would cost a search among equal
    stamps: the old entry goes stale (its stamp is no longer the record's) and is skipped, until stale
    entries outnumber records and are swept out. New entries wait unsorted and are merged into the suffix of
    the index they belong to: at the next read, or in steps while a bulk load of back-dated records goes on
    (so neither every insert nor the first query sorts them all).
    """

    def __init__(self) -> None:
        self._entries: list[str] = []
        self._pending: list[str] = []
        self._merge_at = _MERGE_AT
        self._records: list[dict[str, Any]] = []
        self._positions: dict[str, int] = {}
        self._stale = 0
        self.changes = 0
        """How many times a record was added, changed or removed: a query worked out beside them checks it."""

    def add(self, record: dict[str, Any]) -> None:
        self.changes += 1
        position = len(self._records)
        self._records.append(record)
        self._positions[record["Id"]] = position
        self._push(record.get(_INDEXED_FIELD), position)

    def remove(self, record: dict[str, Any]) -> None:
        """A record purged: its place holds an empty record, which makes its entries stale."""
        self.changes += 1
        self._records[self._positions.pop(record["Id"])] = {}
        self._stale += 1

    def restamped(self, record: dict[str, Any], old_stamp: Any) -> None:
        """A record changed (its stamp too, or not)."""
        self.changes += 1
        stamp = record.get(_INDEXED_FIELD)
        if stamp == old_stamp:
            return
        self._stale += old_stamp is not None
        self._push(stamp, self._positions[record["Id"]])

    def since(self, floor: str | None, *, insertion_order: bool, ceiling: str | None = None
              ) -> list[dict[str, Any]]:
        """The records stamped ``floor`` or later (and ``ceiling`` or earlier), in insertion order if asked, else
        in stamp order."""
        start, end = self.span(floor, ceiling)  # merges first: the entries may be a new list after
        entries, records = self._entries, self._records
        positions: list[int] = []
        previous = -1
        for index in range(start, end):
            entry = entries[index]
            position = int(entry[-_POSITION_DIGITS:])
            # an entry is current if the record still has its stamp; a record stamped A, B, then A again has
            # two equal current entries, next to each other
            if position != previous and records[position].get(_INDEXED_FIELD) == entry[: -_POSITION_DIGITS - 1]:
                positions.append(position)
                previous = position
        if insertion_order:
            positions.sort()
        return [records[position] for position in positions]

    def span(self, floor: str | None, ceiling: str | None) -> tuple[int, int]:
        """Where the entries stamped from ``floor`` to ``ceiling`` (both included; None: no bound) begin and end:
        their count is what a query answered from the index scans."""
        self._merge()
        entries = self._entries
        start = 0 if floor is None else bisect_left(entries, floor)
        end = len(entries) if ceiling is None else bisect_left(entries, f"{ceiling}\x01", start)  # its ties too
        return start, max(start, end)

    def _push(self, stamp: Any, position: int) -> None:
        if stamp is None:
            return  # no lower bound matches a record without a stamp
        self._pending.append(f"{stamp}\x00{position:0{_POSITION_DIGITS}d}")
        if len(self._pending) > self._merge_at:
            self._merge()

    def _merge(self) -> None:
        pending, entries = self._pending, self._entries
        if pending:
            pending.sort()
            start = bisect_left(entries, pending[0])
            if start == len(entries):
                entries.extend(pending)  # the usual case: records stamped now, after all others
            elif len(pending) <= _INSORT_AT:
                for entry in pending:
                    insort(entries, entry, lo=start)
            else:
                suffix = entries[start:]
                suffix.extend(pending)
                suffix.sort()  # two sorted runs: Timsort merges them
                entries[start:] = suffix
            pending.clear()
        if self._stale > max(_MERGE_AT, len(self._records)):
            self._sweep()
        self._merge_at = max(_MERGE_AT, len(self._entries) // 8)

    def _sweep(self) -> None:
        records = self._records
        current: list[str] = []
        previous = -1
        for entry in self._entries:
            position = int(entry[-_POSITION_DIGITS:])
            if position != previous and records[position].get(_INDEXED_FIELD) == entry[: -_POSITION_DIGITS - 1]:
                current.append(entry)
                previous = position
        self._entries = current
        self._stale = 0


# --- HTTP plumbing -------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """A threading server that tracks its connections so ``stop()`` can close keep-alive ones."""

    daemon_threads = True
    allow_reuse_address = True  # as HTTPServer: a restarted server may bind while old connections linger

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], sandbox: SalesforceSandbox
    ) -> None:
        super().__init__(address, handler)
        self.sandbox = sandbox
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Handle one connection, registered so that ``close_connections`` can end it."""
        with self._connections_lock:
            self._connections[request] = threading.current_thread()
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(request, None)

    def close_connections(self, timeout: float = 5.0) -> None:
        """Shut down open (keep-alive) connections and wait for their handler threads to end."""
        with self._connections_lock:
            connections = list(self._connections.items())
        for connection, _ in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for _, thread in connections:
            thread.join(timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: clients that go away or refuse our certificate are part of the tests."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't let the body wait 40 ms
    server_version = "SalesforceSandbox/1.0"
    timeout = 30

    @property
    def sandbox(self) -> SalesforceSandbox:
        return cast(_Server, self.server).sandbox

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        self.request.do_handshake()  # here, not in the accept loop: a slow client blocks only itself
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr lines."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        sandbox = self.sandbox
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if stall := sandbox._take_fault(sandbox._stalls, split.path):
            sandbox._wait(stall.seconds)
        if sandbox._take_fault(sandbox._drops, split.path):
            sandbox._record_call(ApiCall(self.command, split.path, split.query, 0))
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.request.shutdown(socket.SHUT_RDWR)
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = sandbox._api.handle(self.command, split.path, split.query, headers, body)
        sandbox._record_call(ApiCall(self.command, split.path, split.query, response.status, response.record_count))
        raw = isinstance(response.body, bytes)
        payload = response.body if raw else b"" if response.body is None else json.dumps(response.body).encode()
        headers = dict(response.headers)
        content_type = headers.pop("Content-Type", "application/json;charset=UTF-8")
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True
