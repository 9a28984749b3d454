"""Zendesk Support API adapter: httpx for HTTP, tenacity for retries, records out.

Nothing from httpx or tenacity leaves this module. Callers get the records of
:mod:`connectors.zendesk.records` and, when something goes wrong, one of these::

    ZendeskError                      anything this module raises; ``status`` is the HTTP status or None
     ├── ZendeskAuthError             401/403: wrong email or token, or not allowed (exports need an
     │                                admin). A configuration problem: never retried.
     ├── ZendeskUnavailable           5xx, timeouts, connection errors once retries are spent, or an
     │    │                           answer not in the documented shape. Try again next cycle.
     │    └── ZendeskRateLimited      still 429 after ``max_attempts``, or asked to wait longer than a
     │                                cycle should block (``retry_after`` says how long).
     └── ZendeskRequestError          any other 4xx: this request is wrong; retrying cannot help.
          ├── ZendeskNotFound         404, e.g. the comments of a ticket deleted since the export.
          └── ZendeskCursorRejected   a stored export cursor refused even after one fall-back to
                                      ``start_time`` (the fall-back itself is automatic).

    records.ZendeskRecordError is separate (a ValueError): one malformed record. Streaming
    methods never raise it; they yield the record as a ``BadRecord`` and go on.

Retry policy, in one place (``_raise_for_status`` and ``_wait``): 429 waits exactly ``Retry-After``
seconds; 5xx, timeouts and connection errors back off exponentially with jitter; every wait
goes through the injectable ``sleep`` and the whole is bounded by ``max_attempts``.

Pacing, so that a long backfill never has to be told off with a 429 in the first place, and leaves
the account's other integrations their share (developer.zendesk.com/api-reference/introduction/
rate-limits/: the per-minute limit, 200 to 700 by plan, is one for the whole account):

- every request fits one client-side budget, ``api_requests_per_minute`` (100 by default, half the
  smallest plan's limit);
- the incremental exports (tickets and ticket events) fit ``requests_per_minute`` on top (Zendesk
  allows them 10 a minute);
- when an answer's ``X-Rate-Limit-Remaining`` says the account has less than a tenth of its
  ``X-Rate-Limit`` left this minute, the next request waits the minute out instead of taking the
  customer's last requests.

Comments come in bulk from the ticket event export (``ticket_event_pages``), a thousand events a
call; ``ticket_comments`` reads one ticket's, for repairs only.
"""

from __future__ import annotations

import logging
import math
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from connectors.zendesk.events import TicketMetrics, comments_of_event, parse_metric_set
from connectors.zendesk.records import (
    BadRecord,
    ZendeskComment,
    ZendeskOrganization,
    ZendeskRecordError,
    ZendeskTicket,
    ZendeskUser,
    parse_comment,
    parse_organization,
    parse_ticket,
    parse_user,
)

__all__ = [
    "EventPage",
    "TicketPage",
    "ZendeskAuthError",
    "ZendeskClient",
    "ZendeskCursorRejected",
    "ZendeskError",
    "ZendeskNotFound",
    "ZendeskRateLimited",
    "ZendeskRequestError",
    "ZendeskUnavailable",
]

_log = logging.getLogger(__name__)
_R = TypeVar("_R")

_EXPORT_PATH = "/api/v2/incremental/tickets/cursor.json"
_EVENTS_PATH = "/api/v2/incremental/ticket_events.json"
_SHOW_MANY_CHUNK = 100  # Zendesk's limit on ids per users/show_many call
_PAGE_SIZE = 100  # Zendesk's ceiling for cursor pagination
_START_TIME_MIN_AGE = 65.0  # Zendesk wants start_time >= 60 s old; 5 s more for clock skew
_DEFAULT_RETRY_AFTER = 60.0  # a 429 without Retry-After: wait out Zendesk's one-minute window
_MAX_RETRY_AFTER = 300.0  # longer than this, stop and let the next cycle resume
_PACING_MARGIN = 0.5  # seconds added to each paced wait, for the gap between our clock and Zendesk's
_ACCOUNT_RESERVE = 0.1  # share of the account's per-minute limit left to the customer's other integrations
_ACCOUNT_WINDOW = 60.0  # Zendesk's limits are per minute: after one, what the account spent is spent no more


class ZendeskError(Exception):
    """Base of every error this module raises; see the module docstring for the tree."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ZendeskAuthError(ZendeskError):
    """Credentials refused (401) or not allowed (403); fix ZENDESK_EMAIL / ZENDESK_API_TOKEN."""


class ZendeskUnavailable(ZendeskError):
    """Zendesk could not be reached or did not answer properly, even after retrying."""


class ZendeskRateLimited(ZendeskUnavailable):
    """Zendesk kept answering 429; ``retry_after`` is its last word on how long to wait."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after


class ZendeskRequestError(ZendeskError):
    """Zendesk refused this request as wrong (4xx); ``error`` and ``description`` are its words."""

    def __init__(self, message: str, *, status: int, error: str = "", description: str = "") -> None:
        super().__init__(message, status=status)
        self.error = error
        self.description = description


class ZendeskNotFound(ZendeskRequestError):
    """The record asked for does not exist (any more)."""


class ZendeskCursorRejected(ZendeskRequestError):
    """An export cursor was refused and the one fall-back to ``start_time`` was already spent."""


@dataclass(frozen=True)
class TicketPage:
    """One page of the incremental export.

    Store ``after_cursor`` (when not None) together with the page's tickets, in one
    transaction: resuming from it later returns exactly what changed after this page.
    ``tickets`` holds ``BadRecord`` items for tickets that failed to parse.
    """

    tickets: list[ZendeskTicket | BadRecord]
    after_cursor: str | None
    end_of_stream: bool
    metrics: Mapping[int, TicketMetrics] = field(default_factory=dict)
    """The page's tickets' metric sets by ticket id (its true ``solved_at``); a ticket may lack one."""


@dataclass(frozen=True)
class EventPage:
    """One page of the ticket event export: the comments its events made, and where to resume.

    Store ``next_start`` together with the page's comments, in one transaction, and start the next
    export there: it is the page's ``end_time``, so that second's events come again (Zendesk's
    time-based exports repeat the items at a page's edge; storing by comment id absorbs them).
    ``comments`` holds ``BadRecord`` items for comments or events that failed to parse;
    ``unread_tickets`` the tickets whose events named a comment without giving its text.
    """

    comments: list[ZendeskComment | BadRecord]
    unread_tickets: frozenset[int]
    events: int
    next_start: datetime
    end_of_stream: bool


class _Transient(Exception):
    """Internal: a failure worth retrying; becomes ZendeskUnavailable if retries run out."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    def public(self) -> ZendeskUnavailable:
        if self.status == 429:
            return ZendeskRateLimited(str(self), retry_after=self.retry_after or _DEFAULT_RETRY_AFTER)
        return ZendeskUnavailable(str(self), status=self.status)


class _Pacer:
    """At most ``limit`` requests in any rolling minute, by waiting before the next one.

    A sliding log rather than a token bucket: a bucket that starts full allows a burst of
    ``limit`` and then one more a few seconds later, which a rolling-minute server limit
    (Zendesk's) answers with 429. The clock only moves forward as far as we trust it: a wait
    is never longer than the window, even if the clock jumped back.
    """

    def __init__(self, limit: int, clock: Callable[[], float], sleep: Callable[[float], None],
                 window: float = 60.0, *, name: str = "requests_per_minute", what: str = "requests") -> None:
        if limit < 1:
            raise ValueError(f"{name} must be at least 1, got {limit}")
        self._what = what
        self._limit = limit
        self._clock = clock
        self._sleep = sleep
        self._window = window
        self._sent: deque[float] = deque()

    def wait(self) -> None:
        now = self._clock()
        while self._sent and self._sent[0] <= now - self._window:
            self._sent.popleft()
        if len(self._sent) >= self._limit:
            delay = min(self._window, self._sent[0] + self._window + _PACING_MARGIN - now)
            if delay > 0:
                _log.debug("pacing Zendesk %s to %d a minute: waiting %.1f s", self._what, self._limit, delay)
                self._sleep(delay)
            self._sent.popleft()
            now = self._clock()
        self._sent.append(now)


class ZendeskClient:
    """Reads tickets, comments, organizations and users from one Zendesk account.

    ``requests_per_minute`` paces the incremental exports, ``api_requests_per_minute`` every request
    (see the module docstring). ``sleep`` and ``clock`` (Unix seconds) are injectable so that tests
    drive retries, pacing and the ``start_time`` clamp with a fake clock and never really wait.
    ``calls`` counts HTTP requests sent, retries included.
    """

    def __init__(self, base_url: str, email: str, api_token: str, *, requests_per_minute: int = 10,
                 api_requests_per_minute: int = 100, timeout: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, max_attempts: int = 5,
                 transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.time, ca_bundle: str | None = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"Zendesk URL must start with https:// (or http:// for a sandbox): {base_url!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self._base_url = base_url.rstrip("/")
        self._email = email
        self._timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self._max_attempts = max_attempts
        self._export_pacer = _Pacer(requests_per_minute, clock, sleep, what="exports")
        self._pacer = _Pacer(api_requests_per_minute, clock, sleep, name="api_requests_per_minute")
        self._account_pause_until: float | None = None
        self._backoff = wait_exponential_jitter(max=30.0, jitter=1.0)  # 1, 2, 4… s, +0–1 s
        self._http = httpx.Client(
            base_url=self._base_url,
            auth=httpx.BasicAuth(f"{email}/token", api_token),
            timeout=timeout,
            transport=transport,
            # httpx trusts certifi's bundle and ignores REQUESTS_CA_BUNDLE: a private CA is given explicitly
            verify=ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True,
            headers={"Accept": "application/json", "User-Agent": "healthbeat-zendesk/0.1"},
        )
        self.calls = 0

    # -- public API ------------------------------------------------------------------------

    def verify(self) -> ZendeskUser:
        """Check the credentials by asking who they belong to (``users/me``)."""
        body = self._get("/api/v2/users/me.json")
        raw = body.get("user")
        if not isinstance(raw, Mapping):
            raise ZendeskUnavailable(f"Zendesk at {self._base_url} answered users/me without a user")
        try:
            return parse_user(raw)
        except ZendeskRecordError as exc:
            if raw.get("id") is None:  # Zendesk's anonymous user: the credentials were not applied
                raise ZendeskAuthError(
                    f"Zendesk at {self._base_url} did not recognise {self._email} (users/me returned the "
                    "anonymous user); check ZENDESK_EMAIL and ZENDESK_API_TOKEN") from None
            raise ZendeskUnavailable(f"Zendesk at {self._base_url} sent an unusable user: {exc}") from None

    def ticket_pages(self, *, cursor: str | None, start_time: datetime) -> Iterator[TicketPage]:
        """Export changed tickets page by page, until Zendesk says the stream is at its end.

        Resumes from ``cursor`` when given, else from ``start_time`` (moved back to at least
        a minute ago, as Zendesk requires). If Zendesk refuses a cursor (expired or invalid:
        400 or 422), the export restarts once from ``start_time`` with a warning, so a caller
        with a cursor passes the time to restart from, not its first backfill's; tickets
        already yielded in this run are not yielded again unless they changed since (a ticket
        updated during the export comes again, later, in its newer version: upserting in order
        keeps the latest). Each page carries its tickets' metric sets (``include=metric_sets``).
        """
        seen: dict[int, datetime] = {}
        include = {"include": "metric_sets"}
        params: dict[str, str] = {"cursor": cursor, **include} if cursor else {**self._start_params(start_time),
                                                                               **include}
        fell_back = False
        while True:
            try:
                body = self._get(_EXPORT_PATH, params, paced=True)
            except ZendeskRequestError as exc:
                if "cursor" not in params or exc.status not in (400, 422):
                    raise
                if fell_back:
                    raise ZendeskCursorRejected(str(exc), status=exc.status, error=exc.error,
                                                description=exc.description) from None
                _log.warning("Zendesk rejected the export cursor (%s); restarting the export from %s",
                             exc.description or exc.error, start_time.isoformat())
                fell_back = True
                params = {**self._start_params(start_time), **include}
                continue
            page = self._ticket_page(body, seen)
            yield page
            if page.end_of_stream:
                return
            if page.after_cursor is None or page.after_cursor == params.get("cursor"):
                raise ZendeskUnavailable(
                    f"Zendesk at {self._base_url} returned no new cursor before the end of the stream "
                    f"(cursor {page.after_cursor!r}); stopping rather than reading the same page forever")
            params = {"cursor": page.after_cursor, **include}

    def ticket_event_pages(self, *, start_time: datetime) -> Iterator[EventPage]:
        """Export the comments made since ``start_time``, a page of up to 1,000 ticket events a call.

        Time-based (``start_time``, ``end_time``, ``end_of_stream``): resume a later export from the
        last page's ``next_start``. ``start_time`` is moved back to at least a minute ago, as
        Zendesk requires; and the export stops, to go on next time, before a page would start
        less than a minute ago. A comment repeated at a page's edge is yielded once per run.
        """
        params = {**self._start_params(start_time), "include": "comment_events"}
        seen: set[int] = set()
        while True:
            start = int(params["start_time"])
            page = self._event_page(self._get(_EVENTS_PATH, params, paced=True), start, seen)
            yield page
            if page.end_of_stream or page.next_start.timestamp() > self._clock() - _START_TIME_MIN_AGE:
                return
            params = {"start_time": str(int(page.next_start.timestamp())), "include": "comment_events"}

    def ticket_comments(self, ticket_id: int) -> list[ZendeskComment]:
        """All comments of one ticket, oldest first; malformed ones are logged and skipped.

        One call (or more) per ticket: for repairing a ticket whose events were missed, never for
        reading comments in bulk (``ticket_event_pages`` does that, a thousand events a call)."""
        comments: list[ZendeskComment] = []
        for raw in self._paginate(f"/api/v2/tickets/{ticket_id}/comments.json", "comments"):
            try:
                comments.append(parse_comment(_as_mapping(raw), ticket_id))
            except ZendeskRecordError as exc:
                _log.warning("skipping a malformed comment on Zendesk ticket %s: %s", ticket_id, exc)
        return comments

    def organizations(self) -> Iterator[ZendeskOrganization | BadRecord]:
        """Every organization; one that fails to parse comes as a BadRecord."""
        for raw in self._paginate("/api/v2/organizations.json", "organizations"):
            yield _parse_or_bad("organization", raw, parse_organization)

    def users(self, ids: Iterable[int]) -> list[ZendeskUser]:
        """The users with these ids (unknown ids are absent); fetched 100 at a time."""
        wanted = sorted(set(ids))
        users: list[ZendeskUser] = []
        for start in range(0, len(wanted), _SHOW_MANY_CHUNK):
            chunk = wanted[start:start + _SHOW_MANY_CHUNK]
            body = self._get("/api/v2/users/show_many.json", {"ids": ",".join(map(str, chunk))})
            for raw in _list_field(body, "users", self._base_url):
                try:
                    users.append(parse_user(_as_mapping(raw)))
                except ZendeskRecordError as exc:
                    _log.warning("skipping a malformed Zendesk user: %s", exc)
        return users

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def __enter__(self) -> ZendeskClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- paging ----------------------------------------------------------------------------

    def _start_params(self, start_time: datetime) -> dict[str, str]:
        if start_time.tzinfo is None:
            raise ValueError("start_time must be timezone-aware")
        latest = self._clock() - _START_TIME_MIN_AGE
        return {"start_time": str(int(max(0.0, min(start_time.timestamp(), latest))))}

    def _ticket_page(self, body: Mapping[str, Any], seen: dict[int, datetime]) -> TicketPage:
        end_of_stream = body.get("end_of_stream")
        after_cursor = body.get("after_cursor")
        if not isinstance(end_of_stream, bool) or not isinstance(after_cursor, str | None):
            raise ZendeskUnavailable(f"Zendesk at {self._base_url} sent an export page in an unknown shape")
        tickets: list[ZendeskTicket | BadRecord] = []
        for raw in _list_field(body, "tickets", self._base_url):
            item = _parse_or_bad("ticket", raw, parse_ticket)
            if isinstance(item, ZendeskTicket):
                if item.id in seen and seen[item.id] >= item.updated_at:
                    continue  # this version was already yielded in this run
                seen[item.id] = item.updated_at
            tickets.append(item)
        metrics: dict[int, TicketMetrics] = {}
        raw_metrics = body.get("metric_sets")
        for raw in raw_metrics if isinstance(raw_metrics, list) else []:
            try:
                found = parse_metric_set(_as_mapping(raw))
            except ZendeskRecordError as exc:  # the ticket still counts; its solve time falls back
                _log.warning("skipping a malformed Zendesk metric set: %s", exc)
                continue
            metrics[found.ticket_id] = found
        return TicketPage(tickets=tickets, after_cursor=after_cursor, end_of_stream=end_of_stream, metrics=metrics)

    def _event_page(self, body: Mapping[str, Any], start: int, seen: set[int]) -> EventPage:
        end_of_stream, end_time = body.get("end_of_stream"), body.get("end_time")
        if not isinstance(end_of_stream, bool) or not (
                end_time is None or (isinstance(end_time, int) and not isinstance(end_time, bool))):
            raise ZendeskUnavailable(f"Zendesk at {self._base_url} sent a ticket event page in an unknown shape")
        events = _list_field(body, "ticket_events", self._base_url)
        comments: list[ZendeskComment | BadRecord] = []
        unread: set[int] = set()
        for raw in events:
            try:
                found = comments_of_event(_as_mapping(raw))
            except ZendeskRecordError as exc:
                comments.append(BadRecord(kind="ticket_event", raw=raw if isinstance(raw, Mapping)
                                          else {"value": raw}, reason=str(exc)))
                continue
            if found.unread:
                unread.add(found.ticket_id)
            for item in found.comments:
                key = item.id if isinstance(item, ZendeskComment) else item.raw.get("id")
                if isinstance(key, int):
                    if key in seen:
                        continue  # repeated at the edge of the previous page
                    seen.add(key)
                comments.append(item)
        end = start if end_time is None else max(end_time, start)
        if end == start and events and not end_of_stream:
            # A whole page in the second it started from: the next start must move on, or read it forever.
            _log.warning("Zendesk sent a full page of ticket events all at %s; going on from the next second "
                         "(events of that second beyond the page are not read)", datetime.fromtimestamp(start, UTC))
            end = start + 1
        return EventPage(comments=comments, unread_tickets=frozenset(unread), events=len(events),
                         next_start=datetime.fromtimestamp(end, UTC), end_of_stream=end_of_stream)

    def _paginate(self, path: str, field: str) -> Iterator[Any]:
        """Zendesk cursor pagination: follow ``meta.after_cursor`` while ``meta.has_more``."""
        params = {"page[size]": str(_PAGE_SIZE)}
        while True:
            body = self._get(path, params)
            yield from _list_field(body, field, self._base_url)
            meta = body.get("meta")
            if not isinstance(meta, Mapping) or not meta.get("has_more"):
                return
            after = meta.get("after_cursor")
            if not isinstance(after, str) or after == params.get("page[after]"):
                raise ZendeskUnavailable(
                    f"Zendesk at {self._base_url} said {path} has more pages but gave no new cursor")
            params = {"page[size]": str(_PAGE_SIZE), "page[after]": after}

    # -- one request, with retries ---------------------------------------------------------

    def _get(self, path: str, params: Mapping[str, str] | None = None, *,
             paced: bool = False) -> dict[str, Any]:
        retrying = Retrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Transient),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(self._attempt, path, dict(params or {}), paced)
        except _Transient as exc:
            raise exc.public() from None

    def _attempt(self, path: str, params: dict[str, str], paced: bool) -> dict[str, Any]:
        if paced:
            self._export_pacer.wait()
        self._pacer.wait()
        self._wait_for_the_account()
        self.calls += 1
        where = f"Zendesk at {self._base_url} ({path})"
        try:
            response = self._http.get(path, params=params)
        except httpx.TimeoutException:
            raise _Transient(f"{where} did not answer within {self._timeout:g} s") from None
        except httpx.ConnectError as exc:
            refused = _certificate_refusal(exc)
            if refused is not None:  # not transient: retrying cannot help
                raise ZendeskError(f"{where} failed TLS verification ({refused.verify_message}); set "
                                   "REQUESTS_CA_BUNDLE to the PEM file of the CA to trust if it uses a private "
                                   "CA") from None
            raise _Transient(f"{where} could not be reached: {type(exc).__name__}") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise _Transient(f"{where} could not be reached: {type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            raise ZendeskUnavailable(f"{where} failed: {type(exc).__name__}: {exc}") from None
        self._note_account_limit(response)
        self._raise_for_status(response, where)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _Transient(f"{where} answered HTTP {response.status_code} without a JSON object",
                             status=response.status_code)
        return body

    def _wait_for_the_account(self) -> None:
        if self._account_pause_until is None:
            return
        delay = self._account_pause_until - self._clock()
        self._account_pause_until = None
        if delay > 0:
            self._sleep(min(delay, _ACCOUNT_WINDOW))

    def _note_account_limit(self, response: httpx.Response) -> None:
        """Read Zendesk's account-wide count (``X-Rate-Limit``, ``X-Rate-Limit-Remaining``); when the account
        has less than its reserve left this minute, the next request waits the minute out.

        A 429 is left to its ``Retry-After``: that is Zendesk's own word on how long to wait."""
        if response.status_code == 429:
            return
        limit, remaining = _header_int(response, "X-Rate-Limit"), _header_int(response, "X-Rate-Limit-Remaining")
        if limit is None or remaining is None or limit < 1:
            return
        reserve = max(1, math.ceil(limit * _ACCOUNT_RESERVE))
        if remaining < reserve:
            _log.info("Zendesk says the account has %d of its %d requests a minute left (shared with its other "
                      "integrations); waiting %.0f s before the next request", remaining, limit, _ACCOUNT_WINDOW)
            self._account_pause_until = self._clock() + _ACCOUNT_WINDOW

    def _raise_for_status(self, response: httpx.Response, where: str) -> None:
        """Class a failed answer as retriable (_Transient) or final (a ZendeskError), by status."""
        status = response.status_code
        if status < 400:
            return
        error, description = _error_words(response)
        said = f"HTTP {status}" + (f": {error}" if error else "")
        said += f" ({description})" if description else ""
        if status == 429 or status >= 500:
            retry_after = _retry_after(response)
            if status == 429 and retry_after is None:
                retry_after = _DEFAULT_RETRY_AFTER
            if retry_after is not None and retry_after > _MAX_RETRY_AFTER:
                message = f"{where} asks us to wait {retry_after:g} s; {said}"
                if status == 429:
                    raise ZendeskRateLimited(message, retry_after=retry_after)
                raise ZendeskUnavailable(message, status=status)
            raise _Transient(f"{where} answered {said}", status=status, retry_after=retry_after)
        if status in (401, 403):
            hint = ("check ZENDESK_EMAIL and ZENDESK_API_TOKEN" if status == 401
                    else "the user needs the admin role for exports")
            raise ZendeskAuthError(f"{where} refused the credentials of {self._email}: {said}; {hint}",
                                   status=status)
        kind = ZendeskNotFound if status == 404 else ZendeskRequestError
        raise kind(f"{where} refused the request: {said}", status=status, error=error,
                   description=description)

    def _wait(self, retry_state: RetryCallState) -> float:
        """Retry-After when Zendesk gives one, else exponential back-off with jitter."""
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return exc.retry_after
        return self._backoff(retry_state)

    def _log_retry(self, retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
        _log.warning("%s; retrying in %.1f s (attempt %d of %d)", exc, delay, retry_state.attempt_number + 1,
                     self._max_attempts)


def _parse_or_bad(kind: str, raw: Any, parse: Callable[[Mapping[str, Any]], _R]) -> _R | BadRecord:
    """Turn one record's parse failure into a BadRecord, so the stream goes on."""
    try:
        return parse(_as_mapping(raw))
    except ZendeskRecordError as exc:
        return BadRecord(kind=kind, raw=raw if isinstance(raw, Mapping) else {"value": raw}, reason=str(exc))


def _as_mapping(raw: Any) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ZendeskRecordError(f"expected a JSON object, got {type(raw).__name__}")
    return raw


def _list_field(body: Mapping[str, Any], field: str, base_url: str) -> list[Any]:
    value = body.get(field)
    if not isinstance(value, list):
        raise ZendeskUnavailable(f"Zendesk at {base_url} answered without a {field!r} list")
    return value


def _error_words(response: httpx.Response) -> tuple[str, str]:
    """Zendesk's ``{"error": ..., "description": ...}``; either may be absent or nested."""
    try:
        body = response.json()
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    error, description = body.get("error", ""), body.get("description", "")
    if isinstance(error, dict):  # some endpoints nest: {"error": {"title": ..., "message": ...}}
        error, description = error.get("title", ""), error.get("message", description)
    return str(error or ""), str(description or "")


def _header_int(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    try:
        return None if value is None else int(value.strip())
    except ValueError:
        return None


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header, given as seconds or as an HTTP date."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _certificate_refusal(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind a connection error, if that is what it was (httpx wraps
    httpcore's error, which wraps ssl's)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None
