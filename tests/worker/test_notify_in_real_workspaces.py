"""Nudges in a Slack workspace as real ones are: private fallback channels, rate limits, messages too big,
and nudges that run out of attempts. Each goes through the real slack-sdk to the Slack sandbox, whose
behaviour for these cases is pinned to Slack's documentation in tests/connectors/test_slack_posting_limit.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.slack.client import SlackClient
from connectors.slack.sandbox import SlackSandbox
from worker.alerting.message import NudgeKey, NudgePayload
from worker.delivery.notify import EVENT_TYPE, MAX_ATTEMPTS, NotifyReport, send_nudges
from worker.service.http import HealthState
from worker.service.metrics import Metrics, read_store_facts
from worker.store import Store, iso, outbox

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MANIFEST_SCOPES = ("chat:write", "im:write", "im:history", "channels:read", "channels:history", "groups:history",
                   "users:read", "users:read.email")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "hb.db") as opened:
        yield opened


def _owe(store: Store, account: str, *, destination: str, email: str | None = None, text: str = "Acme turned red",
         episode: int = 1) -> str:
    key = NudgeKey("turned_red", account, episode, "fire", channel_copy=destination != "owner")
    payload = NudgePayload(dedup_key=key.dedup_key, rule="turned_red", kind="fire", account_id=account,
                           account_name=f"Account {account[-3:]}", text=text, url="https://example.my/x",
                           destination=destination, owner_name="Dana Scully", owner_email=email,
                           blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}])
    outbox.owe(store, [{"dedup_key": key.dedup_key, "kind": "slack", "account_id": account,
                        "payload": payload.to_json(), "status": "pending", "attempts": 0, "last_error": None,
                        "remote_ref": None, "created_at": iso(NOW), "sent_at": None, "not_before": None,
                        "batch_key": None}])
    return key.dedup_key


def _row(store: Store, key: str) -> dict[str, object]:
    return store.query("SELECT status, attempts, last_error, remote_ref FROM outbox WHERE dedup_key = ?", (key,))[0]


def _client(sandbox: SlackSandbox) -> SlackClient:
    return SlackClient(sandbox.token, base_url=sandbox.url, max_retries=0, post_interval=0.0)


ACME, GLOBEX = "001000000000001AAA", "001000000000002AAA"


def test_a_nudge_in_flight_to_a_private_channel_without_groups_history_fails_alone_and_is_never_reposted(
        store: Store) -> None:
    scopes = tuple(s for s in MANIFEST_SCOPES if s != "groups:history")
    with SlackSandbox(scopes=scopes) as sandbox:
        private = sandbox.add_channel("cs-private", private=True)
        sandbox.add_user("dana@example.com", "Dana Scully")
        stuck = _owe(store, ACME, destination=f"channel:{private}")
        other = _owe(store, GLOBEX, destination="owner", email="dana@example.com")
        with store.transaction() as conn:  # a worker killed after marking it, before or after the post
            outbox.take(conn, [store.scalar("SELECT id FROM outbox WHERE dedup_key = ?", (stuck,))],
                        conversation=private)

        report = send_nudges(store, _client(sandbox), NOW, fallback_channel=None)

        assert report.blocked is None, "one conversation's missing scope must not stop the stage"
        assert report.sent == 1 and _row(store, other)["status"] == "sent"
        assert _row(store, stuck)["status"] == "inflight"
        assert "groups:history" in str(_row(store, stuck)["last_error"])
        assert not [m for m in sandbox.messages if m.channel == private]


def test_with_the_manifest_s_scopes_a_private_channel_nudge_posted_before_a_crash_is_found_not_reposted(
        store: Store) -> None:
    with SlackSandbox(scopes=MANIFEST_SCOPES) as sandbox:
        private = sandbox.add_channel("cs-private", private=True)
        stuck = _owe(store, ACME, destination=f"channel:{private}")
        with store.transaction() as conn:
            outbox.take(conn, [store.scalar("SELECT id FROM outbox WHERE dedup_key = ?", (stuck,))],
                        conversation=private)
        _client(sandbox).post(private, text="posted before the crash",
                              metadata={"event_type": EVENT_TYPE, "event_payload": {"dedup_key": stuck}})

        report = send_nudges(store, _client(sandbox), NOW, fallback_channel=None)

        assert report.recovered == 1
        assert _row(store, stuck)["status"] == "sent"
        assert len([m for m in sandbox.messages if m.channel == private]) == 1


def test_a_post_slack_refused_for_its_rate_waits_as_pending_and_is_posted_once_next_cycle(store: Store) -> None:
    with SlackSandbox(scopes=MANIFEST_SCOPES) as sandbox:
        channel = sandbox.add_channel("cs-alerts")
        key = _owe(store, ACME, destination=f"channel:{channel}")
        sandbox.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=1)

        first = send_nudges(store, _client(sandbox), NOW, fallback_channel=None)
        after_429 = _row(store, key)
        sandbox.reset_calls()
        second = send_nudges(store, _client(sandbox), NOW, fallback_channel=None)

        assert (after_429["status"], after_429["attempts"]) == ("pending", 0)
        assert first.blocked is None and first.waiting == 1
        assert second.sent == 1 and len(sandbox.messages) == 1
        assert [c.method for c in sandbox.calls if c.method == "conversations.history"] == []


def test_a_message_slack_refuses_as_too_long_is_cut_to_fit_with_a_pointer_to_explain(store: Store) -> None:
    with SlackSandbox(scopes=MANIFEST_SCOPES) as sandbox:
        channel = sandbox.add_channel("cs-alerts")
        key = _owe(store, ACME, destination=f"channel:{channel}", text="Acme turned red. " + "x" * 50_000)

        report = send_nudges(store, _client(sandbox), NOW, fallback_channel=None)

        assert report.sent == 1 and report.cut_to_fit == 1
        assert _row(store, key)["status"] == "sent"
        posted = sandbox.messages[-1]
        assert posted.text.startswith("Acme turned red.")
        assert f"healthbeat explain {ACME}" in posted.text
        assert len(posted.text) <= 3000


def _last_attempt_fails(store: Store, *, created_at: datetime = NOW) -> tuple[str, NotifyReport]:
    """A nudge on its last attempt, to a channel Slack refuses (archived): the attempt that kills it."""
    with SlackSandbox(scopes=MANIFEST_SCOPES) as sandbox:
        channel = sandbox.add_channel("cs-alerts", archived=True)
        key = _owe(store, ACME, destination=f"channel:{channel}")
        with store.transaction() as conn:
            conn.execute("UPDATE outbox SET attempts = ?, created_at = ? WHERE dedup_key = ?",
                         (MAX_ATTEMPTS - 1, iso(created_at), key))
        return key, send_nudges(store, _client(sandbox), NOW, fallback_channel=None)


def test_a_nudge_out_of_attempts_is_dead_and_named_not_dropped_silently(store: Store) -> None:
    key, report = _last_attempt_fails(store)

    assert _row(store, key)["status"] == "dead"
    assert report.dead == ["Account AAA"]
    assert "is_archived" in str(_row(store, key)["last_error"])


def test_a_dead_nudge_counts_in_the_metrics(store: Store) -> None:
    _last_attempt_fails(store)

    metrics = Metrics()
    metrics.set_store_facts(read_store_facts(store))

    assert 'healthbeat_outbox_dead{kind="slack"} 1.0' in metrics.render().decode()


def test_a_dead_nudge_turns_healthz_degraded_naming_its_account(store: Store) -> None:
    _last_attempt_fails(store, created_at=datetime.now(UTC))  # /healthz names the nudges of the last week
    state = HealthState(timedelta(minutes=15))

    state.record_store(replace(read_store_facts(store), last_success=datetime.now(UTC)))  # a running worker
    health = state.check()

    assert health.status == "degraded"
    assert any("Account AAA (turned_red)" in problem for problem in health.problems)
