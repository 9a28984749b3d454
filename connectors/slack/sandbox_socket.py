"""Slack's Socket Mode, emulated for `SlackSandbox`: the WebSocket end of ``apps.connections.open``.

Slack documents the protocol in "Using Socket Mode" (docs.slack.dev/apis/events-api/using-socket-mode/, formerly
api.slack.com/apis/connections/socket-implement) and the method in docs.slack.dev/reference/methods/
apps.connections.open. What this server does, as those pages describe Slack doing it:

- ``apps.connections.open`` (answered by `SlackSandbox`) hands out ``wss://.../link/?ticket=...&app_id=...``;
  a ticket opens one connection, once: a second handshake with it is refused (HTTP 401), as is one without
  a ticket or with a made-up one.
- On connect the server sends ``{"type": "hello", "num_connections", "debug_info", "connection_info":
  {"app_id"}}``.
- Payloads arrive in envelopes ``{"envelope_id", "type": "events_api" | "interactive" | "slash_commands",
  "payload", "accepts_response_payload", "retry_attempt", "retry_reason"}``. The app acknowledges with
  ``{"envelope_id": ...}`` (plus ``"payload"`` where ``accepts_response_payload`` is true) within three
  seconds; an envelope not acknowledged in time is sent again with ``retry_attempt`` one higher and
  ``retry_reason`` "timeout" (at most `MAX_RETRIES` times), on the newest connection that is not closing.
  The retry carries the same ``envelope_id``, so an acknowledgement for either send counts once; one for an
  envelope given up on counts for nothing.
- Before closing a connection Slack sends ``{"type": "disconnect", "reason": "warning" | "refresh_requested"
  | "link_disabled"}``; `SocketModeServer.disconnect` does the same, stops sending envelopes to that
  connection at once and closes it after a grace period, so a client that opens its next connection when told
  (as slack-sdk's clients do) loses nothing.

Simplifications, on purpose: one app and one workspace; no limit on simultaneous connections (Slack allows
ten); no ``debug_reconnects``; retries follow at once on the deadline (Slack's Events API backs off between
them); tickets do not expire by time. Interactive envelopes are retried like events: Slack documents retries
for the Events API, and an app must be safe against a second delivery of a click either way.

`websockets` (in the dev extra) is imported here alone, and `SlackSandbox` imports this module only when
Socket Mode is first used, so the sandbox's HTTP side works on an install without it.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from connectors.sandboxes.local_ca import LocalCA

__all__ = ["ACK_TIMEOUT", "MAX_RETRIES", "Delivery", "SocketModeServer"]

ACK_TIMEOUT: Final = 3.0
"""Seconds an app has to acknowledge an envelope (Slack: three seconds)."""
MAX_RETRIES: Final = 3
DISCONNECT_REASONS: Final = ("warning", "refresh_requested", "link_disabled")


@dataclass(frozen=True)
class Delivery:
    """What became of one envelope: acknowledged or not, after how many sends, and the app's response payload."""

    envelope_id: str
    type: str
    acked: bool
    attempts: int
    response_payload: dict[str, Any] | None
    seconds: float
    """From the first send to the acknowledgement that counted (or to giving up)."""


@dataclass
class _Envelope:
    id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    lose_acks: int
    acked: threading.Event = field(default_factory=threading.Event)
    response_payload: dict[str, Any] | None = None


@dataclass
class _Link:
    """One open WebSocket, and whether a disconnect was announced on it (then nothing more is sent there)."""

    connection: ServerConnection
    ticket: str
    opened_at: float
    closing: bool = False


@dataclass(frozen=True)
class SocketEvent:
    """What the server saw, in order, for tests: ``kind`` is hello, envelope, ack, lost_ack, unknown_ack,
    disconnect, refused or closed."""

    kind: str
    detail: dict[str, Any]


class SocketModeServer:
    """The WebSocket side of Socket Mode on 127.0.0.1 (TLS with ``ca`` given, as the rest of the sandbox)."""

    def __init__(self, *, app_id: str, ca: LocalCA | None = None, ack_timeout: float = ACK_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app_id = app_id
        self.ack_timeout = ack_timeout
        self._clock = clock
        self._ca = ca
        self._lock = threading.Condition()
        self._tickets: dict[str, bool] = {}  # ticket -> used
        self._links: list[_Link] = []
        self._pending: dict[str, _Envelope] = {}
        self._ticket_of: dict[int, str] = {}  # id(connection) -> its ticket, from handshake to hello
        self.events: list[SocketEvent] = []
        self.connections_opened = 0
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._scheme = "ws"

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            return
        if self._ca is not None:
            # The sandbox's own CA signs this port too: the listening socket is wrapped as its HTTPS port is.
            listener = socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler)
            self._ca.serve_tls(listener)
            self._server = serve(self._connected, sock=listener.socket, process_request=self._check_ticket,
                                 compression=None, server_header="SlackSandbox/1.0", close_timeout=1)
            self._scheme = "wss"
        else:
            self._server = serve(self._connected, "127.0.0.1", 0, process_request=self._check_ticket,
                                 compression=None, server_header="SlackSandbox/1.0", close_timeout=1)
        self._thread = threading.Thread(target=self._server.serve_forever, name="slack-sandbox-socket",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None:
            server.shutdown()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.connection.close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the Socket Mode server is not started")
        return int(self._server.socket.getsockname()[1])

    # -- apps.connections.open -----------------------------------------------------------------------------

    def issue_url(self) -> str:
        """A fresh single-use URL, as ``apps.connections.open`` answers."""
        self.start()
        ticket = uuid.uuid4().hex
        with self._lock:
            self._tickets[ticket] = False
        return f"{self._scheme}://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={self.app_id}"

    # -- what a test does ----------------------------------------------------------------------------------

    def deliver(self, kind: str, payload: dict[str, Any], *, accepts_response_payload: bool = False,
                lose_acks: int = 0, ack_timeout: float | None = None, max_retries: int = MAX_RETRIES,
                connect_timeout: float = 5.0) -> Delivery:
        """Send ``payload`` in an envelope of type ``kind`` and wait for its acknowledgement, retrying as Slack
        does; ``lose_acks`` acknowledgements are dropped on the way (the app sent them, Slack never saw them).

        Waits up to ``connect_timeout`` for a connection first; raises RuntimeError when there is none (a test
        that sends to an app that never connected is broken, not the app).
        """
        if kind not in ("events_api", "interactive", "slash_commands"):
            raise ValueError(f"Socket Mode has no envelope type {kind!r}")
        envelope = _Envelope(str(uuid.uuid4()), kind, payload, accepts_response_payload, lose_acks)
        timeout = self.ack_timeout if ack_timeout is None else ack_timeout
        started = self._clock()
        attempts = 0
        with self._lock:
            self._pending[envelope.id] = envelope
        try:
            while attempts <= max_retries:
                link = self._wait_for_link(connect_timeout)
                message = {"envelope_id": envelope.id, "type": kind, "payload": payload,
                           "accepts_response_payload": accepts_response_payload, "retry_attempt": attempts,
                           "retry_reason": "timeout" if attempts else ""}
                with self._lock:
                    self.events.append(SocketEvent("envelope", {"envelope_id": envelope.id, "type": kind,
                                                                "retry_attempt": attempts}))
                attempts += 1
                try:
                    link.connection.send(json.dumps(message))
                except ConnectionClosed:
                    continue  # the connection went away under us: the next attempt goes to another
                if envelope.acked.wait(timeout):
                    return Delivery(envelope.id, kind, True, attempts, envelope.response_payload,
                                    self._clock() - started)
            return Delivery(envelope.id, kind, False, attempts, None, self._clock() - started)
        finally:
            with self._lock:
                self._pending.pop(envelope.id, None)

    def disconnect(self, reason: str = "refresh_requested", *, grace: float = 1.0) -> int:
        """Announce a disconnect on every open connection, as Slack does before closing one, and close them
        ``grace`` seconds later; envelopes go only to connections opened afterwards. Returns how many."""
        if reason not in DISCONNECT_REASONS:
            raise ValueError(f"Slack's disconnect reasons are {DISCONNECT_REASONS}, not {reason!r}")
        with self._lock:
            links = [link for link in self._links if not link.closing]
            for link in links:
                link.closing = True
                self.events.append(SocketEvent("disconnect", {"reason": reason, "ticket": link.ticket[:8]}))
        for link in links:
            try:
                link.connection.send(json.dumps({"type": "disconnect", "reason": reason,
                                                 "debug_info": {"host": "applink-sandbox"}}))
            except ConnectionClosed:
                continue
        if links:
            timer = threading.Timer(grace, _close_all, (links,))
            timer.daemon = True
            timer.start()
        return len(links)

    def issued_tickets(self) -> list[str]:
        """Every ticket handed out so far (tests look for them where they must not be: the logs)."""
        with self._lock:
            return list(self._tickets)

    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for link in self._links if not link.closing)

    def wait_for_connections(self, count: int = 1, timeout: float = 5.0) -> bool:
        """True once ``count`` connections (not closing) are open, False after ``timeout`` seconds."""
        with self._lock:
            return self._lock.wait_for(lambda: sum(1 for link in self._links if not link.closing) >= count,
                                       timeout)

    def wait_for_opened(self, total: int, timeout: float = 5.0) -> bool:
        """True once ``total`` connections have ever been opened (a reconnect makes the count grow)."""
        with self._lock:
            return self._lock.wait_for(lambda: self.connections_opened >= total and any(
                not link.closing for link in self._links), timeout)

    # -- the WebSocket side ----------------------------------------------------------------------------------

    def _check_ticket(self, connection: ServerConnection, request: Request) -> Response | None:
        ticket = (parse_qs(urlsplit(request.path).query).get("ticket") or [""])[0]
        with self._lock:
            used = self._tickets.get(ticket)
            if used is None or used:
                why = "no such ticket" if used is None else "ticket already used"
                self.events.append(SocketEvent("refused", {"why": why}))
                return connection.respond(401, f"{why}: call apps.connections.open for a new URL\n")
            self._tickets[ticket] = True
            self._ticket_of[id(connection)] = ticket
        return None

    def _connected(self, connection: ServerConnection) -> None:
        with self._lock:
            link = _Link(connection, self._ticket_of.pop(id(connection), ""), self._clock())
            self._links.append(link)
            self.connections_opened += 1
            count = sum(1 for other in self._links if not other.closing)
            self.events.append(SocketEvent("hello", {"num_connections": count}))
            self._lock.notify_all()
        try:
            connection.send(json.dumps({
                "type": "hello", "num_connections": count,
                "debug_info": {"host": "applink-sandbox", "build_number": 1,
                               "approximate_connection_time": 18060},
                "connection_info": {"app_id": self.app_id}}))
            for raw in connection:
                self._received(raw)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._links.remove(link)
                self.events.append(SocketEvent("closed", {"ticket": link.ticket[:8]}))
                self._lock.notify_all()

    def _received(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            return
        if not isinstance(message, dict) or "envelope_id" not in message:
            return
        envelope_id = str(message["envelope_id"])
        with self._lock:
            envelope = self._pending.get(envelope_id)
            if envelope is None or envelope.acked.is_set():
                self.events.append(SocketEvent("unknown_ack", {"envelope_id": envelope_id}))
                return
            if envelope.lose_acks > 0:
                envelope.lose_acks -= 1
                self.events.append(SocketEvent("lost_ack", {"envelope_id": envelope_id}))
                return
            payload = message.get("payload")
            if envelope.accepts_response_payload and isinstance(payload, dict):
                envelope.response_payload = payload
            self.events.append(SocketEvent("ack", {"envelope_id": envelope_id}))
            envelope.acked.set()

    def _wait_for_link(self, timeout: float) -> _Link:
        with self._lock:
            if not self._lock.wait_for(lambda: any(not link.closing for link in self._links), timeout):
                raise RuntimeError("no app is connected over Socket Mode")
            return max((link for link in self._links if not link.closing), key=lambda link: link.opened_at)


def _close_all(links: list[_Link]) -> None:
    for link in links:
        link.connection.close()
