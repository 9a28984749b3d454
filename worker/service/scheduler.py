"""`healthbeat run`: a cycle every HEALTHBEAT_INTERVAL, one at a time, until SIGTERM or SIGINT.

APScheduler 3 with `coalesce=True, max_instances=1` and a misfire grace: a cycle that overruns its interval
is never run twice at once, and missed runs after a pause collapse into one. The worker owns its signal
handling: a stop request ends the running cycle at its next safe point (a page stored, or a stage's end),
within seconds, and the worker exits 0 with what the cycle had done kept.

Slack's buttons, modals and Home tab reach the worker on `/slack/actions` and `/slack/events` (its HTTP port
facing the internet), or, with SLACK_APP_TOKEN set, over Socket Mode (`worker.service.socket_mode`: a
WebSocket the worker opens, no public port). Both go to the same handlers. With Socket Mode on, the two routes
are served only when SLACK_SIGNING_SECRET is set too (without it they could only refuse); `/healthz` and
`/metrics` always are.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from worker.config import Settings
from worker.cycle import Clients, Cycle, RefitJob, build_clients, stop_on_signals
from worker.errors import HealthServerError
from worker.rulebook.in_force import RuleBook
from worker.service.http import HealthServer, HealthState
from worker.service.metrics import Metrics, observe_cycle, read_store_facts
from worker.service.slack_actions import SlackActions, build_slack_actions
from worker.service.slack_home import SlackEvents, build_slack_events
from worker.service.socket_mode import SocketMode, build_socket_mode
from worker.store import Store

log = logging.getLogger(__name__)


def run_forever(settings: Settings, *, dry_run: bool = False, refit: RefitJob | None = None) -> int:
    """Serve until SIGTERM or SIGINT; 0 once stopped. A setting, the database or the HTTP port that cannot be
    used raises its `HealthbeatError` before anything runs (the CLI names it and exits with its status).
    `refit` fits the churn model again on its slow schedule, in a cycle's last stage."""
    with stop_on_signals() as stop:
        clients = build_clients(settings, stop=stop)
        try:
            store = Store(settings.db, lock=True)
        except BaseException:
            clients.close()
            raise
        return _serve(settings, store, clients, stop, dry_run=dry_run, refit=refit)


def _serve(settings: Settings, store: Store, clients: Clients, stop: threading.Event, *, dry_run: bool,
           refit: RefitJob | None = None) -> int:
    rulebook = RuleBook(settings.rules_dir)
    cycle = Cycle(store, settings, rulebook, clients, dry_run=dry_run, stop=stop, refit=refit)
    metrics = Metrics(org=settings.org)
    health = HealthState(settings.interval)
    health.record_store(read_store_facts(store))
    server = HealthServer(health, metrics, port=settings.http_port)
    actions = build_slack_actions(settings)  # its own database connection and Slack client
    events = build_slack_events(settings, metrics=metrics)  # its own database connection and Slack client
    socket = build_socket_mode(settings, actions=actions, events=events, on_envelope=metrics.count_socket_envelope,
                               on_connection=metrics.count_socket_connection)
    if socket is None or settings.slack_signing_secret is not None:
        server.routes.add("POST", "/slack/actions", actions.handle)
        server.routes.add("POST", "/slack/events", events.handle)
    try:
        server.start()
    except HealthServerError:
        _close(socket, events, actions, clients, store)
        raise
    if socket is not None:
        try:
            socket.start()  # a refused SLACK_APP_TOKEN stops the start here, with the setting named
        except BaseException:
            server.stop()
            _close(socket, events, actions, clients, store)
            raise

    def one_cycle() -> None:
        if stop.is_set():
            return
        try:
            report = cycle.run()
        except Exception as exc:
            log.exception("cycle crashed; the next one resumes from what the store recorded")
            metrics.count_crash()
            health.record_crash(f"{type(exc).__name__}: {exc}")
            return
        facts = observe_cycle(metrics, report, store, clients=clients, rulebook=rulebook)
        health.record_cycle(report, facts, rulebook)

    scheduler = BackgroundScheduler(job_defaults={
        "coalesce": True, "max_instances": 1,
        "misfire_grace_time": int(settings.interval.total_seconds())})
    # The first cycle runs at once, in the scheduler's thread like every later one, so max_instances=1
    # also keeps a long first backfill from overlapping the second cycle.
    scheduler.add_job(one_cycle, "interval", seconds=settings.interval.total_seconds(), id="cycle",
                      next_run_time=datetime.now(UTC))
    scheduler.start()
    log.info("healthbeat running: a cycle every %s, database %s, health on %s/healthz",
             settings.interval, settings.db, server.url)
    stop.wait()
    scheduler.shutdown(wait=True)
    server.stop()
    _close(socket, events, actions, clients, store)
    log.info("healthbeat stopped")
    return 0


def _close(socket: SocketMode | None, events: SlackEvents, actions: SlackActions, clients: Clients,
           store: Store) -> None:
    """Socket Mode first (no envelope arrives once its handlers are closing), then the handlers, the clients
    and the store."""
    if socket is not None:
        socket.close()
    events.close()
    actions.close()
    clients.close()
    store.close()
