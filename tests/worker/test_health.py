"""`/healthz` and `/metrics` over real HTTP, fed by real cycles against the sandboxes.

Time is the shared shifted clock: "three intervals pass" is one line, never a sleep.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.sandboxes.world import World
from worker.clock import ShiftedClock
from worker.cycle import Clients, Cycle, CycleReport
from worker.errors import HealthServerError
from worker.rulebook.in_force import RuleBook
from worker.service.http import HealthServer, HealthState, Request, Response
from worker.service.metrics import Metrics, observe_cycle, read_store_facts
from worker.store import Store, iso

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
INTERVAL = timedelta(minutes=15)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def state(clock: ShiftedClock) -> HealthState:
    return HealthState(INTERVAL, clock=clock)


@pytest.fixture
def server(state: HealthState, metrics: Metrics) -> Iterator[HealthServer]:
    with HealthServer(state, metrics, port=0, host="127.0.0.1") as running:
        yield running


def _healthz(server: HealthServer) -> httpx.Response:
    return httpx.get(f"{server.url}/healthz", timeout=5)


def _samples(server: HealthServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _run(cycle: Cycle, store: Store, clients: Clients, metrics: Metrics, state: HealthState) -> CycleReport:
    """What the scheduler does after each cycle."""
    report = cycle.run()
    facts = observe_cycle(metrics, report, store, clients=clients, rulebook=cycle.rulebook)
    state.record_cycle(report, facts, cycle.rulebook)
    return report


def _failed_report(clock: ShiftedClock, error: str) -> CycleReport:
    now = clock()
    return CycleReport(started_at=now, finished_at=now, ok=False, error=error, seconds=0.5)


# -- /healthz -------------------------------------------------------------------------------------------------

def test_healthz_is_ok_after_a_successful_cycle(world: World, cycle: Cycle, store: Store, clients: Clients,
                                                metrics: Metrics, state: HealthState,
                                                server: HealthServer) -> None:
    report = _run(cycle, store, clients, metrics, state)

    response = _healthz(server)

    assert report.ok, report.summary()
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["problems"] == []
    assert body["last_success"]["at"] == iso(report.finished_at or report.started_at)
    assert 0 <= body["last_success"]["age_seconds"] <= 5
    assert body["last_cycle"]["outcome"] == "ok"
    assert body["rules"] == {"checked": True, "ok": True, "good_rules_loaded": True, "problems": []}
    assert body["outbox"] == {"salesforce": 0, "slack": 0}
    assert body["schema_version"] == store.schema_version


def test_healthz_stays_200_while_the_last_success_is_within_three_intervals(
        world: World, cycle: Cycle, store: Store, clients: Clients, metrics: Metrics, state: HealthState,
        server: HealthServer, clock: ShiftedClock) -> None:
    _run(cycle, store, clients, metrics, state)

    clock.offset += 3 * INTERVAL - timedelta(seconds=5)

    assert _healthz(server).status_code == 200


def test_healthz_is_503_once_the_last_success_is_older_than_three_intervals(
        world: World, cycle: Cycle, store: Store, clients: Clients, metrics: Metrics, state: HealthState,
        server: HealthServer, clock: ShiftedClock) -> None:
    _run(cycle, store, clients, metrics, state)

    clock.offset += 3 * INTERVAL + timedelta(seconds=5)
    response = _healthz(server)

    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert "more than 3 × the interval (2700 s)" in response.json()["problems"][0]


def test_healthz_is_starting_before_the_first_cycle_and_503_after_one_interval_without_success(
        state: HealthState, server: HealthServer, clock: ShiftedClock) -> None:
    starting = _healthz(server)
    clock.offset += INTERVAL + timedelta(seconds=1)
    overdue = _healthz(server)

    assert (starting.status_code, starting.json()["status"]) == (200, "starting")
    assert (overdue.status_code, overdue.json()["status"]) == (503, "unhealthy")
    assert "no successful cycle since the worker started" in overdue.json()["problems"][0]


def test_a_failed_cycle_after_a_recent_success_is_degraded_but_200(
        world: World, cycle: Cycle, store: Store, clients: Clients, metrics: Metrics, state: HealthState,
        server: HealthServer, clock: ShiftedClock) -> None:
    _run(cycle, store, clients, metrics, state)
    failed = _failed_report(clock, "Salesforce: daily API request limit reached")

    state.record_cycle(failed, read_store_facts(store))
    response = _healthz(server)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["last_cycle"]["outcome"] == "failed"
    assert body["last_cycle"]["problems"] == ["Salesforce: daily API request limit reached"]


def test_a_crashed_cycle_is_shown_and_counted_as_crashed(state: HealthState, server: HealthServer,
                                                              metrics: Metrics) -> None:
    state.record_crash("KeyError: 'score'")
    metrics.count_crash()

    body = _healthz(server).json()

    assert body["last_cycle"]["outcome"] == "crashed"
    assert "the last cycle crashed: KeyError: 'score'" in body["problems"]
    assert _samples(server)[("healthbeat_cycles_total", (("outcome", "crashed"),))] == 1


def test_broken_rules_with_good_rules_kept_are_degraded_but_200(
        tmp_path: Path, state: HealthState, server: HealthServer) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    rulebook = RuleBook(rules)
    rulebook.reload()
    (rules / "scorecard.yaml").write_text("bands: [\n")
    rulebook.reload()

    state.record_rules(rulebook)
    response = _healthz(server)

    assert response.status_code == 200
    assert response.json()["rules"]["ok"] is False
    assert response.json()["rules"]["good_rules_loaded"] is True
    assert any("scorecard.yaml" in p for p in response.json()["rules"]["problems"])


def test_broken_rules_with_no_good_rules_ever_loaded_are_503(tmp_path: Path, state: HealthState,
                                                             server: HealthServer) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    (rules / "alerts.yaml").write_text("rules: 7\n")
    rulebook = RuleBook(rules)
    rulebook.reload()

    state.record_rules(rulebook)
    response = _healthz(server)

    assert response.status_code == 503
    assert "no good rules are loaded" in " ".join(response.json()["problems"])


def test_a_restarted_worker_knows_the_last_success_from_the_store(
        world: World, cycle: Cycle, store: Store, clients: Clients, metrics: Metrics, clock: ShiftedClock) -> None:
    report = _run(cycle, store, clients, metrics, HealthState(INTERVAL, clock=clock))
    restarted = HealthState(INTERVAL, clock=clock)

    restarted.record_store(read_store_facts(store))
    health = restarted.check()

    assert health.status == "ok"
    assert health.body["last_success"]["at"] == iso(report.finished_at or report.started_at)
    assert health.body["last_cycle"]["outcome"] == "ok"


def test_outbox_depth_counts_only_rows_still_owed_per_kind(store: Store, state: HealthState,
                                                           server: HealthServer, clock: ShiftedClock) -> None:
    rows = [("slack", "pending"), ("slack", "failed"), ("slack", "sent"), ("salesforce", "inflight"),
            ("salesforce", "superseded"), ("salesforce", "dead")]
    store.conn.executemany("INSERT INTO outbox (dedup_key, kind, payload, status, created_at) "
                           "VALUES (?, ?, '{}', ?, ?)",
                           [(f"k{i}", kind, status, iso(clock())) for i, (kind, status) in enumerate(rows)])

    state.record_store(read_store_facts(store))
    body = _healthz(server).json()

    assert body["outbox"] == {"salesforce": 1, "slack": 2}
    assert body["outbox_dead"] == {"salesforce": 1, "slack": 0}


# -- /metrics -------------------------------------------------------------------------------------------------

def test_metrics_are_served_in_the_prometheus_text_format(server: HealthServer) -> None:
    response = httpx.get(f"{server.url}/metrics", timeout=5)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE healthbeat_cycle_duration_seconds histogram" in response.text


def test_a_cycle_is_counted_with_its_records_write_backs_and_api_calls(
        world: World, cycle: Cycle, store: Store, clients: Clients, metrics: Metrics, state: HealthState,
        server: HealthServer) -> None:
    report = _run(cycle, store, clients, metrics, state)
    assert report.sync is not None and report.writeback is not None

    samples = _samples(server)

    assert samples[("healthbeat_cycles_total", (("outcome", "ok"),))] == 1
    assert samples[("healthbeat_cycle_duration_seconds_count", ())] == 1
    synced = {labels[0][1]: value for (name, labels), value in samples.items()
              if name == "healthbeat_records_synced_total"}
    assert synced == {stream: count for stream, count in report.sync.records.items() if count}
    spent = {(dict(labels)["stream"], dict(labels)["spent_on"]): value for (name, labels), value in samples.items()
             if name == "healthbeat_sync_seconds_total"}
    task = report.sync.streams["salesforce.Task"]
    assert spent[("salesforce.Task", "storing")] == pytest.approx(task.storing) and task.storing > 0
    assert spent[("salesforce.Task", "storing")] + spent[("salesforce.Task", "source")] == pytest.approx(task.seconds)
    assert samples[("healthbeat_writebacks_total", (("result", "sent"),))] == report.writeback.sent > 0
    assert samples[("healthbeat_api_calls_total", (("system", "salesforce"),))] == clients.salesforce.calls
    assert samples[("healthbeat_rules_ok", ())] == 1
    assert samples[("healthbeat_last_success_timestamp_seconds", ())] == pytest.approx(
        (report.finished_at or report.started_at).timestamp())


def test_api_calls_are_counted_once_across_cycles(world: World, cycle: Cycle, store: Store, clients: Clients,
                                                  metrics: Metrics, state: HealthState,
                                                  server: HealthServer) -> None:
    _run(cycle, store, clients, metrics, state)
    _run(cycle, store, clients, metrics, state)

    samples = _samples(server)

    assert samples[("healthbeat_cycles_total", (("outcome", "ok"),))] == 2
    for system, client in (("salesforce", clients.salesforce), ("zendesk", clients.zendesk),
                           ("slack", clients.slack)):
        assert client is not None
        assert samples[("healthbeat_api_calls_total", (("system", system),))] == client.calls


def test_the_salesforce_limit_share_comes_from_the_last_response(
        world: World, cycle: Cycle, store: Store, clients: Clients, metrics: Metrics, state: HealthState,
        server: HealthServer) -> None:
    _run(cycle, store, clients, metrics, state)
    usage = clients.salesforce.api_usage
    assert usage is not None

    share = _samples(server)[("healthbeat_salesforce_api_usage_ratio", ())]

    assert share == pytest.approx(usage.used / usage.limit)
    assert 0 < share < 1


def test_a_failed_cycle_is_counted_as_failed(store: Store, metrics: Metrics, server: HealthServer,
                                             clock: ShiftedClock) -> None:
    observe_cycle(metrics, _failed_report(clock, "Salesforce: refused"), store)

    samples = _samples(server)

    assert samples[("healthbeat_cycles_total", (("outcome", "failed"),))] == 1
    assert samples[("healthbeat_cycles_total", (("outcome", "ok"),))] == 0


def test_two_workers_in_one_process_never_share_a_counter(store: Store, clock: ShiftedClock) -> None:
    first, second = Metrics(), Metrics()

    observe_cycle(first, _failed_report(clock, "x"), store)

    assert b'healthbeat_cycles_total{outcome="failed"} 1.0' in first.render()
    assert b'healthbeat_cycles_total{outcome="failed"} 0.0' in second.render()


# -- routing and the server's life ----------------------------------------------------------------------------

def test_an_unknown_path_is_404(server: HealthServer) -> None:
    response = httpx.get(f"{server.url}/nope", timeout=5)

    assert response.status_code == 404


def test_a_known_path_with_the_wrong_method_is_405_with_allow(server: HealthServer) -> None:
    response = httpx.post(f"{server.url}/healthz", content=b"{}", timeout=5)

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


def test_a_route_added_later_receives_the_raw_body_and_headers(server: HealthServer) -> None:
    seen: list[Request] = []

    def actions(request: Request) -> Response:
        seen.append(request)
        return Response.json(200, {"ok": True})

    server.routes.add("POST", "/slack/actions", actions)
    response = httpx.post(f"{server.url}/slack/actions", content=b"payload=%7B%7D",
                          headers={"X-Slack-Signature": "v0=abc"}, timeout=5)

    assert response.status_code == 200
    assert seen[0].body == b"payload=%7B%7D"
    assert seen[0].headers["x-slack-signature"] == "v0=abc"


def test_a_taken_port_is_named_with_the_setting_to_change(state: HealthState, metrics: Metrics) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(HealthServerError, match=f"127.0.0.1:{port}.*HEALTHBEAT_HTTP_PORT"):
            HealthServer(state, metrics, port=port, host="127.0.0.1").start()


def test_stop_frees_the_port(state: HealthState, metrics: Metrics) -> None:
    server = HealthServer(state, metrics, port=0, host="127.0.0.1").start()
    port = server.port

    server.stop()

    with socket.socket() as again:
        again.bind(("127.0.0.1", port))

