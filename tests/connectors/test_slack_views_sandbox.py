"""The Slack sandbox's `views.publish` (a user's Home tab) and Events API requests, over raw HTTP.

What it follows, by source:
- Slack's OpenAPI spec (``/work/shared/reference/slack_web_openapi_v2.json``, path ``/views.publish``):
  ``user_id`` and ``view`` (a JSON-encoded string) required, ``hash`` optional; "Requires scope: `none`";
  a success answers ``{"ok": true, "view": {...}}`` with the view as the spec's example shows it (the same
  fields), an error ``{"ok": false, "error": "invalid_arguments", "response_metadata": {"messages": [...]}}``.
- Slack's home tab view reference (docs.slack.dev/reference/views/home-tab-views): ``type`` "home",
  ``blocks`` required, at most 100; ``private_metadata`` at most 3000 characters, ``callback_id`` 255.
- Block Kit's block reference (docs.slack.dev/reference/block-kit/blocks): the blocks available in Home tabs
  (actions, context, divider, header, image, input, rich_text, section, video; not file or markdown), and
  the text limits (section text 3000, header 150).
- views.publish's error list (docs.slack.dev/reference/methods/views.publish): ``not_found`` for a user
  that cannot be found, ``hash_conflict`` for a stale ``hash``.
- The Events API (docs.slack.dev/apis/events-api): JSON bodies signed like interactions, an ``event_callback``
  envelope around ``app_home_opened`` (``user``, ``channel``, ``tab``, ``view`` once a Home view exists).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.slack.client import SlackClient, SlackError
from connectors.slack.sandbox import SlackSandbox, slack_signature
from tests.connectors.test_slack_sandbox import Answer, Received, assert_matches_spec

SPEC_PATH = Path("/work/shared/reference/slack_web_openapi_v2.json")
CLOCK = 1_700_000_000.0
HOME: dict[str, Any] = {"type": "home", "callback_id": "healthbeat_home", "blocks": [
    {"type": "header", "text": {"type": "plain_text", "text": "Your accounts"}},
    {"type": "section", "text": {"type": "mrkdwn", "text": "*Acme* 31 (red)"}},
]}


@pytest.fixture
def sandbox() -> Iterator[SlackSandbox]:
    with SlackSandbox(clock=lambda: CLOCK) as running:
        yield running


def _publish(sandbox: SlackSandbox, **params: Any) -> Answer:
    """Form-encoded with the view as a JSON string: the spec's `view` is "a JSON-encoded string"."""
    data = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in params.items()}
    response = httpx.post(sandbox.url + "views.publish", data=data,
                          headers={"Authorization": f"Bearer {sandbox.token}"}, timeout=5)
    return Answer(response.status_code, response.headers, response.json())


def test_views_publish_answers_with_the_view_shaped_as_the_specs_example(sandbox: SlackSandbox) -> None:
    user = sandbox.add_user("dana@example.com", "Dana Scully")

    answer = _publish(sandbox, user_id=user, view=HOME)

    assert answer.body["ok"] is True, answer.body
    assert_matches_spec("views.publish", answer)
    spec = json.loads(SPEC_PATH.read_text())
    example = spec["paths"]["/views.publish"]["get"]["responses"]["200"]["examples"]["application/json"]["view"]
    assert set(answer.body["view"]) == set(example)
    assert answer.body["view"]["type"] == "home" and answer.body["view"]["blocks"] == HOME["blocks"]
    assert sandbox.home_views[user] == answer.body["view"]


def test_publishing_again_replaces_the_users_home_tab(sandbox: SlackSandbox) -> None:
    user = sandbox.add_user("dana@example.com", "Dana Scully")
    first = _publish(sandbox, user_id=user, view=HOME).body["view"]
    later = {**HOME, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "All green"}}]}

    second = _publish(sandbox, user_id=user, view=later).body["view"]

    assert second["id"] == first["id"]
    assert sandbox.home_views[user]["blocks"] == later["blocks"]


def test_the_real_client_publishes_a_home_tab(sandbox: SlackSandbox) -> None:
    user = sandbox.add_user("dana@example.com", "Dana Scully")
    client = SlackClient(sandbox.token, base_url=sandbox.url, max_retries=0)

    view_id = client.publish_home(user, HOME)

    assert view_id == sandbox.home_views[user]["id"]


def test_the_client_reads_a_users_email_back_for_the_home_tab(sandbox: SlackSandbox) -> None:
    user = sandbox.add_user("dana@example.com", "Dana Scully")
    gone = sandbox.add_user("gone@example.com", "Former CSM", deleted=True)
    client = SlackClient(sandbox.token, base_url=sandbox.url, max_retries=0)

    assert (client.email_of(user), client.email_of(gone), client.email_of("U0NOBODY01")) == \
        ("dana@example.com", None, None)


MISSING: dict[str, dict[str, Any]] = {"user_id": {"view": HOME}, "view": {"user_id": "U0HB0000001"}}


@pytest.mark.parametrize("missing", sorted(MISSING))
def test_views_publish_without_a_required_argument_is_invalid_arguments(sandbox: SlackSandbox, missing: str) -> None:
    sandbox.add_user("dana@example.com", "Dana Scully")

    answer = _publish(sandbox, **MISSING[missing])

    assert (answer.body["ok"], answer.body["error"]) == (False, "invalid_arguments")
    assert f"missing required field: {missing}" in answer.body["response_metadata"]["messages"][0]
    assert_matches_spec("views.publish", answer)


def _blocks(n: int) -> list[dict[str, Any]]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": f"line {i}"}} for i in range(n)]


BAD_VIEWS: dict[str, Any] = {
    "a modal": {**HOME, "type": "modal"},
    "no blocks": {"type": "home"},
    "101 blocks": {"type": "home", "blocks": _blocks(101)},
    "a markdown block (messages only)": {"type": "home", "blocks": [{"type": "markdown", "text": "**hi**"}]},
    "a file block (messages only)": {"type": "home", "blocks": [
        {"type": "file", "external_id": "f", "source": "remote"}]},
    "a section text over 3000": {"type": "home", "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]},
    "a header over 150": {"type": "home", "blocks": [{"type": "header", "text": {"type": "plain_text",
                                                                                  "text": "x" * 151}}]},
    "private_metadata over 3000": {**HOME, "private_metadata": "x" * 3001},
    "not JSON": "{not json",
}


@pytest.mark.parametrize("case", sorted(BAD_VIEWS))
def test_a_view_slack_would_refuse_is_invalid_arguments(sandbox: SlackSandbox, case: str) -> None:
    user = sandbox.add_user("dana@example.com", "Dana Scully")

    answer = _publish(sandbox, user_id=user, view=BAD_VIEWS[case])

    assert (answer.body["ok"], answer.body["error"]) == (False, "invalid_arguments")
    assert_matches_spec("views.publish", answer)
    assert user not in sandbox.home_views


def test_exactly_100_blocks_are_accepted(sandbox: SlackSandbox) -> None:
    user = sandbox.add_user("dana@example.com", "Dana Scully")

    assert _publish(sandbox, user_id=user, view={"type": "home", "blocks": _blocks(100)}).body["ok"] is True


@pytest.mark.parametrize("who", ["unknown", "deactivated"])
def test_a_user_slack_cannot_find_is_not_found(sandbox: SlackSandbox, who: str) -> None:
    gone = sandbox.add_user("gone@example.com", "Former CSM", deleted=True)

    answer = _publish(sandbox, user_id=gone if who == "deactivated" else "U0NOBODY01", view=HOME)

    assert answer.body == {"ok": False, "error": "not_found"}
    assert_matches_spec("views.publish", answer)


def test_a_stale_hash_is_a_hash_conflict(sandbox: SlackSandbox) -> None:
    user = sandbox.add_user("dana@example.com", "Dana Scully")
    _publish(sandbox, user_id=user, view=HOME)

    answer = _publish(sandbox, user_id=user, view=HOME, hash="1.stale")

    assert answer.body == {"ok": False, "error": "hash_conflict"}


def test_the_client_reports_slacks_refusal_by_its_code(sandbox: SlackSandbox) -> None:
    client = SlackClient(sandbox.token, base_url=sandbox.url, max_retries=0)

    with pytest.raises(SlackError) as refused:
        client.publish_home("U0NOBODY01", HOME)

    assert refused.value.error == "not_found"


@pytest.fixture
def app() -> Iterator[tuple[str, list[Received]]]:
    """A stand-in for the app's events URL, recording each request and answering 200."""

    received: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/slack/events", received
    server.shutdown()
    server.server_close()


def test_app_home_opened_is_sent_signed_as_slack_signs_events(
        sandbox: SlackSandbox, app: tuple[str, list[Received]]) -> None:
    user = sandbox.add_user("dana@example.com", "Dana Scully")
    url, received = app

    answer = sandbox.app_home_opened(url, user, "s3cret")

    assert answer.status == 200
    (request,) = received
    stamp = request.headers["x-slack-request-timestamp"]
    assert request.headers["x-slack-signature"] == slack_signature("s3cret", stamp, request.body)
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.body)
    assert body["type"] == "event_callback"
    assert {k: body["event"][k] for k in ("type", "user", "tab")} == \
        {"type": "app_home_opened", "user": user, "tab": "home"}
