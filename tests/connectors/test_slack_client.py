"""The Slack adapter, through the real slack-sdk over real HTTP against the Slack sandbox.

Nothing is mocked: retries are slack-sdk's own handlers answering the sandbox's 429s and 500s; only
their sleep is swapped for a list that records how long they would have waited.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.slack.client import (
    SentMessage,
    SlackAuthError,
    SlackClient,
    SlackError,
    SlackRecipientError,
    SlackUnavailable,
    escape_text,
)
from connectors.slack.sandbox import LOST_ANSWER, SlackSandbox

SPEC_PATH = Path("/work/shared/reference/slack_web_openapi_v2.json")
# Arguments Slack added after its archived OpenAPI spec (https://api.slack.com/metadata/using).
PARAMETER_GAPS = {"chat.postMessage": {"metadata"}, "conversations.history": {"include_all_metadata"}}

BLOCKS = [{"type": "header", "text": {"type": "plain_text", "text": "Acme Corp is red (41)"}},
          {"type": "section", "text": {"type": "mrkdwn", "text": "No two-way touch in 41 days"}}]
NUDGE = "healthbeat_nudge"


def metadata(key: str) -> dict[str, Any]:
    return {"event_type": NUDGE, "event_payload": {"dedup_key": key, "account": "001000000000001AAA"}}


@dataclass
class Slack:
    """A sandbox workspace, a client factory, and the waits slack-sdk's handlers asked for."""

    sandbox: SlackSandbox
    dana: str
    alerts: str
    lounge: str
    sleeps: list[float]

    def client(self, token: str | None = None, **options: Any) -> SlackClient:
        options.setdefault("post_interval", 0.0)
        return SlackClient(token or self.sandbox.token, base_url=self.sandbox.url, timeout=5,
                           sleep=self.sleeps.append, **options)

    def calls_of(self, method: str) -> int:
        return sum(1 for call in self.sandbox.calls if call.method == method)


@pytest.fixture
def slack() -> Iterator[Slack]:
    # These tests build channel history quickly; Slack's posting limit and the client's pacing have tests of
    # their own (tests/connectors/test_slack_posting_limit.py).
    with SlackSandbox(post_burst=1_000) as sandbox:
        yield Slack(sandbox=sandbox, dana=sandbox.add_user("dana@example.com", "Dana Scully"),
                    alerts=sandbox.add_channel("cs-alerts"),
                    lounge=sandbox.add_channel("lounge", bot_is_member=False), sleeps=[])


@pytest.fixture
def client(slack: Slack) -> SlackClient:
    return slack.client()


# -- identity and lookups --------------------------------------------------------------------------------


def test_check_names_the_bot_and_lists_granted_scopes(slack: Slack, client: SlackClient) -> None:
    description, scopes = client.check()
    assert "healthbeat" in description and "Healthbeat Sandbox" in description
    assert scopes == frozenset(slack.sandbox.scopes)


def test_lookup_finds_the_user_by_email(slack: Slack, client: SlackClient) -> None:
    assert client.user_id_for_email("dana@example.com") == slack.dana


def test_lookup_hit_is_cached(slack: Slack, client: SlackClient) -> None:
    client.user_id_for_email("dana@example.com")
    assert client.user_id_for_email(" Dana@Example.com") == slack.dana
    assert slack.calls_of("users.lookupByEmail") == 1


def test_lookup_miss_is_none_and_cached(slack: Slack, client: SlackClient) -> None:
    assert client.user_id_for_email("nobody@example.com") is None
    assert client.user_id_for_email("nobody@example.com") is None
    assert slack.calls_of("users.lookupByEmail") == 1
    assert client.calls == 1


def test_lookup_cache_expires_after_its_ttl(slack: Slack) -> None:
    now = [0.0]
    client = slack.client(cache_ttl=60, clock=lambda: now[0])
    assert client.user_id_for_email("new.csm@example.com") is None
    new_csm = slack.sandbox.add_user("new.csm@example.com", "New CSM")
    now[0] = 61.0
    assert client.user_id_for_email("new.csm@example.com") == new_csm


def test_deactivated_or_bot_users_count_as_no_slack_user(slack: Slack, client: SlackClient) -> None:
    slack.sandbox.add_user("gone@example.com", "Former CSM", deleted=True)
    slack.sandbox.add_user("robot@example.com", "Robot", is_bot=True)
    assert client.user_id_for_email("gone@example.com") is None
    assert client.user_id_for_email("robot@example.com") is None


def test_open_dm_is_cached(slack: Slack, client: SlackClient) -> None:
    dm = client.open_dm(slack.dana)
    assert client.open_dm(slack.dana) == dm and dm.startswith("D")
    assert slack.calls_of("conversations.open") == 1


@pytest.mark.parametrize("ref", ["#cs-alerts", "cs-alerts", "#CS-Alerts"])
def test_channel_id_resolves_names(slack: Slack, client: SlackClient, ref: str) -> None:
    assert client.channel_id(ref) == slack.alerts


def test_channel_id_passes_ids_through_without_a_call(slack: Slack, client: SlackClient) -> None:
    assert client.channel_id(slack.alerts) == slack.alerts
    assert client.calls == 0


def test_channel_list_is_paged_once_then_cached(slack: Slack) -> None:
    client = slack.client(page_size=1)
    assert (client.channel_id("lounge"), client.channel_id("cs-alerts")) == (slack.lounge, slack.alerts)
    assert slack.calls_of("conversations.list") == 2  # two channels, one per page, listed once


def test_unknown_channel_name_is_a_recipient_error(client: SlackClient) -> None:
    with pytest.raises(SlackRecipientError, match="#nowhere") as caught:
        client.channel_id("#nowhere")
    assert caught.value.error == "channel_not_found"


# -- posting ---------------------------------------------------------------------------------------------


def test_dm_post_with_blocks_and_metadata_reaches_the_owner(slack: Slack, client: SlackClient) -> None:
    dm = client.open_dm(slack.dana)
    sent = client.post(dm, text="Acme Corp is red (41)", blocks=BLOCKS, metadata=metadata("k1"))
    (message,) = slack.sandbox.dms_to(slack.dana)
    assert sent == SentMessage(channel=dm, ts=message.ts)
    assert message.text == "Acme Corp is red (41)"
    assert (message.blocks, message.metadata) == (BLOCKS, metadata("k1"))


def test_post_to_a_user_id_returns_the_dm_channel(slack: Slack, client: SlackClient) -> None:
    sent = client.post(slack.dana, text="hi")
    assert sent.channel == client.open_dm(slack.dana)


def test_post_to_a_channel_by_name(slack: Slack, client: SlackClient) -> None:
    assert client.post("#cs-alerts", text="hi").channel == slack.alerts


def test_channel_not_found_is_a_recipient_error(client: SlackClient) -> None:
    with pytest.raises(SlackRecipientError) as caught:
        client.post("#nowhere", text="hi")
    assert (caught.value.error, caught.value.method) == ("channel_not_found", "chat.postMessage")


def test_bot_not_in_channel_is_a_recipient_error(slack: Slack, client: SlackClient) -> None:
    with pytest.raises(SlackRecipientError) as caught:
        client.post(slack.lounge, text="hi")
    assert caught.value.error == "not_in_channel"


def test_invalid_blocks_is_a_plain_slack_error_not_a_recipient_one(slack: Slack, client: SlackClient) -> None:
    with pytest.raises(SlackError) as caught:
        client.post(slack.alerts, text="hi", blocks=[{"type": "section"}])
    assert type(caught.value) is SlackError and caught.value.error == "invalid_blocks"


# -- finding a message again (dedup after a crash) -------------------------------------------------------


def test_find_by_metadata_finds_the_posted_message(slack: Slack, client: SlackClient) -> None:
    sent = client.post(slack.alerts, text="a", metadata=metadata("rule:001:1:channel"))
    client.post(slack.alerts, text="b", metadata=metadata("other"))
    assert client.find_by_metadata(slack.alerts, event_type=NUDGE, key="rule:001:1:channel") == sent


def test_find_by_metadata_is_none_for_an_unknown_key(slack: Slack, client: SlackClient) -> None:
    client.post(slack.alerts, text="a", metadata=metadata("k1"))
    assert client.find_by_metadata(slack.alerts, event_type=NUDGE, key="never-sent") is None


def test_find_by_metadata_ignores_other_event_types(slack: Slack, client: SlackClient) -> None:
    client.post(slack.alerts, text="a",
                metadata={"event_type": "other_app", "event_payload": {"dedup_key": "k"}})
    assert client.find_by_metadata(slack.alerts, event_type=NUDGE, key="k") is None


def test_find_by_metadata_pages_back_through_history(slack: Slack) -> None:
    client = slack.client(page_size=2)
    oldest = client.post(slack.alerts, text="first", metadata=metadata("first"))
    for i in range(4):
        client.post(slack.alerts, text=str(i), metadata=metadata(str(i)))
    assert client.find_by_metadata(slack.alerts, event_type=NUDGE, key="first") == oldest
    assert slack.calls_of("conversations.history") == 3


def test_find_by_metadata_looks_at_no_more_than_limit_messages(slack: Slack) -> None:
    client = slack.client(page_size=2)
    client.post(slack.alerts, text="old", metadata=metadata("old"))
    for i in range(4):
        client.post(slack.alerts, text=str(i))
    assert client.find_by_metadata(slack.alerts, event_type=NUDGE, key="old", limit=4) is None
    assert slack.calls_of("conversations.history") == 2


def test_find_by_metadata_skips_messages_before_oldest(slack: Slack, client: SlackClient) -> None:
    sent = client.post(slack.alerts, text="a", metadata=metadata("k"))
    assert client.find_by_metadata(slack.alerts, event_type=NUDGE, key="k", oldest=float(sent.ts)) is None
    assert client.find_by_metadata(slack.alerts, event_type=NUDGE, key="k", oldest=float(sent.ts) - 1) == sent


def test_find_by_metadata_in_a_users_dm(slack: Slack, client: SlackClient) -> None:
    sent = client.post(slack.dana, text="a", metadata=metadata("dm-key"))
    assert client.find_by_metadata(slack.dana, event_type=NUDGE, key="dm-key") == sent


# -- retries: slack-sdk's handlers, once, with the sleep injected ----------------------------------------


def test_ratelimited_post_is_retried_after_retry_after_then_succeeds(slack: Slack,
                                                                     client: SlackClient) -> None:
    slack.sandbox.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=1)
    client.post(slack.alerts, text="hi")
    assert len(slack.sandbox.messages) == 1
    assert slack.calls_of("chat.postMessage") == 2 and client.calls == 1
    assert len(slack.sleeps) == 1 and 1 <= slack.sleeps[0] < 2


def test_rate_limit_outlasting_the_retries_is_unavailable(slack: Slack) -> None:
    client = slack.client(max_retries=2)
    slack.sandbox.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=0, times=5)
    with pytest.raises(SlackUnavailable) as caught:
        client.post(slack.alerts, text="hi")
    assert (caught.value.error, caught.value.status, caught.value.retry_after) == ("ratelimited", 429, 0)
    assert slack.calls_of("chat.postMessage") == 3  # the first try and two retries, not more
    assert slack.sandbox.messages == []


def test_a_long_retry_after_is_not_slept_through(slack: Slack, client: SlackClient) -> None:
    slack.sandbox.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=120)
    with pytest.raises(SlackUnavailable) as caught:
        client.post(slack.alerts, text="hi")
    assert caught.value.retry_after == 120 and slack.sleeps == []


def test_server_error_on_a_lookup_is_retried_then_succeeds(slack: Slack, client: SlackClient) -> None:
    slack.sandbox.fail_next("users.lookupByEmail", "internal_error", status=500)
    assert client.user_id_for_email("dana@example.com") == slack.dana
    assert slack.calls_of("users.lookupByEmail") == 2 and len(slack.sleeps) == 1


def test_lasting_server_error_is_unavailable(slack: Slack, client: SlackClient) -> None:
    slack.sandbox.fail_next("users.lookupByEmail", "internal_error", status=500, times=10)
    with pytest.raises(SlackUnavailable) as caught:
        client.user_id_for_email("dana@example.com")
    assert (caught.value.error, caught.value.status) == ("internal_error", 500)
    assert slack.calls_of("users.lookupByEmail") == 3


def test_server_error_on_a_post_is_not_repeated_as_it_may_have_posted(slack: Slack,
                                                                       client: SlackClient) -> None:
    slack.sandbox.fail_next("chat.postMessage", "internal_error", status=500)
    with pytest.raises(SlackUnavailable):
        client.post(slack.alerts, text="hi")
    assert slack.calls_of("chat.postMessage") == 1 and slack.sleeps == []


def test_post_whose_answer_was_lost_is_not_repeated_and_is_found_again(slack: Slack,
                                                                         client: SlackClient) -> None:
    slack.sandbox.fail_next("chat.postMessage", "connection_lost", status=LOST_ANSWER)
    with pytest.raises(SlackUnavailable) as caught:
        client.post(slack.alerts, text="hi", metadata=metadata("k-lost"))
    assert caught.value.error == "connection_error" and slack.calls_of("chat.postMessage") == 1
    (posted,) = slack.sandbox.messages
    found = client.find_by_metadata(slack.alerts, event_type=NUDGE, key="k-lost")
    assert found == SentMessage(channel=slack.alerts, ts=posted.ts)


def test_unreachable_slack_is_unavailable_after_connection_retries() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps: list[float] = []
    client = SlackClient("xoxb-x", base_url=f"http://127.0.0.1:{port}/api/", timeout=2, sleep=sleeps.append)
    with pytest.raises(SlackUnavailable, match=f"127.0.0.1:{port}") as caught:
        client.check()
    assert caught.value.error == "connection_error" and len(sleeps) == 2
    with pytest.raises(SlackUnavailable):
        client.post("C0HB0000001", text="hi")  # refused: never reached Slack, so safe to retry
    assert len(sleeps) == 4


# -- auth errors say what is wrong, never the token ------------------------------------------------------


def test_bad_token_is_an_auth_error_naming_slack_and_the_url(slack: Slack) -> None:
    client = slack.client(token="xoxb-secret-but-wrong")
    with pytest.raises(SlackAuthError) as caught:
        client.check()
    message = str(caught.value)
    assert caught.value.error == "invalid_auth"
    assert "Slack" in message and slack.sandbox.url in message and "SLACK_BOT_TOKEN" in message
    assert "xoxb-secret-but-wrong" not in message and "xoxb-secret-but-wrong" not in repr(client)


def test_missing_scope_is_an_auth_error_naming_the_scope() -> None:
    with SlackSandbox(scopes=("chat:write",)) as sandbox:
        client = SlackClient(sandbox.token, base_url=sandbox.url, sleep=lambda _: None)
        with pytest.raises(SlackAuthError, match=r"users:read\.email"):
            client.user_id_for_email("dana@example.com")


def test_library_exceptions_do_not_leak(slack: Slack, client: SlackClient) -> None:
    with pytest.raises(SlackRecipientError) as caught:
        client.post("#nowhere", text="hi")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# -- the client speaks only the documented API -----------------------------------------------------------


def spec_parameters(method: str) -> set[str]:
    spec = json.loads(SPEC_PATH.read_text())
    (operation,) = spec["paths"][f"/{method}"].values()
    return {p["name"] for p in operation["parameters"]}


def declared_parameters(method: str) -> set[str]:
    return spec_parameters(method) | PARAMETER_GAPS.get(method, set())


def test_parameter_gaps_are_still_missing_from_the_spec() -> None:
    for method, added in PARAMETER_GAPS.items():
        assert not added & spec_parameters(method), f"the spec now declares {added} for {method}"


def test_every_parameter_the_client_sends_is_declared_in_the_spec(slack: Slack) -> None:
    client = slack.client(page_size=1)
    client.check()
    client.user_id_for_email("dana@example.com")
    client.channel_id("cs-alerts")
    sent = client.post(client.open_dm(slack.dana), text="hi", blocks=BLOCKS, metadata=metadata("k"))
    client.find_by_metadata(sent.channel, event_type=NUDGE, key="k", oldest=1.5)
    methods = {call.method for call in slack.sandbox.calls}
    assert methods == {"auth.test", "users.lookupByEmail", "conversations.list", "conversations.open",
                       "chat.postMessage", "conversations.history"}
    for call in slack.sandbox.calls:
        undeclared = set(call.params) - declared_parameters(call.method)
        assert not undeclared, f"{call.method} sent undeclared {undeclared}"


# -- escaping --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "escaped"), [
    ("Acme & Sons", "Acme &amp; Sons"),
    ("<!here> Corp", "&lt;!here&gt; Corp"),
    ("a &lt; b", "a &amp;lt; b"),
    ("*bold* _it_ \"quoted\" 'single'", "*bold* _it_ \"quoted\" 'single'"),
    ("", ""),
])
def test_escape_text_escapes_only_what_slack_requires(raw: str, escaped: str) -> None:
    assert escape_text(raw) == escaped


def test_escaped_text_reaches_slack_as_written(slack: Slack, client: SlackClient) -> None:
    client.post(slack.alerts, text=escape_text("<!channel> & Co"))
    assert slack.sandbox.messages[0].text == "&lt;!channel&gt; &amp; Co"

