"""Socket Mode (SLACK_APP_TOKEN): the feedback buttons, the modal and the Home tab reach a worker that has no public
port, over the WebSocket it opens to the Slack sandbox (tests/connectors/test_slack_socket_sandbox.py holds the
sandbox to Slack's documentation).

One deployment serves the whole module (a backfill and a bad week, so real nudges carry the buttons; the
handlers the scheduler builds; one Socket Mode session): each test clicks a nudge of its own. Tests that need a
session of their own (stopping it, its logs, a refused token) open one beside it; envelopes go to the newest.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from pydantic import SecretStr

from connectors.sandboxes.world import World, advance, build_world, stir_trouble
from tests.worker.test_slack_actions import Nudged
from worker.clock import ShiftedClock
from worker.config import Settings, load_settings
from worker.cycle import Clients, Cycle, build_clients
from worker.demo.harness import Sandboxes, sandbox_environment, start_sandboxes
from worker.errors import ConfigError
from worker.rulebook.in_force import RuleBook
from worker.scoring.sentiment import VaderModel
from worker.service.feedback import list_feedback
from worker.service.metrics import Metrics
from worker.service.slack_actions import SlackActions, build_slack_actions
from worker.service.slack_home import SlackEvents, build_slack_events
from worker.service.socket_mode import SocketMode, build_socket_mode
from worker.store import Store

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
SLACK_DIR = Path(__file__).resolve().parents[2] / "slack"


@dataclass
class Deployment:
    sandboxes: Sandboxes
    world: World
    settings: Settings
    store: Store
    nudges: list[Nudged]
    actions: SlackActions
    events: SlackEvents
    socket: SocketMode
    connections: list[str] = field(default_factory=list)
    envelopes: list[tuple[str, str]] = field(default_factory=list)

    def session(self, settings: Settings | None = None) -> SocketMode:
        """Another Socket Mode session on the same handlers, as `build_socket_mode` makes it (not started)."""
        built = build_socket_mode(settings or self.settings, actions=self.actions, events=self.events)
        assert built is not None
        return built


def _nudges(world: World, sandboxes: Sandboxes, cycle: Cycle, store: Store, clock: ShiftedClock) -> list[Nudged]:
    """Backfill, then three weeks in which four accounts of owners in Slack turn red: a DM nudge each."""
    cycle.run()
    not_red = {r["account_id"] for r in store.query("SELECT account_id FROM scores WHERE band != 'red'")}
    troubled: list[str] = []
    for account in world.accounts:
        owners = {a.owner_id for a in world.accounts if a.id in troubled}
        if account.owner_id in world.slack_user_ids and account.id in not_red and account.owner_id not in owners:
            troubled.append(account.id)
    troubled = troubled[:4]
    start = clock()
    clock.offset += timedelta(days=21)
    advance(world, start, clock(), quiet=troubled)
    stir_trouble(world, troubled, clock())
    cycle.run(("sync", "score", "evaluate", "notify"))
    nudged = []
    for account in (a for a in world.accounts if a.id in troubled):
        rows = store.query("SELECT dedup_key, remote_ref FROM outbox WHERE account_id = ? AND status = 'sent' "
                           "AND dedup_key LIKE 'nudge:turned_red:%:fire'", (account.id,))
        for row in rows:
            channel, ts = row["remote_ref"].split(":")
            message = next(m for m in sandboxes.slack.messages if (m.channel, m.ts) == (channel, ts))
            nudged.append(Nudged(account.id, row["dedup_key"], message, world.slack_user_ids[account.owner_id]))
    assert len(nudged) >= 4, "the module's tests need four nudges of their own"
    return nudged


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, vader: VaderModel) -> Iterator[Deployment]:
    clock = ShiftedClock()
    sandboxes = start_sandboxes(clock)
    folder = tmp_path_factory.mktemp("socket-mode")
    usage = folder / "usage"
    usage.mkdir()
    world = build_world(sandboxes.salesforce, sandboxes.zendesk, sandboxes.slack, usage, accounts=18, seed=11,
                        now=clock())
    settings = load_settings(**sandbox_environment(sandboxes, folder / "healthbeat.db", usage, RULES_DIR),
                             SLACK_APP_TOKEN=sandboxes.slack.app_token)
    store = Store(settings.db)
    clients: Clients = build_clients(settings)
    cycle = Cycle(store, settings, RuleBook(settings.rules_dir), clients, clock=clock, sentiment=vader)
    nudges = _nudges(world, sandboxes, cycle, store, clock)
    actions = build_slack_actions(settings, clock=clock)
    events = build_slack_events(settings, metrics=Metrics(), clock=clock)
    connections: list[str] = []
    envelopes: list[tuple[str, str]] = []
    socket = build_socket_mode(settings, actions=actions, events=events,
                               on_envelope=lambda kind, outcome: envelopes.append((kind, outcome)),
                               on_connection=connections.append)
    assert socket is not None
    socket.start()
    running = Deployment(sandboxes, world, settings, store, nudges, actions, events, socket, connections, envelopes)
    yield running
    socket.close()
    events.close()
    actions.close()
    clients.close()
    store.close()
    sandboxes.stop()


def _eventually(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _votes(store: Store, nudged: Nudged) -> list[tuple[str, str]]:
    return [(r["verdict"], r["user_id"]) for r in list_feedback(store, account_id=nudged.account_id)]


# -- the buttons and the modal ---------------------------------------------------------------------------

def test_a_click_over_the_socket_counts_once_even_when_slack_sends_it_again(deployment: Deployment) -> None:
    nudged, slack = deployment.nudges[0], deployment.sandboxes.slack

    delivery = slack.click_over_socket(nudged.message, "feedback_useful", user=nudged.clicker, value=nudged.key,
                                       lose_acks=1, ack_timeout=0.5)  # the first acknowledgement never reaches Slack

    assert delivery.acked and delivery.attempts == 2
    assert _votes(deployment.store, nudged) == [("useful", nudged.clicker)]
    deployment.actions.flush()
    shown = next(m for m in slack.messages if (m.channel, m.ts) == (nudged.message.channel, nudged.message.ts))
    assert str(shown.blocks).count(f"<@{nudged.clicker}>") == 1  # the receipt names the clicker once


def test_the_click_is_acknowledged_well_within_slacks_three_seconds(deployment: Deployment) -> None:
    nudged = deployment.nudges[3]

    delivery = deployment.sandboxes.slack.click_over_socket(nudged.message, "feedback_not_useful",
                                                            user=nudged.clicker, value=nudged.key)

    assert delivery.acked and delivery.attempts == 1 and delivery.seconds < 1.5


def test_score_looks_wrong_over_the_socket_opens_the_modal_and_its_submission_pins_the_score(
        deployment: Deployment) -> None:
    nudged, slack = deployment.nudges[1], deployment.sandboxes.slack
    slack.click_over_socket(nudged.message, "feedback_score_wrong", user=nudged.clicker, value=nudged.key)
    view = slack.views[-1]

    delivery = slack.submit_view_over_socket(view, {"reason": "They renewed last week", "value": "70"})

    assert view.user == nudged.clicker
    assert delivery.acked and delivery.response_payload is None  # an empty answer closes the modal
    (vote,) = list_feedback(deployment.store, account_id=nudged.account_id)
    assert (vote["verdict"], vote["reason"], vote["proposed_value"]) == ("score_wrong", "They renewed last week", 70)


def test_a_modal_with_a_score_out_of_range_gets_its_errors_in_the_acknowledgement(deployment: Deployment) -> None:
    nudged, slack = deployment.nudges[2], deployment.sandboxes.slack
    slack.click_over_socket(nudged.message, "feedback_score_wrong", user=nudged.clicker, value=nudged.key)

    delivery = slack.submit_view_over_socket(slack.views[-1], {"reason": "Wrong", "value": "150"})

    assert delivery.acked
    assert delivery.response_payload == {"response_action": "errors",
                                         "errors": {"value": "A score from 0 to 100, or leave it empty."}}
    assert list_feedback(deployment.store, account_id=nudged.account_id) == []


# -- the Home tab ------------------------------------------------------------------------------------------

def test_opening_the_home_tab_over_the_socket_publishes_it(deployment: Deployment) -> None:
    user = deployment.nudges[0].clicker
    slack = deployment.sandboxes.slack
    slack.home_views.pop(user, None)

    delivery = slack.app_home_opened_over_socket(user)

    assert delivery.acked and delivery.attempts == 1
    assert _eventually(lambda: user in slack.home_views)  # acknowledged first, published after
    assert slack.home_views[user]["type"] == "home"
    assert ("events_api", "acked") in deployment.envelopes


# -- the connection ----------------------------------------------------------------------------------------

def test_after_slack_asks_for_a_refresh_the_worker_reconnects_and_envelopes_keep_arriving(
        deployment: Deployment) -> None:
    server, slack = deployment.sandboxes.slack.socket_mode, deployment.sandboxes.slack
    opened = server.connections_opened
    user = deployment.nudges[1].clicker
    slack.home_views.pop(user, None)

    assert server.disconnect("refresh_requested", grace=0.2) >= 1
    assert server.wait_for_opened(opened + 1, timeout=10)
    delivery = slack.app_home_opened_over_socket(user)

    assert delivery.acked
    assert _eventually(lambda: user in slack.home_views)
    assert deployment.connections.count("opened") >= 2  # a new URL for the new connection, as Slack requires


def test_a_bot_token_in_slack_app_token_stops_the_start_naming_the_setting(deployment: Deployment) -> None:
    wrong = deployment.settings.model_copy(update={"slack_app_token": SecretStr(deployment.sandboxes.slack.token)})

    with pytest.raises(ConfigError, match=r"not_allowed_token_type.*SLACK_APP_TOKEN must be an app-level token"):
        deployment.session(wrong).start()


def test_stopping_closes_the_socket_for_good(deployment: Deployment) -> None:
    server = deployment.sandboxes.slack.socket_mode
    before = server.open_connections()
    session = deployment.session()
    session.start()
    assert _eventually(lambda: server.open_connections() == before + 1)
    opened = server.connections_opened

    session.close()

    assert _eventually(lambda: server.open_connections() == before)
    time.sleep(0.5)
    assert server.connections_opened == opened  # and it does not come back


def test_no_token_or_ticket_appears_in_the_logs(deployment: Deployment, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    slack = deployment.sandboxes.slack
    session = deployment.session()
    session.start()
    nudged = deployment.nudges[3]
    slack.click_over_socket(nudged.message, "feedback_useful", user=nudged.clicker, value=nudged.key)
    opened = slack.socket_mode.connections_opened
    slack.socket_mode.disconnect("warning", grace=0.1)
    assert slack.socket_mode.wait_for_opened(opened + 2, timeout=10)
    session.close()

    # The worker's records and its libraries' (slack-sdk's), not the sandbox's own WebSocket server's.
    text = "\n".join(record.getMessage() for record in caplog.records if not record.name.startswith("websockets"))
    assert "socket mode: connected" in text  # the logs were captured
    for secret in (slack.app_token, slack.token, *slack.socket_mode.issued_tickets()):
        assert secret not in text


# -- the app manifest ----------------------------------------------------------------------------------------

def test_the_socket_mode_manifest_is_the_same_app_reached_over_the_websocket() -> None:
    http = yaml.safe_load((SLACK_DIR / "manifest.yaml").read_text(encoding="utf-8"))
    socket = yaml.safe_load((SLACK_DIR / "manifest.socket-mode.yaml").read_text(encoding="utf-8"))

    assert socket["settings"]["socket_mode_enabled"] is True and http["settings"]["socket_mode_enabled"] is False
    assert "request_url" not in socket["settings"]["event_subscriptions"]
    assert "request_url" not in socket["settings"]["interactivity"]
    for manifest in (http, socket):  # what differs, set aside: the rest must be the same app
        manifest["settings"].pop("socket_mode_enabled")
        manifest["settings"]["event_subscriptions"].pop("request_url", None)
        manifest["settings"]["interactivity"].pop("request_url", None)
    assert socket == http


# -- `healthbeat run` ------------------------------------------------------------------------------------

def test_run_with_an_app_token_takes_envelopes_without_serving_the_slack_routes(
        deployment: Deployment, tmp_path: Path) -> None:
    """The real process: it connects at start, a Home tab opened over the socket is published, `/slack/*` is not
    served without a signing secret, and SIGTERM closes the socket."""
    slack = deployment.sandboxes.slack
    before, open_before = slack.socket_mode.connections_opened, slack.socket_mode.open_connections()
    port = _free_port()
    env = {**os.environ, **{k: str(v) for k, v in sandbox_environment(
        deployment.sandboxes, tmp_path / "hb.db", Path(str(deployment.settings.usage_dir)), RULES_DIR).items()},
        "SLACK_APP_TOKEN": slack.app_token, "HEALTHBEAT_HTTP_PORT": str(port), "HEALTHBEAT_INTERVAL": "1h"}
    worker = subprocess.Popen([sys.executable, "-c", "from worker.cli import main; main()", "run", "--dry-run"],
                              env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert slack.socket_mode.wait_for_opened(before + 1, timeout=60), "the worker never connected"
        # Its WebSocket is up (a URL asked for is not yet a connection): Slack delivers to the newest one.
        assert _eventually(lambda: slack.socket_mode.open_connections() == open_before + 1, 30)
        assert _eventually(lambda: _status(f"http://127.0.0.1:{port}/healthz") != 0, 30)
        user = deployment.nudges[2].clicker
        slack.home_views.pop(user, None)
        delivery = slack.app_home_opened_over_socket(user)
        assert delivery.acked
        assert _eventually(lambda: user in slack.home_views, 30)
        assert _status(f"http://127.0.0.1:{port}/slack/actions") == 404
        # Counted once the handler returns: the Home tab's publish, on its own thread, can beat it.
        assert _eventually(lambda: 'healthbeat_socket_mode_envelopes_total{outcome="acked",type="events_api"} 1.0'
                           in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text, 10)
        page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'healthbeat_socket_mode_connections_total{result="opened"} 1.0' in page
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr
    assert _eventually(lambda: slack.socket_mode.open_connections() == open_before)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _status(url: str) -> int:
    import urllib.error
    import urllib.request

    post = url.endswith("/slack/actions")
    request = urllib.request.Request(url, data=b"{}", method="POST") if post else url  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - our own loopback server
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
