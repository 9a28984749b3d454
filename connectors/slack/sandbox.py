"""A local emulator of the part of the Slack Web API that Healthbeat uses.

Tests, the demo and the benchmarks talk to it with the real slack-sdk over real HTTP on 127.0.0.1, so
it follows Slack's documented wire format rather than what our client happens to send: every method
answers ``POST`` (form-encoded or JSON body, as slack-sdk sends) and ``GET`` (query string); the token
comes as ``Authorization: Bearer`` or a ``token`` form field; errors are HTTP 200 with
``{"ok": false, "error": "..."}`` except rate limits (429 + ``Retry-After``) and injected 5xx; every
answer carries ``X-OAuth-Scopes`` and a method refuses a token without its scope (``missing_scope``).

Methods: ``auth.test``, ``users.lookupByEmail``, ``users.info``, ``conversations.open``,
``conversations.list``, ``conversations.history``, ``chat.postMessage``, ``chat.update``, ``views.open``,
``views.publish`` (a user's Home tab: the latest view published for each user is in `SlackSandbox.home_views`),
``apps.connections.open`` (Socket Mode, below).
Response shapes follow Slack's OpenAPI spec (``/work/shared/reference/slack_web_openapi_v2.json``) plus
what Slack added after it (message ``metadata``, ``include_all_metadata``, ``invalid_blocks``, and
``apps.connections.open``, which the spec does not have), which the tests check.

Interactivity, the other direction: Slack *sends* an app a signed request when someone clicks a button
or submits a modal. `SlackSandbox.send_interaction` does that the way Slack does (form-encoded
``payload=<json>``, ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature: v0=HMAC-SHA256(secret,
"v0:{timestamp}:{body}")``, optionally ``X-Slack-Retry-Num``); `SlackSandbox.block_actions_payload` and
`SlackSandbox.view_submission_payload` build the payloads from a posted message or an opened modal, with
a ``trigger_id`` that ``views.open`` accepts once, within three seconds, as Slack does;
`SlackSandbox.home_block_actions_payload` is a click on a published Home tab. `SlackSandbox.send_event` and
`SlackSandbox.app_home_opened` send Events API requests (a signed JSON body) to the app's events URL.

Socket Mode, the same payloads without a public port: ``apps.connections.open`` takes the app-level token
(`SlackSandbox.app_token`, ``xapp-``) in the Authorization header alone and answers a single-use WebSocket
URL; a bot token there gets ``not_allowed_token_type``, an app-level token on any other method the same,
and an unknown one ``invalid_auth`` (docs.slack.dev/reference/methods/apps.connections.open). The WebSocket
server is `connectors.slack.sandbox_socket` (it says what Slack's Socket Mode does and what it leaves out);
`SlackSandbox.socket_mode` is it, started on first use. `SlackSandbox.click_over_socket`,
`SlackSandbox.submit_view_over_socket` and `SlackSandbox.app_home_opened_over_socket` deliver the payloads
the HTTP helpers send, built by the same builders, in envelopes, and return what became of them.

Faults on demand with `SlackSandbox.fail_next`: any error code and status (429 with ``Retry-After``,
5xx), or `LOST_ANSWER`: the call is carried out but the connection closes unanswered.

Channels are public or private (`add_channel(..., private=True)`). As in Slack, a private channel's id
says nothing of its privacy (both kinds get ``C...`` ids here), its history needs ``groups:history`` where a
public one needs ``channels:history`` (docs.slack.dev/reference/scopes/groups.history, .../channels.history),
``conversations.list`` shows it only for ``types=private_channel`` (``groups:read``) and only if the bot is a
member, and to a bot outside it, it does not exist (``channel_not_found``).

``chat.postMessage`` keeps Slack's special posting limit: "one message per second per channel ... short
bursts >1 allowed" (docs.slack.dev/apis/web-api/rate-limits). Slack does not say how long a burst may be;
here a channel takes `post_burst` messages at once (default 3), then one a second, and answers a post
beyond that with HTTP 429 ``ratelimited`` and ``Retry-After: 1``.

Simplifications, on purpose: one workspace, no MPIMs, no threads listing (replies are hidden from
``conversations.history`` as Slack does); ``users.lookupByEmail`` returns a deactivated user with
``deleted: true`` (the client treats that and ``users_not_found`` alike).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.client
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connectors.sandboxes.local_ca import LocalCA

if TYPE_CHECKING:  # websockets is in the dev extra: imported when Socket Mode is first used, not before
    from connectors.slack.sandbox_socket import Delivery, SocketModeServer

TEAM_ID = "T0HBSANDBX"
BOT_USER_ID = "U0HBBOT0001"
BOT_ID = "B0HBBOT0001"
BOT_NAME = "healthbeat"
APP_ID = "A0HBAPP0001"
APP_TOKEN = "xapp-1-A0HBAPP0001-1-sandbox"  # noqa: S105 - the sandbox's own fake app-level token
VERIFICATION_TOKEN = "sandbox-verification-token"  # noqa: S105 - Slack's deprecated per-app token, sent in payloads
TRIGGER_TTL = 3.0  # seconds a trigger_id may be exchanged for a view (Slack: three seconds, once)
MAX_VIEW_BLOCKS = 100

LOST_ANSWER = 0  # fail_next(status=LOST_ANSWER): do the call, then hang up without answering
MAX_TEXT = 40_000  # chat.postMessage: longer text is refused with msg_too_long
MAX_BLOCKS = 50
_DEFAULT_LIST_LIMIT = 100
_MAX_LIST_LIMIT = 1000
_DEFAULT_HISTORY_LIMIT = 100
_MAX_HISTORY_LIMIT = 999


@dataclass(frozen=True)
class PostedMessage:
    """A message as the sandbox keeps it; ``user`` is the recipient when ``kind == "im"``."""

    channel: str
    kind: str  # "im" or "channel"
    user: str | None
    text: str
    blocks: list[dict[str, Any]] | None
    metadata: dict[str, Any] | None
    ts: str
    thread_ts: str | None = None


@dataclass(frozen=True)
class OpenedView:
    """A modal opened with ``views.open``: for whom, and the view as Slack answered it."""

    id: str
    user: str
    trigger_id: str
    view: dict[str, Any]


@dataclass(frozen=True)
class InteractionResult:
    """What the app answered to an interaction request, and how long it took (Slack gives up at 3 s)."""

    status: int
    body: bytes
    headers: dict[str, str]
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body) if self.body.strip() else None


@dataclass(frozen=True)
class ApiCall:
    """One request as the sandbox saw it (the token is never recorded)."""

    method: str
    params: dict[str, Any]
    ok: bool
    error: str | None
    status: int


@dataclass
class _User:
    id: str
    email: str
    name: str
    tz: str
    is_bot: bool
    deleted: bool
    updated: int


@dataclass
class _Channel:
    id: str
    name: str
    bot_is_member: bool
    archived: bool
    created: int
    private: bool = False


@dataclass
class _Fault:
    error: str
    status: int
    retry_after: int | None
    remaining: int


@dataclass
class _Trigger:
    user: str
    issued_at: float
    used: bool = False


@dataclass
class _Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class _ApiError(Exception):
    """Raised inside a method handler; becomes Slack's ``{"ok": false, "error": ...}`` answer."""

    def __init__(self, error: str, *, status: int = 200, extra: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})


class SlackSandbox:
    """A Slack workspace on loopback: users, public channels, DMs, and every message posted."""

    def __init__(
        self,
        *,
        token: str = "xoxb-sandbox-token",  # noqa: S107 - the sandbox's own fake token
        team: str = "Healthbeat Sandbox",
        scopes: Sequence[str] = (
            "chat:write", "users:read", "users:read.email", "im:write",
            "channels:history", "channels:read", "im:history", "groups:history",
        ),
        clock: Callable[[], float] = time.time,
        post_burst: int = 3,
        rate_clock: Callable[[], float] = time.monotonic,
        tls: bool = False,
        app_token: str = APP_TOKEN,
        app_scopes: Sequence[str] = ("connections:write",),
        socket_ack_timeout: float = 3.0,
    ) -> None:
        self.token = token
        self.app_token = app_token
        """The app-level token (``xapp-``) that ``apps.connections.open`` accepts, and no other method does."""
        self.app_scopes = tuple(app_scopes)
        self._socket_ack_timeout = socket_ack_timeout
        self._socket: SocketModeServer | None = None
        self._tls = tls
        self._ca: LocalCA | None = None
        self.ca_cert_path = ""
        """With ``tls``: the PEM file of the CA that signed the sandbox's certificate, for clients to trust."""
        self.post_burst = post_burst
        self._rate_clock = rate_clock
        self._post_levels: dict[str, tuple[float, float]] = {}  # channel -> (bucket level, when measured)
        self.team = team
        self.scopes = tuple(scopes)
        self._clock = clock
        self._lock = threading.RLock()
        self._users: dict[str, _User] = {}
        self._channels: dict[str, _Channel] = {}
        self._dms: dict[str, str] = {}  # user id -> D... id
        self._faults: dict[str, deque[_Fault]] = {}
        self._last_ts_us = 0
        self._next_id = 1
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.messages: list[PostedMessage] = []
        self.calls: list[ApiCall] = []
        self.views: list[OpenedView] = []
        self.home_views: dict[str, dict[str, Any]] = {}
        """user id -> the Home tab view last published for them (as Slack answered it)."""
        self._triggers: dict[str, _Trigger] = {}
        self._users[BOT_USER_ID] = _User(BOT_USER_ID, "", BOT_NAME, "America/New_York", True, False,
                                         int(clock()))

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve on a free port of 127.0.0.1 from a daemon thread."""
        if self._server is not None:
            return
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        if self._tls:
            self._ca = LocalCA()
            self._ca.serve_tls(self._server)
            self.ca_cert_path = self._ca.cert_path
        # A short poll interval makes stop() quick (shutdown waits for the loop's next poll).
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="slack-sandbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice or before `start`."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        if self._socket is not None:
            self._socket.stop()
            self._socket = None
        if self._ca is not None:
            self._ca.close()
            self._ca = None

    def __enter__(self) -> SlackSandbox:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL for ``slack_sdk.WebClient(base_url=...)``, e.g. ``http://127.0.0.1:PORT/api/``."""
        if self._server is None:
            raise RuntimeError("SlackSandbox is not started")
        host, port = self._server.server_address[:2]
        return f"{'https' if self._tls else 'http'}://{host!s}:{port}/api/"

    @property
    def socket_mode(self) -> SocketModeServer:
        """The Socket Mode WebSocket server (created, not yet listening, on first use; TLS when the sandbox is)."""
        with self._lock:
            if self._socket is None:
                from connectors.slack.sandbox_socket import SocketModeServer

                self._socket = SocketModeServer(app_id=APP_ID, ca=self._ca, ack_timeout=self._socket_ack_timeout)
            return self._socket

    # -- arranging the workspace -----------------------------------------------------------------------

    def add_user(self, email: str, name: str, *, tz: str = "America/New_York", is_bot: bool = False,
                 deleted: bool = False) -> str:
        """Add a member of the workspace and return their ``U...`` id."""
        with self._lock:
            user_id = self._new_id("U")
            self._users[user_id] = _User(user_id, email, name, tz, is_bot, deleted, int(self._clock()))
            return user_id

    def add_channel(self, name: str, *, bot_is_member: bool = True, archived: bool = False,
                    private: bool = False) -> str:
        """Add a channel (``name`` without ``#``), public or private, and return its ``C...`` id."""
        with self._lock:
            channel_id = self._new_id("C")
            self._channels[channel_id] = _Channel(channel_id, name.lstrip("#"), bot_is_member, archived,
                                                  int(self._clock()), private)
            return channel_id

    def fail_next(self, method: str, error: str, *, status: int = 200, retry_after: int | None = None,
                  times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` fail with ``error`` (and ``status``).

        ``("chat.postMessage", "ratelimited", status=429, retry_after=1)`` answers as Slack's rate
        limiter does; ``("chat.postMessage", "internal_error", status=500)`` as an outage.
        ``status=LOST_ANSWER`` (0) is the nastiest case for "never post twice": the call is carried
        out (the message is posted) but the connection closes without an answer; ``error`` is only
        what `calls` records.
        """
        if method not in _METHODS:
            raise ValueError(f"the Slack sandbox does not emulate {method!r}; it has {sorted(_METHODS)}")
        with self._lock:
            self._faults.setdefault(method, deque()).append(_Fault(error, status, retry_after, times))

    # -- inspecting what happened ----------------------------------------------------------------------

    def messages_in(self, channel_id: str) -> list[PostedMessage]:
        with self._lock:
            return [m for m in self.messages if m.channel == channel_id]

    def dms_to(self, user_id: str) -> list[PostedMessage]:
        with self._lock:
            return [m for m in self.messages if m.kind == "im" and m.user == user_id]

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    # -- interactivity: Slack calling the app -----------------------------------------------------------

    def new_trigger(self, user_id: str) -> str:
        """A ``trigger_id`` for this user, as Slack puts in an interaction: one ``views.open``, within 3 s."""
        with self._lock:
            self._known_user(user_id)
            number = self._next_id
            self._next_id += 1
            trigger_id = f"{int(self._clock())}.{number}.{hashlib.sha256(str(number).encode()).hexdigest()[:32]}"
            self._triggers[trigger_id] = _Trigger(user_id, self._clock())
            return trigger_id

    def block_actions_payload(self, message: PostedMessage, action_id: str, *, user: str,
                              value: str | None = None) -> dict[str, Any]:
        """The ``block_actions`` payload Slack sends when ``user`` clicks a button of ``message``.

        The message is read as it is now (after any ``chat.update``); ``value`` picks one of several
        buttons sharing an ``action_id`` (a digest has a set per account). Raises ValueError when the
        message or the button does not exist: a click on nothing is a broken test, not a request.
        """
        with self._lock:
            current = next((m for m in self.messages if m.channel == message.channel and m.ts == message.ts), None)
            if current is None:
                raise ValueError(f"no message {message.ts} in {message.channel}")
            action = self._clicked(current.blocks or [], action_id, value, f"message {message.ts}")
            channel_name = "directmessage" if current.kind == "im" else self._channels[current.channel].name
            return {
                "type": "block_actions", "user": self._actor_json(user), "api_app_id": APP_ID,
                "token": VERIFICATION_TOKEN,
                "container": {"type": "message", "message_ts": current.ts, "channel_id": current.channel,
                              "is_ephemeral": False},
                "trigger_id": self.new_trigger(user), "team": {"id": TEAM_ID, "domain": "healthbeat-sandbox"},
                "enterprise": None, "is_enterprise_install": False,
                "channel": {"id": current.channel, "name": channel_name},
                "message": self._message_json(current, with_metadata=False), "state": {"values": {}},
                "response_url": f"https://hooks.slack.com/actions/{TEAM_ID}/{self._next_id}/sandbox",
                "actions": [action],
            }

    def _clicked(self, blocks: list[dict[str, Any]], action_id: str, value: str | None, where: str
                 ) -> dict[str, Any]:
        """The ``actions`` entry of a click on the element ``action_id`` (``value`` picking among several) of
        ``blocks``, in a message or a view alike; ValueError when ``where`` has no such element. Under the lock."""
        found = _find_element(blocks, action_id, value)
        if found is None:
            raise ValueError(f"{where} has no element {action_id!r}"
                             + (f" with value {value!r}" if value is not None else ""))
        block_id, element = found
        action: dict[str, Any] = {"action_id": action_id, "block_id": block_id, "type": element.get("type"),
                                  "action_ts": self._next_ts()}
        for key in ("text", "value", "style", "url"):
            if key in element:
                action[key] = element[key]
        return action

    def home_block_actions_payload(self, user: str, action_id: str, *, value: str | None = None) -> dict[str, Any]:
        """The ``block_actions`` payload of a click on ``user``'s Home tab: its container is the view (``type``
        "view", no channel, no message), as Slack sends for clicks in a surface that is not a message."""
        with self._lock:
            view = self.home_views.get(user)
            if view is None:
                raise ValueError(f"no Home tab published for {user}")
            action = self._clicked(view.get("blocks") or [], action_id, value, f"the Home tab of {user}")
            return {
                "type": "block_actions", "user": self._actor_json(user), "api_app_id": APP_ID,
                "token": VERIFICATION_TOKEN, "container": {"type": "view", "view_id": view["id"]},
                "trigger_id": self.new_trigger(user), "team": {"id": TEAM_ID, "domain": "healthbeat-sandbox"},
                "enterprise": None, "is_enterprise_install": False, "view": view, "actions": [action],
            }

    def view_submission_payload(self, view: OpenedView, values: Mapping[str, str]) -> dict[str, Any]:
        """The ``view_submission`` payload Slack sends when the modal's user presses its submit button.

        ``values`` maps an input block's ``block_id`` to what the user entered (a select's option value).
        Inputs left out keep their ``initial_value``/``initial_option``; a required input left empty
        raises ValueError, because Slack's client would not submit the modal.
        """
        with self._lock:
            blocks = [b for b in view.view.get("blocks") or [] if b.get("type") == "input"]
            unknown = set(values) - {b.get("block_id") for b in blocks}
            if unknown:
                raise ValueError(f"the modal has no input block(s) {sorted(unknown)}")
            state: dict[str, Any] = {}
            for block in blocks:
                block_id, element = str(block.get("block_id")), block["element"]
                entry = _input_state(element, values.get(block_id))
                if not block.get("optional") and not _has_value(entry):
                    raise ValueError(f"Slack would not submit the modal: required input {block_id!r} is empty")
                state[block_id] = {str(element.get("action_id")): entry}
            return {
                "type": "view_submission", "team": {"id": TEAM_ID, "domain": "healthbeat-sandbox"},
                "user": self._actor_json(view.user), "api_app_id": APP_ID, "token": VERIFICATION_TOKEN,
                "trigger_id": self.new_trigger(view.user),
                "view": {**view.view, "state": {"values": state}},
                "response_urls": [], "is_enterprise_install": False, "enterprise": None,
            }

    def send_interaction(self, url: str, payload: Mapping[str, Any], signing_secret: str | None, *,
                         timestamp: int | None = None, retry_num: int | None = None,
                         timeout: float = 5.0) -> InteractionResult:
        """POST ``payload`` to the app's Request URL as Slack does, signed with ``signing_secret``.

        ``signing_secret=None`` sends it unsigned; ``timestamp`` (Unix seconds, default now by the
        sandbox's clock) lets a test send a stale request; ``retry_num`` adds Slack's retry headers.
        """
        body = urlencode({"payload": json.dumps(payload)}).encode()
        stamp = int(self._clock()) if timestamp is None else timestamp
        headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "Slackbot 1.0"}
        if signing_secret is not None:
            headers["X-Slack-Request-Timestamp"] = str(stamp)
            headers["X-Slack-Signature"] = slack_signature(signing_secret, stamp, body)
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        return post_form(url, body, headers, timeout=timeout)

    def send_event(self, url: str, body: Mapping[str, Any], signing_secret: str | None, *,
                   timestamp: int | None = None, timeout: float = 5.0) -> InteractionResult:
        """POST an Events API request to the app's events URL as Slack does: a JSON body, signed like an
        interaction (docs.slack.dev/apis/events-api: ``url_verification``, then ``event_callback``s)."""
        raw = json.dumps(body).encode()
        stamp = int(self._clock()) if timestamp is None else timestamp
        headers = {"Content-Type": "application/json", "User-Agent": "Slackbot 1.0"}
        if signing_secret is not None:
            headers["X-Slack-Request-Timestamp"] = str(stamp)
            headers["X-Slack-Signature"] = slack_signature(signing_secret, stamp, raw)
        return post_form(url, raw, headers, timeout=timeout)

    def app_home_opened(self, url: str, user: str, signing_secret: str | None, *, tab: str = "home",
                        timestamp: int | None = None) -> InteractionResult:
        """``user`` opens the app's Home tab: Slack's signed ``event_callback`` with ``app_home_opened``."""
        return self.send_event(url, self.app_home_opened_payload(user, tab=tab), signing_secret, timestamp=timestamp)

    def app_home_opened_payload(self, user: str, *, tab: str = "home") -> dict[str, Any]:
        """The ``event_callback`` envelope Slack sends when ``user`` opens a tab of the app's App Home."""
        self._known_user(user)
        with self._lock:
            event_id = self._new_id("Ev")
            dm = self._dm_for(user)
            published = self.home_views.get(user)
        event: dict[str, Any] = {"type": "app_home_opened", "user": user, "channel": dm, "tab": tab,
                                 "event_ts": f"{self._clock():.6f}"}
        if published is not None and tab == "home":
            event["view"] = published
        return {"token": VERIFICATION_TOKEN, "team_id": TEAM_ID, "api_app_id": APP_ID, "event": event,
                "type": "event_callback", "event_id": event_id, "event_time": int(self._clock()),
                "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}]}

    def click(self, url: str, message: PostedMessage, action_id: str, signing_secret: str | None, *, user: str,
              value: str | None = None) -> InteractionResult:
        """``user`` clicks a button of ``message``: Slack's signed ``block_actions`` request to ``url``."""
        return self.send_interaction(url, self.block_actions_payload(message, action_id, user=user, value=value),
                                     signing_secret)

    def submit_view(self, url: str, view: OpenedView, values: Mapping[str, str],
                    signing_secret: str | None) -> InteractionResult:
        """The modal's user submits it: Slack's signed ``view_submission`` request to ``url``."""
        return self.send_interaction(url, self.view_submission_payload(view, values), signing_secret)

    # -- the same, over Socket Mode --------------------------------------------------------------------

    def click_over_socket(self, message: PostedMessage, action_id: str, *, user: str, value: str | None = None,
                          **delivery: Any) -> Delivery:
        """``user`` clicks a button of ``message``: the ``block_actions`` payload in an ``interactive`` envelope
        to the connected app. ``delivery`` goes to `SocketModeServer.deliver` (``lose_acks``, ``ack_timeout``)."""
        payload = self.block_actions_payload(message, action_id, user=user, value=value)
        return self.socket_mode.deliver("interactive", payload, **delivery)

    def home_click_over_socket(self, user: str, action_id: str, *, value: str | None = None,
                               **delivery: Any) -> Delivery:
        """A click on ``user``'s Home tab, in an ``interactive`` envelope."""
        payload = self.home_block_actions_payload(user, action_id, value=value)
        return self.socket_mode.deliver("interactive", payload, **delivery)

    def submit_view_over_socket(self, view: OpenedView, values: Mapping[str, str], **delivery: Any) -> Delivery:
        """The modal's user submits it: ``view_submission`` in an ``interactive`` envelope whose acknowledgement
        may carry the answer (``response_action``), as an HTTP answer's body would."""
        payload = self.view_submission_payload(view, values)
        return self.socket_mode.deliver("interactive", payload, accepts_response_payload=True, **delivery)

    def app_home_opened_over_socket(self, user: str, *, tab: str = "home", **delivery: Any) -> Delivery:
        """``user`` opens the app's Home tab: the ``event_callback`` in an ``events_api`` envelope."""
        return self.socket_mode.deliver("events_api", self.app_home_opened_payload(user, tab=tab), **delivery)

    def _known_user(self, user_id: str) -> _User:
        if user_id not in self._users:
            raise ValueError(f"the sandbox workspace has no user {user_id!r}")
        return self._users[user_id]

    def _actor_json(self, user_id: str) -> dict[str, Any]:
        user = self._known_user(user_id)
        handle = user.email.split("@")[0] if user.email else user.name
        return {"id": user.id, "username": handle, "name": handle, "team_id": TEAM_ID}

    # -- request handling (called by the HTTP handler) ------------------------------------------------

    def handle(self, method: str, params: dict[str, Any], bearer: str | None, *,
               body_error: str | None = None) -> _Reply:
        """Answer one API call; free of HTTP so the dispatch rules are in one place.

        ``body_error`` is how the HTTP layer reports a body it could not read (``invalid_json``...).
        """
        with self._lock:
            recorded = {k: v for k, v in params.items() if k != "token"}
            fault = self._take_fault(method)
            try:
                if fault is not None and fault.status != LOST_ANSWER:
                    headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
                    raise _ApiError(fault.error, status=fault.status, headers=headers)
                reply = self._dispatch(method, params, bearer, body_error)
            except _ApiError as exc:
                reply = _Reply(exc.status, {"ok": False, "error": exc.error, **exc.extra}, exc.headers)
            reply.headers["X-OAuth-Scopes"] = ",".join(self.scopes)
            if fault is not None and fault.status == LOST_ANSWER:
                reply.status = LOST_ANSWER
            ok, error = bool(reply.body.get("ok")), reply.body.get("error")
            if reply.status == LOST_ANSWER and fault is not None:
                error = fault.error
            self.calls.append(ApiCall(method, recorded, ok, error, reply.status))
            return reply

    def _dispatch(self, method: str, params: dict[str, Any], bearer: str | None,
                  body_error: str | None) -> _Reply:
        spec = _METHODS.get(method)
        if spec is None:
            raise _ApiError("unknown_method", status=404)
        if body_error is not None:
            raise _ApiError(body_error)
        if method in _APP_LEVEL_METHODS:
            return self._dispatch_app_level(method, params, bearer)
        token = bearer if bearer is not None else _str(params, "token")
        if not token:
            raise _ApiError("not_authed")
        if token == self.app_token:
            raise _ApiError("not_allowed_token_type")
        if token != self.token:
            raise _ApiError("invalid_auth")
        handler, scope_rule = spec
        needed = scope_rule(self, params)
        missing = [scope for scope in needed if scope not in self.scopes]
        if missing:
            raise _ApiError("missing_scope", extra={"needed": ",".join(missing),
                                                    "provided": ",".join(self.scopes)})
        reply = _Reply(200, {"ok": True, **handler(self, params)})
        reply.headers["X-Accepted-OAuth-Scopes"] = ",".join(needed)
        return reply

    def _dispatch_app_level(self, method: str, params: dict[str, Any], bearer: str | None) -> _Reply:
        """A method that takes the app-level token, "in the HTTP Authorization header ...; passing it as a POST
        parameter will result in an error" (docs.slack.dev/reference/methods/apps.connections.open)."""
        if bearer is None:
            raise _ApiError("not_authed")
        if bearer == self.token:
            raise _ApiError("not_allowed_token_type")
        if bearer != self.app_token:
            raise _ApiError("invalid_auth")
        handler, scope_rule = _METHODS[method]
        missing = [scope for scope in scope_rule(self, params) if scope not in self.app_scopes]
        if missing:
            raise _ApiError("missing_scope", extra={"needed": ",".join(missing),
                                                    "provided": ",".join(self.app_scopes)})
        return _Reply(200, {"ok": True, **handler(self, params)},
                      {"X-Accepted-OAuth-Scopes": ",".join(scope_rule(self, params))})

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.popleft()
        return fault

    # -- helpers used by the method handlers ------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        number = self._next_id
        self._next_id += 1
        return f"{prefix}0HB{number:07d}"

    def _next_ts(self) -> str:
        """Unique, increasing ``"1700000000.000100"``-style ts, close to the clock like Slack's."""
        now_us = int(Decimal(repr(self._clock())) * 1_000_000)
        self._last_ts_us = max(now_us, self._last_ts_us + 1)
        return _format_ts(self._last_ts_us)

    def _dm_for(self, user_id: str) -> str:
        if user_id not in self._dms:
            self._dms[user_id] = self._new_id("D")
        return self._dms[user_id]

    def _user(self, user_id: str) -> _User:
        user = self._users.get(user_id)
        if user is None:
            raise _ApiError("user_not_found")
        return user

    def _take_post_slot(self, channel_id: str) -> None:
        """Slack's posting limit per channel: a leaky bucket of `post_burst` messages, drained one a second."""
        now = self._rate_clock()
        level, since = self._post_levels.get(channel_id, (0.0, now))
        level = max(0.0, level - (now - since))
        if level + 1 > self.post_burst:
            raise _ApiError("ratelimited", status=429, headers={"Retry-After": "1"})
        self._post_levels[channel_id] = (level + 1, now)

    def _conversation(self, ref: str) -> tuple[str, str, str | None]:
        """Resolve a ``channel`` argument to (id, kind, DM user): an id, ``#name``/``name`` or a user id."""
        if ref in self._channels:
            return ref, "channel", None
        for user_id, dm_id in self._dms.items():
            if ref == dm_id:
                return dm_id, "im", user_id
        if ref in self._users and not self._users[ref].deleted:
            return self._dm_for(ref), "im", ref
        name = ref[1:] if ref.startswith("#") else ref
        for channel in self._channels.values():
            if channel.name == name:
                return channel.id, "channel", None
        raise _ApiError("channel_not_found")

    def _check_can_read_or_post(self, channel_id: str, kind: str) -> None:
        if kind != "channel":
            return
        channel = self._channels[channel_id]
        if channel.private and not channel.bot_is_member:
            raise _ApiError("channel_not_found")  # a private channel does not exist for those outside it
        if channel.archived:
            raise _ApiError("is_archived")
        if not channel.bot_is_member:
            raise _ApiError("not_in_channel")

    def _message_json(self, message: PostedMessage, *, with_metadata: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "message", "text": message.text, "user": BOT_USER_ID,
                               "bot_id": BOT_ID, "team": TEAM_ID, "ts": message.ts}
        if message.blocks is not None:
            out["blocks"] = message.blocks
        if message.thread_ts is not None:
            out["thread_ts"] = message.thread_ts
        if message.metadata is not None and with_metadata:
            out["metadata"] = message.metadata
        return out

    def _user_json(self, user: _User) -> dict[str, Any]:
        offset, label = _tz_facts(user.tz, self._clock())
        handle = user.email.split("@")[0] if user.email else user.name
        profile: dict[str, Any] = {
            "avatar_hash": "g0000000000", "status_text": "", "status_emoji": "", "real_name": user.name,
            "display_name": user.name, "real_name_normalized": user.name,
            "display_name_normalized": user.name, "title": "", "phone": "", "skype": "",
            "fields": {}, "team": TEAM_ID,
        }
        if user.email:
            profile["email"] = user.email
        if user.is_bot and user.id == BOT_USER_ID:
            profile["bot_id"] = BOT_ID
        return {
            "id": user.id, "team_id": TEAM_ID, "name": handle, "deleted": user.deleted, "color": "9f69e7",
            "real_name": user.name, "tz": user.tz, "tz_label": label, "tz_offset": offset,
            "profile": profile, "is_admin": False, "is_owner": False, "is_primary_owner": False,
            "is_restricted": False, "is_ultra_restricted": False, "is_bot": user.is_bot,
            "is_app_user": False, "updated": user.updated, "has_2fa": False,
        }

    def _channel_json(self, channel: _Channel) -> dict[str, Any]:
        empty_text = {"value": "", "creator": "", "last_set": 0}
        return {
            "id": channel.id, "name": channel.name, "is_channel": True, "is_group": False,
            "is_im": False, "is_mpim": False, "is_private": channel.private, "created": channel.created,
            "is_archived": channel.archived, "is_general": False, "unlinked": 0,
            "name_normalized": channel.name, "is_shared": False, "is_org_shared": False,
            "is_pending_ext_shared": False, "pending_shared": [], "parent_conversation": None,
            "creator": BOT_USER_ID, "is_ext_shared": False, "shared_team_ids": [TEAM_ID],
            "pending_connected_team_ids": [], "is_member": channel.bot_is_member,
            "topic": dict(empty_text), "purpose": dict(empty_text), "previous_names": [],
            "num_members": len(self._users),
        }

    def _im_json(self, user_id: str) -> dict[str, Any]:
        return {"id": self._dms[user_id], "created": self._users[user_id].updated, "is_archived": False,
                "is_im": True, "is_org_shared": False, "user": user_id, "is_user_deleted":
                self._users[user_id].deleted, "priority": 0}


# -- method handlers ------------------------------------------------------------------------------------
# Each takes the sandbox (lock held) and the request parameters, returns the success body without "ok",
# or raises _ApiError. Scope rules return the scopes the token needs, all of them, for this request.

Handler = Callable[[SlackSandbox, dict[str, Any]], dict[str, Any]]
ScopeRule = Callable[[SlackSandbox, dict[str, Any]], tuple[str, ...]]


def _auth_test(sb: SlackSandbox, params: dict[str, Any]) -> dict[str, Any]:
    return {"url": "https://healthbeat-sandbox.slack.com/", "team": sb.team, "user": BOT_NAME,
            "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID, "is_enterprise_install": False}


def _users_lookup_by_email(sb: SlackSandbox, params: dict[str, Any]) -> dict[str, Any]:
    email = (_str(params, "email") or "").strip().lower()
    for user in sb._users.values():
        if email and user.email.lower() == email:
            return {"user": sb._user_json(user)}
    raise _ApiError("users_not_found")


def _users_info(sb: SlackSandbox, params: dict[str, Any]) -> dict[str, Any]:
    return {"user": sb._user_json(sb._user(_str(params, "user") or ""))}


def _conversations_open(sb: SlackSandbox, params: dict[str, Any]) -> dict[str, Any]:
    channel_ref, users_arg = _str(params, "channel"), _str(params, "users")
    if channel_ref:
        _, kind, user_id = sb._conversation(channel_ref)
        if kind != "im" or user_id is None:
            raise _ApiError("method_not_supported_for_channel_type")
    else:
        user_ids = [u.strip() for u in (users_arg or "").split(",") if u.strip()]
        if not user_ids:
            raise _ApiError("users_list_not_supplied")
        if len(user_ids) > 1:  # multi-person DMs are not emulated
            raise _ApiError("method_not_supported_for_channel_type")
        user_id = user_ids[0]
        if sb._user(user_id).deleted:
            raise _ApiError("user_disabled")
    already_open = user_id in sb._dms
    sb._dm_for(user_id)
    body: dict[str, Any] = {"channel": sb._im_json(user_id) if _bool(params, "return_im")
                            else {"id": sb._dms[user_id]}}
    if already_open:
        body.update({"no_op": True, "already_open": True})
    return body


def _conversations_list(sb: SlackSandbox, params: dict[str, Any]) -> dict[str, Any]:
    types = _types(params)
    unknown = types - {"public_channel", "private_channel", "mpim", "im"}
    if unknown:
        raise _ApiError("invalid_types")
    rows: list[tuple[str, dict[str, Any]]] = []
    exclude_archived = _bool(params, "exclude_archived")
    if "public_channel" in types:
        rows += [(c.id, sb._channel_json(c)) for c in sb._channels.values()
                 if not c.private and not (exclude_archived and c.archived)]
    if "private_channel" in types:  # only those the bot is in: the others do not exist for it
        rows += [(c.id, sb._channel_json(c)) for c in sb._channels.values()
                 if c.private and c.bot_is_member and not (exclude_archived and c.archived)]
    if "im" in types:
        rows += [(dm_id, sb._im_json(user_id)) for user_id, dm_id in sb._dms.items()]
    rows.sort(key=lambda row: row[0])
    limit = _limit(params, _DEFAULT_LIST_LIMIT, _MAX_LIST_LIMIT)
    after = _decode_cursor(params, "channel")
    start = 0 if after is None else next((i for i, (cid, _) in enumerate(rows) if cid > after), len(rows))
    page = rows[start:start + limit]
    more = start + limit < len(rows)
    return {"channels": [row for _, row in page],
            "response_metadata": {"next_cursor": _encode_cursor("channel", page[-1][0]) if more else ""}}


def _conversations_history(sb: SlackSandbox, params: dict[str, Any]) -> dict[str, Any]:
    conv_id, kind, _ = sb._conversation(_str(params, "channel") or "")
    if kind == "channel" and not sb._channels[conv_id].bot_is_member:
        raise _ApiError("channel_not_found" if sb._channels[conv_id].private else "not_in_channel")
    inclusive = _bool(params, "inclusive")
    oldest = _ts_param(params, "oldest", "invalid_ts_oldest")
    latest = _ts_param(params, "latest", "invalid_ts_latest")
    before = _decode_cursor(params, "next_ts")
    limit = _limit(params, _DEFAULT_HISTORY_LIMIT, _MAX_HISTORY_LIMIT)
    with_metadata = _bool(params, "include_all_metadata")

    def in_range(message: PostedMessage) -> bool:
        us = _parse_ts(message.ts)
        if oldest is not None and (us < oldest or (us == oldest and not inclusive)):
            return False
        if latest is not None and (us > latest or (us == latest and not inclusive)):
            return False
        return before is None or us < _parse_ts(before)

    replies: dict[str, list[PostedMessage]] = {}
    for message in sb.messages:
        if message.thread_ts is not None and message.thread_ts != message.ts:
            replies.setdefault(message.thread_ts, []).append(message)
    visible = [m for m in sb.messages if m.channel == conv_id and m.thread_ts in (None, m.ts) and in_range(m)]
    visible.sort(key=lambda m: _parse_ts(m.ts), reverse=True)
    page, more = visible[:limit], len(visible) > limit
    out_messages = []
    for message in page:
        item = sb._message_json(message, with_metadata=with_metadata)
        if message.ts in replies:
            thread = replies[message.ts]
            item.update({"thread_ts": message.ts, "reply_count": len(thread), "latest_reply": thread[-1].ts})
        out_messages.append(item)
    body: dict[str, Any] = {"messages": out_messages, "has_more": more, "pin_count": 0,
                            "channel_actions_ts": None, "channel_actions_count": 0}
    if more:
        body["response_metadata"] = {"next_cursor": _encode_cursor("next_ts", page[-1].ts)}
    return body


def _chat_post_message(sb: SlackSandbox, params: dict[str, Any]) -> dict[str, Any]:
    conv_id, kind, user_id = sb._conversation(_str(params, "channel") or "")
    sb._check_can_read_or_post(conv_id, kind)
    sb._take_post_slot(conv_id)
    text = _str(params, "text") or ""
    blocks = _blocks_param(params)
    if not text.strip() and not blocks and not params.get("attachments"):
        raise _ApiError("no_text")
    if len(text) > MAX_TEXT:
        raise _ApiError("msg_too_long")
    metadata = _metadata_param(params)
    thread_ts = _str(params, "thread_ts")
    if thread_ts is not None and not any(m.ts == thread_ts and m.channel == conv_id for m in sb.messages):
        thread_ts = None  # Slack posts to the channel when the parent does not exist
    message = PostedMessage(conv_id, kind, user_id, text, blocks, metadata, sb._next_ts(), thread_ts)
    sb.messages.append(message)
    return {"channel": conv_id, "ts": message.ts, "message": sb._message_json(message)}


def _chat_update(sb: SlackSandbox, params: dict[str, Any]) -> dict[str, Any]:
    conv_id, kind, _ = sb._conversation(_str(params, "channel") or "")
    sb._check_can_read_or_post(conv_id, kind)
    ts = _str(params, "ts") or ""
    index = next((i for i, m in enumerate(sb.messages) if m.channel == conv_id and m.ts == ts), None)
    if index is None:
        raise _ApiError("message_not_found")
    old = sb.messages[index]
    text = _str(params, "text")
    blocks = _blocks_param(params) if "blocks" in params else old.blocks
    new_text = old.text if text is None else text
    if not new_text.strip() and not blocks:
        raise _ApiError("no_text")
    if len(new_text) > MAX_TEXT:
        raise _ApiError("msg_too_long")
    metadata = _metadata_param(params) if "metadata" in params else old.metadata
    message = replace(old, text=new_text, blocks=blocks or None, metadata=metadata)
    sb.messages[index] = message
    return {"channel": conv_id, "ts": ts, "text": new_text, "message": sb._message_json(message)}


def _views_open(sb: SlackSandbox, params: dict[str, Any]) -> dict[str, Any]:
    trigger_id = _str(params, "trigger_id")
    if not trigger_id:
        raise _ApiError("invalid_arguments", extra={"response_metadata": {
            "messages": ["[ERROR] missing required field: trigger_id"]}})
    trigger = sb._triggers.get(trigger_id)
    if trigger is None:
        raise _ApiError("invalid_trigger_id")
    if sb._clock() - trigger.issued_at > TRIGGER_TTL:
        raise _ApiError("expired_trigger_id")
    if trigger.used:
        raise _ApiError("exchanged_trigger_id")
    view = _json_param(params, "view", "invalid_arguments")
    problem = _view_problem(view)
    if problem is not None:
        raise _ApiError("invalid_arguments", extra={"response_metadata": {"messages": [f"[ERROR] {problem}"]}})
    trigger.used = True
    view_id = sb._new_id("V")
    opened = {
        "id": view_id, "team_id": TEAM_ID, "type": view["type"], "blocks": view.get("blocks") or [],
        "private_metadata": view.get("private_metadata", ""), "callback_id": view.get("callback_id", ""),
        "state": {"values": {}}, "hash": f"{int(sb._clock())}.{view_id}", "title": view["title"],
        "clear_on_close": bool(view.get("clear_on_close", False)),
        "notify_on_close": bool(view.get("notify_on_close", False)), "close": view.get("close"),
        "submit": view.get("submit"), "previous_view_id": None, "root_view_id": view_id, "app_id": APP_ID,
        "external_id": view.get("external_id", ""), "app_installed_team_id": TEAM_ID, "bot_id": BOT_ID,
    }
    sb.views.append(OpenedView(view_id, trigger.user, trigger_id, opened))
    return {"view": opened}


def _views_publish(sb: SlackSandbox, params: dict[str, Any]) -> dict[str, Any]:
    """A user's Home tab (docs.slack.dev/reference/methods/views.publish, .../reference/views/home-tab-views)."""
    user_id = _str(params, "user_id")
    if not user_id:
        raise _ApiError("invalid_arguments", extra={"response_metadata": {
            "messages": ["[ERROR] missing required field: user_id"]}})
    if "view" not in params:
        raise _ApiError("invalid_arguments", extra={"response_metadata": {
            "messages": ["[ERROR] missing required field: view"]}})
    view = _json_param(params, "view", "invalid_arguments")
    problem = _home_view_problem(view)
    if problem is not None:
        raise _ApiError("invalid_arguments", extra={"response_metadata": {"messages": [f"[ERROR] {problem}"]}})
    user = sb._users.get(user_id)
    if user is None or user.deleted:
        raise _ApiError("not_found")
    old = sb.home_views.get(user_id)
    given_hash = _str(params, "hash")
    if given_hash and old is not None and given_hash != old["hash"]:
        raise _ApiError("hash_conflict")
    view_id = old["id"] if old is not None else sb._new_id("V")
    published = {
        "id": view_id, "team_id": TEAM_ID, "type": "home", "close": None, "submit": None,
        "blocks": view.get("blocks") or [], "private_metadata": view.get("private_metadata", ""),
        "callback_id": view.get("callback_id", ""), "state": {"values": {}},
        "hash": f"{int(sb._clock())}.{sb._new_id('H')}", "clear_on_close": False, "notify_on_close": False,
        "root_view_id": view_id, "previous_view_id": None, "app_id": APP_ID,
        "external_id": view.get("external_id", ""), "bot_id": BOT_ID,
    }
    sb.home_views[user_id] = published
    return {"view": published}


def _apps_connections_open(sb: SlackSandbox, params: dict[str, Any]) -> dict[str, Any]:
    """A single-use WebSocket URL (docs.slack.dev/reference/methods/apps.connections.open)."""
    return {"url": sb.socket_mode.issue_url()}


def _no_scope(sb: SlackSandbox, params: dict[str, Any]) -> tuple[str, ...]:
    return ()


def _fixed(*scopes: str) -> ScopeRule:
    return lambda sb, params: scopes


def _list_scopes(sb: SlackSandbox, params: dict[str, Any]) -> tuple[str, ...]:
    by_type = {"public_channel": "channels:read", "private_channel": "groups:read", "im": "im:read",
               "mpim": "mpim:read"}
    return tuple(by_type[kind] for kind in sorted(_types(params)) if kind in by_type)


def _history_scopes(sb: SlackSandbox, params: dict[str, Any]) -> tuple[str, ...]:
    """By what the conversation is, never by its id's first letter (Slack's ids do not say)."""
    ref = _str(params, "channel") or ""
    channel = sb._channels.get(ref) or next((c for c in sb._channels.values() if c.name == ref.lstrip("#")), None)
    if channel is not None:
        return ("groups:history",) if channel.private else ("channels:history",)
    return ("im:history",)


_METHODS: dict[str, tuple[Handler, ScopeRule]] = {
    "auth.test": (_auth_test, _no_scope),
    "users.lookupByEmail": (_users_lookup_by_email, _fixed("users:read.email")),
    "users.info": (_users_info, _fixed("users:read")),
    "conversations.open": (_conversations_open, _fixed("im:write")),
    "conversations.list": (_conversations_list, _list_scopes),
    "conversations.history": (_conversations_history, _history_scopes),
    "chat.postMessage": (_chat_post_message, _fixed("chat:write")),
    "chat.update": (_chat_update, _fixed("chat:write")),
    "views.open": (_views_open, _no_scope),  # Slack: "Required scopes: none"; a trigger_id is the permission
    "views.publish": (_views_publish, _no_scope),  # Slack's OpenAPI spec: "Requires scope: `none`"
    "apps.connections.open": (_apps_connections_open, _fixed("connections:write")),  # of the app-level token
}
_APP_LEVEL_METHODS = frozenset({"apps.connections.open"})


# -- parameter parsing ----------------------------------------------------------------------------------

def _str(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    return None if value is None else str(value)


def _bool(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name)
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes")


def _limit(params: Mapping[str, Any], default: int, maximum: int) -> int:
    try:
        value = int(str(params.get("limit", default)))
    except ValueError:
        return default
    return default if value < 1 else min(value, maximum)


def _types(params: Mapping[str, Any]) -> set[str]:
    return {t.strip() for t in (_str(params, "types") or "public_channel").split(",") if t.strip()}


def _encode_cursor(kind: str, value: str) -> str:
    return base64.b64encode(f"{kind}:{value}".encode()).decode()


def _decode_cursor(params: Mapping[str, Any], kind: str) -> str | None:
    raw = _str(params, "cursor")
    if not raw:
        return None
    try:
        decoded = base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise _ApiError("invalid_cursor") from None
    prefix, _, value = decoded.partition(":")
    if prefix != kind or not value:
        raise _ApiError("invalid_cursor")
    return value


_TS = re.compile(r"^\d+(\.\d{1,6})?$")


def _parse_ts(ts: str) -> int:
    """A ts as integer microseconds, so comparisons are exact."""
    return int(Decimal(ts) * 1_000_000)


def _format_ts(us: int) -> str:
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


def _ts_param(params: Mapping[str, Any], name: str, error: str) -> int | None:
    raw = _str(params, name)
    if raw is None or raw == "":
        return None
    if not _TS.match(raw.strip()):
        raise _ApiError(error)
    try:
        return _parse_ts(raw.strip())
    except InvalidOperation:
        raise _ApiError(error) from None


def _json_param(params: Mapping[str, Any], name: str, error: str) -> Any:
    value = params.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise _ApiError(error) from None
    return value


def _blocks_param(params: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    blocks = _json_param(params, "blocks", "invalid_blocks")
    if blocks is None:
        return None
    if _blocks_problem(blocks) is not None:
        raise _ApiError("invalid_blocks")
    return list(blocks) or None


def _metadata_param(params: Mapping[str, Any]) -> dict[str, Any] | None:
    metadata = _json_param(params, "metadata", "invalid_metadata_format")
    if metadata is None:
        return None
    if (not isinstance(metadata, dict) or not isinstance(metadata.get("event_type"), str)
            or not metadata["event_type"] or not isinstance(metadata.get("event_payload"), dict)):
        raise _ApiError("invalid_metadata_format")
    return {"event_type": metadata["event_type"], "event_payload": metadata["event_payload"]}


# -- Block Kit checks: the limits Slack documents for the blocks a nudge uses --------------------------

_BLOCK_TYPES = {"section", "divider", "header", "context", "actions", "image", "input", "rich_text",
                "markdown", "file", "video"}


def _text_problem(obj: Any, *, max_len: int, plain_only: bool = False) -> str | None:
    if not isinstance(obj, dict):
        return "text object must be an object"
    kinds = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if obj.get("type") not in kinds:
        return f"text type must be one of {kinds}"
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return "text must be a non-empty string"
    if len(text) > max_len:
        return f"text longer than {max_len}"
    return None


def _blocks_problem(blocks: Any) -> str | None:
    """Why Slack would answer ``invalid_blocks``, or None if the blocks are acceptable."""
    if not isinstance(blocks, list):
        return "blocks must be an array"
    if len(blocks) > MAX_BLOCKS:
        return f"more than {MAX_BLOCKS} blocks"
    block_ids: set[str] = set()
    for block in blocks:
        problem = _block_problem(block, block_ids)
        if problem is not None:
            return problem
    return None


def _block_problem(block: Any, block_ids: set[str]) -> str | None:
    if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
        return "unknown block type"
    block_id = block.get("block_id")
    if block_id is not None:
        if not isinstance(block_id, str) or len(block_id) > 255 or block_id in block_ids:
            return "block_id must be a unique string of at most 255 characters"
        block_ids.add(block_id)
    kind = block["type"]
    if kind == "header":
        return _text_problem(block.get("text"), max_len=150, plain_only=True)
    if kind == "section":
        if "text" not in block and "fields" not in block:
            return "section needs text or fields"
        if "text" in block and (problem := _text_problem(block["text"], max_len=3000)):
            return problem
        fields = block.get("fields", [])
        if not isinstance(fields, list) or len(fields) > 10:
            return "section fields must be an array of at most 10"
        return next((p for f in fields if (p := _text_problem(f, max_len=2000))), None)
    if kind in ("context", "actions"):
        elements = block.get("elements")
        most = 10 if kind == "context" else 25
        if not isinstance(elements, list) or not 1 <= len(elements) <= most:
            return f"{kind} needs 1 to {most} elements"
        if not all(isinstance(e, dict) and isinstance(e.get("type"), str) for e in elements):
            return f"{kind} elements must be objects with a type"
    if kind == "markdown" and not (isinstance(block.get("text"), str) and 0 < len(block["text"]) <= 12000):
        return "markdown needs text of 1 to 12000 characters"
    return None


_INPUT_ELEMENTS = {"plain_text_input", "number_input", "email_text_input", "url_text_input", "static_select",
                   "radio_buttons", "checkboxes", "datepicker"}


def _view_problem(view: Any) -> str | None:
    """Why ``views.open`` would refuse this modal (the limits of Slack's view reference), or None."""
    if not isinstance(view, dict):
        return "view must be an object"
    if view.get("type") != "modal":
        return "the sandbox opens views of type modal only"
    if view.get("title") is None:
        return "title is required"
    for key in ("title", "submit", "close"):
        if view.get(key) is not None and (problem := _text_problem(view[key], max_len=24, plain_only=True)):
            return f"{key}: {problem}"
    blocks = view.get("blocks")
    if not isinstance(blocks, list) or len(blocks) > MAX_VIEW_BLOCKS:
        return f"blocks must be an array of at most {MAX_VIEW_BLOCKS}"
    block_ids: set[str] = set()
    for block in blocks:
        problem = _block_problem(block, block_ids) or _input_problem(block)
        if problem is not None:
            return problem
    if any(b.get("type") == "input" for b in blocks) and view.get("submit") is None:
        return "submit is required when the view has input blocks"
    for key, most in (("private_metadata", 3000), ("callback_id", 255), ("external_id", 255)):
        if key in view and (not isinstance(view[key], str) or len(view[key]) > most):
            return f"{key} must be a string of at most {most} characters"
    return None


_HOME_BLOCK_TYPES = {"actions", "context", "divider", "header", "image", "input", "rich_text", "section", "video"}
"""The blocks Block Kit's reference lists as available in Home tabs (`file` and `markdown` are for messages only)."""


def _home_view_problem(view: Any) -> str | None:
    """Why ``views.publish`` would refuse this Home tab view (Slack's home tab view reference), or None."""
    if not isinstance(view, dict):
        return "must provide an object [json-pointer:/view]"
    if view.get("type") != "home":
        return "view type must be home [json-pointer:/view/type]"
    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        return "blocks is required and must be an array [json-pointer:/view/blocks]"
    if len(blocks) > MAX_VIEW_BLOCKS:
        return f"no more than {MAX_VIEW_BLOCKS} items allowed [json-pointer:/view/blocks]"
    block_ids: set[str] = set()
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") not in _HOME_BLOCK_TYPES:
            return f"unsupported type for a home tab [json-pointer:/view/blocks/{index}/type]"
        problem = _block_problem(block, block_ids) or _input_problem(block)
        if problem is not None:
            return f"{problem} [json-pointer:/view/blocks/{index}]"
    for key, most in (("private_metadata", 3000), ("callback_id", 255), ("external_id", 255)):
        if key in view and (not isinstance(view[key], str) or len(view[key]) > most):
            return f"{key} must be a string of at most {most} characters [json-pointer:/view/{key}]"
    return None


def _input_problem(block: dict[str, Any]) -> str | None:
    if block.get("type") != "input":
        return None
    if problem := _text_problem(block.get("label"), max_len=2000, plain_only=True):
        return f"input label: {problem}"
    element = block.get("element")
    if not isinstance(element, dict) or element.get("type") not in _INPUT_ELEMENTS:
        return f"input element must be one of {sorted(_INPUT_ELEMENTS)}"
    action_id = element.get("action_id")
    if action_id is not None and (not isinstance(action_id, str) or len(action_id) > 255):
        return "action_id must be a string of at most 255 characters"
    return None


def _find_element(blocks: Sequence[dict[str, Any]], action_id: str, value: str | None
                  ) -> tuple[str, dict[str, Any]] | None:
    """(block_id, element) of the interactive element with this action_id (and value), in actions and sections."""
    for index, block in enumerate(blocks):
        candidates = list(block.get("elements") or []) if block.get("type") == "actions" else []
        if block.get("type") == "section" and isinstance(block.get("accessory"), dict):
            candidates.append(block["accessory"])
        for element in candidates:
            if element.get("action_id") == action_id and (value is None or element.get("value") == value):
                # Slack gives every block an id; one it made up when the app gave none.
                return str(block.get("block_id") or f"sandbox-block-{index}"), element
    return None


def _input_state(element: dict[str, Any], given: str | None) -> dict[str, Any]:
    """One input's entry in ``view.state.values``, shaped as Slack shapes it per element type."""
    kind = str(element.get("type"))
    if kind in ("static_select", "radio_buttons"):
        options = element.get("options") or []
        chosen = next((o for o in options if o.get("value") == given), None) if given is not None \
            else element.get("initial_option")
        if given is not None and chosen is None:
            raise ValueError(f"{element.get('action_id')!r} has no option {given!r}")
        return {"type": kind, "selected_option": chosen}
    value = given if given is not None else element.get("initial_value")
    return {"type": kind, "value": value if value != "" else None}


def _has_value(entry: Mapping[str, Any]) -> bool:
    return entry.get("value") is not None or entry.get("selected_option") is not None


def slack_signature(signing_secret: str, timestamp: int | str, body: bytes) -> str:
    """Slack's request signature: ``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}`` keyed by the secret."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def post_form(url: str, body: bytes, headers: Mapping[str, str], *, timeout: float = 5.0) -> InteractionResult:
    """One POST with the stdlib (the sandbox has no client dependency), timed as Slack times the answer."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_type(parts.hostname, parts.port, timeout=timeout)
    started = time.monotonic()
    try:
        connection.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body=body,
                           headers=dict(headers))
        response = connection.getresponse()
        answer = response.read()
        seconds = time.monotonic() - started
        return InteractionResult(response.status, answer, {k.lower(): v for k, v in response.getheaders()}, seconds)
    finally:
        connection.close()


def _tz_facts(tz: str, at: float) -> tuple[int, str]:
    try:
        moment = datetime.fromtimestamp(at, ZoneInfo(tz))
    except (ZoneInfoNotFoundError, ValueError):
        return 0, "Coordinated Universal Time"
    offset = moment.utcoffset()
    return (int(offset.total_seconds()) if offset else 0), moment.tzname() or tz


# -- HTTP layer -------------------------------------------------------------------------------------------

def _handler_for(sandbox: SlackSandbox) -> type[BaseHTTPRequestHandler]:
    class _SlackHandler(BaseHTTPRequestHandler):
        server_version = "SlackSandbox/1.0"

        def do_GET(self) -> None:
            self._serve(with_body=False)

        def do_POST(self) -> None:
            self._serve(with_body=True)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read `SlackSandbox.calls` instead of stderr."""

        def _serve(self, *, with_body: bool) -> None:
            parts = urlsplit(self.path)
            method = parts.path.removeprefix("/api/").strip("/")
            params: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
            body_error = None
            try:
                if with_body:
                    params.update(self._body_params())
            except _ApiError as exc:
                body_error = exc.error
            reply = sandbox.handle(method, params, self._bearer(), body_error=body_error)
            if reply.status == LOST_ANSWER:
                self.close_connection = True
                return
            payload = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def _bearer(self) -> str | None:
            header = self.headers.get("Authorization", "")
            scheme, _, value = header.partition(" ")
            return value.strip() if scheme.lower() == "bearer" and value.strip() else None

        def _body_params(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = self.headers.get_content_type()
            if not raw:
                return {}
            if content_type == "application/json":
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise _ApiError("invalid_json") from None
                if not isinstance(body, dict):
                    raise _ApiError("json_not_object")
                # Slack ignores a token in a JSON body: JSON callers must use the Authorization header.
                return {k: v for k, v in body.items() if k != "token"}
            if content_type == "application/x-www-form-urlencoded":
                return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
            raise _ApiError("invalid_form_data")

    return _SlackHandler
