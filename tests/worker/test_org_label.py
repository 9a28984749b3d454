"""HEALTHBEAT_ORG on every log line and every /metrics series, so that one log pipeline and one Prometheus can
serve a worker per org; and nothing of it when the setting is unset, so that existing dashboards and queries
see exactly what they saw before."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from connectors.sandboxes.world import build_world
from tests.worker.test_cli import RULES_DIR
from worker.clock import ShiftedClock
from worker.demo.harness import sandbox_environment, start_sandboxes
from worker.logs import JsonFormatter, RedactingFilter, TerminalFormatter, configure_logging, set_org
from worker.service.metrics import ORG_LABEL, Metrics

ORG = "acme-eu"


def _samples(text: str) -> list[tuple[str, dict[str, str]]]:
    """Every sample of a /metrics page as prometheus-client's own parser reads it (so the page is valid)."""
    return [(sample.name, sample.labels) for family in text_string_to_metric_families(text)
            for sample in family.samples]


def _record(message: str = "cycle done") -> logging.LogRecord:
    return logging.LogRecord("worker.cycle", logging.INFO, __file__, 1, message, None, None)


# -- metrics ---------------------------------------------------------------------------------------------------

def test_every_series_carries_the_org_when_it_is_set() -> None:
    metrics = Metrics(org=ORG)
    metrics.cycles.labels("ok").inc()

    samples = _samples(metrics.render().decode())

    assert samples and all(labels.get(ORG_LABEL) == ORG for _, labels in samples)
    assert ("healthbeat_cycles_total", {ORG_LABEL: ORG, "outcome": "ok"}) in samples


def test_without_an_org_the_page_is_exactly_what_it_was() -> None:
    metrics = Metrics()
    metrics.cycles.labels("ok").inc()

    page = metrics.render().decode()

    assert all(ORG_LABEL not in labels for _, labels in _samples(page))
    assert 'healthbeat_cycles_total{outcome="ok"} 1.0' in page


def test_a_series_added_later_carries_the_org_with_no_change_of_its_own() -> None:
    metrics = Metrics(org=ORG)
    later = Counter("healthbeat_socket_reconnects", "A counter another module adds.", ["reason"],
                    registry=metrics.registry)
    later.labels("closed").inc(2)

    samples = _samples(metrics.render().decode())

    assert ("healthbeat_socket_reconnects_total", {ORG_LABEL: ORG, "reason": "closed"}) in samples


def test_the_values_read_from_the_registry_keep_their_own_labels() -> None:
    """Code and tests read a sample by the labels they count it with; the org is added only on the page."""
    metrics = Metrics(org=ORG)
    metrics.nudges.labels("sent").inc(3)

    assert metrics.registry.get_sample_value("healthbeat_nudges_total", {"result": "sent"}) == 3


# -- logs ------------------------------------------------------------------------------------------------------

def test_a_json_log_line_names_the_org() -> None:
    line = json.loads(JsonFormatter(ORG).format(_record()))

    assert line["org"] == ORG and line["message"] == "cycle done"


def test_a_json_log_line_has_no_org_when_none_is_set() -> None:
    assert "org" not in json.loads(JsonFormatter().format(_record()))


def test_a_terminal_log_line_names_the_org_after_the_level() -> None:
    line = TerminalFormatter(ORG).format(_record())

    assert f"INFO    org={ORG} worker.cycle: cycle done" in line
    assert "org=" not in TerminalFormatter().format(_record())


def test_logging_takes_the_org_from_the_environment_and_then_from_the_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment names it from the first line (a Kubernetes deployment sets it there); the settings,
    once read, may name it from `.env`."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setenv("HEALTHBEAT_ORG", ORG)
    configure_logging()
    logging.getLogger("worker.test").warning("from the environment")
    set_org("globex")
    logging.getLogger("worker.test").warning("from the settings")

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]

    assert [line["org"] for line in lines] == [ORG, "globex"]


def test_a_slack_app_level_token_is_masked_in_log_lines() -> None:
    """Socket Mode's token (SLACK_APP_TOKEN, xapp-…) is a credential like the bot token."""
    assert RedactingFilter().redact("connect with xapp-1-A0123BCDE-4567890-abcdef0123") == "connect with ***"


# -- a running worker ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Ran:
    metrics: str
    log_lines: list[dict[str, object]]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - our own loopback server
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Ran]:
    """`healthbeat run` for one org against the sandboxes, until its first good cycle, then stopped: started once
    for the module's tests."""
    import socket

    folder = tmp_path_factory.mktemp("org")
    usage = folder / "usage"
    usage.mkdir()
    clock = ShiftedClock()
    sandboxes = start_sandboxes(clock)
    try:
        build_world(sandboxes.salesforce, sandboxes.zendesk, sandboxes.slack, usage, accounts=6, seed=5,
                    now=clock())
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {**os.environ, **{k: str(v) for k, v in sandbox_environment(
            sandboxes, folder / "hb.db", usage, RULES_DIR).items()},
            "HEALTHBEAT_INTERVAL": "1m", "HEALTHBEAT_HTTP_PORT": str(port), "HEALTHBEAT_ORG": ORG}
        worker = subprocess.Popen([sys.executable, "-c", "from worker.cli import main; main()", "run"], env=env,
                                  cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status, body = _get(f"http://127.0.0.1:{port}/healthz")
                if status == 200 and json.loads(body).get("last_success"):
                    break
                time.sleep(0.1)
            metrics = _get(f"http://127.0.0.1:{port}/metrics")[1]
        finally:
            worker.send_signal(signal.SIGTERM)
            _, stderr = worker.communicate(timeout=30)
    finally:
        sandboxes.stop()
    yield _Ran(metrics, [json.loads(line) for line in stderr.splitlines() if line.startswith("{")])


def test_a_running_workers_metrics_page_labels_every_series_with_its_org(ran: _Ran) -> None:
    samples = _samples(ran.metrics)

    assert ("healthbeat_cycles_total", {ORG_LABEL: ORG, "outcome": "ok"}) in samples
    assert all(labels.get(ORG_LABEL) == ORG for _, labels in samples)


def test_a_running_workers_log_lines_each_name_its_org(ran: _Ran) -> None:
    assert len(ran.log_lines) >= 3  # started, a cycle's summary, stopped
    assert all(line.get("org") == ORG for line in ran.log_lines)
