"""The Salesforce REST client the worker uses: OAuth, SOQL with paging, describe, collection updates.

It wraps simple-salesforce (and requests for the OAuth call) so that the rest of Healthbeat
sees plain dicts, small dataclasses and one exception tree, never the libraries' objects.

Two OAuth 2.0 server-to-server flows log in (:attr:`SalesforceCredentials.flow`): client credentials (a
client secret; only at the org's My Domain URL, so the generic ``login.salesforce.com`` and
``test.salesforce.com`` are refused before any connection) and the JWT bearer flow (an RS256 assertion
signed with the private key whose certificate the connected app holds, for a pre-authorized username).
The assertion is built here with PyJWT: simple-salesforce's own JWT login posts to
``https://{domain}.salesforce.com`` and nowhere else.
Every failure that leaves this module is one of::

    SalesforceError                 anything Salesforce refused that fits no subclass (base class)
    ├── SalesforceAuthError         credentials refused, or a fresh session refused again
    ├── SalesforceLimitError        REQUEST_LIMIT_EXCEEDED for the daily limit: stop, keep progress, resume later
    ├── SalesforceQueryError        MALFORMED_QUERY, INVALID_FIELD, INVALID_TYPE, unknown sObject...
    │   └── SalesforceQueryTimeout  QUERY_TIMEOUT, or no first page within the read timeout: ask for less
    └── SalesforceUnavailable       5xx, timeouts, connection failures, once the retry policy gave up
        └── SalesforceBusy          REQUEST_LIMIT_EXCEEDED for too many concurrent requests: back off briefly

Messages name Salesforce and the login URL, the operation and Salesforce's error code, and
never the client secret, the private key or the access token. Behaviour the worker relies on:

- a 401 ``INVALID_SESSION_ID`` re-authenticates once and repeats that call (mid-way through
  paging too: cursors outlive sessions);
- transient failures are retried under :data:`TRANSIENT_RETRY` with an injectable sleep; so is
  ``REQUEST_LIMIT_EXCEEDED`` when its message names a concurrency limit (``ConcurrentRequests``,
  ``ConcurrentPerOrgLongTxn``), never when it is the daily limit (``TotalRequests``);
- a query that Salesforce stops (``QUERY_TIMEOUT``, after about two minutes) or whose first page does not
  come within the read timeout is :class:`SalesforceQueryTimeout`, not retried: the same query would time
  out again, and the caller asks for less (a narrower window);
- ``Sforce-Limit-Info`` from every response (errors included) updates :attr:`SalesforceClient.api_usage`;
- updates go in sObject Collections of at most 200 with ``allOrNone: false`` and the result
  list must match the request one to one, or the call fails loudly.

A client is not thread-safe; give each thread its own.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

import jwt
import requests
import tenacity
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError as _LibError
from simple_salesforce.exceptions import SalesforceExpiredSession as _LibExpiredSession
from simple_salesforce.util import call_salesforce

from connectors.salesforce.bulk import BulkAllocation, BulkJob, BulkResults, bulk_allocation, csv_records
from connectors.salesforce.ids import to_18

__all__ = [
    "BULK_POLL",
    "COLLECTION_LIMIT",
    "GENERIC_LOGIN_HOSTS",
    "JWT_BEARER_GRANT",
    "MY_DOMAIN_FORM",
    "TRANSIENT_RETRY",
    "ApiUsage",
    "BulkJob",
    "BulkResults",
    "LoginFlow",
    "RetryPolicy",
    "SalesforceAuthError",
    "SalesforceBusy",
    "SalesforceClient",
    "SalesforceCredentials",
    "SalesforceError",
    "SalesforceLimitError",
    "SalesforceQueryError",
    "SalesforceQueryTimeout",
    "SalesforceUnavailable",
    "WriteResult",
    "jwt_audience",
    "my_domain_problem",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

COLLECTION_LIMIT: Final = 200
"""Records per sObject Collections request (Salesforce's maximum)."""
_QUERY_ERROR_CODES: Final = frozenset(
    {
        "MALFORMED_QUERY",
        "INVALID_FIELD",
        "INVALID_TYPE",
        "INVALID_QUERY_FILTER_OPERATOR",
        "INVALID_QUERY_LOCATOR",
        "QUERY_TIMEOUT",
        "NUMBER_OUTSIDE_VALID_RANGE",
        "NOT_FOUND",
    }
)
JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GENERIC_LOGIN_HOSTS: Final = frozenset({"login.salesforce.com", "test.salesforce.com"})
"""Salesforce's shared login hosts: the JWT bearer flow works there, the client-credentials flow does not."""
MY_DOMAIN_FORM: Final = ("https://MyDomainName.my.salesforce.com (a sandbox org: "
                         "https://MyDomainName--SandboxName.sandbox.my.salesforce.com)")
JWT_LIFETIME: Final = 150
"""Seconds from signing to a JWT assertion's ``exp``: Salesforce wants it within three minutes; the half minute
to spare absorbs a clock a little ahead of Salesforce's."""
_LIMIT_INFO = re.compile(r"api-usage=(?P<used>\d+)/(?P<limit>\d+)")
_SOBJECT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


# --- values ------------------------------------------------------------------------------


LoginFlow = Literal["client_credentials", "jwt_bearer"]


@dataclass(frozen=True)
class SalesforceCredentials:
    """Where and how to log in: with ``client_secret``, the OAuth 2.0 client-credentials flow; with ``username``
    and ``private_key`` (PEM text, never a path: the caller decides where keys live), the JWT bearer flow."""

    login_url: str
    client_id: str
    client_secret: str = field(default="", repr=False)
    api_version: str = "59.0"
    ca_bundle: str | None = None  # PEM file to trust; None = the system's trust store
    username: str | None = None
    private_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.private_key and self.client_secret:
            raise ValueError("give a client secret (client-credentials flow) or a private key (JWT bearer flow), "
                             "not both")
        if self.private_key and not self.username:
            raise ValueError("the JWT bearer flow needs the username to log in as")

    @property
    def flow(self) -> LoginFlow:
        """The flow these credentials log in with: a private key means the JWT bearer flow."""
        return "jwt_bearer" if self.private_key else "client_credentials"

    @property
    def flow_name(self) -> str:
        """The flow in words, as Salesforce's documentation names it."""
        return "JWT bearer flow" if self.flow == "jwt_bearer" else "client-credentials flow"


def my_domain_problem(login_url: str) -> str | None:
    """Why the client-credentials flow cannot log in at ``login_url`` (Salesforce refuses it on the shared login
    hosts), or None when it may."""
    host = (urlsplit(login_url).hostname or "").lower()
    lightning = lightning_host_problem(login_url)
    if lightning is not None:
        return lightning
    if host not in GENERIC_LOGIN_HOSTS:
        return None
    return (f"{login_url} is Salesforce's shared login host, where the client-credentials flow is not supported: "
            f"set SALESFORCE_LOGIN_URL to your org's My Domain URL, {MY_DOMAIN_FORM}; Setup → My Domain shows it")


def lightning_host_problem(login_url: str) -> str | None:
    """The address of Lightning Experience pages (``acme.lightning.force.com``), copied from the browser, is not
    where Salesforce logs an integration in: say which address is, for either flow."""
    host = (urlsplit(login_url).hostname or "").lower()
    if not host.endswith(".lightning.force.com"):
        return None
    name = host.removesuffix(".lightning.force.com")
    return (f"{login_url} is the address of Salesforce's pages in the browser, not a login URL: set "
            f"SALESFORCE_LOGIN_URL to your org's My Domain URL, https://{name}.my.salesforce.com")


def jwt_audience(login_url: str) -> str:
    """The ``aud`` of a JWT bearer assertion: Salesforce documents ``https://login.salesforce.com``, and
    ``https://test.salesforce.com`` for a sandbox org, whichever host (My Domain or shared) receives it."""
    host = (urlsplit(login_url).hostname or "").lower()
    sandbox = host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com")
    return "https://test.salesforce.com" if sandbox else "https://login.salesforce.com"


@dataclass(frozen=True)
class WriteResult:
    """The outcome for one record of an update; ``errors`` are ``"CODE: message"`` strings."""

    record_id: str
    success: bool
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpsertResult:
    """The outcome for one record of an upsert on an external id: the record's Id when saved, whether it was
    created (else an existing record with that key was updated), and ``"CODE: message"`` errors."""

    record_id: str | None
    success: bool
    created: bool
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApiUsage:
    """Daily API requests used and allowed, from the latest ``Sforce-Limit-Info`` header."""

    used: int
    limit: int

    @property
    def share(self) -> float | None:
        """The part of the daily limit used; None when Salesforce reported no limit."""
        return self.used / self.limit if self.limit > 0 else None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with jitter for transient failures (see :data:`TRANSIENT_RETRY`)."""

    max_attempts: int = 4
    initial_wait: float = 0.5
    max_wait: float = 8.0
    jitter: float = 0.5


TRANSIENT_RETRY: Final = RetryPolicy()
"""The policy for 5xx, timeouts and connection failures: 4 attempts, 0.5 s doubling to 8 s, plus jitter."""
BULK_POLL: Final = (1.0, 30.0, 6 * 3600.0)
"""A Bulk API 2.0 query job is polled after 1 s, the wait doubling to 30 s, for at most 6 hours: a job of tens
of millions of records takes minutes (Salesforce retries a chunk 15 times before it fails the job), and a
state asked for every 30 s costs 120 calls an hour, nothing beside the daily limit."""


# --- exceptions --------------------------------------------------------------------------


class SalesforceError(Exception):
    """Base of this module's errors; ``status`` and ``error_code`` are Salesforce's when known."""

    def __init__(self, message: str, *, status: int | None = None, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class SalesforceAuthError(SalesforceError):
    """Salesforce refused the credentials, or refused a session it had just issued."""


class SalesforceLimitError(SalesforceError):
    """The org's daily API request limit is exhausted (``REQUEST_LIMIT_EXCEEDED``): do not retry."""


class SalesforceQueryError(SalesforceError):
    """Salesforce refused a query or describe: bad SOQL, unknown field or unknown sObject."""


class SalesforceQueryTimeout(SalesforceQueryError):
    """Salesforce stopped the query (``QUERY_TIMEOUT``) or sent no first page within the read timeout: the
    same query would fail the same way, so it is not retried; ask for fewer records (a narrower window)."""


class SalesforceUnavailable(SalesforceError):
    """Salesforce could not be reached or answered 5xx, still after the retry policy's attempts."""


class SalesforceBusy(SalesforceUnavailable):
    """``REQUEST_LIMIT_EXCEEDED`` for too many concurrent (long) requests, not the daily limit: it passes
    within seconds, so it is retried with back-off like any transient failure."""


# --- the client --------------------------------------------------------------------------


class SalesforceClient:
    """A session with one Salesforce org. ``connect()`` is optional: the first call connects."""

    def __init__(
        self,
        credentials: SalesforceCredentials,
        *,
        timeout: float = 120.0,
        retry_sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = TRANSIENT_RETRY.max_attempts,
        describe_ttl: float = 3600.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.credentials = credentials
        self.api_usage: ApiUsage | None = None
        self.session_calls = 0  # data API calls made on this client's own session
        self._sibling: SalesforceClient | None = None
        self.instance_url: str | None = None  # the org's own host, learnt at login (links to records)
        self._timeout = timeout
        self._retry_sleep = retry_sleep
        self._policy = RetryPolicy(
            max_attempts, TRANSIENT_RETRY.initial_wait, TRANSIENT_RETRY.max_wait, TRANSIENT_RETRY.jitter
        )
        self._verify: str | bool = credentials.ca_bundle or True
        self._http = requests.Session()
        self._http.verify = self._verify
        self._http.hooks["response"].append(self._observe)
        self._sf: Salesforce | None = None
        self._signing_key: RSAPrivateKey | None = None
        self._fields: dict[str, dict[str, str]] = {}
        self._updateable: dict[str, frozenset[str]] = {}
        self._described_at = time.monotonic()
        self.describe_ttl = describe_ttl
        self.poll_sleep: Callable[[float], None] = time.sleep
        """How a wait between polls of a Bulk API 2.0 job is spent (tests record the waits instead)."""
        self.bulk_jobs = 0  # Bulk API 2.0 query jobs this client created (the org's allocation counts them)
        self.bulk_bytes = 0  # bytes of Bulk API 2.0 results this client read

    def __enter__(self) -> SalesforceClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def calls(self) -> int:
        """Data API calls made by this client, its sibling's included (what the org's daily limit counts)."""
        return self.session_calls + (self._sibling.calls if self._sibling is not None else 0)

    def sibling(self) -> SalesforceClient:
        """A second session with the same org and settings, kept for the life of this one, for a second thread
        (a client is not thread-safe): its calls count among this client's :attr:`calls`."""
        if self._sibling is None:
            self._sibling = SalesforceClient(self.credentials, timeout=self._timeout, retry_sleep=self._retry_sleep,
                                             max_attempts=self._policy.max_attempts, describe_ttl=self.describe_ttl)
        return self._sibling

    def close(self) -> None:
        """Close pooled connections (the sibling's too)."""
        self._http.close()
        self._sf = None
        if self._sibling is not None:
            self._sibling.close()

    # --- public operations ---------------------------------------------------------------

    def connect(self) -> None:
        """Obtain an access token (client-credentials or JWT bearer flow) and open a session on the instance.

        Each connect also forgets the API usage figure (a new day may have reset it) and, once they are older
        than `describe_ttl`, the described fields (an admin may add one): the next calls report both afresh."""
        if time.monotonic() - self._described_at > self.describe_ttl:
            self.forget_fields()
        self.api_usage = None
        self._retrying("authenticate", self._authenticate)

    def describe_fields(self, sobject: str) -> dict[str, str]:
        """Field name → Salesforce type for ``sobject``, cached for the life of this client.

        Raises :class:`SalesforceQueryError` if the org has no such object (or hides it).
        """
        if not _SOBJECT_NAME.match(sobject):
            raise ValueError(f"not an sObject name: {sobject!r}")
        key = sobject.lower()
        if key not in self._fields:
            body = self._call("describe", lambda sf: self._describe(sf, sobject))
            try:
                self._fields[key] = {str(f["name"]): str(f["type"]) for f in body["fields"]}
                self._updateable[key] = frozenset(str(f["name"]) for f in body["fields"] if f.get("updateable"))
            except (KeyError, TypeError, AttributeError):
                raise SalesforceError(f"Salesforce describe of {sobject} returned no field list") from None
        return dict(self._fields[key])

    def updateable_fields(self, sobject: str) -> frozenset[str]:
        """The fields of ``sobject`` the integration user may write (describe's ``updateable``): field-level
        security can make a field read-only for that user alone, and writing one fails the whole record."""
        self.describe_fields(sobject)
        return self._updateable[sobject.lower()]

    def forget_fields(self) -> None:
        """Describe again at the next use (a field was added or removed, or the cache is old); the sibling
        too, so that both sessions plan the same queries."""
        self._fields.clear()
        self._updateable.clear()
        self._described_at = time.monotonic()
        if self._sibling is not None:
            self._sibling.forget_fields()

    def missing_fields(self, sobject: str, names: Iterable[str]) -> list[str]:
        """Those of ``names`` that ``sobject`` lacks, compared case-insensitively as Salesforce does."""
        present = {name.lower() for name in self.describe_fields(sobject)}
        return [name for name in names if name.lower() not in present]

    def query(self, soql: str, *, include_deleted: bool = False) -> Iterator[dict[str, Any]]:
        """Yield every record of ``soql`` (``queryAll`` with ``include_deleted``), page by page.

        Follows ``nextRecordsUrl`` lazily to the end, whatever batch size Salesforce picks;
        ``attributes`` are removed from records. A locator returned twice is an error, not a loop.
        """
        for records in self.query_pages(soql, include_deleted=include_deleted):
            yield from records

    def first_page(self, soql: str, *, include_deleted: bool = False) -> dict[str, Any]:
        """The first response to ``soql`` as Salesforce sent it, for :meth:`query_pages` to go on from.

        A query locator (``nextRecordsUrl``) belongs to the user, not the session: the first page may be
        asked for on a :meth:`sibling` session and the rest on this one."""
        page = self._call("query", functools.partial(self._first_page, soql=soql, include_deleted=include_deleted))
        if not isinstance(page, dict):
            raise SalesforceError("Salesforce returned a query page that is not a JSON object")
        return page

    def query_pages(self, soql: str, *, include_deleted: bool = False, first: dict[str, Any] | None = None
                    ) -> Iterator[list[dict[str, Any]]]:
        """:meth:`query` a response at a time: each batch Salesforce sent, as one list.

        For a reader that works a page at a time (the sync stores pages); the next page is asked for
        only when the caller wants it, as with :meth:`query`. ``first``: the first response, already asked
        for (:meth:`first_page`).
        """
        page = first if first is not None else self.first_page(soql, include_deleted=include_deleted)
        seen: set[str] = set()
        while True:
            records = page.get("records") if isinstance(page, dict) else None
            if not isinstance(records, list):
                raise SalesforceError("Salesforce returned a query page without a records list")
            if records:
                yield [_plain(record) for record in records]
            if page.get("done", True):
                return
            next_url = page.get("nextRecordsUrl")
            if not isinstance(next_url, str) or next_url in seen:
                raise SalesforceError(f"Salesforce paging is stuck (nextRecordsUrl {next_url!r} repeated or missing)")
            seen.add(next_url)
            page = self._call("query_more", functools.partial(self._query_more, url=next_url))

    def count(self, soql: str, *, include_deleted: bool = False) -> int:
        """How many records a ``SELECT COUNT() ...`` query counts (its ``totalSize``): one call."""
        size = self.first_page(soql, include_deleted=include_deleted).get("totalSize")
        if not isinstance(size, int):
            raise SalesforceError("Salesforce answered a COUNT() query without a totalSize")
        return size

    def limits(self) -> dict[str, Any]:
        """The org's allocations now (``/limits``: ``DailyApiRequests``, ``DailyBulkV2QueryJobs``,
        ``DailyBulkV2QueryFileStorageMB``..., each ``{"Max", "Remaining"}``); one call."""
        body = self._call("limits", lambda sf: sf.restful("limits", **self._kwargs()))
        if not isinstance(body, dict):
            raise SalesforceError("Salesforce answered /limits with something other than an object")
        return body

    def bulk_allocation(self) -> BulkAllocation | None:
        """The org's Bulk API 2.0 query allocation left today (one call to ``/limits``), or None when Salesforce
        does not say or refuses ``/limits``: `doctor` and `/metrics` report what they can."""
        try:
            return bulk_allocation(self.limits())
        except SalesforceError:
            return None

    # --- Bulk API 2.0 query jobs (connectors.salesforce.bulk) ---------------------------------
    #
    # simple-salesforce's own bulk2 query (``sf.bulk2.Task.query_all``) is not used: it hides the job's id inside
    # its generator (a restarted worker could not go on reading a job's results by locator), waits with
    # ``time.sleep`` from a fixed 5 s on for up to 24 hours, and ends a failed job with an error that no longer
    # says Failed or Aborted. The calls go through its ``call_salesforce`` on this client's session instead, so
    # that the retry policy, the re-login on an expired session, the error tree and the API usage apply.

    def create_query_job(self, soql: str, *, include_deleted: bool = False) -> BulkJob:
        """Start a Bulk API 2.0 query job (``queryAll`` with ``include_deleted``); one call."""
        body = json.dumps({"operation": "queryAll" if include_deleted else "query", "query": soql,
                           "contentType": "CSV", "columnDelimiter": "COMMA", "lineEnding": "LF"})
        info = self._call("bulk query job", lambda sf: self._bulk(sf, "POST", "query", data=body).json())
        self.bulk_jobs += 1
        return _job(info)

    def query_job(self, job_id: str) -> BulkJob:
        """A query job's state now; :class:`SalesforceQueryError` (``NOT_FOUND``) once Salesforce deleted it."""
        return _job(self._call("bulk query job state", lambda sf: self._bulk(sf, "GET", f"query/{job_id}").json()))

    def wait_for_query_job(self, job_id: str, *, poll: tuple[float, float, float] = BULK_POLL) -> BulkJob:
        """Poll a query job until it ends (JobComplete, Failed or Aborted), waiting ``poll``'s first wait, doubled
        after each poll up to its longest; a job still running after ``poll``'s limit is aborted and returned so."""
        first, longest, limit = poll
        wait, waited = first, 0.0
        while True:
            job = self.query_job(job_id)
            if job.done:
                return job
            if waited >= limit:
                logger.warning("Salesforce query job %s still %s after %.0f s; aborting it", job_id, job.state, waited)
                self.abort_query_job(job_id)
                return BulkJob(job_id, "Aborted", f"still {job.state} after {waited:.0f} s")
            self.poll_sleep(wait)
            waited += wait
            wait = min(wait * 2, longest)

    def abort_query_job(self, job_id: str) -> None:
        """Abort a query job that has not ended (``PATCH {"state": "Aborted"}``)."""
        body = json.dumps({"state": "Aborted"})
        self._call("bulk query job abort", lambda sf: self._bulk(sf, "PATCH", f"query/{job_id}", data=body))

    def query_job_results(self, job_id: str, types: dict[str, str], *, locator: str | None = None,
                          max_records: int = 20_000) -> BulkResults:
        """One set of a complete job's results, at most ``max_records``, from ``locator`` (None: the first),
        as REST's typed records (by ``types``, field → describe type); its next locator, None after the last."""
        params: dict[str, str | int] = {"maxRecords": max_records}
        if locator:
            params["locator"] = locator
        response = self._call("bulk query results", lambda sf: self._bulk(
            sf, "GET", f"query/{job_id}/results", params=params, accept="text/csv"))
        after = response.headers.get("Sforce-Locator")
        content = response.content
        self.bulk_bytes += len(content)
        try:
            records = csv_records(content, types)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SalesforceError(f"Salesforce sent query job {job_id}'s results in a form not CSV: {exc}") from None
        expected = response.headers.get("Sforce-NumberOfRecords")
        if expected is not None and expected.isdigit() and int(expected) != len(records):
            raise SalesforceError(f"Salesforce said {expected} records of query job {job_id} and sent {len(records)}")
        return BulkResults(records, None if after in (None, "", "null") else after, len(content))

    def update_records(self, sobject: str, records: Sequence[dict[str, Any]]) -> list[WriteResult]:
        """Update ``records`` (each with ``"Id"``) in collections of 200; one result per record, in order.

        Uses ``allOrNone: false``, so one bad record does not hold back the others; its result
        carries Salesforce's errors. Raises :class:`SalesforceError` if Salesforce's answer does
        not match the request one to one.
        """
        if not _SOBJECT_NAME.match(sobject):
            raise ValueError(f"not an sObject name: {sobject!r}")
        ids = [_record_id(record, index) for index, record in enumerate(records)]
        duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
        if duplicates:
            raise ValueError(f"the same record appears twice in one update: {duplicates[:3]}")
        results: list[WriteResult] = []
        for start in range(0, len(records), COLLECTION_LIMIT):
            chunk = records[start : start + COLLECTION_LIMIT]
            chunk_ids = [str(record["Id"]) for record in chunk]
            body = json.dumps(
                {
                    "allOrNone": False,
                    "records": [
                        {
                            "attributes": {"type": sobject},
                            "id": record["Id"],
                            **{k: v for k, v in record.items() if k != "Id"},
                        }
                        for record in chunk
                    ],
                },
                default=_json_value,
            )
            answer = self._call("update", functools.partial(self._patch_collection, body=body))
            results.extend(_match_results(sobject, chunk_ids, answer))
        return results

    def upsert_records(self, sobject: str, external_id: str, records: Sequence[dict[str, Any]]) -> list[UpsertResult]:
        """Upsert ``records`` on their ``external_id`` field in collections of 200 (``PATCH
        composite/sobjects/{sobject}/{external_id}``, ``allOrNone: false``); one result per record, in order.

        Sent twice, the same records update what the first send created: a write that may be repeated after a
        crash never duplicates. Raises :class:`SalesforceError` if the answer does not match the request one to
        one, and ``ValueError`` for a record without its key or a key twice in one call (Salesforce refuses
        both records)."""
        for name in (sobject, external_id):
            if not _SOBJECT_NAME.match(name):
                raise ValueError(f"not an API name: {name!r}")
        keys = [record.get(external_id) for record in records]
        if any(key in (None, "") for key in keys):
            raise ValueError(f"every record of an upsert on {external_id} needs a value for it")
        duplicates = sorted(str(k) for k, n in Counter(keys).items() if n > 1)
        if duplicates:
            raise ValueError(f"the same {external_id} appears twice in one upsert: {duplicates[:3]}")
        path = f"composite/sobjects/{sobject}/{external_id}"
        results: list[UpsertResult] = []
        for start in range(0, len(records), COLLECTION_LIMIT):
            chunk = records[start : start + COLLECTION_LIMIT]
            body = json.dumps(
                {"allOrNone": False, "records": [{"attributes": {"type": sobject}, **record} for record in chunk]},
                default=_json_value,
            )
            answer = self._call("upsert", functools.partial(self._patch_collection, body=body, path=path))
            results.extend(_upsert_results(sobject, len(chunk), answer))
        return results

    # --- plumbing ------------------------------------------------------------------------

    def _kwargs(self) -> dict[str, Any]:
        # verify on every request: a session-level verify loses to REQUESTS_CA_BUNDLE in requests
        return {"timeout": self._timeout, "verify": self._verify}

    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Response hook: count data API calls and read ``Sforce-Limit-Info`` (errors included)."""
        if "/services/data/" in urlsplit(response.url).path:
            self.session_calls += 1
        match = _LIMIT_INFO.search(response.headers.get("Sforce-Limit-Info", ""))
        if match:
            self.api_usage = ApiUsage(int(match["used"]), int(match["limit"]))

    def _authenticate(self) -> None:
        creds = self.credentials
        where = f"Salesforce at {creds.login_url}"
        if creds.flow == "jwt_bearer":
            form = {"grant_type": JWT_BEARER_GRANT, "assertion": self._assertion()}
        else:
            problem = my_domain_problem(creds.login_url)
            if problem is not None:
                raise SalesforceAuthError(f"cannot log in to {where} with the client-credentials flow: {problem}")
            form = {"grant_type": "client_credentials", "client_id": creds.client_id,
                    "client_secret": creds.client_secret}
        try:
            response = self._http.post(
                creds.login_url.rstrip("/") + "/services/oauth2/token",
                data=form,
                timeout=self._timeout,
                verify=self._verify,
            )
        except requests.RequestException as exc:
            raise _translate_transport(exc, f"login to {where}") from None
        if response.status_code >= 500:
            raise SalesforceUnavailable(
                f"login to {where} failed: HTTP {response.status_code}", status=response.status_code
            )
        body = _json_or_none(response)
        token = body.get("access_token") if isinstance(body, dict) else None
        instance_url = body.get("instance_url") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(token, str) or not isinstance(instance_url, str):
            error = str(body.get("error", "")) if isinstance(body, dict) else ""
            description = str(body.get("error_description", "")) if isinstance(body, dict) else ""
            who = f" as {creds.username}" if creds.flow == "jwt_bearer" else ""
            raise SalesforceAuthError(
                f"{where} refused the {creds.flow_name} login{who} "
                f"(HTTP {response.status_code} {error}: {description}); {_login_hint(creds, error, description)}",
                status=response.status_code,
                error_code=error or None,
            )
        self.instance_url = instance_url.rstrip("/")
        self._sf = Salesforce(
            instance_url=instance_url,
            session_id=token,
            version=creds.api_version,
            session=self._http,
            # plain dicts from json's own fast path: a hook (even ``dict``) makes the parse of each page far
            # slower (measured: BENCHMARKS.md, 'Figures behind the code')
            object_pairs_hook=None,
        )

    def _assertion(self) -> str:
        """A fresh JWT bearer assertion, signed now: each login (a re-login after an expired session too)
        signs its own, since one expires minutes after it is made."""
        creds = self.credentials
        if self._signing_key is None:
            self._signing_key = _signing_key(creds.private_key or "")
        claims = {"iss": creds.client_id, "sub": creds.username, "aud": jwt_audience(creds.login_url),
                  "exp": int(time.time()) + JWT_LIFETIME}
        return jwt.encode(claims, self._signing_key, algorithm="RS256")

    def _first_page(self, sf: Salesforce, soql: str, include_deleted: bool) -> Any:
        try:
            return sf.query(soql, include_deleted=include_deleted, **self._kwargs())
        except requests.exceptions.ReadTimeout:
            raise SalesforceQueryTimeout(
                f"Salesforce sent no first page of a query within {self._timeout:g} s (the read timeout)",
                error_code="QUERY_TIMEOUT",
            ) from None

    def _query_more(self, sf: Salesforce, url: str) -> Any:
        return sf.query_more(url, identifier_is_url=True, **self._kwargs())

    def _bulk(self, sf: Salesforce, method: str, path: str, *, accept: str = "application/json",
              **kwargs: Any) -> requests.Response:
        headers = {**sf.headers, "Accept": accept}
        return call_salesforce(f"{sf.bulk2_url}{path}", method, self._http, headers, **kwargs, **self._kwargs())

    def _patch_collection(self, sf: Salesforce, body: str, path: str = "composite/sobjects") -> Any:
        return sf.restful(path, method="PATCH", data=body, **self._kwargs())

    def _describe(self, sf: Salesforce, sobject: str) -> Any:
        try:
            return sf.restful(f"sobjects/{sobject}/describe", **self._kwargs())
        except _LibError as exc:
            if exc.status == 404:
                raise SalesforceQueryError(
                    f"Salesforce has no sObject {sobject!r} (describe answered NOT_FOUND): it is not enabled "
                    "in this org or not visible to the integration user",
                    status=404,
                    error_code="NOT_FOUND",
                ) from None
            raise

    def _call(self, operation: str, request: Callable[[Salesforce], T]) -> T:
        """Run ``request`` under the retry policy, re-authenticating once on an expired session."""
        return self._retrying(operation, lambda: self._attempt(operation, request))

    def _attempt(self, operation: str, request: Callable[[Salesforce], T]) -> T:
        if self._sf is None:
            self._authenticate()
        assert self._sf is not None
        try:
            return request(self._sf)
        except _LibExpiredSession:
            logger.info("Salesforce session expired during %s; re-authenticating once", operation)
        except (_LibError, requests.RequestException) as exc:
            raise _translate(exc, operation) from None
        self._sf = None
        self._authenticate()
        assert self._sf is not None
        try:
            return request(self._sf)
        except _LibExpiredSession:
            raise SalesforceAuthError(
                f"Salesforce at {self.credentials.login_url} refused a session it had just issued "
                f"(INVALID_SESSION_ID during {operation}); check the integration user's access",
                status=401,
                error_code="INVALID_SESSION_ID",
            ) from None
        except (_LibError, requests.RequestException) as exc:
            raise _translate(exc, operation) from None

    def _retrying(self, operation: str, action: Callable[[], T]) -> T:
        policy = self._policy
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(SalesforceUnavailable),
            stop=tenacity.stop_after_attempt(policy.max_attempts),
            # exponential plus additive jitter, composed so that every tenacity >= 8.2 accepts it
            wait=tenacity.wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait)
            + tenacity.wait_random(0, policy.jitter),
            sleep=self._retry_sleep,
            before_sleep=lambda state: logger.warning(
                "Salesforce %s failed (%s); attempt %d of %d, retrying in %.1f s",
                operation,
                state.outcome.exception() if state.outcome else "?",
                state.attempt_number,
                policy.max_attempts,
                state.next_action.sleep if state.next_action else 0.0,
            ),
            reraise=False,
        )
        try:
            return retrying(action)
        except tenacity.RetryError as exc:
            last = exc.last_attempt.exception()
            status = last.status if isinstance(last, SalesforceError) else None
            kind = SalesforceBusy if isinstance(last, SalesforceBusy) else SalesforceUnavailable
            raise kind(
                f"Salesforce {operation} failed after {policy.max_attempts} attempts: {last}",
                status=status,
                error_code=last.error_code if isinstance(last, SalesforceError) else None,
            ) from None


# --- helpers -------------------------------------------------------------------------------


def _signing_key(pem: str) -> RSAPrivateKey:
    """The RSA private key in ``pem``; anything else is an auth error that never quotes the text."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):  # not PEM, damaged, or encrypted
        key = None
    if not isinstance(key, RSAPrivateKey):
        raise SalesforceAuthError("the private key for the JWT bearer flow is not an unencrypted PEM RSA private key "
                                  "(Salesforce verifies RS256 signatures against the connected app's certificate)")
    return key


def _login_hint(creds: SalesforceCredentials, error: str, description: str) -> str:
    """What to check when Salesforce refuses a login, by flow and by Salesforce's error."""
    described = description.lower()
    if creds.flow == "client_credentials":
        if error == "invalid_grant" and "client credentials user" in described:
            return "give the External Client App a Run As user in its client-credentials policy"
        if error == "invalid_grant":
            return (f"check SALESFORCE_LOGIN_URL: the client-credentials flow works only at your org's My Domain "
                    f"URL, {MY_DOMAIN_FORM}")
        return ("check SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET and the connected app's "
                "client-credentials setting")
    if error in ("invalid_client_id", "invalid_client"):
        return "check SALESFORCE_CLIENT_ID (the connected app's consumer key)"
    if error == "invalid_app_access" or "approved" in described:
        return (f"pre-authorize {creds.username} (SALESFORCE_USERNAME): in the connected app's policies choose "
                "'Admin approved users are pre-authorized' and add the user's profile or a permission set of theirs")
    if "audience" in described:
        return (f"the assertion's audience was {jwt_audience(creds.login_url)}: a sandbox org logs in at "
                "https://test.salesforce.com or its My Domain URL ending .sandbox.my.salesforce.com "
                "(SALESFORCE_LOGIN_URL)")
    if "expired" in described:
        return "the assertion had expired when Salesforce read it: check this machine's clock (NTP)"
    if error == "invalid_grant":
        return ("check that SALESFORCE_PRIVATE_KEY_FILE is the private key of the certificate uploaded to the "
                "connected app (Use digital signatures), and this machine's clock")
    return "check SALESFORCE_CLIENT_ID, SALESFORCE_USERNAME and SALESFORCE_PRIVATE_KEY_FILE"


def _translate(exc: Exception, operation: str) -> SalesforceError:
    """Map a simple-salesforce or requests exception to this module's tree."""
    if isinstance(exc, requests.RequestException):
        return _translate_transport(exc, f"Salesforce {operation}")
    assert isinstance(exc, _LibError)
    code, message = _error_detail(exc.content)
    text = f"Salesforce {operation} failed: HTTP {exc.status} {code or ''}: {message}".replace(" :", ":")
    if exc.status >= 500:
        return SalesforceUnavailable(text, status=exc.status, error_code=code)
    if code == "REQUEST_LIMIT_EXCEEDED" and "concurrent" in message.lower():
        return SalesforceBusy(
            f"Salesforce refused {operation}: too many concurrent requests in the org ({message}); backing off",
            status=exc.status,
            error_code=code,
        )
    if code == "REQUEST_LIMIT_EXCEEDED":
        return SalesforceLimitError(
            f"Salesforce daily API request limit reached during {operation} ({message}); stopping until it resets",
            status=exc.status,
            error_code=code,
        )
    if code == "QUERY_TIMEOUT":
        return SalesforceQueryTimeout(text, status=exc.status, error_code=code)
    if code in _QUERY_ERROR_CODES:
        return SalesforceQueryError(text, status=exc.status, error_code=code)
    return SalesforceError(text, status=exc.status, error_code=code)


def _translate_transport(exc: requests.RequestException, what: str) -> SalesforceError:
    if isinstance(exc, requests.exceptions.SSLError):
        return SalesforceError(
            f"{what} failed TLS verification ({_reason(exc)}); set the CA bundle if this Salesforce uses a private CA"
        )
    if isinstance(exc, requests.Timeout | requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
        return SalesforceUnavailable(f"{what} failed: {type(exc).__name__} ({_reason(exc)})")
    if isinstance(exc, requests.exceptions.JSONDecodeError):
        return SalesforceError(f"{what} failed: the response was not JSON")
    return SalesforceError(f"{what} failed: {type(exc).__name__} ({_reason(exc)})")


def _reason(exc: BaseException) -> str:
    """The innermost cause's text, short: requests' own messages repeat whole URLs and pools."""
    while exc.__cause__ is not None or (exc.args and isinstance(exc.args[0], BaseException)):
        exc = exc.__cause__ or exc.args[0]
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


def _error_detail(content: Any) -> tuple[str | None, str]:
    """``(errorCode, message)`` from a Salesforce error body (a list of errors, a dict, or text)."""
    if isinstance(content, list) and content and isinstance(content[0], dict):
        content = content[0]
    if isinstance(content, dict):
        code = content.get("errorCode") or content.get("error")
        message = content.get("message") or content.get("error_description") or ""
        return (str(code) if code else None), str(message)
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    return None, str(content)[:300]


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _plain(record: Any) -> dict[str, Any]:
    """A record without ``attributes`` (nested relationship records too).

    Changed in place: the record was parsed for us alone, and a copy of each of a backfill's million
    records costs more than the rest of the page's handling in this module."""
    if not isinstance(record, dict):
        raise SalesforceError("Salesforce returned a record that is not an object")
    record.pop("attributes", None)
    if dict in map(type, record.values()):  # a relationship field (Owner.Name...): rare, so tested cheaply
        for key, value in record.items():
            if isinstance(value, dict) and "attributes" in value:
                record[key] = _plain(value)
    return record


def _job(info: Any) -> BulkJob:
    try:
        return BulkJob.from_info(info)
    except ValueError:
        raise SalesforceError("Salesforce answered a Bulk API 2.0 query job call without the job's id and state") \
            from None


def _record_id(record: Any, index: int) -> str:
    record_id = record.get("Id") if isinstance(record, dict) else None
    if not isinstance(record_id, str):
        raise ValueError(f'record {index} has no "Id"')
    return to_18(record_id)


def _json_value(value: Any) -> Any:
    """JSON for values json cannot encode: datetimes as UTC ``...Z``, dates, decimals."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give it a time zone")
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot send {type(value).__name__} to Salesforce")


def _upsert_results(sobject: str, count: int, answer: Any) -> list[UpsertResult]:
    """Salesforce's results of an upsert, refusing any answer that is not one per record."""
    if not isinstance(answer, list) or len(answer) != count:
        got = len(answer) if isinstance(answer, list) else type(answer).__name__
        raise SalesforceError(
            f"Salesforce answered an upsert of {count} {sobject} records with {got} results; "
            "refusing to guess which were saved"
        )
    results = []
    for item in answer:
        if not isinstance(item, dict) or not isinstance(item.get("success"), bool):
            raise SalesforceError(f"Salesforce returned a malformed upsert result for {sobject}")
        errors = tuple(
            f"{e.get('statusCode', 'UNKNOWN')}: {e.get('message', '')}"
            for e in item.get("errors") or ()
            if isinstance(e, dict)
        )
        record_id = item.get("id")
        results.append(UpsertResult(str(record_id) if record_id else None, item["success"],
                                    item.get("created") is True, errors))
    return results


def _match_results(sobject: str, ids: list[str], answer: Any) -> list[WriteResult]:
    """Pair Salesforce's results with the request, refusing any answer that is not one to one."""
    if not isinstance(answer, list) or len(answer) != len(ids):
        got = len(answer) if isinstance(answer, list) else type(answer).__name__
        raise SalesforceError(
            f"Salesforce answered an update of {len(ids)} {sobject} records with {got} results; "
            "refusing to guess which were saved"
        )
    results = []
    for requested, item in zip(ids, answer, strict=True):
        if not isinstance(item, dict) or not isinstance(item.get("success"), bool):
            raise SalesforceError(f"Salesforce returned a malformed result for {sobject} {requested}")
        returned = item.get("id")
        if returned is not None and to_18(str(returned)) != to_18(requested):
            raise SalesforceError(
                f"Salesforce results are out of order: expected {requested}, got {returned}; "
                "refusing to guess which were saved"
            )
        errors = tuple(
            f"{e.get('statusCode', 'UNKNOWN')}: {e.get('message', '')}"
            for e in item.get("errors") or ()
            if isinstance(e, dict)
        )
        results.append(WriteResult(requested, item["success"], errors))
    return results
