"""Healthbeat's only door to Slack: a small adapter over slack-sdk's ``WebClient``.

The worker needs five things from Slack (who is this owner, open a DM, find a channel, post a nudge,
and "did I already post this nudge?") and must not care how slack-sdk spells them. So slack-sdk's
objects stay in here, and its exceptions are translated where they happen into this tree::

    SlackError                 Slack said no; ``.error`` is Slack's code, e.g. "invalid_blocks"
    ├── SlackAuthError         the token is wrong, revoked or lacks a scope: stop, fix the config
    ├── SlackRecipientError    no such channel/user, bot not in channel, archived: use the fallback
    └── SlackUnavailable       5xx, rate limit or network, after slack-sdk's own retries: try later

Retries belong to slack-sdk's handlers alone (429 after ``Retry-After``, connection errors, 500/503),
at most ``max_retries`` in all per call (the handlers share slack-sdk's retry state); nothing here
retries again on top, so one call never turns into retries of retries. Only what is safe to repeat is
repeated: a post is retried after a 429 or a refused connection (Slack did not take it), never after a
5xx or a dropped connection (it may have been posted; the outbox checks history first). A
``Retry-After`` longer than ``max_retry_wait`` is not slept through: the call fails as
`SlackUnavailable` and the outbox tries next cycle. The handlers' sleep is injectable: tests never wait.

Slack has no idempotency key, hence `SlackClient.find_by_metadata`: the sender puts its dedup key in
the message ``metadata`` and looks for it in recent history before posting again after a crash.

`SocketModeLink` is the app-level side (Socket Mode): ``apps.connections.open`` with the app-level token,
whose refusals name SLACK_APP_TOKEN rather than the bot token.
"""

from __future__ import annotations

import logging
import random
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any, TypeVar
from urllib.error import URLError
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import (
    ConnectionErrorRetryHandler,
    HttpRequest,
    HttpResponse,
    RateLimitErrorRetryHandler,
    RetryHandler,
    RetryState,
)
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler
from slack_sdk.web import SlackResponse

log = logging.getLogger(__name__)

AUTH_ERRORS = frozenset({
    "not_authed", "invalid_auth", "account_inactive", "token_revoked", "token_expired",
    "missing_scope", "not_allowed_token_type", "no_permission", "ekm_access_denied",
    "team_access_not_granted",
})
RECIPIENT_ERRORS = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "users_not_found", "user_not_found",
    "user_disabled", "user_not_visible", "cannot_dm_bot", "method_not_supported_for_channel_type",
    "restricted_action", "restricted_action_read_only_channel", "message_not_found",
})
UNAVAILABLE_ERRORS = frozenset({"ratelimited", "rate_limited", "internal_error", "fatal_error",
                                "service_unavailable", "request_timeout"})

_CONVERSATION_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_T = TypeVar("_T")


class SlackError(Exception):
    """Slack refused a call; ``error`` is Slack's own code (e.g. ``"channel_not_found"``)."""

    def __init__(self, error: str, message: str | None = None, *, method: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message or f"Slack {method or 'API'} failed: {error}")
        self.error = error
        self.method = method
        self.status = status


class SlackAuthError(SlackError):
    """The token is missing, wrong, revoked, or lacks a scope the call needs."""


class SlackScopeError(SlackAuthError):
    """The token is good but lacks the scope this call needs (``needed``): this call fails, others may not."""

    def __init__(self, error: str, message: str | None = None, *, method: str | None = None,
                 status: int | None = None, needed: str | None = None) -> None:
        super().__init__(error, message, method=method, status=status)
        self.needed = needed


class SlackRecipientError(SlackError):
    """The channel or user cannot receive the message; the caller falls back to another route."""


class SlackUnavailable(SlackError):
    """Slack (or the way to it) failed after slack-sdk's retries; ``retry_after`` if Slack said."""

    def __init__(self, error: str, message: str | None = None, *, method: str | None = None,
                 status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(error, message, method=method, status=status)
        self.retry_after = retry_after

    @property
    def rate_limited(self) -> bool:
        """Slack refused the call for its rate (HTTP 429): it did nothing, unlike a timeout or a 5xx,
        after which a post may or may not have landed."""
        return self.status == 429 or self.error in ("ratelimited", "rate_limited")


@dataclass(frozen=True)
class SentMessage:
    """Where a message lives in Slack: enough to find, link or update it later."""

    channel: str
    ts: str


def escape_text(s: str) -> str:
    """Escape ``&``, ``<`` and ``>`` as Slack requires for any text that comes from data.

    Slack reads ``<...>`` as links and mentions (``<!channel>`` pings everyone), so an account named
    ``<!here> Corp`` must reach Slack as ``&lt;!here&gt; Corp``; ``&`` goes first so it is not doubled.
    """
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackClient:
    """What the worker asks of Slack, with lookups cached and errors in this module's terms.

    ``calls`` counts the API calls this client made (a call retried by slack-sdk counts once).
    Lookups (email → user, user → DM, channel name → id) are cached for ``cache_ttl`` seconds,
    misses too, because Slack's per-method limits are low and a nudge run asks the same things.
    Not thread-safe: one client per worker thread.
    """

    def __init__(
        self,
        token: str,
        *,
        base_url: str = "https://slack.com/api/",
        timeout: int = 30,
        max_retries: int = 2,
        max_retry_wait: float = 30.0,
        page_size: int = 200,
        cache_ttl: float = 3600.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        post_interval: float = 1.0,
        pace: Callable[[float], None] = time.sleep,
        ca_bundle: str | None = None,
    ) -> None:
        if not base_url.endswith("/"):
            base_url += "/"
        self.base_url = base_url
        self.calls = 0
        self._page_size = max(1, min(page_size, 999))
        self._cache_ttl = cache_ttl
        self._clock = clock
        self._pace = pace  # the waits between posts to one channel; `sleep` is for retries
        self._post_interval = post_interval
        self._last_post: dict[str, float] = {}
        # urllib trusts the system store and ignores REQUESTS_CA_BUNDLE: a private CA is given explicitly
        context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else None
        self._web = WebClient(token=token, base_url=base_url, timeout=timeout, ssl=context,
                              retry_handlers=_retry_handlers(max_retries, max_retry_wait, sleep))
        self._users: dict[str, tuple[float, str | None]] = {}
        self._dms: dict[str, tuple[float, str]] = {}
        self._channels: tuple[float, dict[str, str]] | None = None

    def __repr__(self) -> str:
        return f"SlackClient(base_url={self.base_url!r})"  # never the token

    # -- operations ----------------------------------------------------------------------------------

    def check(self) -> tuple[str, frozenset[str]]:
        """Who the token is and what it may do, for ``doctor``: (description, granted scopes)."""
        response = self._call("auth.test", self._web.auth_test)
        user, team = response.get("user", "?"), response.get("team", "?")
        description = f"{user} ({response.get('user_id', '?')}) in {team} ({response.get('team_id', '?')})"
        header = next((v for k, v in response.headers.items() if k.lower() == "x-oauth-scopes"), "")
        if isinstance(header, list):  # some transports give header values as lists
            header = ",".join(header)
        scopes = frozenset(s.strip() for s in str(header).split(",") if s.strip())
        return description, scopes

    def user_id_for_email(self, email: str) -> str | None:
        """The Slack user with this email, or None (unknown, deactivated or a bot); cached, misses too."""
        key = email.strip().lower()
        cached = self._fresh(self._users.get(key))
        if cached is not None:
            return cached[1]
        try:
            response = self._call("users.lookupByEmail", self._web.users_lookupByEmail, email=email.strip())
        except SlackRecipientError:
            user_id = None
        else:
            user = response.get("user") or {}
            usable = not user.get("deleted") and not user.get("is_bot")
            user_id = str(user["id"]) if usable and user.get("id") else None
        self._users[key] = (self._clock(), user_id)
        return user_id

    def open_dm(self, user_id: str) -> str:
        """The DM channel id (``D...``) between the bot and this user; cached."""
        cached = self._fresh(self._dms.get(user_id))
        if cached is not None:
            return cached[1]
        response = self._call("conversations.open", self._web.conversations_open, users=user_id)
        dm_id = str(response["channel"]["id"])
        self._dms[user_id] = (self._clock(), dm_id)
        return dm_id

    def channel_id(self, name_or_id: str) -> str:
        """``"#cs-alerts"``, ``"cs-alerts"`` or ``"C123..."`` → the channel id; names via a cached list.

        Only public channels are listed (that needs only ``channels:read``); give a private channel
        by its id.
        """
        ref = name_or_id.strip()
        if _CONVERSATION_ID.match(ref):
            return ref
        name = ref.removeprefix("#").lower()
        channels = self._channel_map()
        if name not in channels:
            raise SlackRecipientError(
                "channel_not_found",
                f"Slack has no public channel named #{name} (at {self.base_url}); "
                "check the name, or give the channel id",
                method="conversations.list")
        return channels[name]

    def post(self, channel: str, *, text: str, blocks: list[dict[str, Any]] | None = None,
             metadata: dict[str, Any] | None = None) -> SentMessage:
        """Post a message; ``channel`` is a channel id or name, a DM id, or a user id (posts as a DM).

        ``text`` is the notification and accessibility fallback when ``blocks`` are given; it must be
        escaped already (`escape_text`). ``metadata`` is ``{"event_type": ..., "event_payload": {...}}``.
        Posts to one conversation are paced `post_interval` apart: Slack allows "one message per second per
        channel" (docs.slack.dev/apis/web-api/rate-limits), and a fallback channel gets bursts.
        """
        last = self._last_post.get(channel)
        if last is not None and (wait := last + self._post_interval - self._clock()) > 0:
            self._pace(wait)
        try:
            response = self._call("chat.postMessage", self._web.chat_postMessage, channel=channel, text=text,
                                  blocks=blocks, metadata=metadata)
        finally:
            self._last_post[channel] = self._clock()
        return SentMessage(channel=str(response["channel"]), ts=str(response["ts"]))

    def update(self, channel: str, ts: str, *, text: str, blocks: list[dict[str, Any]] | None = None) -> SentMessage:
        """Replace a message the bot posted (``chat.update``): ``channel`` is its conversation id, ``ts`` its ts.

        Unlike a post, repeating an update is harmless, so slack-sdk's handlers may retry it after a 5xx.
        ``blocks=None`` keeps the message's blocks; ``text`` must be escaped already (`escape_text`).
        """
        response = self._call("chat.update", self._web.chat_update, channel=channel, ts=ts, text=text,
                              blocks=blocks)
        return SentMessage(channel=str(response["channel"]), ts=str(response["ts"]))

    def publish_home(self, user_id: str, view: dict[str, Any]) -> str:
        """Publish ``view`` (``type: home``) as this user's Home tab of the app (``views.publish``); the view's id.

        Publishing again replaces the tab, so a repeat after a 5xx is harmless and slack-sdk's handlers may retry.
        """
        response = self._call("views.publish", self._web.views_publish, user_id=user_id, view=view)
        return str((response.get("view") or {}).get("id") or "")

    def email_of(self, user_id: str) -> str | None:
        """The email of this Slack user (``users.info``, needs ``users:read.email``), or None: unknown, deleted,
        a bot, or no email shown. The reverse of `user_id_for_email`; not cached (a Home tab opens rarely)."""
        try:
            response = self._call("users.info", self._web.users_info, user=user_id)
        except SlackRecipientError:
            return None
        user = response.get("user") or {}
        email = (user.get("profile") or {}).get("email")
        if user.get("deleted") or user.get("is_bot") or not email:
            return None
        return str(email)

    def find_by_metadata(self, channel: str, *, event_type: str, key: str, key_field: str = "dedup_key",
                         oldest: float | None = None, limit: int = 200) -> SentMessage | None:
        """The newest message in ``channel`` whose metadata has ``event_type`` and payload[key_field] == key.

        Looks through at most ``limit`` messages (newest first, page by page), only those after
        ``oldest`` (Unix time) when given; ``channel`` may also be a user id (their DM) or a name.
        """
        conversation = self._conversation_for(channel)
        cursor: str | None = None
        seen = 0
        while seen < limit:
            page_size = min(self._page_size, limit - seen)
            response = self._call(
                "conversations.history", self._web.conversations_history, channel=conversation,
                include_all_metadata=True, limit=page_size, cursor=cursor,
                oldest=None if oldest is None else f"{oldest:.6f}")
            messages = response.get("messages") or []
            for message in messages:
                meta = message.get("metadata") or {}
                payload = meta.get("event_payload") or {}
                if meta.get("event_type") == event_type and payload.get(key_field) == key:
                    return SentMessage(channel=conversation, ts=str(message["ts"]))
            seen += len(messages)
            next_cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not response.get("has_more") or not next_cursor or next_cursor == cursor or not messages:
                return None
            cursor = next_cursor
        return None

    # -- internals -------------------------------------------------------------------------------------

    def _conversation_for(self, channel: str) -> str:
        ref = channel.strip()
        if _USER_ID.match(ref):
            return self.open_dm(ref)
        return self.channel_id(ref)

    def _channel_map(self) -> dict[str, str]:
        if self._channels is not None and self._clock() - self._channels[0] < self._cache_ttl:
            return self._channels[1]
        channels: dict[str, str] = {}
        cursor: str | None = None
        while True:
            response = self._call("conversations.list", self._web.conversations_list, types="public_channel",
                                  exclude_archived=True, limit=self._page_size, cursor=cursor)
            for channel in response.get("channels") or []:
                channels[str(channel["name"]).lower()] = str(channel["id"])
            next_cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not next_cursor or next_cursor == cursor:  # a cursor coming back twice would loop forever
                break
            cursor = next_cursor
        self._channels = (self._clock(), channels)
        return channels

    def _fresh(self, entry: tuple[float, _T] | None) -> tuple[float, _T] | None:
        if entry is None or self._clock() - entry[0] >= self._cache_ttl:
            return None
        return entry

    def _call(self, method: str, fn: Callable[..., SlackResponse], **kwargs: Any) -> SlackResponse:
        """Make one API call and translate whatever slack-sdk or the network raises into `SlackError`s."""
        self.calls += 1
        try:
            return fn(**{k: v for k, v in kwargs.items() if v is not None})
        except SlackApiError as exc:
            raise self._translate(method, exc.response) from None
        except (URLError, HTTPException, OSError) as exc:  # refused, reset, timed out, DNS...
            raise SlackUnavailable(
                "connection_error",
                f"Slack API at {self.base_url} unreachable for {method}: {type(exc).__name__}: "
                f"{getattr(exc, 'reason', exc)}",
                method=method) from None
        except SlackClientError as exc:
            raise SlackError("client_error", f"Slack {method} could not be sent to {self.base_url}: "
                             f"{type(exc).__name__}", method=method) from None

    def _translate(self, method: str, response: SlackResponse) -> SlackError:
        return _translated(method, response, self.base_url)


_LINK_LOG = logging.getLogger(f"{__name__}.app_level")
_LINK_LOG.setLevel(logging.INFO)  # slack-sdk's debug lines would show each answer, the URL's ticket with it


class SocketModeLink:
    """``apps.connections.open`` with an app-level token (``xapp-``, scope ``connections:write``): a fresh
    single-use WebSocket URL for each Socket Mode connection, and the TLS context that connection must use.

    Apart from `SlackClient` because the token is of another kind: Slack refuses it on every bot method and
    refuses a bot token here (``not_allowed_token_type``), and its errors must name SLACK_APP_TOKEN. The token
    is only ever sent in the Authorization header, as Slack requires for this method.
    """

    def __init__(self, app_token: str, *, base_url: str = "https://slack.com/api/", timeout: int = 10,
                 max_retries: int = 2, max_retry_wait: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 ca_bundle: str | None = None) -> None:
        if not base_url.endswith("/"):
            base_url += "/"
        self.base_url = base_url
        self._app_token = app_token
        self.calls = 0
        self.ssl_context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else None
        """What the WebSocket's TLS must trust (None: the default store), as the API calls do."""
        self.web = WebClient(base_url=base_url, timeout=timeout, ssl=self.ssl_context, logger=_LINK_LOG,
                             retry_handlers=_retry_handlers(max_retries, max_retry_wait, sleep))
        """A token-less WebClient carrying `ssl_context`, for slack-sdk's Socket Mode client to read it from."""

    def __repr__(self) -> str:
        return f"SocketModeLink(base_url={self.base_url!r})"  # never the token

    def open_url(self) -> str:
        """A new WebSocket URL (``wss://.../link/?ticket=...``): a secret of its own until used, never logged."""
        method = "apps.connections.open"
        self.calls += 1
        try:
            response = self.web.apps_connections_open(app_token=self._app_token)
        except SlackApiError as exc:
            raise _translated(method, exc.response, self.base_url, app_level=True) from None
        except (URLError, HTTPException, OSError) as exc:
            raise SlackUnavailable("connection_error", f"Slack API at {self.base_url} unreachable for {method}: "
                                   f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}", method=method) from None
        except SlackClientError as exc:
            raise SlackError("client_error", f"Slack {method} could not be sent to {self.base_url}: "
                             f"{type(exc).__name__}", method=method) from None
        url = response.get("url")
        if not isinstance(url, str) or not url.startswith(("wss://", "ws://")):
            raise SlackError("invalid_response", f"Slack {method} at {self.base_url} answered no WebSocket URL",
                             method=method)
        return url


_APP_TOKEN_HINTS = {
    "not_allowed_token_type": "SLACK_APP_TOKEN must be an app-level token (xapp-...), made under the app's Basic "
                              "Information → App-Level Tokens with the connections:write scope; a bot (xoxb-) or "
                              "user token is refused",
    "missing_scope": "give the app-level token the connections:write scope (Basic Information → App-Level Tokens)",
}


def _translated(method: str, response: SlackResponse, base_url: str, *, app_level: bool = False) -> SlackError:
    """Slack's refusal as a `SlackError` of the right branch, its message naming the setting to fix
    (SLACK_APP_TOKEN for an ``app_level`` call, else SLACK_BOT_TOKEN)."""
    status = response.status_code
    data = response.data if isinstance(response.data, dict) else {}
    error = str(data.get("error") or f"http_{status}")
    where = f"{method} at {base_url}"
    if app_level and error in AUTH_ERRORS:
        hint = _APP_TOKEN_HINTS.get(error, "check SLACK_APP_TOKEN: an app-level token (xapp-...) of this app, "
                                           "not revoked, with the connections:write scope")
        return SlackAuthError(error, f"Slack rejected the app-level token ({error}) for {where}: {hint}",
                              method=method, status=status)
    if status == 429 or status >= 500 or error in UNAVAILABLE_ERRORS:
        retry_after = _header(response, "retry-after")
        return SlackUnavailable(
            error, f"Slack is unavailable ({error}, HTTP {status}) for {where}; will retry later",
            method=method, status=status, retry_after=float(retry_after) if retry_after else None)
    if error == "missing_scope":
        needed = str(data.get("needed") or "") or None
        return SlackScopeError(
            error, f"Slack rejected the bot token (missing_scope; needs scope {needed or '?'}) for {where}: "
            "add the scope in the app's OAuth & Permissions (slack/manifest.yaml lists them all) and "
            "reinstall the app", method=method, status=status, needed=needed)
    if error in AUTH_ERRORS:
        return SlackAuthError(
            error, f"Slack rejected the bot token ({error}) for {where}; check SLACK_BOT_TOKEN "
            "and the app's scopes", method=method, status=status)
    if error in RECIPIENT_ERRORS:
        return SlackRecipientError(error, f"Slack cannot deliver ({error}) for {where}",
                                   method=method, status=status)
    return SlackError(error, f"Slack refused {where}: {error}", method=method, status=status)


def _header(response: SlackResponse, name: str) -> str | None:
    for key, value in response.headers.items():
        if key.lower() == name:
            return str(value[0] if isinstance(value, list) else value)
    return None


# -- slack-sdk retry handlers with an injectable sleep ------------------------------------------------


class _RateLimitRetry(RateLimitErrorRetryHandler):
    """slack-sdk's 429 handler: waits ``Retry-After`` (+ up to 1 s jitter), unless it is too long.

    A wait longer than ``max_wait`` is not worth blocking a cycle for: the call fails with
    `SlackUnavailable` (carrying ``retry_after``) and the outbox tries again next cycle.
    """

    def __init__(self, max_retry_count: int, max_wait: float, sleep: Callable[[float], None]) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._max_wait = max_wait
        self._sleep = sleep

    def _can_retry(self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        if response is None or response.status_code != 429:
            return False
        return _retry_after(response) <= self._max_wait

    def prepare_for_next_attempt(self, *, state: RetryState, request: HttpRequest,
                                 response: HttpResponse | None = None,
                                 error: Exception | None = None) -> None:
        state.next_attempt_requested = True
        wait = (_retry_after(response) if response is not None else 1.0) + random.random()
        log.info("Slack rate limit on %s: retrying in %.1f s", request.url.rsplit("/", 1)[-1], wait)
        self._sleep(wait)
        state.increment_current_attempt()


class _ConnectionRetry(ConnectionErrorRetryHandler):
    """slack-sdk's connection-error handler, backing off through the injected sleep.

    A post is retried only when the connection was refused (it never reached Slack); after a reset
    or a dropped answer Slack may have posted it, so the error goes up and the outbox looks for the
    message (`SlackClient.find_by_metadata`) before posting again.
    """

    def __init__(self, max_retry_count: int, sleep: Callable[[float], None]) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._sleep = sleep

    def _can_retry(self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        never_arrived = isinstance(error, URLError) and isinstance(error.reason, ConnectionRefusedError)
        return never_arrived or not _posts(request)

    def prepare_for_next_attempt(self, *, state: RetryState, request: HttpRequest,
                                 response: HttpResponse | None = None,
                                 error: Exception | None = None) -> None:
        _backoff(self, state, self._sleep)


class _ServerErrorRetry(ServerErrorRetryHandler):
    """slack-sdk's 500/503 handler, backing off through the injected sleep; never for a post.

    A 5xx does not say the message was not posted, so a post is not repeated here (see
    `_ConnectionRetry`); reads and lookups are safe to repeat.
    """

    def __init__(self, max_retry_count: int, sleep: Callable[[float], None]) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._sleep = sleep

    def _can_retry(self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        return not _posts(request) and super()._can_retry(state=state, request=request, response=response,
                                                          error=error)

    def prepare_for_next_attempt(self, *, state: RetryState, request: HttpRequest,
                                 response: HttpResponse | None = None,
                                 error: Exception | None = None) -> None:
        _backoff(self, state, self._sleep)


def _posts(request: HttpRequest) -> bool:
    """Whether repeating this request could post a message twice (Slack has no idempotency key)."""
    return urlsplit(request.url).path.rstrip("/").endswith("/chat.postMessage")


def _backoff(handler: RetryHandler, state: RetryState, sleep: Callable[[float], None]) -> None:
    state.next_attempt_requested = True
    sleep(handler.interval_calculator.calculate_sleep_duration(state.current_attempt))
    state.increment_current_attempt()


def _retry_after(response: HttpResponse) -> float:
    for key, values in response.headers.items():
        if key.lower() == "retry-after" and values:
            try:
                return float(values[0] if isinstance(values, list) else values)
            except ValueError:
                return 1.0
    return 1.0


def _retry_handlers(max_retries: int, max_retry_wait: float,
                    sleep: Callable[[float], None]) -> list[RetryHandler]:
    if max_retries <= 0:
        return []
    return [_RateLimitRetry(max_retries, max_retry_wait, sleep), _ConnectionRetry(max_retries, sleep),
            _ServerErrorRetry(max_retries, sleep)]
