"""The worker's HTTP port faces the internet (Slack's interactivity requests): what a hostile or broken client
can do to it, over raw sockets against the real server on loopback.

Idle and trickling connections are cut off, the number of connections is capped (so threads and file handles
are bounded and the cycle keeps its own), framing is strict (no request smuggling), a client that hangs up is
one log line, and a signed Slack payload of any shape is a 2xx or a 4xx, never a 500.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import socket
import struct
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connectors.sandboxes.world import World
from connectors.slack.sandbox import slack_signature
from worker.cycle import Cycle
from worker.service.feedback import ACTIONS
from worker.service.http import MAX_CONNECTIONS, HealthServer, HealthState, Request, Response, Routes
from worker.service.metrics import Metrics
from worker.service.slack_actions import MODAL_CALLBACK_ID, SlackActions
from worker.store import Store

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
KEY = "nudge:turned_red:001000000000001AAA:1:fire"
FLOOD = 300


class Seen:
    """A route that records what reached it, to prove what never did."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        self.release.set()

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        self.entered.release()
        self.release.wait(10)
        return Response.json(200, {"seen": len(self.requests)})


@pytest.fixture
def seen() -> Seen:
    return Seen()


def _server(seen: Seen, **limits: Any) -> HealthServer:
    server = HealthServer(HealthState(timedelta(minutes=15)), Metrics(), port=0, host="127.0.0.1", **limits)
    server.routes.add("POST", "/seen", seen)
    server.routes.add("GET", "/seen", seen)
    return server.start()


@pytest.fixture
def server(seen: Seen) -> Iterator[HealthServer]:
    running = _server(seen)
    yield running
    running.stop()


@pytest.fixture
def quick(seen: Seen) -> Iterator[HealthServer]:
    """A server whose clients get half a second to send a request."""
    running = _server(seen, request_timeout=0.5)
    yield running
    running.stop()


def _connect(server: HealthServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def _read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """Everything the server sends within `seconds`, and whether it closed the connection by then."""
    received = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            return received, True
        if not data:
            return received, True
        received += data
    return received, False


def _statuses(raw: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]


def _exchange(server: HealthServer, data: bytes, seconds: float = 3.0) -> tuple[list[int], bool, bytes]:
    with _connect(server) as sock:
        sock.sendall(data)
        raw, closed = _read_until_closed(sock, seconds)
    return _statuses(raw), closed, raw


def _server_sockets(port: int) -> int:
    """How many sockets this process holds on the server's side of `port` (its accepted connections)."""
    inodes: set[str] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, state, inode = int(fields[1].split(":")[1], 16), fields[3], fields[9]
        if local_port == port and state != "0A":  # 0A: the listening socket itself
            inodes.add(inode)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            count += 1
    return count


def _idle_flood(server: HealthServer, count: int) -> list[socket.socket]:
    """Up to `count` connections that never send a byte (fewer if the process runs out of file handles)."""
    flood: list[socket.socket] = []
    for _ in range(count):
        try:
            flood.append(_connect(server))
        except OSError:  # EMFILE: what the test is about; the cycle says the rest
            break
    return flood


# -- idle and slow clients ----------------------------------------------------------------------------------

def test_a_connection_that_sends_nothing_is_closed_after_the_request_timeout(quick: HealthServer) -> None:
    with _connect(quick) as sock:
        started = time.monotonic()
        _, closed = _read_until_closed(sock, 5)

    assert closed
    assert time.monotonic() - started < 2


def test_a_kept_alive_connection_left_idle_is_closed_after_the_request_timeout(quick: HealthServer) -> None:
    with _connect(quick) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        raw, closed = _read_until_closed(sock, 5)

    assert _statuses(raw) == [200]
    assert closed
    assert time.monotonic() - started < 2


def test_a_header_trickled_a_byte_at_a_time_is_cut_off_within_the_request_timeout(quick: HealthServer) -> None:
    stop = threading.Event()

    with _connect(quick) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")

        def trickle() -> None:
            while not stop.wait(0.05):
                try:
                    sock.send(b"a")
                except OSError:
                    return

        threading.Thread(target=trickle, daemon=True).start()
        started = time.monotonic()
        try:
            raw, closed = _read_until_closed(sock, 5)
        finally:
            stop.set()

    assert closed
    assert _statuses(raw) == []
    assert time.monotonic() - started < 2


def test_hundreds_of_idle_connections_leave_healthz_answering_and_file_handles_bounded(
        server: HealthServer) -> None:
    threads_before = threading.active_count()
    flood = _idle_flood(server, FLOOD)
    try:
        assert len(flood) == FLOOD
        response = httpx.get(f"{server.url}/healthz", timeout=5)
        held = _server_sockets(server.port)
        threads = threading.active_count() - threads_before
    finally:
        for sock in flood:
            sock.close()

    assert response.status_code == 200
    assert response.json()["status"] == "starting"
    assert held <= MAX_CONNECTIONS
    assert threads <= MAX_CONNECTIONS + 2


def test_when_every_connection_is_busy_a_newcomer_is_refused_at_once_with_503(seen: Seen) -> None:
    server = _server(seen, max_connections=2)
    seen.release.clear()
    busy = [threading.Thread(target=_exchange, args=(server, b"GET /seen HTTP/1.1\r\nHost: x\r\n\r\n"), daemon=True)
            for _ in range(2)]
    try:
        for thread in busy:
            thread.start()
        assert seen.entered.acquire(timeout=5) and seen.entered.acquire(timeout=5)
        started = time.monotonic()
        statuses, closed, raw = _exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        took = time.monotonic() - started
    finally:
        seen.release.set()
        server.stop()

    assert statuses == [503]
    assert b"Connection: close" in raw
    assert closed
    assert took < 2.5


def test_the_cycle_keeps_its_file_handles_while_hundreds_of_idle_connections_are_open(
        world: World, cycle: Cycle, seen: Seen) -> None:
    """The worker's cycle and its HTTP port share one process's file handles: a flood must not take them all."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    server = _server(seen)
    flood: list[socket.socket] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + FLOOD + MAX_CONNECTIONS + 150, hard))
    try:
        try:
            flood = _idle_flood(server, FLOOD)
            time.sleep(0.2)  # let the server take what it will
            report = cycle.run()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    finally:
        for sock in flood:
            sock.close()
        server.stop()

    assert report.ok, report.problems()


# -- framing: what is and is not a request ------------------------------------------------------------------

SMUGGLED = b"GET /seen HTTP/1.1\r\nHost: x\r\n\r\n"


def test_a_refused_oversized_body_closes_the_connection_so_what_follows_is_never_a_request(
        server: HealthServer, seen: Seen) -> None:
    statuses, closed, raw = _exchange(
        server, b"POST /seen HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n" + SMUGGLED)

    assert statuses == [413]
    assert b"Connection: close" in raw
    assert closed
    assert seen.requests == []


MALFORMED_LENGTHS: dict[str, bytes] = {
    "not a number": b"Content-Length: abc\r\n",
    "negative": b"Content-Length: -5\r\n",
    "with a sign": b"Content-Length: +5\r\n",
    "two different values in one header": b"Content-Length: 5, 6\r\n",
    "two headers with different values": b"Content-Length: 5\r\nContent-Length: 6\r\n",
    "beside a Transfer-Encoding": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    "a space before the colon": b"Content-Length : 5\r\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED_LENGTHS))
def test_a_malformed_content_length_is_400_and_closes_the_connection(
        server: HealthServer, seen: Seen, case: str) -> None:
    statuses, closed, raw = _exchange(
        server, b"POST /seen HTTP/1.1\r\nHost: x\r\n" + MALFORMED_LENGTHS[case] + b"\r\nhello" + SMUGGLED)

    assert statuses == [400]
    assert b"Connection: close" in raw
    assert closed
    assert seen.requests == []


def test_a_chunked_body_reaches_the_route_whole(server: HealthServer, seen: Seen) -> None:
    statuses, _, _ = _exchange(server, b"POST /seen HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                       b"Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")

    assert statuses == [200]
    assert [r.body for r in seen.requests] == [b"hello world"]


def test_two_requests_on_one_connection_are_answered_in_order(server: HealthServer, seen: Seen) -> None:
    statuses, _, _ = _exchange(server, b"POST /seen HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
                                       b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

    assert statuses == [200, 404]
    assert [r.body for r in seen.requests] == [b"hi"]


# -- clients that hang up -----------------------------------------------------------------------------------

def _wait_for_log(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        found = [r for r in caplog.records if text in r.getMessage()]
        if found:
            return found
        time.sleep(0.02)
    return []


def test_a_client_hanging_up_mid_body_is_one_log_line_and_never_reaches_the_route(
        server: HealthServer, seen: Seen, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO, logger="worker.service.http")
    with _connect(server) as sock:
        sock.sendall(b"POST /seen HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        sock.shutdown(socket.SHUT_WR)
        _read_until_closed(sock, 3)

    lines = _wait_for_log(caplog, "hung up mid-request")
    assert len(lines) == 1
    assert lines[0].exc_info is None
    assert seen.requests == []
    assert "Traceback" not in capfd.readouterr().err


def test_a_client_resetting_mid_headers_is_one_log_line_not_a_traceback(
        server: HealthServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO, logger="worker.service.http")
    sock = _connect(server)
    sock.sendall(b"POST /seen HTTP/1.1\r\nHost: x\r\nContent-")
    time.sleep(0.1)  # the server is waiting for the rest
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # with SO_LINGER 0: a reset, as a client that dies does

    lines = _wait_for_log(caplog, "hung up mid-request")
    time.sleep(0.1)
    assert len(lines) == 1
    assert lines[0].exc_info is None
    assert all(r.exc_info is None for r in caplog.records)
    assert "Traceback" not in capfd.readouterr().err


# -- Slack payloads of any shape ------------------------------------------------------------------------------

@pytest.fixture
def slack_actions(tmp_path: Path) -> Iterator[SlackActions]:
    """The handler on a store where nudge KEY was sent to D1, so a click on it counts when well-formed."""
    with Store(tmp_path / "healthbeat.db") as store:
        store.conn.execute("INSERT INTO outbox (dedup_key, kind, account_id, payload, status, remote_ref, created_at) "
                           "VALUES (?, 'slack', '001000000000001AAA', ?, 'sent', 'D1:1.1', '2024-06-01T00:00:00Z')",
                           (KEY, json.dumps({"destination": "owner"})))
        actions = SlackActions(store, signing_secret=SECRET)
        yield actions
        actions.close()


def _signed(body: bytes) -> dict[str, str]:
    stamp = int(time.time())
    return {"x-slack-request-timestamp": str(stamp), "x-slack-signature": slack_signature(SECRET, stamp, body),
            "content-type": "application/x-www-form-urlencoded"}


def _dispatch(actions: SlackActions, body: bytes) -> Response:
    """The answer the server would give to `body`, signed as Slack signs (500 if the handler raised)."""
    routes = Routes()
    routes.add("POST", "/slack/actions", actions.handle)
    return routes.dispatch(Request("POST", "/slack/actions", {}, _signed(body), body))


def _form(payload: Any) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def _click(**parts: Any) -> dict[str, Any]:
    return {"type": "block_actions", "user": {"id": "U1", "username": "pat"},
            "actions": [{"action_id": "feedback_useful", "value": KEY, "action_ts": "1.5"}],
            "container": {"channel_id": "D1", "message_ts": "1.1"}, **parts}


def _submission(**view: Any) -> dict[str, Any]:
    return {"type": "view_submission", "user": {"id": "U1"},
            "view": {"callback_id": MODAL_CALLBACK_ID, "private_metadata": json.dumps({"key": KEY}), **view}}


WRONG_SHAPES: dict[str, Any] = {
    "the container is a string": _click(container="D1"),
    "an action is a number": _click(actions=[5]),
    "the actions are a string": _click(actions="feedback_useful"),
    "the channel id is a list": _click(channel={"id": ["D1"]}),
    "the user id is a lone surrogate": _click(user={"id": "\ud800"}),
    "the modal's metadata is an object": _submission(private_metadata={"key": KEY}),
    "the modal's input is a string": _submission(state={"values": {"reason": "because"}}),
}


@pytest.mark.parametrize("case", sorted(WRONG_SHAPES))
def test_a_signed_payload_of_the_wrong_shape_is_a_bad_request(
        slack_actions: SlackActions, seen: Seen, case: str) -> None:
    body = _form(WRONG_SHAPES[case])
    server = _server(seen)
    server.routes.add("POST", "/slack/actions", slack_actions.handle)
    try:
        response = httpx.post(f"{server.url}/slack/actions", content=body, headers=_signed(body), timeout=5)
    finally:
        server.stop()

    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert slack_actions.store.query("SELECT * FROM feedback") == []


def test_a_click_on_a_nudge_that_was_never_sent_is_refused_not_a_500(slack_actions: SlackActions) -> None:
    body = _form(_click(actions=[{"action_id": "feedback_useful", "value": KEY.replace(":1:", ":2:")}]))

    response = _dispatch(slack_actions, body)

    assert response.status == 422
    assert slack_actions.store.query("SELECT * FROM feedback") == []


def test_a_button_whose_episode_no_store_can_hold_is_ignored(slack_actions: SlackActions) -> None:
    for episode in ("9" * 20, "9" * 5000):
        key = f"nudge:turned_red:001000000000001AAA:{episode}:fire"

        response = _dispatch(slack_actions, _form(_click(actions=[{"action_id": "feedback_useful", "value": key}])))

        assert response.status == 200
    assert slack_actions.store.query("SELECT * FROM feedback") == []


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)
TEXT = st.text(max_size=12) | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2) | \
    st.sampled_from(["U1", "D1", "C1", "1.5", "NaN", "sNaN", "-1", "1e999", "14", ""])
KEYS = st.sampled_from([KEY, KEY.replace(":1:", ":" + "9" * 25 + ":"), "nudge:x", ""]) | TEXT


def _or_junk(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A part of a Slack payload: usually of its right shape, sometimes any JSON at all."""
    return st.one_of(valid, valid, JSON)


def _dicts(**parts: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """An object with any of these keys (each may be missing, as Slack leaves out what does not apply)."""
    return st.fixed_dictionaries({}, optional={name: _or_junk(part) for name, part in parts.items()})


USER = _dicts(id=TEXT, username=TEXT, name=TEXT)
CLICKS = st.fixed_dictionaries({"type": st.just("block_actions")}, optional={
    "user": _or_junk(USER),
    "actions": _or_junk(st.lists(_or_junk(_dicts(action_id=st.sampled_from([*ACTIONS, "open"]) | TEXT,
                                                 value=KEYS, action_ts=TEXT)), max_size=3)),
    "container": _or_junk(_dicts(channel_id=TEXT, message_ts=TEXT)),
    "channel": _or_junk(_dicts(id=TEXT)),
    "message": _or_junk(_dicts(ts=TEXT, text=TEXT, blocks=st.lists(JSON, max_size=2))),
    "trigger_id": _or_junk(TEXT),
})
INPUT = _dicts(value=TEXT, selected_option=_dicts(value=TEXT))
SUBMISSIONS = st.fixed_dictionaries({"type": st.just("view_submission")}, optional={
    "user": _or_junk(USER),
    "view": _or_junk(_dicts(
        callback_id=st.just(MODAL_CALLBACK_ID) | TEXT,
        private_metadata=st.builds(json.dumps, _dicts(key=KEYS, channel=TEXT, ts=TEXT)) | TEXT,
        state=_dicts(values=st.dictionaries(st.sampled_from(["reason", "value", "until"]) | TEXT,
                                            _or_junk(st.dictionaries(st.sampled_from(["reason", "value", "until"]),
                                                                     _or_junk(INPUT), max_size=2)),
                                            max_size=3)))),
})
BODIES = st.one_of(
    st.builds(_form, CLICKS | SUBMISSIONS | JSON),
    st.builds(lambda text: urlencode({"payload": text}).encode(), st.text(max_size=30)),
    st.builds(lambda form: urlencode(form).encode(), st.dictionaries(st.text(max_size=8), st.text(max_size=8))),
    st.binary(max_size=64),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES)
@example(body=_form(_click(actions=[{"action_id": "feedback_useful", "value": KEY.replace(":1:", f":{'9' * 5000}:")}])))
@example(body=b"payload=" + b"[" * 100_000)
def test_any_signed_body_is_answered_2xx_or_4xx_never_500(slack_actions: SlackActions, body: bytes) -> None:
    response = _dispatch(slack_actions, body)

    assert 200 <= response.status < 500, response.body
