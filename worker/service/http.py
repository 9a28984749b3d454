"""The worker's HTTP side while `healthbeat run` runs: `GET /healthz` and `GET /metrics`.

A stdlib `ThreadingHTTPServer` in a daemon thread on `HEALTHBEAT_HTTP_PORT` (0 picks a free port). The
scheduler tells a `HealthState` what each cycle did; request threads only read that state (under its
lock) and the metrics registry, never the store, so a slow scrape cannot hold up a cycle or see half a
transaction. Requests are dispatched through a route table, so later endpoints (`POST /slack/actions`)
are one `routes.add(...)` away; an unknown path is a 404, a known path with the wrong method a 405.

`/healthz` answers 200 while the worker is healthy ("ok"), starting ("starting": within one interval of
start, before a first success) or running with a problem it works around ("degraded": the last cycle
failed but an earlier one is recent enough, or the rule files are broken and the last good rules are in
force). It answers 503 ("unhealthy") when the last successful cycle is older than 3 × the interval (or
there is none once the start grace has passed), or when the rule files are broken and no good rules were
ever loaded: the cases where a restart or a human is needed.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

from worker.clock import Clock, system_clock
from worker.errors import HealthServerError
from worker.service.metrics import CONTENT_TYPE, LastCycle, Metrics, StoreFacts
from worker.store import iso

if TYPE_CHECKING:
    from worker.cycle import CycleReport
    from worker.rulebook.in_force import RuleBook

__all__ = [
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
"""Largest request body read (Slack's interactive payloads are far smaller)."""
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
    """`/healthz` and `/metrics` (and whatever `routes` gains) on a port, from a daemon thread."""

    def __init__(self, state: HealthState, metrics: Metrics, *, port: int, host: str = ANY_INTERFACE) -> None:
        self.state = state
        self.metrics = metrics
        self.routes = Routes()
        self.routes.add("GET", "/healthz", self._healthz)
        self.routes.add("GET", "/metrics", self._metrics)
        self._address = (host, port)
        self._server: ThreadingHTTPServer | None = None
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
            server = ThreadingHTTPServer(self._address, _handler_for(self.routes))
        except OSError as exc:
            raise HealthServerError(f"cannot listen on {self._address[0]}:{self._address[1]} ({exc.strerror or exc}); "
                                    "choose another HEALTHBEAT_HTTP_PORT") from None
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="healthbeat-http", daemon=True)
        self._thread.start()
        log.info("health server on %s (/healthz, /metrics)", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and free the port; safe to call twice or before `start`."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None:
            server.shutdown()
            server.server_close()
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


def _handler_for(routes: Routes) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        server_version = "healthbeat"
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(Response.json(413, {"error": "payload_too_large"}), head=False)
                return
            body = self.rfile.read(length) if length > 0 else b""
            url = urlsplit(self.path)
            request = Request(self.command, url.path, parse_qs(url.query),
                              {k.lower(): v for k, v in self.headers.items()}, body)
            self._send(routes.dispatch(request), head=self.command == "HEAD")

        def _send(self, response: Response, *, head: bool) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(response.body)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("health server: " + format, *args)

    return _Handler
