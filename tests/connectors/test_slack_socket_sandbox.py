"""The Slack sandbox's Socket Mode, held to what Slack documents, with a plain WebSocket client (`websockets`) so
that nothing of the worker or slack-sdk's Socket Mode client is assumed.

Slack's documentation relied on:
- apps.connections.open (docs.slack.dev/reference/methods/apps.connections.open): an app-level token, "in the
  HTTP Authorization header of your request; passing it as a POST parameter will result in an error"; answers
  ``{"ok": true, "url": "wss://.../link/?ticket=...&app_id=..."}``; the token needs ``connections:write``
  (api.slack.com/scopes/connections:write). A token of another type gets ``not_allowed_token_type``.
- Using Socket Mode (docs.slack.dev/apis/events-api/using-socket-mode/, formerly
  api.slack.com/apis/connections/socket-implement): a ``hello`` on connect (``num_connections``,
  ``debug_info``, ``connection_info.app_id``); envelopes with ``envelope_id``, ``type``, ``payload``,
  ``accepts_response_payload``, ``retry_attempt``, ``retry_reason``; acknowledge with ``{"envelope_id"}``
  (and ``payload`` when accepted) within three seconds, or the envelope is sent again; ``{"type":
  "disconnect", "reason": "warning" | "refresh_requested" | "link_disabled"}`` before Slack closes a
  connection; the URL is single-use ("refreshes regularly": each connection asks for a new one).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from connectors.slack.sandbox import APP_ID, SlackSandbox
from connectors.slack.sandbox_socket import Delivery


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SlackSandbox]:
    with SlackSandbox() as running:
        yield running


def _open(sandbox: SlackSandbox, token: str | None = None, *, form_token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = {"token": form_token} if form_token is not None else None
    answer = httpx.post(sandbox.url + "apps.connections.open", headers=headers, data=data, timeout=5)
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


def _url(sandbox: SlackSandbox) -> str:
    body = _open(sandbox, sandbox.app_token)
    assert body["ok"], body
    return str(body["url"])


def _json(connection: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(connection.recv(timeout=timeout))
    return message


@pytest.fixture
def app(sandbox: SlackSandbox) -> Iterator[ClientConnection]:
    """An app connected over Socket Mode, past its hello; closed after the test."""
    with connect(_url(sandbox), open_timeout=5) as connection:
        assert _json(connection)["type"] == "hello"
        yield connection
    assert _eventually(lambda: sandbox.socket_mode.open_connections() == 0)


def _eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _in_background(work: Callable[[], Delivery]) -> Future[Delivery]:
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(work)
    pool.shutdown(wait=False)
    return future


# -- apps.connections.open -------------------------------------------------------------------------------

def test_the_app_level_token_gets_a_websocket_url_with_a_ticket(sandbox: SlackSandbox) -> None:
    body = _open(sandbox, sandbox.app_token)

    assert body["ok"] is True
    assert body["url"].startswith("ws://127.0.0.1:")
    assert "/link/?ticket=" in body["url"] and f"app_id={APP_ID}" in body["url"]


def test_a_bot_token_is_not_allowed_to_open_a_connection(sandbox: SlackSandbox) -> None:
    assert _open(sandbox, sandbox.token) == {"ok": False, "error": "not_allowed_token_type"}


def test_an_unknown_app_level_token_is_invalid_auth(sandbox: SlackSandbox) -> None:
    assert _open(sandbox, "xapp-1-A0HBAPP0001-1-wrong") == {"ok": False, "error": "invalid_auth"}


def test_the_app_level_token_as_a_post_parameter_is_refused(sandbox: SlackSandbox) -> None:
    assert _open(sandbox, form_token=sandbox.app_token) == {"ok": False, "error": "not_authed"}


def test_the_app_level_token_is_refused_by_bot_methods(sandbox: SlackSandbox) -> None:
    answer = httpx.post(sandbox.url + "chat.postMessage", headers={"Authorization": f"Bearer {sandbox.app_token}"},
                        data={"channel": "#general", "text": "hi"}, timeout=5)

    assert answer.json() == {"ok": False, "error": "not_allowed_token_type"}


def test_an_app_level_token_without_connections_write_is_missing_a_scope() -> None:
    with SlackSandbox(app_scopes=("authorizations:read",)) as bare:
        body = _open(bare, bare.app_token)

    assert body["ok"] is False and body["error"] == "missing_scope" and body["needed"] == "connections:write"


def test_the_sandbox_imports_websockets_only_when_socket_mode_is_used() -> None:
    """The package ships the sandbox (the demo runs it); `websockets` is a dev dependency."""
    probe = ("import sys; from connectors.slack.sandbox import SlackSandbox; "
             "s = SlackSandbox(); s.start(); s.stop(); assert 'websockets' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)


# -- the WebSocket ---------------------------------------------------------------------------------------

def test_a_connection_begins_with_hello(sandbox: SlackSandbox) -> None:
    with connect(_url(sandbox), open_timeout=5) as connection:
        hello = _json(connection)

    assert hello["type"] == "hello"
    assert hello["num_connections"] >= 1
    assert hello["connection_info"] == {"app_id": APP_ID}
    assert {"host", "build_number", "approximate_connection_time"} <= set(hello["debug_info"])


def test_a_ticket_opens_one_connection_only(sandbox: SlackSandbox) -> None:
    url = _url(sandbox)
    with connect(url, open_timeout=5) as first:
        assert _json(first)["type"] == "hello"
        with pytest.raises(InvalidStatus) as refused:
            connect(url, open_timeout=5)

    assert refused.value.response.status_code == 401


def test_a_made_up_ticket_is_refused(sandbox: SlackSandbox) -> None:
    made_up = _url(sandbox).split("?")[0] + f"?ticket=0123456789abcdef&app_id={APP_ID}"

    with pytest.raises(InvalidStatus) as refused:
        connect(made_up, open_timeout=5)

    assert refused.value.response.status_code == 401


def test_an_envelope_carries_the_payload_and_counts_once_acknowledged(
        sandbox: SlackSandbox, app: ClientConnection) -> None:
    delivered = _in_background(lambda: sandbox.socket_mode.deliver("events_api", {"type": "event_callback"}))

    envelope = _json(app)
    app.send(json.dumps({"envelope_id": envelope["envelope_id"]}))

    assert envelope == {"envelope_id": envelope["envelope_id"], "type": "events_api",
                        "payload": {"type": "event_callback"}, "accepts_response_payload": False,
                        "retry_attempt": 0, "retry_reason": ""}
    delivery = delivered.result(timeout=5)
    assert delivery.acked and delivery.attempts == 1


def test_an_envelope_not_acknowledged_in_time_is_sent_again(sandbox: SlackSandbox, app: ClientConnection) -> None:
    delivered = _in_background(lambda: sandbox.socket_mode.deliver("interactive", {"type": "block_actions"},
                                                                   ack_timeout=0.2))

    first = _json(app)
    again = _json(app)
    app.send(json.dumps({"envelope_id": again["envelope_id"]}))

    assert again["envelope_id"] == first["envelope_id"]
    assert (first["retry_attempt"], again["retry_attempt"], again["retry_reason"]) == (0, 1, "timeout")
    delivery = delivered.result(timeout=5)
    assert delivery.acked and delivery.attempts == 2


def test_an_acknowledgement_for_an_envelope_given_up_on_counts_for_nothing(
        sandbox: SlackSandbox, app: ClientConnection) -> None:
    delivery = sandbox.socket_mode.deliver("events_api", {"type": "event_callback"}, ack_timeout=0.05,
                                           max_retries=0)
    app.send(json.dumps({"envelope_id": delivery.envelope_id}))

    assert not delivery.acked
    assert _eventually(lambda: any(e.kind == "unknown_ack" and e.detail["envelope_id"] == delivery.envelope_id
                                   for e in sandbox.socket_mode.events))


def test_an_envelope_never_acknowledged_is_given_up_after_the_retries(
        sandbox: SlackSandbox, app: ClientConnection) -> None:
    delivery = sandbox.socket_mode.deliver("events_api", {"type": "event_callback"}, ack_timeout=0.05,
                                           max_retries=2)

    assert not delivery.acked and delivery.attempts == 3


def test_the_acknowledgement_carries_a_response_where_the_envelope_accepts_one(
        sandbox: SlackSandbox, app: ClientConnection) -> None:
    answer = {"response_action": "errors", "errors": {"reason": "Say why"}}
    delivered = _in_background(lambda: sandbox.socket_mode.deliver(
        "interactive", {"type": "view_submission"}, accepts_response_payload=True))

    envelope = _json(app)
    app.send(json.dumps({"envelope_id": envelope["envelope_id"], "payload": answer}))

    assert envelope["accepts_response_payload"] is True
    assert delivered.result(timeout=5).response_payload == answer


def test_disconnect_is_announced_then_the_connection_closes(sandbox: SlackSandbox, app: ClientConnection) -> None:
    assert sandbox.socket_mode.disconnect("refresh_requested", grace=0.1) == 1

    message = _json(app)
    with pytest.raises(ConnectionClosed):
        app.recv(timeout=5)

    assert message["type"] == "disconnect" and message["reason"] == "refresh_requested"


def test_after_a_disconnect_envelopes_go_to_the_new_connection(sandbox: SlackSandbox, app: ClientConnection) -> None:
    sandbox.socket_mode.disconnect("warning", grace=2.0)
    assert _json(app)["type"] == "disconnect"
    with connect(_url(sandbox), open_timeout=5) as newer:
        assert _json(newer)["type"] == "hello"
        delivered = _in_background(lambda: sandbox.socket_mode.deliver("events_api", {"type": "event_callback"}))
        envelope = _json(newer)
        newer.send(json.dumps({"envelope_id": envelope["envelope_id"]}))

        assert delivered.result(timeout=5).acked


def test_a_tls_sandbox_serves_the_websocket_with_the_same_ca() -> None:
    with SlackSandbox(tls=True) as secure:
        body = httpx.post(secure.url + "apps.connections.open", headers={"Authorization": f"Bearer {secure.app_token}"},
                          verify=ssl.create_default_context(cafile=secure.ca_cert_path), timeout=5).json()
        trusted = ssl.create_default_context(cafile=secure.ca_cert_path)
        with connect(body["url"], ssl=trusted, open_timeout=5) as connection:
            hello = _json(connection)

    assert body["url"].startswith("wss://127.0.0.1:")
    assert hello["type"] == "hello"


def test_a_client_that_does_not_trust_the_ca_is_refused() -> None:
    with SlackSandbox(tls=True) as secure:
        body = httpx.post(secure.url + "apps.connections.open", headers={"Authorization": f"Bearer {secure.app_token}"},
                          verify=ssl.create_default_context(cafile=secure.ca_cert_path), timeout=5).json()
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(body["url"], open_timeout=5)


def test_no_envelope_is_sent_without_a_connection() -> None:
    with SlackSandbox() as lonely, pytest.raises(RuntimeError, match="no app is connected"):
        lonely.socket_mode.deliver("events_api", {}, connect_timeout=0.05)


