"""A local emulator of the Zendesk Support API v2, for tests, the demo and the benchmarks.

It serves, over real HTTP on 127.0.0.1, the few endpoints Healthbeat reads, in Zendesk's
documented wire format, so that the real client (httpx + tenacity) is exercised as it will
be in production:

- ``GET /api/v2/incremental/tickets/cursor.json`` — cursor-based incremental export
  (``start_time`` at least a minute in the past, opaque ``after_cursor``, ``end_of_stream``,
  deleted tickets kept with ``status: deleted``, ``include=metric_sets`` sideloading each
  ticket's metrics with its ``solved_at``);
- ``GET /api/v2/incremental/ticket_events.json`` — time-based incremental export of ticket
  events (``start_time``, up to 1,000 events a page, ``end_time``, ``next_page``, ``count``,
  ``end_of_stream``); each event is one update of a ticket with its ``child_events``, and with
  ``include=comment_events`` a comment comes whole as a child event of ``event_type: Comment``;
- ``GET /api/v2/tickets/{id}/comments.json`` and ``GET /api/v2/organizations.json`` —
  cursor pagination (``page[size]``, ``page[after]``, ``meta.has_more``, ``links.next``);
- ``GET /api/v2/users/show_many.json?ids=…`` and ``GET /api/v2/users/me.json``.

Every request needs HTTP Basic auth as ``{email}/token:{api_token}``, as Zendesk API tokens do.

Rate limits, as a real account has them (developer.zendesk.com/api-reference/introduction/rate-limits/):
an account-wide limit on every endpoint (``api_requests_per_minute``, 200 by default, the smallest
plan's), shared with the account's other integrations (``spend_requests``), reported on every
answer as ``X-Rate-Limit`` and ``X-Rate-Limit-Remaining``; and each incremental export endpoint at
``incremental_requests_per_minute`` (10) on top (developer.zendesk.com/api-reference/ticketing/
ticket-management/incremental_exports/). Both windows roll over the last minute; a refusal is a
429 with ``Retry-After``.

Zendesk's standard automation "Close ticket 4 days after status is set to solved" runs here too
(``close_solved_after``): once the sandbox's clock has passed it, a solved ticket becomes closed
at exactly that moment, which bumps its ``updated_at`` and adds an event, while the ticket
metrics keep the true ``solved_at``. It is applied when the API is next read.

The data is built from Python (``add_organization``, ``add_user``, ``add_ticket``…), so a
test states its fixture in a few lines. History may be written back-dated (``created_at=``, ``at=``):
until an export is first read it keeps its own times in the exports; after that, a change takes its
place after the last read, whatever its date, as a change does in Zendesk (``generated_timestamp``),
so a worker that has read the exports still sees it. Faults are injected on demand (``fail_next``)
and every request is recorded (``calls``) so a test can assert what went over the wire.

Deliberate simplifications: ``page_size`` caps every list endpoint (not only the
incremental ones), so paging is testable with a handful of records; changes made within
the last minute are *not* held back from the exports as Zendesk does, so the demo need not
wait a minute after loading data; a page of ticket events never splits one second's events
(it holds them all, even beyond 1,000), so the next ``start_time`` (the page's ``end_time``)
repeats that second's events, Zendesk's documented duplicates. Timestamps are whole seconds,
as in Zendesk.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import heapq
import html
import json
import math
import re
import socket
import threading
from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

from connectors.sandboxes.local_ca import LocalCA

__all__ = ["ApiCall", "ZendeskSandbox"]

TICKET_STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
TICKET_PRIORITIES = ("low", "normal", "high", "urgent", None)
USER_ROLES = ("end-user", "agent", "admin")
_UPDATABLE_TICKET_FIELDS = frozenset(
    {"subject", "status", "priority", "assignee_id", "organization_id", "requester_id", "tags", "type"}
)

_INCREMENTAL_MAX_PAGE = 1000  # Zendesk's per_page ceiling for incremental exports
_CURSOR_MAX_PAGE = 100  # Zendesk's page[size] ceiling for cursor pagination
_RATE_WINDOW = timedelta(minutes=1)
_SYSTEM_USER = -1  # the updater Zendesk names for its own changes (automations, triggers)

# Distinct id ranges per kind, so a test that mixes up an org id and a user id fails loudly. As in Zendesk, a
# comment's id is the id of its Comment child event; the other child events' ids derive from their event's.
_ORG_ID_BASE = 10_000_000
_USER_ID_BASE = 20_000_000
_COMMENT_ID_BASE = 30_000_000
_EVENT_ID_BASE = 40_000_000
_METRIC_ID_BASE = 50_000_000

RecordKind = Literal["ticket", "organization", "user", "comment", "metric_set", "ticket_event"]
JSON = dict[str, Any]
_EXPORTS = {  # path pattern -> the name of the incremental export it is (each has its own per-minute limit)
    r"/api/v2/incremental/tickets/cursor(\.json)?": "tickets",
    r"/api/v2/incremental/ticket_events(\.json)?": "ticket_events",
}


@dataclass(frozen=True)
class ApiCall:
    """One request the sandbox answered: what a test asserts about traffic."""

    method: str
    path: str
    query: dict[str, str]
    status: int


@dataclass
class _Fault:
    status: int
    retry_after: int | None
    path_contains: str
    remaining: int


@dataclass
class _Organization:
    id: int
    name: str
    external_id: str | None
    domain_names: list[str]
    created_at: datetime
    updated_at: datetime


@dataclass
class _User:
    id: int
    name: str
    email: str
    role: str
    organization_id: int | None
    created_at: datetime
    updated_at: datetime


@dataclass
class _Ticket:
    id: int
    subject: str
    description: str
    status: str
    priority: str | None
    requester_id: int
    organization_id: int | None
    created_at: datetime
    updated_at: datetime
    assignee_id: int | None = None
    type: str | None = None
    tags: list[str] = field(default_factory=list)
    solved_at: datetime | None = None  # the latest time its status was set to solved (ticket metrics)
    generated: datetime | None = None  # its place in the export (Zendesk's generated_timestamp); see _export_key
    status_updated_at: datetime | None = None
    reopens: int = 0


@dataclass
class _Comment:
    id: int
    ticket_id: int
    author_id: int
    body: str
    public: bool
    created_at: datetime


@dataclass
class _Event:
    """One update of a ticket (an audit): who made it, when, through what, and what it changed.

    ``children`` are ``("comment", _Comment)`` or ``("create" | "change", field, value, previous)``."""

    id: int
    ticket_id: int
    at: datetime
    updater_id: int
    channel: str
    children: list[tuple[Any, ...]]
    key: datetime  # its place in the export (its `timestamp`); see _export_key


@dataclass
class _Response:
    status: int
    body: JSON
    headers: dict[str, str] = field(default_factory=dict)


class _ApiError(Exception):
    """An error answer, raised anywhere in request handling and written out by the handler."""

    def __init__(self, status: int, error: str, description: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        body: JSON = {"error": error}
        if description is not None:
            body["description"] = description
        self.response = _Response(status, body, headers or {})


class ZendeskSandbox:
    """An in-memory Zendesk account behind a real HTTP server; see the module docstring."""

    def __init__(self, *, email: str = "agent@example.com", api_token: str = "sandbox-token",  # noqa: S107 - a fixture
                 page_size: int = 1000, incremental_requests_per_minute: int = 10,
                 api_requests_per_minute: int = 200, close_solved_after: timedelta | None = timedelta(days=4),
                 clock: Callable[[], datetime] | None = None, tls: bool = False) -> None:
        if not 1 <= page_size <= _INCREMENTAL_MAX_PAGE:
            raise ValueError(f"page_size must be between 1 and {_INCREMENTAL_MAX_PAGE}, got {page_size}")
        if incremental_requests_per_minute < 1 or api_requests_per_minute < 1:
            raise ValueError("rate limits must be at least one request a minute")
        self._email = email
        self._api_token = api_token
        self._page_size = page_size
        self._rate_limit = incremental_requests_per_minute
        self._api_rate_limit = api_requests_per_minute
        self._close_after = close_solved_after
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._organizations: dict[int, _Organization] = {}
        self._users: dict[int, _User] = {}
        self._tickets: dict[int, _Ticket] = {}
        self._comments: dict[int, list[_Comment]] = {}
        self._overrides: dict[tuple[RecordKind, int], JSON] = {}
        self._ticket_order: list[tuple[int, int]] | None = None  # (updated_at, id), sorted; None = stale
        self._events: dict[int, _Event] = {}
        self._event_order: list[tuple[int, int]] | None = None  # (at, id), sorted; None = stale
        self._closing: list[tuple[datetime, int, datetime]] = []  # heap of (close due, ticket id, its solved_at)
        self._next_ids = {"ticket": 1, "organization": _ORG_ID_BASE + 1, "user": _USER_ID_BASE + 1,
                          "comment": _COMMENT_ID_BASE + 1, "event": _EVENT_ID_BASE + 1}
        self._incremental_hits: dict[str, deque[datetime]] = {name: deque() for name in _EXPORTS.values()}
        self._exported_at: datetime | None = None  # when an export was last read
        self._account_hits: deque[datetime] = deque()
        self._faults: list[_Fault] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tls = tls
        self._ca: LocalCA | None = None
        self.ca_cert_path = ""
        """With ``tls``: the PEM file of the CA that signed the sandbox's certificate, for clients to trust."""
        self.calls: list[ApiCall] = []
        self.agent_id = self.add_user("Sandbox Agent", email, role="admin")
        """The user the API credentials belong to (what ``users/me`` returns)."""

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to give the client as ZENDESK_URL, e.g. ``http://127.0.0.1:54321`` (``https://`` with
        ``tls``)."""
        if self._server is None:
            raise RuntimeError("ZendeskSandbox is not started")
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        """Bind a free loopback port and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("ZendeskSandbox is already started")
        self._server = _Server(self)
        if self._tls:
            self._ca = LocalCA()
            self._ca.serve_tls(self._server)
            self.ca_cert_path = self._ca.cert_path
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="zendesk-sandbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, drop kept-alive connections and release the port; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join(timeout=5)
        self._server = self._thread = None
        if self._ca is not None:
            self._ca.close()
            self._ca = None

    def __enter__(self) -> ZendeskSandbox:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- data API --------------------------------------------------------------------------

    def add_organization(self, name: str, *, external_id: str | None = None,
                         domain_names: Sequence[str] = ()) -> int:
        """Create an organization and return its id."""
        with self._lock:
            now = self._now()
            org = _Organization(self._new_id("organization"), name, external_id, list(domain_names), now, now)
            self._organizations[org.id] = org
            return org.id

    def add_user(self, name: str, email: str, *, role: str = "end-user",
                 organization_id: int | None = None) -> int:
        """Create a user (``end-user``, ``agent`` or ``admin``) and return its id."""
        if role not in USER_ROLES:
            raise ValueError(f"role must be one of {USER_ROLES}, got {role!r}")
        with self._lock:
            self._require_org(organization_id)
            now = self._now()
            user = _User(self._new_id("user"), name, email, role, organization_id, now, now)
            self._users[user.id] = user
            return user.id

    def add_ticket(self, *, subject: str, requester_id: int, organization_id: int | None,
                   priority: str | None = "normal", status: str = "open", created_at: datetime | None = None,
                   description: str = "") -> int:
        """Create a ticket; a non-empty description becomes its first comment, as in Zendesk."""
        _check_ticket_values(status=status, priority=priority)
        with self._lock:
            self._require_user(requester_id)
            self._require_org(organization_id)
            created = _whole_seconds(created_at) if created_at else self._now()
            ticket = _Ticket(self._new_id("ticket"), subject, description, status, priority, requester_id,
                             organization_id, created, created, status_updated_at=created,
                             generated=self._export_key(created))
            self._tickets[ticket.id] = ticket
            self._comments[ticket.id] = []
            children: list[tuple[Any, ...]] = [
                ("create", name, value, None) for name, value in (
                    ("subject", subject), ("status", status), ("priority", priority),
                    ("requester_id", requester_id), ("organization_id", organization_id))]
            if description:
                comment = _Comment(self._new_id("comment"), ticket.id, requester_id, description, True, created)
                self._comments[ticket.id].append(comment)
                children.append(("comment", comment))
            self._add_event(ticket.id, created, requester_id, "web", children)
            if status in ("solved", "closed"):
                self._solved(ticket, created)
            _moved(self._ticket_order, None, _order_key(ticket))
            return ticket.id

    def add_comment(self, ticket_id: int, *, author_id: int, body: str, public: bool = True,
                    created_at: datetime | None = None) -> int:
        """Add a comment to a ticket and bump the ticket's ``updated_at`` to the comment's time (default now)."""
        with self._lock:
            ticket = self._live_ticket(ticket_id)
            self._require_user(author_id)
            when = _whole_seconds(created_at) if created_at else self._now()
            comment = _Comment(self._new_id("comment"), ticket_id, author_id, body, public, when)
            self._comments[ticket_id].append(comment)
            self._add_event(ticket_id, when, author_id, "web", [("comment", comment)])
            self._touch(ticket, when)
            return comment.id

    def update_ticket(self, ticket_id: int, *, at: datetime | None = None, **fields: Any) -> None:
        """Change ticket fields (status, priority, subject, assignee_id…) and bump ``updated_at`` (to `at`
        when loading back-dated history, else now); one event records the change, made by the agent.

        Setting status ``solved`` records the ticket metrics' ``solved_at`` and starts the countdown of
        the close automation; a solved or closed ticket set back to another status counts a reopen."""
        unknown = set(fields) - _UPDATABLE_TICKET_FIELDS
        if unknown:
            raise ValueError(f"cannot update ticket fields {sorted(unknown)}; "
                             f"allowed: {sorted(_UPDATABLE_TICKET_FIELDS)} (use delete_ticket to delete)")
        _check_ticket_values(status=fields.get("status", "open"), priority=fields.get("priority", "normal"))
        with self._lock:
            ticket = self._live_ticket(ticket_id)
            if "requester_id" in fields:
                self._require_user(fields["requester_id"])
            if "organization_id" in fields:
                self._require_org(fields["organization_id"])
            when = _whole_seconds(at) if at else self._now()
            changes = [("change", name, value, getattr(ticket, name)) for name, value in fields.items()
                       if getattr(ticket, name) != value]
            before = ticket.status
            for name, value in fields.items():
                setattr(ticket, name, value)
            if ticket.status != before:
                ticket.status_updated_at = when
                if ticket.status == "solved" or (ticket.status == "closed" and ticket.solved_at is None):
                    self._solved(ticket, when)
                elif before in ("solved", "closed") and ticket.status != "closed":
                    ticket.reopens += 1
            if changes:
                self._add_event(ticket_id, when, self.agent_id, "web", changes)
            self._touch(ticket, at)

    def delete_ticket(self, ticket_id: int) -> None:
        """Soft-delete: the ticket stays in the incremental export with ``status: deleted``."""
        with self._lock:
            ticket = self._live_ticket(ticket_id)
            self._add_event(ticket_id, self._now(), self.agent_id, "web",
                            [("change", "status", "deleted", ticket.status)])
            ticket.status = "deleted"
            self._touch(ticket)

    def override_json(self, kind: RecordKind, record_id: int, **fields: Any) -> None:
        """Serve these raw JSON fields verbatim for one record, e.g. ``created_at="not a date"``.

        A fault injection for "Zendesk sent a malformed record": only the JSON changes, the
        record keeps its place in paging order.
        """
        with self._lock:
            self._overrides.setdefault((kind, record_id), {}).update(fields)

    def fail_next(self, status: int, *, retry_after: int | None = None, path_contains: str = "",
                  times: int = 1) -> None:
        """Answer the next ``times`` requests whose path and query contain ``path_contains``
        with ``status`` (and a ``Retry-After`` header if given), before auth and rate limits."""
        with self._lock:
            self._faults.append(_Fault(status, retry_after, path_contains, times))

    def reset_calls(self) -> None:
        """Forget recorded calls, so a test can assert only on what follows."""
        with self._lock:
            self.calls.clear()

    def spend_requests(self, count: int) -> None:
        """The account's other integrations made ``count`` requests just now: they count against the
        account-wide limit, as Zendesk counts every API client of an account together."""
        with self._lock:
            now = self._clock()
            self._account_hits.extend([now] * count)

    @property
    def event_count(self) -> int:
        """How many ticket events (updates of tickets) the account holds: the size of the event export."""
        with self._lock:
            return len(self._events)

    # -- request handling (called from server threads) -------------------------------------

    def _serve(self, method: str, target: str, authorization: str | None) -> _Response:
        """Answer one request; the HTTP handler only parses and writes bytes."""
        split = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            response = self._route(method, split.path, query, target, authorization)
        except _ApiError as exc:
            response = exc.response
        with self._lock:
            self.calls.append(ApiCall(method, split.path, query, response.status))
        return response

    def _route(self, method: str, path: str, query: dict[str, str], target: str,
               authorization: str | None) -> _Response:
        self._raise_injected_fault(target)
        self._authenticate(authorization)
        limits = self._count_account_request()
        try:
            response = self._answer(method, path, query)
        except _ApiError as exc:
            exc.response.headers.update(limits)
            raise
        response.headers.update(limits)
        return response

    def _answer(self, method: str, path: str, query: dict[str, str]) -> _Response:
        self._run_automations()
        if method == "GET":
            export = next((name for pattern, name in _EXPORTS.items() if re.fullmatch(pattern, path)), None)
            if export is not None:
                self._count_incremental_request(export)
                with self._lock:
                    self._exported_at = self._now()
                if export == "tickets":
                    return _Response(200, self._incremental_tickets(query))
                return _Response(200, self._incremental_ticket_events(query))
            if match := re.fullmatch(r"/api/v2/tickets/(\d+)/comments(\.json)?", path):
                return _Response(200, self._ticket_comments(int(match.group(1)), path, query))
            if re.fullmatch(r"/api/v2/organizations(\.json)?", path):
                return _Response(200, self._organizations_page(path, query))
            if re.fullmatch(r"/api/v2/users/show_many(\.json)?", path):
                return _Response(200, self._show_many_users(query))
            if re.fullmatch(r"/api/v2/users/me(\.json)?", path):
                with self._lock:
                    return _Response(200, {"user": self._user_json(self._users[self.agent_id])})
        raise _ApiError(404, "InvalidEndpoint", "Not found")

    def _raise_injected_fault(self, target: str) -> None:
        with self._lock:
            fault = next((f for f in self._faults if f.path_contains in target), None)
            if fault is None:
                return
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        if fault.status == 429:
            raise _ApiError(429, "APIRateLimitExceeded", "Rate limit exceeded (injected fault)", headers)
        if fault.status == 401:
            raise _ApiError(401, "Couldn't authenticate you", headers=headers)
        raise _ApiError(fault.status, HTTPStatus(fault.status).phrase.replace(" ", ""),
                        "Injected fault", headers)

    def _authenticate(self, authorization: str | None) -> None:
        expected = base64.b64encode(f"{self._email}/token:{self._api_token}".encode()).decode()
        if authorization != f"Basic {expected}":
            raise _ApiError(401, "Couldn't authenticate you",
                            headers={"WWW-Authenticate": 'Basic realm="Web Password"'})

    def _count_account_request(self) -> dict[str, str]:
        """The account-wide limit on every endpoint, over a rolling minute; its headers for the answer."""
        with self._lock:
            now = self._clock()
            hits = self._account_hits
            while hits and hits[0] <= now - _RATE_WINDOW:
                hits.popleft()
            if len(hits) >= self._api_rate_limit:
                wait = (hits[0] + _RATE_WINDOW - now).total_seconds()
                raise _ApiError(429, "APIRateLimitExceeded", "Number of allowed API requests per minute exceeded",
                                {"Retry-After": str(max(1, math.ceil(wait))),
                                 "X-Rate-Limit": str(self._api_rate_limit), "X-Rate-Limit-Remaining": "0"})
            hits.append(now)
            return {"X-Rate-Limit": str(self._api_rate_limit),
                    "X-Rate-Limit-Remaining": str(self._api_rate_limit - len(hits))}

    def _count_incremental_request(self, export: str) -> None:
        """Rolling one-minute window per export endpoint, as Zendesk's per-minute limit on the incremental APIs."""
        with self._lock:
            now = self._clock()
            hits = self._incremental_hits[export]
            while hits and hits[0] <= now - _RATE_WINDOW:
                hits.popleft()
            if len(hits) >= self._rate_limit:
                wait = (hits[0] + _RATE_WINDOW - now).total_seconds()
                raise _ApiError(429, "APIRateLimitExceeded",
                                "Number of allowed incremental export API requests per minute exceeded",
                                {"Retry-After": str(max(1, math.ceil(wait)))})
            hits.append(now)

    def _run_automations(self) -> None:
        """Close each solved ticket whose time has come, at the moment it came (see the module docstring)."""
        with self._lock:
            now = self._clock()
            while self._closing and self._closing[0][0] <= now:
                due, ticket_id, solved_at = heapq.heappop(self._closing)
                ticket = self._tickets[ticket_id]
                if ticket.status != "solved" or ticket.solved_at != solved_at:
                    continue  # reopened (or solved again, with a countdown of its own) since
                ticket.status = "closed"
                ticket.status_updated_at = due
                self._add_event(ticket_id, due, _SYSTEM_USER, "rule", [("change", "status", "closed", "solved")])
                self._touch(ticket, due)

    # -- incremental ticket export ---------------------------------------------------------

    def _incremental_tickets(self, query: dict[str, str]) -> JSON:
        limit = min(self._page_size, _positive_int(query, "per_page", _INCREMENTAL_MAX_PAGE))
        with self._lock:
            if "cursor" in query:
                position = _decode_export_cursor(query["cursor"])
            elif "start_time" in query:
                position = (self._check_start_time(query["start_time"]), 0)
            else:
                raise _ApiError(400, "InvalidValue", "start_time or cursor is required")
            order = self._sorted_tickets()
            first = bisect_right(order, position)
            keys = order[first:first + limit]
            tickets = [self._ticket_json(self._tickets[ticket_id]) for _, ticket_id in keys]
            metric_sets = [self._metric_set_json(self._tickets[ticket_id]) for _, ticket_id in keys
                           if self._tickets[ticket_id].status != "deleted"]
            end_of_stream = first + len(keys) >= len(order)
        after = _encode_export_cursor(keys[-1] if keys else position)
        params: dict[str, object] = {"cursor": after, **{k: query[k] for k in ("per_page", "include") if k in query}}
        body: JSON = {
            "tickets": tickets,
            "after_cursor": after,
            "after_url": f"{self.url}/api/v2/incremental/tickets/cursor.json?{urlencode(params)}",
            "before_cursor": None,
            "before_url": None,
            "end_of_stream": end_of_stream,
        }
        if "metric_sets" in _includes(query):
            body["metric_sets"] = metric_sets
        return body

    # -- incremental ticket event export (time-based) --------------------------------------

    def _incremental_ticket_events(self, query: dict[str, str]) -> JSON:
        limit = min(self._page_size, _positive_int(query, "per_page", _INCREMENTAL_MAX_PAGE))
        if "start_time" not in query:
            raise _ApiError(400, "InvalidValue", "start_time is required")
        with self._lock:
            start_time = self._check_start_time(query["start_time"])
            order = self._sorted_events()
            first = bisect_left(order, (start_time, 0))
            last = min(first + limit, len(order))
            while first < last < len(order) and order[last][0] == order[last - 1][0]:
                last += 1  # never split one second's events between two pages
            keys = order[first:last]
            comments = "comment_events" in _includes(query)
            events = [self._event_json(self._events[event_id], comments=comments) for _, event_id in keys]
            end_of_stream = last >= len(order)
        end_time = keys[-1][0] if keys else start_time
        params: dict[str, object] = {"start_time": end_time,
                                     **{k: query[k] for k in ("per_page", "include") if k in query}}
        return {
            "ticket_events": events,
            "next_page": f"{self.url}/api/v2/incremental/ticket_events.json?{urlencode(params)}",
            "count": len(events),
            "end_time": end_time,
            "end_of_stream": end_of_stream,
        }

    def _check_start_time(self, raw: str) -> int:
        try:
            start_time = int(raw)
        except ValueError:
            raise _ApiError(400, "InvalidValue", f"start_time must be a Unix time, got {raw!r}") from None
        if start_time < 0:
            raise _ApiError(400, "InvalidValue", "start_time must not be negative")
        if start_time > self._clock().timestamp() - 60:
            raise _ApiError(400, "InvalidValue",
                            "Too recent start_time. Use a start_time at least one minute in the past")
        return start_time

    def _sorted_tickets(self) -> list[tuple[int, int]]:
        if self._ticket_order is None:
            self._ticket_order = sorted(map(_order_key, self._tickets.values()))
        return self._ticket_order

    def _sorted_events(self) -> list[tuple[int, int]]:
        if self._event_order is None:
            self._event_order = sorted((_unix(e.key), e.id) for e in self._events.values())
        return self._event_order

    # -- cursor-paginated lists ------------------------------------------------------------

    def _ticket_comments(self, ticket_id: int, path: str, query: dict[str, str]) -> JSON:
        with self._lock:
            ticket = self._tickets.get(ticket_id)
            if ticket is None or ticket.status == "deleted":
                raise _ApiError(404, "RecordNotFound", "Not found")
            comments = sorted(self._comments[ticket_id], key=lambda c: (c.created_at, c.id))
            items = [((_unix(c.created_at), c.id), self._comment_json(c)) for c in comments]
        return self._cursor_page("comments", items, path, query)

    def _organizations_page(self, path: str, query: dict[str, str]) -> JSON:
        """Only the page's organizations are rendered: rendering all of them for each page made a full
        listing quadratic (20,000 organizations, 200 pages)."""
        with self._lock:
            items = [((org_id,), org_id) for org_id in sorted(self._organizations)]
            return self._cursor_page("organizations", items, path, query,
                                     render=lambda org_id: self._organization_json(self._organizations[org_id]))

    def _cursor_page(self, name: str, items: Sequence[tuple[tuple[int, ...], Any]], path: str,
                     query: dict[str, str], render: Callable[[Any], JSON] = lambda body: body) -> JSON:
        """Zendesk's cursor pagination over ``items`` sorted by their key tuples; `render` makes the body
        of each item on the page."""
        size = _positive_int(query, "page[size]", _CURSOR_MAX_PAGE, error="InvalidPaginationParameter")
        if size > _CURSOR_MAX_PAGE:
            raise _ApiError(400, "InvalidPaginationParameter", f"page[size] max is {_CURSOR_MAX_PAGE}")
        size = min(size, self._page_size)
        keys = [key for key, _ in items]
        first = bisect_right(keys, _decode_page_cursor(query["page[after]"])) if "page[after]" in query else 0
        page = items[first:first + size]
        has_more = first + len(page) < len(items)
        after = _encode_page_cursor(page[-1][0]) if page else None
        before = _encode_page_cursor(page[0][0]) if page else None

        def link(param: str, cursor: str | None) -> str | None:
            if cursor is None:
                return None
            return f"{self.url}{path}?{urlencode({param: cursor, 'page[size]': size})}"

        return {
            name: [render(item) for _, item in page],
            "meta": {"has_more": has_more, "after_cursor": after, "before_cursor": before},
            "links": {"next": link("page[after]", after) if has_more else None,
                      "prev": link("page[before]", before) if first > 0 else None},
        }

    def _show_many_users(self, query: dict[str, str]) -> JSON:
        raw_ids = [part for part in query.get("ids", "").split(",") if part.strip()]
        if not raw_ids:
            raise _ApiError(400, "InvalidValue", "ids is required")
        if len(raw_ids) > 100:
            raise _ApiError(400, "InvalidValue", "Too many ids: at most 100 may be requested at once")
        try:
            ids = {int(part) for part in raw_ids}
        except ValueError:
            raise _ApiError(400, "InvalidValue", "ids must be a comma-separated list of integers") from None
        with self._lock:
            return {"users": [self._user_json(self._users[i]) for i in sorted(ids) if i in self._users]}

    # -- JSON shapes -----------------------------------------------------------------------

    def _ticket_json(self, t: _Ticket) -> JSON:
        body: JSON = {
            "id": t.id, "url": f"{self.url}/api/v2/tickets/{t.id}.json", "external_id": None,
            "via": {"channel": "web", "source": {"from": {}, "to": {}, "rel": None}},
            "created_at": _iso(t.created_at), "updated_at": _iso(t.updated_at),
            "generated_timestamp": _unix(t.generated or t.updated_at), "type": t.type, "subject": t.subject,
            "raw_subject": t.subject, "description": t.description, "priority": t.priority,
            "status": t.status, "recipient": None, "requester_id": t.requester_id,
            "submitter_id": t.requester_id, "assignee_id": t.assignee_id,
            "organization_id": t.organization_id,
            "group_id": None, "collaborator_ids": [], "follower_ids": [], "email_cc_ids": [],
            "problem_id": None, "has_incidents": False, "is_public": True, "due_at": None,
            "tags": list(t.tags), "custom_fields": [], "satisfaction_rating": None,
            "sharing_agreement_ids": [], "allow_attachments": True,
        }
        return {**body, **self._overrides.get(("ticket", t.id), {})}

    def _metric_set_json(self, t: _Ticket) -> JSON:
        """The ticket's metrics as `include=metric_sets` sideloads them (developer.zendesk.com/api-reference/
        ticketing/tickets/ticket_metrics/): `solved_at` stays when the ticket is closed later."""
        comments = self._comments.get(t.id, [])
        replies = sum(1 for c in comments if c.public and self._users[c.author_id].role != "end-user")
        minutes = None if t.solved_at is None else int((t.solved_at - t.created_at).total_seconds() // 60)
        body: JSON = {
            "id": _METRIC_ID_BASE + t.id, "ticket_id": t.id, "url": f"{self.url}/api/v2/ticket_metrics/"
            f"{_METRIC_ID_BASE + t.id}.json", "created_at": _iso(t.created_at), "updated_at": _iso(t.updated_at),
            "group_stations": 1, "assignee_stations": 1 if t.assignee_id else 0, "reopens": t.reopens,
            "replies": replies, "assignee_updated_at": None, "requester_updated_at": _iso(t.created_at),
            "status_updated_at": _iso(t.status_updated_at or t.created_at), "initially_assigned_at": None,
            "assigned_at": None, "solved_at": None if t.solved_at is None else _iso(t.solved_at),
            "latest_comment_added_at": _iso(max(c.created_at for c in comments)) if comments else None,
            "reply_time_in_minutes": {"calendar": None, "business": None},
            "first_resolution_time_in_minutes": {"calendar": minutes, "business": minutes},
            "full_resolution_time_in_minutes": {"calendar": minutes, "business": minutes},
            "agent_wait_time_in_minutes": {"calendar": None, "business": None},
            "requester_wait_time_in_minutes": {"calendar": None, "business": None},
            "on_hold_time_in_minutes": {"calendar": 0, "business": 0},
        }
        return {**body, **self._overrides.get(("metric_set", t.id), {})}

    def _event_json(self, e: _Event, *, comments: bool) -> JSON:
        """One ticket event; a comment child is whole only with `include=comment_events`, else Zendesk says
        no more than that there was one (`comment_present`, `comment_public`)."""
        via = {"channel": e.channel, "source": {"from": {}, "to": {}, "rel": None}}
        children: list[JSON] = []
        for n, child in enumerate(e.children):
            if child[0] == "comment":
                comment: _Comment = child[1]
                if comments:
                    children.append({**self._comment_json(comment), "audit_id": e.id, "via_reference_id": None,
                                     "event_type": "Comment"})
                else:
                    children.append({"id": comment.id, "via": via, "via_reference_id": None,
                                     "comment_present": True, "comment_public": comment.public,
                                     "event_type": "Comment"})
                continue
            kind, name, value, previous = child
            item: JSON = {"id": e.id * 100 + n, "via": via, "via_reference_id": None, name: value,
                          "event_type": "Create" if kind == "create" else "Change"}
            if kind == "change":
                item["previous_value"] = previous
            children.append(item)
        body: JSON = {
            "id": e.id, "ticket_id": e.ticket_id, "timestamp": _unix(e.key), "created_at": _iso(e.at),
            "updater_id": e.updater_id, "via": via, "system": {}, "event_type": "Audit",
            "merged_ticket_ids": [], "child_events": children,
        }
        return {**body, **self._overrides.get(("ticket_event", e.id), {})}

    def _comment_json(self, c: _Comment) -> JSON:
        body: JSON = {
            "id": c.id, "type": "Comment", "author_id": c.author_id, "body": c.body,
            "html_body": f'<div class="zd-comment" dir="auto"><p>{html.escape(c.body)}</p></div>',
            "plain_body": c.body, "public": c.public, "attachments": [], "audit_id": c.id + 1,
            "via": {"channel": "web", "source": {"from": {}, "to": {}, "rel": None}},
            "created_at": _iso(c.created_at), "metadata": {"system": {}, "custom": {}},
        }
        return {**body, **self._overrides.get(("comment", c.id), {})}

    def _organization_json(self, o: _Organization) -> JSON:
        body: JSON = {
            "id": o.id, "url": f"{self.url}/api/v2/organizations/{o.id}.json", "name": o.name,
            "external_id": o.external_id, "domain_names": list(o.domain_names), "details": "", "notes": "",
            "group_id": None, "shared_tickets": False, "shared_comments": False, "tags": [],
            "organization_fields": {}, "created_at": _iso(o.created_at), "updated_at": _iso(o.updated_at),
        }
        return {**body, **self._overrides.get(("organization", o.id), {})}

    def _user_json(self, u: _User) -> JSON:
        body: JSON = {
            "id": u.id, "url": f"{self.url}/api/v2/users/{u.id}.json", "name": u.name, "email": u.email,
            "role": u.role, "organization_id": u.organization_id, "active": True, "verified": True,
            "suspended": False, "time_zone": "UTC", "locale": "en-US",
            "created_at": _iso(u.created_at), "updated_at": _iso(u.updated_at),
        }
        return {**body, **self._overrides.get(("user", u.id), {})}

    # -- helpers ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        return _whole_seconds(self._clock())

    def _new_id(self, kind: str) -> int:
        new_id = self._next_ids[kind]
        self._next_ids[kind] = new_id + 1
        return new_id

    def _add_event(self, ticket_id: int, at: datetime, updater_id: int, channel: str,
                   children: list[tuple[Any, ...]]) -> None:
        event = _Event(self._new_id("event"), ticket_id, at, updater_id, channel, children, self._export_key(at))
        self._events[event.id] = event
        _moved(self._event_order, None, (_unix(event.key), event.id))

    def _export_key(self, at: datetime) -> datetime:
        """Where a change made now, dated `at`, goes in the exports: at `at`, unless an export was read since
        then. History written back-dated (the demo's world, a test's fixture) keeps its own times until the
        API is first read; a change written after a read comes after it, whatever its date, as in Zendesk,
        where nothing is written in the past: `generated_timestamp` and an event's `timestamp` are when the
        change was made (an import's back-dated `created_at` included)."""
        if self._exported_at is None or at > self._exported_at:
            return at
        return self._exported_at + timedelta(seconds=1)

    def _solved(self, ticket: _Ticket, when: datetime) -> None:
        """The ticket metrics' solved_at, and the close automation's countdown from it."""
        ticket.solved_at = when
        if self._close_after is not None and ticket.status == "solved":
            heapq.heappush(self._closing, (when + self._close_after, ticket.id, when))

    def _touch(self, ticket: _Ticket, at: datetime | None = None) -> None:
        """Move `updated_at` forward: to now, or to `at` when history is being loaded back-dated."""
        when = _whole_seconds(at) if at else self._now()
        before = _order_key(ticket)
        ticket.updated_at = max(ticket.updated_at, when)
        ticket.generated = max(ticket.generated or ticket.updated_at, self._export_key(when))
        _moved(self._ticket_order, before, _order_key(ticket))

    def _live_ticket(self, ticket_id: int) -> _Ticket:
        ticket = self._tickets.get(ticket_id)
        if ticket is None or ticket.status == "deleted":
            raise KeyError(f"no live ticket {ticket_id}")
        return ticket

    def _require_user(self, user_id: int) -> None:
        if user_id not in self._users:
            raise KeyError(f"no user {user_id}")

    def _require_org(self, organization_id: int | None) -> None:
        if organization_id is not None and organization_id not in self._organizations:
            raise KeyError(f"no organization {organization_id}")


class _Server(ThreadingHTTPServer):
    """Tracks open connections so ``stop()`` can end kept-alive ones instead of leaking them."""

    daemon_threads = True

    def __init__(self, sandbox: ZendeskSandbox) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.sandbox = sandbox
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)

    def close_connections(self) -> None:
        with self._open_lock:
            for sock in self._open:
                with contextlib.suppress(OSError):  # already closed by the peer
                    sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects of a real API
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server: _Server

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        response = self.server.sandbox._serve(method, self.path, self.headers.get("Authorization"))
        payload = json.dumps(response.body).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr line; ``calls`` records traffic instead."""


def _check_ticket_values(*, status: str, priority: str | None) -> None:
    if status not in TICKET_STATUSES:
        raise ValueError(f"status must be one of {TICKET_STATUSES}, got {status!r}")
    if priority not in TICKET_PRIORITIES:
        raise ValueError(f"priority must be one of {TICKET_PRIORITIES}, got {priority!r}")


def _includes(query: dict[str, str]) -> set[str]:
    """The sideloads asked for: `include=metric_sets,users`."""
    return {part.strip() for part in query.get("include", "").split(",") if part.strip()}


def _positive_int(query: dict[str, str], name: str, default: int, *, error: str = "InvalidValue") -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise _ApiError(400, error, f"{name} must be a positive integer")
    return int(raw)


def _encode_export_cursor(position: tuple[int, int]) -> str:
    """Opaque, in the shape of Zendesk's own (base64 of ``"<unix>.0||<id>|"``)."""
    return base64.b64encode(f"{position[0]}.0||{position[1]}|".encode()).decode()


def _decode_export_cursor(cursor: str) -> tuple[int, int]:
    try:
        text = base64.b64decode(cursor, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        text = ""
    match = re.fullmatch(r"(\d+)\.0\|\|(\d+)\|", text)
    if match is None:
        raise _ApiError(400, "InvalidCursor", "The cursor is invalid or has expired; restart with start_time")
    return int(match.group(1)), int(match.group(2))


def _encode_page_cursor(key: tuple[int, ...]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _decode_page_cursor(cursor: str) -> tuple[int, ...]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError):
        key = None
    if not isinstance(key, list) or not all(isinstance(k, int) for k in key):
        raise _ApiError(400, "InvalidPaginationParameter", "page[after] is not a valid cursor")
    return tuple(key)


def _whole_seconds(moment: datetime) -> datetime:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(microsecond=0)


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _order_key(ticket: _Ticket) -> tuple[int, int]:
    """A ticket's place in the incremental ticket export: its `generated_timestamp`, then its id."""
    return _unix(ticket.generated or ticket.updated_at), ticket.id


def _moved(order: list[tuple[int, int]] | None, before: tuple[int, int] | None, after: tuple[int, int]) -> None:
    """Keep an export's sorted order (when built) as one entry arrives or moves: sorting every ticket or event
    again after each change made an export call of a large sandbox wait a tenth of a second, which the worker's
    quiet cycle then counted as its own."""
    if order is None:
        return
    if before is not None:
        at = bisect_left(order, before)
        if at < len(order) and order[at] == before:
            del order[at]
    insort(order, after)
