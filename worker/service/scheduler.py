"""`healthbeat run`: a cycle every HEALTHBEAT_INTERVAL, one at a time, until SIGTERM or SIGINT.

APScheduler 3 with `coalesce=True, max_instances=1` and a misfire grace: a cycle that overruns its interval
is never run twice at once, and missed runs after a pause collapse into one. The worker owns its signal
handling: a stop request lets the current cycle finish its step and then exits.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler

from worker.config import Settings
from worker.cycle import Cycle, build_clients
from worker.errors import ConfigError, HealthServerError, StoreLocked
from worker.rulebook.in_force import RuleBook
from worker.service.http import HealthServer, HealthState
from worker.service.metrics import Metrics, observe_cycle, read_store_facts
from worker.service.slack_actions import build_slack_actions
from worker.store import Store

log = logging.getLogger(__name__)


def run_forever(settings: Settings, *, dry_run: bool = False) -> int:
    try:
        clients = build_clients(settings)
        store = Store(settings.db, lock=True)
    except (ConfigError, StoreLocked) as exc:
        log.error("%s", exc)
        return 2
    stop = threading.Event()
    rulebook = RuleBook(settings.rules_dir)
    cycle = Cycle(store, settings, rulebook, clients, dry_run=dry_run)
    metrics = Metrics()
    health = HealthState(settings.interval)
    health.record_store(read_store_facts(store))
    server = HealthServer(health, metrics, port=settings.http_port)
    actions = build_slack_actions(settings)  # its own database connection and Slack client
    server.routes.add("POST", "/slack/actions", actions.handle)
    try:
        server.start()
    except HealthServerError as exc:
        log.error("%s", exc)
        actions.close()
        clients.close()
        store.close()
        return 2

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

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the current step, then stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
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
    actions.close()
    clients.close()
    store.close()
    log.info("healthbeat stopped")
    return 0
