"""The Slack sandbox as Slack documents it for private channels and posting rates, and the client's pacing.

- Private channels: history needs ``groups:history`` ("View messages and other content in private channels
  that your Slack app has been added to", docs.slack.dev/reference/scopes/groups.history), public ones
  ``channels:history`` (docs.slack.dev/reference/scopes/channels.history); a channel id does not say which
  (both get ``C...`` ids today), and a private channel the bot is not in does not exist for it.
- Posting: "chat.postMessage generally allows posting one message per second per channel ... Short bursts >1
  allowed" (docs.slack.dev/apis/web-api/rate-limits); beyond it, HTTP 429 with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from connectors.slack.client import SlackClient, SlackScopeError, SlackUnavailable
from connectors.slack.sandbox import SlackSandbox

WITHOUT_GROUPS = ("chat:write", "channels:history", "channels:read", "im:history", "im:write")


class FakeTime:
    """One clock for the client's pacing and the sandbox's posting limit; sleeping moves it on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def time_() -> FakeTime:
    return FakeTime()


@pytest.fixture
def sandbox(time_: FakeTime) -> Iterator[SlackSandbox]:
    with SlackSandbox(rate_clock=time_) as running:
        yield running


def _call(sandbox: SlackSandbox, method: str, token: str | None = None, **params: str) -> httpx.Response:
    return httpx.post(f"{sandbox.url}{method}", data=params,
                      headers={"Authorization": f"Bearer {token or sandbox.token}"})


def test_a_private_channel_s_history_needs_groups_history_whatever_its_id_says() -> None:
    with SlackSandbox(scopes=WITHOUT_GROUPS) as sandbox:
        private = sandbox.add_channel("cs-private", private=True)
        public = sandbox.add_channel("cs-alerts")

        refused = _call(sandbox, "conversations.history", channel=private).json()
        allowed = _call(sandbox, "conversations.history", channel=public).json()

    assert private.startswith("C")
    assert (refused["ok"], refused["error"], refused["needed"]) == (False, "missing_scope", "groups:history")
    assert allowed["ok"] is True


def test_a_private_channel_the_bot_is_not_in_does_not_exist_for_it(sandbox: SlackSandbox) -> None:
    secret = sandbox.add_channel("board", private=True, bot_is_member=False)

    posted = _call(sandbox, "chat.postMessage", channel=secret, text="hi").json()
    read = _call(sandbox, "conversations.history", channel=secret).json()

    assert (posted["error"], read["error"]) == ("channel_not_found", "channel_not_found")


def test_private_channels_are_listed_only_when_asked_for_and_only_those_the_bot_is_in() -> None:
    with SlackSandbox(scopes=("channels:read", "groups:read")) as sandbox:
        member = sandbox.add_channel("cs-private", private=True)
        sandbox.add_channel("board", private=True, bot_is_member=False)
        public = sandbox.add_channel("cs-alerts")

        default = _call(sandbox, "conversations.list").json()["channels"]
        private = _call(sandbox, "conversations.list", types="private_channel").json()["channels"]

    assert [c["id"] for c in default] == [public]
    assert [(c["id"], c["is_private"]) for c in private] == [(member, True)]


def test_a_channel_takes_a_short_burst_then_answers_429_with_retry_after(sandbox: SlackSandbox,
                                                                        time_: FakeTime) -> None:
    channel = sandbox.add_channel("cs-alerts")

    answers = [_call(sandbox, "chat.postMessage", channel=channel, text=str(i))
               for i in range(sandbox.post_burst + 1)]
    time_.now += 1.0
    later = _call(sandbox, "chat.postMessage", channel=channel, text="later")

    assert [a.status_code for a in answers] == [200] * sandbox.post_burst + [429]
    assert answers[-1].headers["Retry-After"] == "1"
    assert answers[-1].json()["error"] == "ratelimited"
    assert later.json()["ok"] is True


def test_the_posting_limit_is_per_channel(sandbox: SlackSandbox) -> None:
    channels = [sandbox.add_channel(f"c{i}") for i in range(sandbox.post_burst + 2)]

    answers = [_call(sandbox, "chat.postMessage", channel=c, text="hi").json()["ok"] for c in channels]

    assert all(answers)


def test_the_client_paces_posts_to_one_channel_a_second_apart_and_never_meets_the_limit(
        sandbox: SlackSandbox, time_: FakeTime) -> None:
    channel = sandbox.add_channel("cs-alerts")
    client = SlackClient(sandbox.token, base_url=sandbox.url, pace=time_.sleep, clock=time_)

    for i in range(10):
        client.post(channel, text=str(i))

    assert len(sandbox.messages) == 10
    assert all(call.status == 200 for call in sandbox.calls)
    assert time_.slept == [1.0] * 9


def test_the_client_does_not_pace_posts_to_different_channels(sandbox: SlackSandbox, time_: FakeTime) -> None:
    client = SlackClient(sandbox.token, base_url=sandbox.url, pace=time_.sleep, clock=time_)

    for i in range(5):
        client.post(sandbox.add_channel(f"c{i}"), text="hi")

    assert time_.slept == []


def test_a_missing_scope_is_a_scope_error_naming_the_scope() -> None:
    with SlackSandbox(scopes=WITHOUT_GROUPS) as sandbox:
        private = sandbox.add_channel("cs-private", private=True)
        client = SlackClient(sandbox.token, base_url=sandbox.url)

        with pytest.raises(SlackScopeError) as refused:
            client.find_by_metadata(private, event_type="healthbeat_nudge", key="k")

    assert refused.value.needed == "groups:history"
    assert "groups:history" in str(refused.value)


def test_a_429_is_told_apart_from_an_outage_as_not_done(sandbox: SlackSandbox) -> None:
    channel = sandbox.add_channel("cs-alerts")
    client = SlackClient(sandbox.token, base_url=sandbox.url, max_retries=0, post_interval=0.0)
    sandbox.fail_next("chat.postMessage", "internal_error", status=500)
    with pytest.raises(SlackUnavailable) as outage:
        client.post(channel, text="a")
    sandbox.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=1)
    with pytest.raises(SlackUnavailable) as limited:
        client.post(channel, text="b")

    assert (outage.value.rate_limited, limited.value.rate_limited) == (False, True)
