"""`healthbeat run`: a cycle every HEALTHBEAT_INTERVAL, one at a time, until SIGTERM or SIGINT.

APScheduler 3 with `coalesce=True, max_instances=1` and a misfire grace: a cycle that overruns its interval
is never run twice at once, and missed runs after a pause collapse into one. The worker owns its signal
handling: a stop request lets the current cycle finish its step and then exits.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler

from worker.config import ConfigError, Settings
from worker.cycle import Cycle, build_clients
from worker.rulebook import RuleBook
from worker.store import Store, StoreLocked

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

    def one_cycle() -> None:
        if stop.is_set():
            return
        try:
            cycle.run()
        except Exception:
            log.exception("cycle crashed; the next one resumes from what the store recorded")

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the current step, then stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    scheduler = BackgroundScheduler(job_defaults={
        "coalesce": True, "max_instances": 1,
        "misfire_grace_time": int(settings.interval.total_seconds())})
    scheduler.add_job(one_cycle, "interval", seconds=settings.interval.total_seconds(), id="cycle",
                      next_run_time=None)
    scheduler.start()
    log.info("healthbeat running: a cycle every %s, database %s", settings.interval, settings.db)
    one_cycle()
    stop.wait()
    scheduler.shutdown(wait=True)
    clients.close()
    store.close()
    log.info("healthbeat stopped")
    return 0
