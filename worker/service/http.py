"""The worker's HTTP side while `healthbeat run` runs: `GET /healthz`, `GET /metrics`, `POST /slack/actions`,
`POST /slack/events` (Slack's Events API, for the Home tab: `worker.service.slack_home`).

The scheduler tells a `HealthState` what each cycle did; request threads only read that state (under its
lock) and the metrics registry, never the store, so a slow scrape cannot hold up a cycle or see half a
transaction. Requests are dispatched through a route table, so later endpoints (`POST /slack/actions`)
are one `routes.add(...)` away; an unknown path is a 404, a known path with the wrong method a 405.

The port faces the internet (Slack's interactivity requests come from it), so what a client can hold is
bounded: at most `MAX_CONNECTIONS` connections, a thread each (a newcomer closes the one that has waited
longest without sending a request, and only when every one is busy answering is it refused with 503); a
request must arrive whole within `REQUEST_TIMEOUT` of the server starting to wait for it, however slowly
it trickles (slowloris), and an idle kept-alive connection is closed after as long; the answer must be
taken within as long. HTTP/1.1 is parsed by h11 (strict framing: no request smuggling), and a refused request
closes its connection. Not uvicorn: it has no deadline for a request's arrival (its keep-alive timeout is reset
by every byte), the one defence this port needs most.

`/healthz` answers 200 while the worker is healthy ("ok"), starting ("starting": within one interval of
start, before a first success) or running with a problem it works around ("degraded": the last cycle
failed but an earlier one is recent enough, or the rule files are broken and the last good rules are in
force). It answers 503 ("unhealthy") when the last successful cycle is older than 3 × the interval (or
there is none once the start grace has passed), or when the rule files are broken and no good rules were
ever loaded: the cases where a restart or a human is needed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

import h11

from worker.clock import Clock, system_clock
from worker.errors import HealthServerError
from worker.service.metrics import CONTENT_TYPE, LastCycle, Metrics, StoreFacts
from worker.store import iso

if TYPE_CHECKING:
    from worker.cycle import CycleReport
    from worker.rulebook.in_force import RuleBook

__all__ = [
    "MAX_CONNECTIONS",
    "REQUEST_TIMEOUT",
    "STALE_AFTER_INTERVALS",
    "Health",
    "HealthServer",
    "HealthServerError",
    "HealthState",
    "Request",
    "Response",
    "Routes",
]

log = logging.getLogger(__name__)

STALE_AFTER_INTERVALS: Final = 3
"""The last successful cycle may be this many intervals old before `/healthz` says 503."""
MAX_BODY: Final = 1 << 20
"""Largest request body read (Slack's interactive payloads are far smaller); 413 beyond."""
MAX_HEAD: Final = 16 * 1024
"""Largest request line and headers together; 431 beyond."""
MAX_CONNECTIONS: Final = 64
"""Connections served at once, a thread and a file handle each, whatever the internet opens."""
REQUEST_TIMEOUT: Final = 10.0
"""Seconds a client has to send a whole request once the server waits for it (on a new connection or between
kept-alive requests), and to take the answer. Slack sends its small requests at once."""
LINGER: Final = 2.0
"""Seconds spent reading and dropping what a refused client still sends, so that it reads the refusal."""
EVICTION_WAIT: Final = 1.0
"""How long a newcomer waits for a closed idle connection's slot before it is refused."""
RECEIVE_SIZE: Final = 64 * 1024
ANY_INTERFACE: Final = "0.0.0.0"  # noqa: S104 - a container's health port must be reachable from outside it


# -- what the scheduler tells us ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Health:
    """One answer of `/healthz`: the status, why, and the JSON body."""

    status: str  # ok, starting, degraded or unhealthy
    problems: tuple[str, ...]
    body: dict[str, Any]

    @property
    def http_status(self) -> int:
        return 503 if self.status == "unhealthy" else 200


@dataclass(frozen=True)
class _Rules:
    checked: bool = False
    ok: bool = True
    good_rules_loaded: bool = True
    problems: tuple[str, ...] = ()


class HealthState:
    """What `/healthz` reports: written by the scheduler's thread after each cycle, read by request threads.

    Every update replaces immutable values under one lock, so a reader always sees one consistent moment.
    `clock` must tell the same time as the cycle's (a test shifts both).
    """

    def __init__(self, interval: timedelta, *, clock: Clock = system_clock,
                 started_at: datetime | None = None) -> None:
        if interval <= timedelta(0):
            raise ValueError("interval must be positive")
        self.interval = interval
        self._clock = clock
        self.started_at = started_at or clock()
        self._lock = threading.Lock()
        self._facts = StoreFacts(schema_version=0)
        self._last_success: datetime | None = None
        self._last_cycle: dict[str, Any] | None = None
        self._rules = _Rules()

    # -- updates (scheduler thread) --------------------------------------------------------------------

    def record_store(self, facts: StoreFacts) -> None:
        """What the store says: at start (the last cycle before this process) and after each cycle."""
        with self._lock:
            self._facts = facts
            self._last_success = _latest(self._last_success, facts.last_success)
            if self._last_cycle is None and facts.last_cycle is not None:
                self._last_cycle = _cycle_from_store(facts.last_cycle)

    def record_rules(self, rulebook: RuleBook) -> None:
        """The rule files' state after the rulebook's latest reload (each cycle reloads it)."""
        rules = _Rules(checked=True, ok=rulebook.healthy,
                       good_rules_loaded=rulebook.scorecard is not None and rulebook.alerts is not None,
                       problems=tuple(rulebook.problems))
        with self._lock:
            self._rules = rules

    def record_cycle(self, report: CycleReport, facts: StoreFacts, rulebook: RuleBook | None = None) -> None:
        """A cycle finished (well or not): its outcome and problems, and the store's state after it."""
        finished = report.finished_at or self._clock()
        cycle = {"outcome": "ok" if report.ok else "failed", "started_at": iso(report.started_at),
                 "finished_at": iso(finished), "seconds": round(report.seconds, 3),
                 "problems": list(report.problems())}
        if rulebook is not None:
            self.record_rules(rulebook)
        with self._lock:
            self._facts = facts
            self._last_cycle = cycle
            success = finished if report.ok else None
            self._last_success = _latest(_latest(self._last_success, facts.last_success), success)

    def record_crash(self, error: str) -> None:
        """A cycle raised instead of returning a report (a bug): shown until the next cycle finishes."""
        now = self._clock()
        with self._lock:
            self._last_cycle = {"outcome": "crashed", "started_at": None, "finished_at": iso(now),
                                "seconds": None, "problems": [error]}

    # -- reading (request threads) ---------------------------------------------------------------------

    def check(self) -> Health:
        """The status now, with every reason for it in plain words."""
        now = self._clock()
        with self._lock:
            facts, last_success, cycle, rules = self._facts, self._last_success, self._last_cycle, self._rules
        limit = self.interval * STALE_AFTER_INTERVALS
        in_grace = now - self.started_at <= self.interval
        unhealthy: list[str] = []
        degraded: list[str] = []
        if last_success is None:
            if not in_grace:
                unhealthy.append(f"no successful cycle since the worker started at {iso(self.started_at)} "
                                 f"(start grace of one interval, {_seconds(self.interval)} s, has passed)")
        elif now - last_success > limit and not in_grace:
            unhealthy.append(f"the last successful cycle finished {_seconds(now - last_success)} s ago, more than "
                             f"{STALE_AFTER_INTERVALS} × the interval ({_seconds(limit)} s)")
        if rules.checked and not rules.ok:
            if rules.good_rules_loaded:
                degraded.append("the rule files have problems; the last good rules stay in force")
            else:
                unhealthy.append("the rule files are broken and no good rules are loaded: nothing is scored")
        if facts.dead_nudges:
            degraded.append("nudges that could not be delivered and were given up on: "
                            + ", ".join(facts.dead_nudges) + " (the outbox keeps each with its last_error)")
        if cycle is not None and cycle["outcome"] != "ok":
            degraded.append(f"the last cycle {cycle['outcome']}: " + "; ".join(cycle["problems"] or ["no detail"]))
        if unhealthy:
            status = "unhealthy"
        elif last_success is None or (now - last_success > limit):
            status = "starting"
        else:
            status = "degraded" if degraded else "ok"
        problems = tuple(unhealthy + degraded)
        body = {
            "status": status,
            "problems": list(problems),
            "checked_at": iso(now),
            "started_at": iso(self.started_at),
            "interval_seconds": _seconds(self.interval),
            "last_success": None if last_success is None else {
                "at": iso(last_success), "age_seconds": _seconds(now - last_success)},
            "last_cycle": cycle,
            "rules": {"checked": rules.checked, "ok": rules.ok if rules.checked else None,
                      "good_rules_loaded": rules.good_rules_loaded if rules.checked else None,
                      "problems": list(rules.problems)},
            "outbox": dict(facts.outbox_depth),
            "outbox_dead": dict(facts.outbox_dead),
            "quarantined": facts.quarantined,
            "schema_version": facts.schema_version,
        }
        return Health(status, problems, body)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def _seconds(span: timedelta) -> int:
    return int(span.total_seconds())


def _cycle_from_store(last: LastCycle) -> dict[str, Any]:
    outcome = last.outcome if last.outcome in ("ok", "failed") else "interrupted"
    return {"outcome": outcome, "started_at": None,
            "finished_at": iso(last.finished_at) if last.finished_at else None, "seconds": None,
            "problems": list(last.problems)}


# -- requests, responses and the route table ---------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """One HTTP request, read whole: `headers` keys are lower-case; `body` is the raw bytes (for signatures)."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any, **headers: str) -> Response:
        return cls(status, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode(),
                   "application/json; charset=utf-8", headers)


Handler = Callable[[Request], Response]


class Routes:
    """(method, path) → handler. Exact paths only: the worker serves a handful of fixed endpoints."""

    def __init__(self) -> None:
        self._table: dict[str, dict[str, Handler]] = {}

    def add(self, method: str, path: str, handler: Handler) -> None:
        methods = self._table.setdefault(path, {})
        if method.upper() in methods:
            raise ValueError(f"{method.upper()} {path} already has a handler")
        methods[method.upper()] = handler

    def dispatch(self, request: Request) -> Response:
        methods = self._table.get(request.path)
        if methods is None:
            return Response.json(404, {"error": "not_found", "path": request.path})
        method = "GET" if request.method == "HEAD" else request.method
        handler = methods.get(method)
        if handler is None:
            allowed = ", ".join(sorted({*methods, *(["HEAD"] if "GET" in methods else [])}))
            return Response.json(405, {"error": "method_not_allowed", "allowed": allowed}, Allow=allowed)
        try:
            return handler(request)
        except Exception:
            log.exception("health server: %s %s failed", request.method, request.path)
            return Response.json(500, {"error": "internal_error"})


# -- the server ---------------------------------------------------------------------------------------------

class HealthServer:
    """`/healthz` and `/metrics` (and whatever `routes` gains) on a port, from a daemon thread.

    `max_connections` and `request_timeout` bound what the internet can hold (see the module's docstring);
    tests make them small.
    """

    def __init__(self, state: HealthState, metrics: Metrics, *, port: int, host: str = ANY_INTERFACE,
                 max_connections: int = MAX_CONNECTIONS, request_timeout: float = REQUEST_TIMEOUT) -> None:
        if max_connections < 1 or request_timeout <= 0:
            raise ValueError("max_connections and request_timeout must be positive")
        self.state = state
        self.metrics = metrics
        self.routes = Routes()
        self.routes.add("GET", "/healthz", self._healthz)
        self.routes.add("GET", "/metrics", self._metrics)
        self._address = (host, port)
        self._max_connections = max_connections
        self._request_timeout = request_timeout
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _healthz(self, request: Request) -> Response:
        health = self.state.check()
        return Response.json(health.http_status, health.body)

    def _metrics(self, request: Request) -> Response:
        return Response(200, self.metrics.render(), CONTENT_TYPE)

    def start(self) -> HealthServer:
        if self._server is not None:
            return self
        try:
            server = _Server(self._address, self.routes, max_connections=self._max_connections,
                             request_timeout=self._request_timeout)
        except OSError as exc:
            raise HealthServerError(f"cannot listen on {self._address[0]}:{self._address[1]} ({exc.strerror or exc}); "
                                    "choose another HEALTHBEAT_HTTP_PORT") from None
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="healthbeat-http", daemon=True)
        self._thread.start()
        log.info("health server on %s (/healthz, /metrics)", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and free the port; safe to call twice or before `start`.

        Idle connections are closed at once; a request being handled may finish for a few seconds.
        """
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.slots.close_all(wait=5.0)
        if thread is not None:
            thread.join(timeout=5)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the health server is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._address[0]
        shown = "127.0.0.1" if host in (ANY_INTERFACE, "") else host
        return f"http://{shown}:{self.port}"

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class _Slot:
    waiting_since: float | None  # None while a request is being handled
    evicted: bool = False


class _Slots:
    """The connections being served, at most `limit`, so idle sockets cannot use up threads or file handles.

    When all are taken, a newcomer closes the connection that has waited longest for its request (silent or
    trickling: what a flood is made of) instead of being turned away, so `/healthz` and Slack still get
    through; only when every slot is handling a request is the newcomer refused (503).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[socket.socket, _Slot] = {}
        self._changed = threading.Condition()
        self._evicted = 0
        self._refused = 0
        self._warned_at: float | None = None

    def admit(self, sock: socket.socket) -> bool:
        with self._changed:
            if len(self._open) >= self.limit and self._evict_longest_waiting():
                self._changed.wait_for(lambda: len(self._open) < self.limit, timeout=EVICTION_WAIT)
            admitted = len(self._open) < self.limit
            if admitted:
                self._open[sock] = _Slot(time.monotonic())
            else:
                self._refused += 1
            warning = self._pressure_report()
        if warning:
            log.warning("%s", warning)
        return admitted

    def _evict_longest_waiting(self) -> bool:
        """Close the connection that has waited longest for a request, if one is waiting; whether one was.

        One already closed but not yet gone counts too: its slot is about to be free.
        """
        if any(slot.evicted for slot in self._open.values()):
            return True
        waiting = [(slot.waiting_since, id(sock), sock) for sock, slot in self._open.items()
                   if slot.waiting_since is not None]
        if not waiting:
            return False
        _, _, victim = min(waiting)
        self._open[victim].evicted = True
        self._evicted += 1
        with contextlib.suppress(OSError):  # it may have just closed by itself
            victim.shutdown(socket.SHUT_RDWR)  # wakes its thread, which then ends and frees the slot
        return True

    def _pressure_report(self) -> str | None:
        """At most one line a minute about the cap being reached (a flood would otherwise flood the log)."""
        now = time.monotonic()
        if not (self._evicted or self._refused) or (self._warned_at is not None and now - self._warned_at < 60):
            return None
        report = (f"health server: at its cap of {self.limit} connections: closed {self._evicted} that sent no "
                  f"request in time for newer ones, refused {self._refused} (503) while all were busy")
        self._warned_at, self._evicted, self._refused = now, 0, 0
        return report

    def waiting(self, sock: socket.socket) -> None:
        with self._changed:
            if sock in self._open:
                self._open[sock].waiting_since = time.monotonic()

    def handling(self, sock: socket.socket) -> bool:
        """Mark a connection as busy answering (never closed for a newcomer); False if it was closed already."""
        with self._changed:
            slot = self._open.get(sock)
            if slot is None or slot.evicted:
                return False
            slot.waiting_since = None
            return True

    def evicted(self, sock: socket.socket) -> bool:
        with self._changed:
            slot = self._open.get(sock)
            return slot is not None and slot.evicted

    def release(self, sock: socket.socket) -> None:
        with self._changed:
            self._open.pop(sock, None)
            self._changed.notify_all()

    def close_all(self, *, wait: float) -> None:
        """Close the connections waiting for a request, and give the ones being handled `wait` s to finish."""
        with self._changed:
            for sock, slot in self._open.items():
                if slot.waiting_since is not None:
                    slot.evicted = True
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
            self._changed.wait_for(lambda: not self._open, timeout=wait)


_BUSY_BODY: Final = b'{"error": "busy", "detail": "every connection is handling a request; try again"}\n'
_BUSY: Final = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
                b"Content-Length: %d\r\nRetry-After: 1\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
                % len(_BUSY_BODY)) + _BUSY_BODY


class _Server(socketserver.TCPServer):
    """Accepts connections and gives each admitted one a daemon thread; the rest get a 503 from this thread."""

    allow_reuse_address = True
    request_queue_size = 512  # a burst of connections waits in the kernel, not refused by it
    daemon_threads = True

    def __init__(self, address: tuple[str, int], routes: Routes, *, max_connections: int,
                 request_timeout: float) -> None:
        self.routes = routes
        self.slots = _Slots(max_connections)
        self.request_timeout = request_timeout
        super().__init__(address, _Connection)

    def process_request(self, request: Any, client_address: Any) -> None:
        sock: socket.socket = request
        if not self.slots.admit(sock):
            sock.setblocking(False)
            with contextlib.suppress(OSError):  # a new socket's send buffer is empty: this never blocks
                sock.send(_BUSY)
            self.shutdown_request(sock)
            return
        thread = threading.Thread(target=self._serve_connection, args=(sock, client_address),
                                  name="healthbeat-http-connection", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: the process is in trouble, the client may retry
            log.error("health server: cannot start a thread for a connection; closed it")
            self.shutdown_request(sock)
            self.slots.release(sock)

    def _serve_connection(self, sock: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(sock, client_address)
        except Exception:
            self.handle_error(sock, client_address)
        finally:
            self.shutdown_request(sock)
            self.slots.release(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A bug of this module (a client's failings are handled in `_Connection`): logged, not printed."""
        log.exception("health server: serving a connection from %s failed", _peer(client_address))


def _peer(client_address: Any) -> str:
    return str(client_address[0]) if isinstance(client_address, tuple) and client_address else "?"


class _Connection(socketserver.BaseRequestHandler):
    """One connection: requests parsed by h11, one after another (keep-alive), each within the time limit.

    h11 does the HTTP/1.1 framing strictly (malformed, negative or conflicting Content-Length, bad header
    lines, missing Host: 400; oversized head: 431; unknown transfer coding: 501). Every refusal closes the
    connection after its answer, so bytes the client sent after a refused head are never read as a request.
    """

    request: socket.socket
    server: _Server

    def setup(self) -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._eof = False
        self._peer = _peer(self.client_address)

    def handle(self) -> None:
        try:
            while self._serve_one():
                self._conn.start_next_cycle()
        except TimeoutError as exc:
            log.debug("health server: closed a connection from %s that was too slow (%s)", self._peer, exc)
        except OSError as exc:  # a reset or a broken pipe: the client went away
            self._hung_up(exc.strerror or str(exc))

    def _hung_up(self, detail: str) -> None:
        """One line for a client gone mid-request (none for one gone between requests, or closed by us)."""
        if self.server.slots.evicted(self.request):
            return
        if self._conn.their_state is h11.IDLE and not self._conn.trailing_data[0]:
            log.debug("health server: %s closed its connection between requests (%s)", self._peer, detail)
        else:
            log.info("health server: %s hung up mid-request (%s)", self._peer, detail)

    def _serve_one(self) -> bool:
        """Read one request and answer it; whether the connection stays open for another."""
        self.server.slots.waiting(self.request)
        deadline = time.monotonic() + self.server.request_timeout
        try:
            event = self._next_event(deadline)
            if not isinstance(event, h11.Request):
                return False  # closed between requests (or evicted): nothing was asked
            refusal = _framing_refusal(event)
            if refusal is not None:
                self._refuse(refusal)
                return False
            if self._conn.they_are_waiting_for_100_continue:
                self._write(self._conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            body = self._read_body(deadline)
        except h11.RemoteProtocolError as exc:
            if self._eof:
                self._hung_up(str(exc))
                return False
            log.info("health server: refused a malformed request from %s: %s", self._peer, exc)
            self._refuse(Response.json(exc.error_status_hint, {"error": "bad_request", "detail": str(exc)}))
            return False
        if body is None:
            self._refuse(_too_large())
            return False
        if not self.server.slots.handling(self.request):
            return False  # closed for a newcomer while its request arrived: nobody can read the answer
        response = self.server.routes.dispatch(_request(event, body))
        self._respond(response, head=event.method == b"HEAD")
        return self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE

    def _next_event(self, deadline: float) -> object:
        while True:
            event = self._conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete request within {self.server.request_timeout:g} s")
            self.request.settimeout(left)
            data = self.request.recv(RECEIVE_SIZE)
            self._eof = self._eof or not data
            self._conn.receive_data(data)

    def _read_body(self, deadline: float) -> bytes | None:
        """The request's body, or None when it grows past MAX_BODY (a chunked body says so only as it comes)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            event = self._next_event(deadline)
            if isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    return None
                chunks.append(bytes(event.data))

    def _respond(self, response: Response, *, head: bool, close: bool = False) -> None:
        headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body))),
                   ("Cache-Control", "no-store"), ("Server", "healthbeat"), *response.headers.items()]
        if close:
            headers.append(("Connection", "close"))
        out = self._conn.send(h11.Response(status_code=response.status, headers=headers, reason=_reason(response)))
        if response.body and not head:
            out += self._conn.send(h11.Data(data=response.body))
        self._write(out + self._conn.send(h11.EndOfMessage()))

    def _write(self, data: bytes) -> None:
        self.request.settimeout(self.server.request_timeout)  # a total for sendall: a client that never reads
        self.request.sendall(data)

    def _refuse(self, response: Response) -> None:
        """Answer and close, reading what the client still sends for a moment (a lingering close): closing a
        socket with unread input resets it, and the client would see a reset instead of the answer."""
        self._respond(response, head=False, close=True)
        deadline, drained = time.monotonic() + LINGER, 0
        with contextlib.suppress(OSError):
            self.request.shutdown(socket.SHUT_WR)
            while drained < MAX_BODY and (left := deadline - time.monotonic()) > 0:
                self.request.settimeout(left)
                data = self.request.recv(RECEIVE_SIZE)
                if not data:
                    break
                drained += len(data)


def _framing_refusal(request: h11.Request) -> Response | None:
    """A refusal for a body this server will not read: ambiguous framing (RFC 9112 §6.1) or too large."""
    names = [name for name, _ in request.headers]
    if b"transfer-encoding" in names and b"content-length" in names:
        return Response.json(400, {"error": "bad_request",
                                   "detail": "both Transfer-Encoding and Content-Length: the body's end is ambiguous"})
    length = next((int(value) for name, value in request.headers if name == b"content-length"), 0)
    return _too_large() if length > MAX_BODY else None


def _too_large() -> Response:
    return Response.json(413, {"error": "payload_too_large", "limit": MAX_BODY})


def _reason(response: Response) -> bytes:
    try:
        return HTTPStatus(response.status).phrase.encode()
    except ValueError:
        return b""


def _request(event: h11.Request, body: bytes) -> Request:
    target = event.target.decode("ascii")
    if target.startswith("//"):  # a path, not a network location
        target = "/" + target.lstrip("/")
    url = urlsplit(target)
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
    return Request(event.method.decode("ascii"), url.path, parse_qs(url.query), headers, body)
