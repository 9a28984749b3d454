"""The Slack sandbox speaks Slack's wire format: checked over raw HTTP against Slack's OpenAPI spec.

The spec (``/work/shared/reference/slack_web_openapi_v2.json``) is Slack's archived 2020 one; where
Slack documented something later (message metadata, 2022) or the spec is plainly wrong against
Slack's own docs, `SPEC_GAPS` patches a copy, each patch saying why — and each patch first asserts
the gap still exists, so an updated spec makes the patch fail loudly instead of hiding a difference.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from connectors.slack.sandbox import BOT_USER_ID, LOST_ANSWER, MAX_TEXT, SlackSandbox

SPEC_PATH = Path("/work/shared/reference/slack_web_openapi_v2.json")
CLOCK = 1_700_000_000.0

METHODS = ("auth.test", "users.lookupByEmail", "users.info", "conversations.open", "conversations.list",
           "conversations.history", "chat.postMessage", "chat.update")


# -- the spec, and where Slack's documented API is newer than it -----------------------------------------


def _operation(spec: dict[str, Any], method: str) -> dict[str, Any]:
    (operation,) = spec["paths"][f"/{method}"].values()
    return dict(operation)


def _add_errors(spec: dict[str, Any], method: str, *errors: str) -> None:
    enum = _operation(spec, method)["responses"]["default"]["schema"]["properties"]["error"]["enum"]
    for error in errors:
        assert error not in enum, f"spec now lists {error} for {method}: drop the patch"
        enum.append(error)


def _gap_message_metadata(spec: dict[str, Any]) -> None:
    # https://api.slack.com/metadata/using — messages carry {event_type, event_payload} since 2022.
    message = spec["definitions"]["objs_message"]["properties"]
    assert "metadata" not in message
    message["metadata"] = {
        "type": "object", "additionalProperties": False, "required": ["event_type", "event_payload"],
        "properties": {"event_type": {"type": "string"}, "event_payload": {"type": "object"}},
    }


def _gap_history_paging(spec: dict[str, Any]) -> None:
    # https://api.slack.com/methods/conversations.history — cursor paging via response_metadata, and an
    # empty channel answers "messages": [] (the spec's minItems: 1 cannot hold for a new channel).
    schema = _operation(spec, "conversations.history")["responses"]["200"]["schema"]["properties"]
    assert "response_metadata" not in schema and schema["messages"]["minItems"] == 1
    schema["response_metadata"] = {"$ref": "#/definitions/objs_response_metadata"}
    del schema["messages"]["minItems"]


def _gap_update_blocks(spec: dict[str, Any]) -> None:
    # https://api.slack.com/methods/chat.update — the updated message's blocks are an array, as in
    # every other message; the spec's {"type": "object"} contradicts its own `blocks` definition.
    message = _operation(spec, "chat.update")["responses"]["200"]["schema"]["properties"]["message"]
    assert message["properties"]["blocks"] == {"type": "object"}
    message["properties"]["blocks"] = {"$ref": "#/definitions/blocks"}


def _gap_error_codes(spec: dict[str, Any]) -> None:
    # Error codes Slack documents on each method's page today but the 2020 spec does not list:
    # 429 answers {"error": "ratelimited"} (https://api.slack.com/docs/rate-limits); Block Kit and
    # metadata validation; not_in_channel for a bot reading a channel it has not joined; bad cursors.
    for method in METHODS:
        _add_errors(spec, method, "ratelimited")
    _add_errors(spec, "chat.postMessage", "invalid_blocks", "invalid_metadata_format")
    _add_errors(spec, "chat.update", "invalid_blocks")
    _add_errors(spec, "conversations.history", "not_in_channel", "invalid_cursor")
    _add_errors(spec, "conversations.list", "invalid_cursor")


SPEC_GAPS: tuple[Callable[[dict[str, Any]], None], ...] = (
    _gap_message_metadata, _gap_history_paging, _gap_update_blocks, _gap_error_codes,
)


@cache
def patched_spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    spec = copy.deepcopy(spec)
    for patch in SPEC_GAPS:
        patch(spec)
    return spec


# -- a small JSON-schema walker for the keywords this spec uses ------------------------------------------

_ANNOTATIONS = {"title", "description", "format", "examples", "example", "x-examples"}
_KEYWORDS = {"$ref", "type", "enum", "pattern", "properties", "required", "additionalProperties", "items",
             "minItems", "uniqueItems"} | _ANNOTATIONS
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "null": lambda v: v is None,
}


def schema_errors(value: Any, schema: dict[str, Any], spec: dict[str, Any], path: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (empty when it conforms).

    One quirk of Slack's spec is honoured: ``items`` given as a list on a schema without ``type``
    (e.g. ``objs_user``, ``bot_id``) is Slack's way of writing "one of these", so it is read as anyOf.
    """
    unknown = set(schema) - _KEYWORDS
    assert not unknown, f"schema keyword(s) {unknown} at {path} not understood by this walker"
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/definitions/")
        return schema_errors(value, spec["definitions"][name], spec, path)
    items = schema.get("items")
    if isinstance(items, list) and "type" not in schema:
        attempts = [schema_errors(value, option, spec, path) for option in items]
        return [] if any(not a for a in attempts) else [f"{path}: matches no option: {attempts}"]
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in allowed):
            return [f"{path}: {value!r} is not {types}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} not in {schema['enum']}"]
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        return [f"{path}: {value!r} does not match {schema['pattern']}"]
    if isinstance(value, dict):
        return _object_errors(value, schema, spec, path)
    if isinstance(value, list):
        return _array_errors(value, schema, spec, path)
    return []


def _object_errors(value: dict[str, Any], schema: dict[str, Any], spec: dict[str, Any],
                   path: str) -> list[str]:
    errors = [f"{path}: missing {key!r}" for key in schema.get("required", []) if key not in value]
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            errors += schema_errors(item, properties[key], spec, f"{path}.{key}")
        elif extra is False:
            errors.append(f"{path}: unexpected property {key!r}")
        elif isinstance(extra, dict):
            errors += schema_errors(item, extra, spec, f"{path}.{key}")
    return errors


def _array_errors(value: list[Any], schema: dict[str, Any], spec: dict[str, Any], path: str) -> list[str]:
    errors = []
    if len(value) < schema.get("minItems", 0):
        errors.append(f"{path}: fewer than {schema['minItems']} items")
    if schema.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
        errors.append(f"{path}: items are not unique")
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            errors += schema_errors(item, items, spec, f"{path}[{index}]")
    return errors


def assert_matches_spec(method: str, answer: Answer) -> None:
    spec = patched_spec()
    responses = _operation(spec, method)["responses"]
    schema = responses["200"]["schema"] if answer.body.get("ok") else responses["default"]["schema"]
    errors = schema_errors(answer.body, schema, spec)
    assert not errors, f"{method} answered off-spec: {errors}\n{json.dumps(answer.body, indent=1)}"


# -- raw HTTP to the sandbox -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: httpx.Headers
    body: dict[str, Any]


@dataclass(frozen=True)
class World:
    """The workspace every test starts from."""

    sandbox: SlackSandbox
    http: httpx.Client
    dana: str  # an owner with a Slack account
    ghost: str  # a deactivated account
    alerts: str  # #cs-alerts, bot is a member
    lounge: str  # #lounge, bot is not a member
    attic: str  # #attic, archived

    def call(self, method: str, *, token: str | None = None, **params: Any) -> Answer:
        """POST form-encoded with a bearer token, as slack-sdk sends GET-style methods."""
        headers = {"Authorization": f"Bearer {token or self.sandbox.token}"}
        response = self.http.post(self.sandbox.url + method, data=params, headers=headers)
        return Answer(response.status_code, response.headers, response.json())

    def call_json(self, method: str, body: dict[str, Any]) -> Answer:
        """POST a JSON body, as slack-sdk sends chat.postMessage and chat.update."""
        response = self.http.post(self.sandbox.url + method, json=body,
                              headers={"Authorization": f"Bearer {self.sandbox.token}"})
        return Answer(response.status_code, response.headers, response.json())

    def post(self, channel: str, text: str = "hello", **extra: Any) -> Answer:
        return self.call_json("chat.postMessage", {"channel": channel, "text": text, **extra})


@pytest.fixture
def world() -> Iterator[World]:
    # These tests build channel history quickly; the posting limit has tests of its own.
    with SlackSandbox(clock=lambda: CLOCK, post_burst=1_000) as sandbox, httpx.Client() as http:
        yield World(
            sandbox=sandbox,
            http=http,
            dana=sandbox.add_user("dana@example.com", "Dana Scully"),
            ghost=sandbox.add_user("gone@example.com", "Former CSM", deleted=True),
            alerts=sandbox.add_channel("cs-alerts"),
            lounge=sandbox.add_channel("lounge", bot_is_member=False),
            attic=sandbox.add_channel("attic", archived=True),
        )


BLOCKS: list[dict[str, Any]] = [
    {"type": "header", "text": {"type": "plain_text", "text": "Acme is red"}},
    {"type": "section", "text": {"type": "mrkdwn", "text": "*41* (-12)"},
     "fields": [{"type": "mrkdwn", "text": "No two-way touch in 41 days"}]},
    {"type": "context", "elements": [{"type": "mrkdwn", "text": "<https://x.example/001|Salesforce>"}]},
]
METADATA = {"event_type": "healthbeat_nudge", "event_payload": {"dedup_key": "rule:001:1:dm"}}


# -- every method, success and error, against the spec ---------------------------------------------------

Case = Callable[[World], Answer]


def _open_twice(w: World) -> Answer:
    w.call("conversations.open", users=w.dana)
    return w.call("conversations.open", users=w.dana)


def _history_page(w: World) -> Answer:
    w.post(w.alerts, blocks=BLOCKS, metadata=METADATA)
    w.post(w.alerts)
    return w.call("conversations.history", channel=w.alerts, limit=1, include_all_metadata="1")


def _post_ratelimited(w: World) -> Answer:
    w.sandbox.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=1)
    return w.post(w.alerts)


def _update(text: str, *, blocks: list[dict[str, Any]], ts: str | None = None) -> Case:
    """chat.update of a fresh message in #cs-alerts (or of ``ts``, which may not exist)."""
    def act(w: World) -> Answer:
        target = ts or w.post(w.alerts).body["ts"]
        return w.call_json("chat.update", {"channel": w.alerts, "ts": target, "text": text, "blocks": blocks})
    return act


SPEC_CASES: dict[str, tuple[str, Case, str | None]] = {
    "auth ok": ("auth.test", lambda w: w.call("auth.test"), None),
    "auth bad token": ("auth.test", lambda w: w.call("auth.test", token="xoxb-wrong"), "invalid_auth"),
    "lookup ok": ("users.lookupByEmail", lambda w: w.call("users.lookupByEmail", email="dana@example.com"),
                  None),
    "lookup miss": ("users.lookupByEmail", lambda w: w.call("users.lookupByEmail", email="x@example.com"),
                    "users_not_found"),
    "info ok": ("users.info", lambda w: w.call("users.info", user=w.dana), None),
    "info bot": ("users.info", lambda w: w.call("users.info", user=BOT_USER_ID), None),
    "info miss": ("users.info", lambda w: w.call("users.info", user="U0NOBODY00"), "user_not_found"),
    "open ok": ("conversations.open", lambda w: w.call("conversations.open", users=w.dana), None),
    "open again": ("conversations.open", _open_twice, None),
    "open return_im": ("conversations.open",
                       lambda w: w.call("conversations.open", users=w.dana, return_im="1"), None),
    "open no users": ("conversations.open", lambda w: w.call("conversations.open"),
                      "users_list_not_supplied"),
    "open unknown": ("conversations.open", lambda w: w.call("conversations.open", users="U0NOBODY00"),
                     "user_not_found"),
    "list ok": ("conversations.list", lambda w: w.call("conversations.list", limit=2), None),
    "list no scope": ("conversations.list", lambda w: w.call("conversations.list", types="im"),
                      "missing_scope"),
    "list bad cursor": ("conversations.list", lambda w: w.call("conversations.list", cursor="%%%"),
                        "invalid_cursor"),
    "history ok": ("conversations.history", _history_page, None),
    "history empty": ("conversations.history",
                      lambda w: w.call("conversations.history", channel=w.alerts), None),
    "history unknown": ("conversations.history",
                        lambda w: w.call("conversations.history", channel="C0NOPE0000"), "channel_not_found"),
    "history not member": ("conversations.history",
                           lambda w: w.call("conversations.history", channel=w.lounge), "not_in_channel"),
    "history bad oldest": ("conversations.history",
                           lambda w: w.call("conversations.history", channel=w.alerts, oldest="yesterday"),
                           "invalid_ts_oldest"),
    "post ok": ("chat.postMessage", lambda w: w.post(w.alerts, blocks=BLOCKS, metadata=METADATA), None),
    "post dm": ("chat.postMessage", lambda w: w.post(w.dana), None),
    "post unknown": ("chat.postMessage", lambda w: w.post("#nowhere"), "channel_not_found"),
    "post not member": ("chat.postMessage", lambda w: w.post(w.lounge), "not_in_channel"),
    "post archived": ("chat.postMessage", lambda w: w.post(w.attic), "is_archived"),
    "post no text": ("chat.postMessage", lambda w: w.post(w.alerts, text=""), "no_text"),
    "post too long": ("chat.postMessage", lambda w: w.post(w.alerts, text="x" * (MAX_TEXT + 1)),
                      "msg_too_long"),
    "post bad blocks": ("chat.postMessage", lambda w: w.post(w.alerts, blocks=[{"type": "section"}]),
                        "invalid_blocks"),
    "post bad metadata": ("chat.postMessage", lambda w: w.post(w.alerts, metadata={"event_payload": {}}),
                          "invalid_metadata_format"),
    "post ratelimited": ("chat.postMessage", _post_ratelimited, "ratelimited"),
    "update ok": ("chat.update", _update("resolved", blocks=BLOCKS), None),
    "update unknown ts": ("chat.update", _update("x", blocks=[], ts="1700000000.999999"),
                          "message_not_found"),
    "update no text": ("chat.update", _update("", blocks=[]), "no_text"),
}


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_answer_matches_the_openapi_spec(world: World, case: str) -> None:
    method, act, expected_error = SPEC_CASES[case]
    answer = act(world)
    assert answer.body.get("error") == expected_error, answer.body
    assert_matches_spec(method, answer)


def test_every_method_has_a_success_and_an_error_case() -> None:
    covered = {(method, error is None) for method, _, error in SPEC_CASES.values()}
    assert covered == {(m, ok) for m in METHODS for ok in (True, False)}


def test_spec_declares_every_emulated_method() -> None:
    assert all(f"/{method}" in patched_spec()["paths"] for method in METHODS)


def test_schema_walker_rejects_off_spec_answers() -> None:
    spec = patched_spec()
    message = {"type": "message", "text": "hi", "ts": "1700000000.000100"}
    assert schema_errors(message, {"$ref": "#/definitions/objs_message"}, spec) == []
    assert schema_errors({**message, "ts": "17.1"}, {"$ref": "#/definitions/objs_message"}, spec)
    assert schema_errors({**message, "colour": "red"}, {"$ref": "#/definitions/objs_message"}, spec)
    assert schema_errors({"type": "message", "text": "hi"}, {"$ref": "#/definitions/objs_message"}, spec)
    assert schema_errors({**message, "bot_id": None}, {"$ref": "#/definitions/objs_message"}, spec) == []
    assert schema_errors({**message, "bot_id": 7}, {"$ref": "#/definitions/objs_message"}, spec)


# -- auth and scopes -------------------------------------------------------------------------------------


def test_missing_token_is_not_authed(world: World) -> None:
    response = httpx.post(world.sandbox.url + "auth.test")
    assert response.status_code == 200
    assert response.json() == {"ok": False, "error": "not_authed"}


def test_token_as_form_field_is_accepted_like_slack(world: World) -> None:
    response = httpx.post(world.sandbox.url + "auth.test", data={"token": world.sandbox.token})
    assert response.json()["ok"] is True


def test_token_in_a_json_body_is_ignored_like_slack(world: World) -> None:
    response = httpx.post(world.sandbox.url + "auth.test", json={"token": world.sandbox.token})
    assert response.json()["error"] == "not_authed"


def test_get_with_query_string_works(world: World) -> None:
    response = httpx.get(world.sandbox.url + "users.lookupByEmail", params={"email": "dana@example.com"},
                         headers={"Authorization": f"Bearer {world.sandbox.token}"})
    assert response.json()["user"]["id"] == world.dana


def test_every_answer_carries_the_granted_scopes(world: World) -> None:
    for answer in (world.call("auth.test"), world.call("auth.test", token="bad")):
        assert answer.headers["X-OAuth-Scopes"].split(",") == list(world.sandbox.scopes)


def test_a_method_refuses_a_token_without_its_scope() -> None:
    with SlackSandbox(scopes=("users:read",)) as sandbox:
        response = httpx.post(sandbox.url + "chat.postMessage", json={"channel": "#x", "text": "hi"},
                              headers={"Authorization": f"Bearer {sandbox.token}"})
    assert response.json() == {"ok": False, "error": "missing_scope", "needed": "chat:write",
                               "provided": "users:read"}


def test_unknown_method_is_404(world: World) -> None:
    answer = world.call("chat.explode")
    assert (answer.status, answer.body) == (404, {"ok": False, "error": "unknown_method"})


def test_malformed_json_body_is_invalid_json(world: World) -> None:
    response = httpx.post(world.sandbox.url + "chat.postMessage", content=b"{nope",
                          headers={"Authorization": f"Bearer {world.sandbox.token}",
                                   "Content-Type": "application/json"})
    assert response.json() == {"ok": False, "error": "invalid_json"}


# -- users and DMs ---------------------------------------------------------------------------------------


def test_lookup_by_email_ignores_case(world: World) -> None:
    assert world.call("users.lookupByEmail", email="Dana@Example.COM").body["user"]["id"] == world.dana


def test_deactivated_user_is_found_but_flagged_deleted(world: World) -> None:
    assert world.call("users.lookupByEmail", email="gone@example.com").body["user"]["deleted"] is True


def test_conversations_open_gives_one_stable_dm_per_user(world: World) -> None:
    first = world.call("conversations.open", users=world.dana).body
    second = world.call("conversations.open", users=world.dana).body
    assert first["channel"]["id"] == second["channel"]["id"]
    assert first["channel"]["id"].startswith("D")
    assert "already_open" not in first and second["already_open"] is True


def test_dm_to_a_deactivated_user_is_refused(world: World) -> None:
    assert world.call("conversations.open", users=world.ghost).body["error"] == "user_disabled"


# -- posting ---------------------------------------------------------------------------------------------


def test_post_records_blocks_metadata_and_kind(world: World) -> None:
    answer = world.post(world.alerts, text="Acme is red", blocks=BLOCKS, metadata=METADATA)
    (message,) = world.sandbox.messages_in(world.alerts)
    assert (message.kind, message.user, message.text) == ("channel", None, "Acme is red")
    assert (message.blocks, message.metadata, message.ts) == (BLOCKS, METADATA, answer.body["ts"])
    assert answer.body["message"]["metadata"] == METADATA


@pytest.mark.parametrize("ref", ["#cs-alerts", "cs-alerts"])
def test_post_by_channel_name_lands_in_the_channel(world: World, ref: str) -> None:
    assert world.post(ref).body["channel"] == world.alerts
    assert len(world.sandbox.messages_in(world.alerts)) == 1


def test_post_to_a_user_id_lands_in_their_dm(world: World) -> None:
    dm_id = world.call("conversations.open", users=world.dana).body["channel"]["id"]
    assert world.post(world.dana).body["channel"] == dm_id
    (message,) = world.sandbox.dms_to(world.dana)
    assert (message.channel, message.kind, message.user) == (dm_id, "im", world.dana)


def test_post_form_encoded_blocks_and_metadata_as_json_strings(world: World) -> None:
    answer = world.call("chat.postMessage", channel=world.alerts, text="x", blocks=json.dumps(BLOCKS),
                        metadata=json.dumps(METADATA))
    assert answer.body["ok"] is True
    assert world.sandbox.messages[-1].metadata == METADATA


def test_blocks_alone_are_enough_without_text(world: World) -> None:
    assert world.post(world.alerts, text="", blocks=BLOCKS).body["ok"] is True


@pytest.mark.parametrize("blocks", [
    "not json", {"type": "divider"}, [{"type": "marquee"}], [{"type": "divider"}] * 51,
    [{"type": "header", "text": {"type": "mrkdwn", "text": "headers are plain_text"}}],
    [{"type": "section", "text": {"type": "mrkdwn", "text": ""}}],
    [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}],
    [{"type": "divider", "block_id": "a"}, {"type": "divider", "block_id": "a"}],
])
def test_malformed_blocks_are_invalid_blocks(world: World, blocks: Any) -> None:
    assert world.post(world.alerts, blocks=blocks).body["error"] == "invalid_blocks"
    assert world.sandbox.messages == []


def test_ts_values_are_unique_and_increasing_even_on_a_stopped_clock(world: World) -> None:
    stamps = [world.post(world.alerts).body["ts"] for _ in range(3)]
    assert stamps == ["1700000000.000000", "1700000000.000001", "1700000000.000002"]
    assert all(re.fullmatch(r"\d{10}\.\d{6}", ts) for ts in stamps)


def test_chat_update_replaces_text_and_keeps_metadata(world: World) -> None:
    ts = world.post(world.alerts, text="red", metadata=METADATA).body["ts"]
    world.call_json("chat.update", {"channel": world.alerts, "ts": ts, "text": "resolved"})
    (message,) = world.sandbox.messages_in(world.alerts)
    assert (message.text, message.metadata, message.ts) == ("resolved", METADATA, ts)


# -- reading: paging and metadata ------------------------------------------------------------------------


def test_history_is_newest_first_and_pages_with_a_cursor(world: World) -> None:
    stamps = [world.post(world.alerts, text=str(i)).body["ts"] for i in range(5)]
    seen, cursor = [], ""
    while True:
        body = world.call("conversations.history", channel=world.alerts, limit=2, cursor=cursor).body
        seen += [m["ts"] for m in body["messages"]]
        if not body["has_more"]:
            assert "response_metadata" not in body
            break
        cursor = body["response_metadata"]["next_cursor"]
    assert seen == stamps[::-1]


def test_history_shows_metadata_only_when_asked(world: World) -> None:
    world.post(world.alerts, metadata=METADATA)
    plain = world.call("conversations.history", channel=world.alerts).body["messages"][0]
    asked = world.call("conversations.history", channel=world.alerts, include_all_metadata="true").body
    assert "metadata" not in plain
    assert asked["messages"][0]["metadata"] == METADATA


def test_history_oldest_is_exclusive_unless_inclusive(world: World) -> None:
    first, second = (world.post(world.alerts).body["ts"] for _ in range(2))
    exclusive = world.call("conversations.history", channel=world.alerts, oldest=first).body["messages"]
    inclusive = world.call("conversations.history", channel=world.alerts, oldest=first,
                           inclusive="1").body["messages"]
    assert [m["ts"] for m in exclusive] == [second]
    assert [m["ts"] for m in inclusive] == [second, first]


def test_history_hides_thread_replies(world: World) -> None:
    parent = world.post(world.alerts).body["ts"]
    world.post(world.alerts, thread_ts=parent)
    (message,) = world.call("conversations.history", channel=world.alerts).body["messages"]
    assert (message["ts"], message["reply_count"]) == (parent, 1)


def test_conversations_list_pages_through_every_public_channel(world: World) -> None:
    names, cursor = [], ""
    while True:
        body = world.call("conversations.list", limit=1, cursor=cursor).body
        names += [c["name"] for c in body["channels"]]
        cursor = body["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert sorted(names) == ["attic", "cs-alerts", "lounge"]


def test_conversations_list_can_exclude_archived(world: World) -> None:
    body = world.call("conversations.list", exclude_archived="true").body
    assert sorted(c["name"] for c in body["channels"]) == ["cs-alerts", "lounge"]


# -- fault injection and call log ------------------------------------------------------------------------


def test_ratelimited_answers_429_with_retry_after_then_recovers(world: World) -> None:
    world.sandbox.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=3)
    limited = world.post(world.alerts)
    assert (limited.status, limited.headers["Retry-After"]) == (429, "3")
    assert limited.body == {"ok": False, "error": "ratelimited"}
    assert world.post(world.alerts).body["ok"] is True
    assert len(world.sandbox.messages) == 1


def test_fail_next_times_fails_that_many_calls_of_that_method_only(world: World) -> None:
    world.sandbox.fail_next("chat.postMessage", "internal_error", status=500, times=2)
    assert world.call("auth.test").body["ok"] is True
    assert [world.post(world.alerts).status for _ in range(3)] == [500, 500, 200]


def test_lost_answer_carries_out_the_call_but_hangs_up(world: World) -> None:
    world.sandbox.fail_next("chat.postMessage", "connection_lost", status=LOST_ANSWER)
    with pytest.raises(httpx.RemoteProtocolError):
        world.post(world.alerts)
    assert len(world.sandbox.messages) == 1
    assert (world.sandbox.calls[-1].status, world.sandbox.calls[-1].error) == (LOST_ANSWER, "connection_lost")


def test_fail_next_refuses_a_method_the_sandbox_does_not_emulate(world: World) -> None:
    with pytest.raises(ValueError, match=r"chat\.postmessage"):
        world.sandbox.fail_next("chat.postmessage", "ratelimited")


def test_calls_record_method_params_and_outcome_but_never_the_token(world: World) -> None:
    world.call("users.lookupByEmail", email="x@example.com", token=world.sandbox.token)
    httpx.post(world.sandbox.url + "auth.test", data={"token": world.sandbox.token})
    lookup, auth = world.sandbox.calls
    assert (lookup.method, lookup.params, lookup.ok, lookup.error) == (
        "users.lookupByEmail", {"email": "x@example.com"}, False, "users_not_found")
    assert auth.params == {} and auth.ok
    world.sandbox.reset_calls()
    assert world.sandbox.calls == []


# -- lifecycle -------------------------------------------------------------------------------------------


def test_stop_releases_the_port() -> None:
    sandbox = SlackSandbox()
    sandbox.start()
    port = int(sandbox.url.split(":")[2].split("/")[0])
    sandbox.stop()
    sandbox.stop()  # idempotent
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


def test_url_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = SlackSandbox().url


# -- views.open and interactivity (Slack calling the app) ------------------------------------------------

MODAL: dict[str, Any] = {
    "type": "modal", "callback_id": "cb", "private_metadata": "nudge:1",
    "title": {"type": "plain_text", "text": "Score looks wrong"},
    "submit": {"type": "plain_text", "text": "Send"},
    "blocks": [
        {"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Why?"},
         "element": {"type": "plain_text_input", "action_id": "reason"}},
        {"type": "input", "block_id": "value", "optional": True, "label": {"type": "plain_text", "text": "Score"},
         "element": {"type": "number_input", "action_id": "value", "is_decimal_allowed": False}},
        {"type": "input", "block_id": "until", "label": {"type": "plain_text", "text": "For"},
         "element": {"type": "static_select", "action_id": "until",
                     "initial_option": {"text": {"type": "plain_text", "text": "14 days"}, "value": "14"},
                     "options": [{"text": {"type": "plain_text", "text": f"{d} days"}, "value": str(d)}
                                 for d in (7, 14)]}},
    ],
}
BUTTONS: list[dict[str, Any]] = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "Acme turned red"}},
    {"type": "actions", "block_id": "feedback:k1", "elements": [
        {"type": "button", "action_id": "useful", "value": "k1", "text": {"type": "plain_text", "text": "Useful"}},
        {"type": "button", "action_id": "open", "url": "https://x.example/001",
         "text": {"type": "plain_text", "text": "Open"}}]},
]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@pytest.fixture
def app() -> Iterator[tuple[str, list[Received]]]:
    """A stand-in for the app's Request URL: records what arrives and answers 200 with a small JSON body."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            answer = b'{"response_action": "clear"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/slack/actions", received
    server.shutdown()
    server.server_close()


def _open(w: World, view: dict[str, Any], trigger_id: str | None = None) -> Answer:
    return w.call_json("views.open", {"trigger_id": trigger_id or w.sandbox.new_trigger(w.dana), "view": view})


def test_views_open_answers_like_slack_and_keeps_the_view(world: World) -> None:
    answer = _open(world, MODAL)

    assert answer.body["ok"] is True, answer.body
    assert_matches_spec("views.open", answer)
    (opened,) = world.sandbox.views
    assert (opened.id, opened.user) == (answer.body["view"]["id"], world.dana)
    assert opened.view["private_metadata"] == "nudge:1" and opened.view["state"] == {"values": {}}


def test_views_open_refuses_a_trigger_it_never_issued(world: World) -> None:
    answer = _open(world, MODAL, trigger_id="12345.98765.abcdef")

    assert answer.body == {"ok": False, "error": "invalid_trigger_id"}
    assert_matches_spec("views.open", answer)


def test_a_trigger_opens_one_view_only(world: World) -> None:
    trigger = world.sandbox.new_trigger(world.dana)
    _open(world, MODAL, trigger)

    assert _open(world, MODAL, trigger).body["error"] == "exchanged_trigger_id"


def test_a_trigger_expires_three_seconds_after_the_click() -> None:
    now = [CLOCK]
    with SlackSandbox(clock=lambda: now[0]) as sandbox, httpx.Client() as http:
        user = sandbox.add_user("pat@example.com", "Pat")
        trigger = sandbox.new_trigger(user)
        now[0] += 3.5
        response = http.post(sandbox.url + "views.open", json={"trigger_id": trigger, "view": MODAL},
                             headers={"Authorization": f"Bearer {sandbox.token}"})

    assert response.json() == {"ok": False, "error": "expired_trigger_id"}


@pytest.mark.parametrize("broken", ["no submit", "title too long", "not a modal"])
def test_views_open_refuses_a_view_slack_would_refuse(world: World, broken: str) -> None:
    view = copy.deepcopy(MODAL)
    if broken == "no submit":
        del view["submit"]
    elif broken == "title too long":
        view["title"]["text"] = "A title longer than twenty-four"
    else:
        view["type"] = "home"

    answer = _open(world, view)

    assert answer.body["error"] == "invalid_arguments"
    assert answer.body["response_metadata"]["messages"]
    assert world.sandbox.views == []


def test_send_interaction_signs_the_form_body_as_slack_documents(
        world: World, app: tuple[str, list[Received]]) -> None:
    url, received = app
    secret = "8f742231b10e8888abcd99yyyzzz85a5"

    result = world.sandbox.send_interaction(url, {"type": "block_actions", "x": "a&b=c"}, secret, retry_num=2)

    (request,) = received
    timestamp = request.headers["x-slack-request-timestamp"]
    expected = "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + request.body,
                                hashlib.sha256).hexdigest()
    assert request.headers["x-slack-signature"] == expected
    assert int(timestamp) == int(CLOCK)
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert json.loads(parse_qs(request.body.decode())["payload"][0]) == {"type": "block_actions", "x": "a&b=c"}
    assert (request.headers["x-slack-retry-num"], request.headers["x-slack-retry-reason"]) == ("2", "http_timeout")
    assert (result.status, result.json()) == (200, {"response_action": "clear"})


def test_an_unsigned_interaction_carries_no_signature_headers(
        world: World, app: tuple[str, list[Received]]) -> None:
    url, received = app

    world.sandbox.send_interaction(url, {"type": "block_actions"}, None)

    assert "x-slack-signature" not in received[0].headers
    assert "x-slack-request-timestamp" not in received[0].headers


def test_a_click_carries_the_button_the_message_as_it_is_now_and_a_usable_trigger(world: World) -> None:
    posted = world.post(world.alerts, blocks=BUTTONS).body
    message = world.sandbox.messages[0]
    world.call_json("chat.update", {"channel": world.alerts, "ts": posted["ts"], "text": "updated"})

    payload = world.sandbox.block_actions_payload(message, "useful", user=world.dana)

    (action,) = payload["actions"]
    assert (action["action_id"], action["block_id"], action["value"], action["type"]) == (
        "useful", "feedback:k1", "k1", "button")
    assert payload["message"]["text"] == "updated"
    assert payload["container"] == {"type": "message", "message_ts": posted["ts"], "channel_id": world.alerts,
                                    "is_ephemeral": False}
    assert (payload["user"]["id"], payload["channel"]["name"]) == (world.dana, "cs-alerts")
    assert _open(world, MODAL, payload["trigger_id"]).body["ok"] is True


def test_a_click_on_a_button_the_message_does_not_have_is_a_test_error(world: World) -> None:
    world.post(world.alerts, blocks=BUTTONS)

    with pytest.raises(ValueError, match="no element"):
        world.sandbox.block_actions_payload(world.sandbox.messages[0], "useful", user=world.dana, value="k2")


def test_a_submission_shapes_the_state_per_element_as_slack_does(world: World) -> None:
    _open(world, MODAL)

    payload = world.sandbox.view_submission_payload(world.sandbox.views[0], {"reason": "renewal signed"})
    fortnight = MODAL["blocks"][2]["element"]["initial_option"]

    assert payload["type"] == "view_submission" and payload["user"]["id"] == world.dana
    assert payload["view"]["state"]["values"] == {
        "reason": {"reason": {"type": "plain_text_input", "value": "renewal signed"}},
        "value": {"value": {"type": "number_input", "value": None}},
        "until": {"until": {"type": "static_select", "selected_option": fortnight}},
    }
    assert payload["view"]["private_metadata"] == "nudge:1"


def test_slack_does_not_submit_a_modal_with_a_required_input_empty(world: World) -> None:
    _open(world, MODAL)

    with pytest.raises(ValueError, match="required input 'reason'"):
        world.sandbox.view_submission_payload(world.sandbox.views[0], {"value": "60"})
