"""`POST /slack/events`: Slack's Events API, for the Home tab ("my accounts", `worker.delivery.home_tab`).

Slack sends two kinds of request here: `url_verification` once, when the events URL is set in the app's
settings (answered with its `challenge`), and `event_callback`s, of which only `app_home_opened` on the
"home" tab is ours. Every request is checked first as `/slack/actions` checks its own (the same
`verify_signature`: Slack's v0 signature and a timestamp within five minutes); one that is not Slack's gets
401, the URL check included, so the URL can only be set by someone with the signing secret.

Over Socket Mode (SLACK_APP_TOKEN, `worker.service.socket_mode`) the same `event_callback`s arrive in
``events_api`` envelopes and go to `SlackEvents.handle_body`, the part after the signature check.

Slack gives up after three seconds and then retries, so an event is acknowledged at once and the Home view is
built and published (`views.publish`) afterwards, on one background thread with its own store connection
and Slack client; an owner who opens the tab twice while a publish is queued gets one publish. Only that
thread touches the store or Slack, so request threads never wait for either.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from connectors.slack.client import SlackClient, SlackError
from worker.clock import Clock, system_clock
from worker.config import Settings
from worker.cycle import record_url
from worker.delivery.home_tab import home_opened
from worker.service.http import Request, Response
from worker.service.metrics import Metrics
from worker.service.slack_actions import AfterTheAnswer, refusal, slack_app_token, slack_credentials
from worker.store import Store

__all__ = ["BUSY_TIMEOUT_MS", "SlackEvents", "build_slack_events"]

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS: Final = 5000
"""How long a publish waits for a cycle's write transaction (off the request path: it may wait longer)."""


class SlackEvents:
    """The `/slack/events` route: `server.routes.add("POST", "/slack/events", events.handle)`.

    `store` must be a connection of its own (only the background thread uses it); `slack` may be None when
    Slack is not configured (events are acknowledged, nothing is published). `metrics` counts the publishes.
    """

    def __init__(self, store: Store, *, signing_secret: str | None, slack: SlackClient | None,
                 instance_url: Callable[[Store], str], metrics: Metrics | None = None, clock: Clock = system_clock,
                 epoch: Callable[[], float] = time.time, owns_store: bool = False, over_socket: bool = False) -> None:
        self.store = store
        self._secret = signing_secret or None
        self._slack = slack
        self._instance_url = instance_url
        self._metrics = metrics
        self._clock = clock
        self._epoch = epoch
        self._owns_store = owns_store
        self._background = AfterTheAnswer("slack-home")
        self._lock = threading.Lock()
        self._queued: set[str] = set()
        store.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if self._secret is None and not over_socket:  # over Socket Mode, nothing needs the secret
            log.warning("SLACK_SIGNING_SECRET is not set: /slack/events refuses every request (401), so the "
                        "Home tab shows nothing")

    def handle(self, request: Request) -> Response:
        refused = refusal(self._secret, request, self._epoch(), "slack events")
        if refused is not None:
            return refused
        try:
            body = json.loads(request.body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            log.warning("slack events: a signed request whose body is not a JSON object")
            return Response.json(400, {"error": "bad_request", "detail": "expected a JSON object"})
        return self.handle_body(body)

    def handle_body(self, body: Mapping[str, Any]) -> Response:
        """One Events API body known to be Slack's, however it came: the Home tab's publish is queued, never
        waited for, so the answer (or the Socket Mode acknowledgement) goes back at once."""
        kind = body.get("type")
        if kind == "url_verification":
            return Response.json(200, {"challenge": str(body.get("challenge") or "")})
        event = body.get("event")
        if kind == "event_callback" and isinstance(event, dict) and event.get("type") == "app_home_opened":
            user = event.get("user")
            if event.get("tab", "home") == "home" and isinstance(user, str) and user:
                self._schedule(user)
        return Response(200)  # whatever else Slack sends (the Messages tab, other events) is not ours

    def _schedule(self, user_id: str) -> None:
        if self._slack is None:
            return
        with self._lock:
            if user_id in self._queued:
                return  # opened again before the last publish ran: that one shows the same
            self._queued.add(user_id)
        self._background.submit(self._publish, user_id)

    def _publish(self, user_id: str) -> None:
        assert self._slack is not None
        with self._lock:
            self._queued.discard(user_id)
        try:
            home_opened(self.store, self._slack, user_id, self._instance_url(self.store), self._clock())
        except SlackError as exc:
            log.warning("slack events: could not publish the Home tab of %s: %s", user_id, exc)
            self._count(failed=1)
        except Exception:
            log.exception("slack events: building the Home tab of %s failed", user_id)
            self._count(failed=1)
        else:
            self._count(published=1)

    def _count(self, *, published: int = 0, failed: int = 0) -> None:
        if self._metrics is not None:
            self._metrics.count_home(published=published, failed=failed)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait for the publishes scheduled so far (tests; shutdown)."""
        self._background.flush(timeout)

    def close(self) -> None:
        self._background.shutdown()
        if self._owns_store:
            self.store.close()


def build_slack_events(settings: Settings, *, metrics: Metrics | None = None,
                       clock: Clock = system_clock) -> SlackEvents:
    """The handler as the scheduler runs it: its own database connection and Slack client."""
    token, secret = slack_credentials(settings)
    slack = (SlackClient(token, base_url=settings.slack_api_url, max_retry_wait=10.0, ca_bundle=settings.ca_bundle)
             if token else None)

    def instance_url(store: Store) -> str:
        return record_url(store, settings)

    return SlackEvents(Store(settings.db), signing_secret=secret, slack=slack, instance_url=instance_url,
                       metrics=metrics, clock=clock, owns_store=True, over_socket=slack_app_token(settings) is not None)
