"""Socket Mode: the feedback buttons, the "Score looks wrong" modal and the Home tab for a worker that no one can
reach from the internet (SLACK_APP_TOKEN, an app-level token with ``connections:write``).

The worker opens the connection itself: ``apps.connections.open`` (`connectors.slack.client.SocketModeLink`)
gives a single-use WebSocket URL, slack-sdk's built-in client (`slack_sdk.socket_mode.builtin`, no extra
dependency) holds the WebSocket, pings it, and opens a new one when Slack sends ``disconnect`` (a refresh, a
warning) or the connection drops. Envelopes go to the same code as the HTTP routes, after their transport
layer: ``interactive`` to `SlackActions.handle_payload`, ``events_api`` to `SlackEvents.handle_body`. There is no
signing secret to check: only Slack knows the URL, and only the app-level token could ask for it.

Slack wants each envelope acknowledged within three seconds, and sends it again otherwise. An event is
acknowledged before it is even looked at (its work, the Home tab publish, is queued anyway). An interaction is
acknowledged once the vote is in the store, as the HTTP route answers once it is, because the acknowledgement
carries the answer (the modal's field errors) and because a click that could not be recorded (the store busy:
503) must not be acknowledged: Slack then shows the click failed, or sends it again. Everything slow (the
message update showing the feedback, the Home tab publish) runs afterwards on the handlers' background threads.
A second delivery of the same click counts once: votes are idempotent by the action's timestamp.

Proxies: slack-sdk's client reads HTTPS_PROXY / HTTP_PROXY (or ``proxy``) and tunnels through it with CONNECT,
then TLS with the CA bundle (REQUESTS_CA_BUNDLE / SSL_CERT_FILE) the API calls use. Without a proxy it speaks
TLS to port 443 only (any other port is plain: slack-sdk keeps that for its own tests); Slack's URLs are
``wss://...`` on 443.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any, Final

from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from connectors.slack.client import SlackAuthError, SlackError, SocketModeLink
from worker.config import Settings
from worker.errors import ConfigError
from worker.service.http import Response
from worker.service.slack_actions import SlackActions, slack_app_token
from worker.service.slack_home import SlackEvents

__all__ = ["SocketMode", "build_socket_mode"]

log = logging.getLogger(__name__)

CLOSE_WAIT: Final = 10.0
"""How long `SocketMode.close` waits for a reconnection under way (slack-sdk's own lock waits five seconds)."""
RETRY_SECONDS: Final = 30.0
"""How long the worker waits before asking again when Slack cannot be reached at start (a refused token stops
the start instead: that needs a person)."""


class _Client(SocketModeClient):
    """slack-sdk's built-in client, asking `SocketModeLink` for each URL so that refusals are translated and
    counted, and the token never reaches slack-sdk's own error logging."""

    def __init__(self, issue: Callable[[], str], **kwargs: Any) -> None:
        self._issue = issue
        super().__init__(**kwargs)

    def issue_new_wss_url(self) -> str:
        return self._issue()


class SocketMode:
    """One Socket Mode session for the worker's lifetime: `start` connects (raising `ConfigError` when Slack
    refuses SLACK_APP_TOKEN), `close` disconnects for good.

    `on_envelope(type, outcome)` and `on_connection(result)` are hooks for metrics (the outcomes and results are
    `worker.service.metrics`' `SOCKET_ENVELOPE_OUTCOMES` and `SOCKET_CONNECTION_RESULTS`); both run on
    slack-sdk's threads and must be quick.
    """

    def __init__(self, link: SocketModeLink, *, actions: SlackActions, events: SlackEvents,
                 on_envelope: Callable[[str, str], None] | None = None,
                 on_connection: Callable[[str], None] | None = None, ping_interval: float = 5.0,
                 proxy: str | None = None, retry_seconds: float = RETRY_SECONDS) -> None:
        self._link = link
        self._actions = actions
        self._events = events
        self._on_envelope = on_envelope
        self._on_connection = on_connection
        self._retry_seconds = retry_seconds
        self._stopped = threading.Event()
        self._retrying: threading.Thread | None = None
        self._client = _Client(self._issue, app_token="", logger=logging.getLogger(f"{__name__}.sdk"),
                               web_client=link.web, ping_interval=ping_interval, proxy=proxy,
                               receive_buffer_size=64 * 1024)
        self._client.socket_mode_request_listeners.append(self._on_request)

    @property
    def connected(self) -> bool:
        return bool(self._client.is_connected())

    def start(self) -> None:
        """Connect now. A token Slack refuses raises `ConfigError` naming SLACK_APP_TOKEN; Slack out of reach
        is logged and retried in the background every `RETRY_SECONDS` until it works or `close`."""
        try:
            self._connect()
        except SlackAuthError as exc:
            self.close()
            raise ConfigError(str(exc)) from None
        except SlackError as exc:
            log.warning("socket mode: cannot reach Slack yet (%s); trying again every %gs", exc, self._retry_seconds)
            self._retrying = threading.Thread(target=self._keep_trying, name="socket-mode-start", daemon=True)
            self._retrying.start()

    def close(self) -> None:
        """Disconnect and stop reconnecting; envelopes being handled finish first (an unacknowledged one is sent
        again by Slack to the next connection)."""
        self._stopped.set()  # from here `_issue` gives no URL: nothing connects again
        self._client.auto_reconnect_enabled = False
        # A reconnection under way (after a disconnect) holds this lock; waiting for it means the connection it
        # opens is the one closed below, not one left open behind a closed client.
        locked = self._client.connect_operation_lock.acquire(timeout=CLOSE_WAIT)
        try:
            session = self._client.current_session
            if session is not None and session.sock is not None:
                # Wakes the reading thread at once: slack-sdk would wait out its three-second receive timeout.
                with contextlib.suppress(OSError):
                    session.sock.shutdown(socket.SHUT_RDWR)
            self._client.close()
        finally:
            if locked:
                self._client.connect_operation_lock.release()
        if self._retrying is not None:
            self._retrying.join(timeout=5)

    # -- connecting -----------------------------------------------------------------------------------------

    def _connect(self) -> None:
        self._client.connect()  # apps.connections.open, then the WebSocket; slack-sdk reconnects from here on
        log.info("socket mode: connected to Slack; buttons, modals and the Home tab arrive over it")

    def _keep_trying(self) -> None:
        while not self._stopped.wait(self._retry_seconds):
            try:
                self._connect()
                return
            except SlackAuthError as exc:
                log.error("socket mode: %s; buttons, modals and the Home tab are off until it is fixed", exc)
                return
            except SlackError as exc:
                log.warning("socket mode: still cannot reach Slack (%s)", exc)

    def _issue(self) -> str:
        if self._stopped.is_set():
            raise SlackError("stopped", "Socket Mode is stopping: no new connection", method="apps.connections.open")
        try:
            url = self._link.open_url()
        except SlackAuthError:
            self._count_connection("refused")
            raise
        except SlackError:
            self._count_connection("failed")
            raise
        self._count_connection("opened")
        return url

    # -- envelopes ------------------------------------------------------------------------------------------

    def _on_request(self, client: BaseSocketModeClient, request: SocketModeRequest) -> None:
        kind = str(request.type)
        if request.retry_attempt:
            log.info("socket mode: Slack sent an envelope again (retry #%s, %s)", request.retry_attempt,
                     request.retry_reason or "?")
        try:
            outcome = self._dispatch(client, request)
        except Exception:
            log.exception("socket mode: handling a %s envelope failed; not acknowledged, Slack sends it again", kind)
            outcome = "not_acked"
        if self._on_envelope is not None:
            self._on_envelope(kind, outcome)

    def _dispatch(self, client: BaseSocketModeClient, request: SocketModeRequest) -> str:
        payload = request.payload if isinstance(request.payload, dict) else {}
        if request.type == "events_api":
            _ack(client, request)  # first: the work (a Home tab publish) is queued, never waited for
            answer = self._events.handle_body(payload)
            return "acked" if answer.status < 400 else "refused"
        if request.type == "interactive":
            answer = self._actions.handle_payload(payload)
            if answer.status >= 500:
                return "not_acked"  # nothing recorded: Slack shows the click failed, or sends it again
            _ack(client, request, _answer_payload(answer) if request.accepts_response_payload else None)
            return "acked" if answer.status < 400 else "refused"
        _ack(client, request)  # slash commands and what Slack adds later: none of ours
        return "acked"

    def _count_connection(self, result: str) -> None:
        if self._on_connection is not None:
            self._on_connection(result)


def _ack(client: BaseSocketModeClient, request: SocketModeRequest, payload: dict[str, Any] | None = None) -> None:
    client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id, payload=payload))


def _answer_payload(answer: Response) -> dict[str, Any] | None:
    """The JSON object an HTTP answer would carry (``response_action``...), for the acknowledgement."""
    if answer.status >= 400 or not answer.body.strip():
        return None
    try:
        body = json.loads(answer.body)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def build_socket_mode(settings: Settings, *, actions: SlackActions, events: SlackEvents,
                      on_envelope: Callable[[str, str], None] | None = None,
                      on_connection: Callable[[str], None] | None = None) -> SocketMode | None:
    """Socket Mode as the scheduler runs it, when SLACK_APP_TOKEN is set (None otherwise); not yet started."""
    token = slack_app_token(settings)
    if token is None:
        return None
    link = SocketModeLink(token, base_url=settings.slack_api_url, ca_bundle=settings.ca_bundle)
    return SocketMode(link, actions=actions, events=events, on_envelope=on_envelope, on_connection=on_connection)
