"""One cycle: sync → score → evaluate → write back → notify → prune, each a plain function over the store.

Every stage records what it has done in the store as it goes, so a cycle that dies at any line is simply
run again. The cycle logs one summary line with counts per stage and keeps a row in `cycles`. A stop request
(SIGTERM) is honoured at the next safe point: between stages, and inside a sync after each page it stores.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from connectors.salesforce.client import SalesforceClient, SalesforceError
from connectors.slack.client import SlackClient
from connectors.zendesk.client import ZendeskClient
from worker.alerting.engine import AlertReport, evaluate_alerts
from worker.clock import Clock, system_clock
from worker.config import Settings
from worker.delivery.home_tab import HomeReport, republish_home_tabs
from worker.delivery.notify import NotifyReport, send_nudges
from worker.delivery.snapshots import SnapshotReport, push_snapshots
from worker.delivery.writeback import WritebackReport, plan_writeback, push_scores
from worker.errors import NoGoodRules, SyncAborted
from worker.rulebook.in_force import RuleBook
from worker.scoring.engine import ScoringReport, score_changed_accounts
from worker.scoring.scorecard import LoadedScorecard
from worker.scoring.sentiment import SentimentModel, VaderModel, score_pending_texts
from worker.store import Store, iso
from worker.store.retention import prune, prune_due
from worker.sync import sync_all
from worker.sync.report import StreamStats, SyncReport

log = logging.getLogger(__name__)


@dataclass
class Clients:
    """The adapters a cycle talks through; a source that is not configured is None and skipped."""

    salesforce: SalesforceClient
    zendesk: ZendeskClient | None
    slack: SlackClient | None

    def close(self) -> None:
        if self.zendesk is not None:
            self.zendesk.close()


def build_clients(settings: Settings, *, stop: threading.Event | None = None) -> Clients:
    """The clients for these settings. With `stop`, their waits (Zendesk's pacing of its export, a minute at a
    time; Salesforce's retry back-off) end as soon as a stop is requested, and the cycle ends there: no
    transaction is open while a client waits."""
    credentials = settings.salesforce_credentials()  # the flow its settings choose; ConfigError if incomplete
    sleep = _sleep_unless_stopped(stop) if stop is not None else time.sleep
    salesforce = SalesforceClient(credentials, retry_sleep=sleep)
    zendesk = None
    if settings.zendesk_configured:
        assert settings.zendesk_url and settings.zendesk_email and settings.zendesk_api_token
        zendesk = ZendeskClient(settings.zendesk_url, settings.zendesk_email,
                                settings.zendesk_api_token.get_secret_value(),
                                requests_per_minute=settings.zendesk_requests_per_minute,
                                api_requests_per_minute=settings.zendesk_api_requests_per_minute, sleep=sleep,
                                ca_bundle=settings.ca_bundle)
    slack = None
    if settings.slack_configured:
        assert settings.slack_bot_token is not None
        slack = SlackClient(settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url,
                            ca_bundle=settings.ca_bundle)
    return Clients(salesforce, zendesk, slack)


def _sleep_unless_stopped(stop: threading.Event) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise _StopRequested

    return sleep


@dataclass
class CycleReport:
    started_at: datetime
    finished_at: datetime | None = None
    ok: bool = False
    error: str | None = None
    sync: SyncReport | None = None
    sentiment_scored: int = 0
    scoring: ScoringReport | None = None
    alerts: AlertReport | None = None
    writeback: WritebackReport | None = None
    snapshots: SnapshotReport | None = None
    home: HomeReport | None = None  # the Slack Home tabs republished after the nudges
    notify: NotifyReport | None = None
    stages: list[str] = field(default_factory=list)
    seconds: float = 0.0
    pruned: dict[str, int] = field(default_factory=dict)
    refit: str | None = None  # what the churn model's scheduled refit said, when it ran
    stopped: bool = False  # a stop request ended it early; what its stages stored is kept

    @property
    def status(self) -> str:
        """As the `cycles` table keeps it: ok, failed, or stopped (by SIGTERM or SIGINT, before its end)."""
        return "ok" if self.ok else "stopped" if self.stopped and not self.problems() else "failed"

    def summary(self) -> str:
        parts = [f"cycle {self.status if self.status != 'failed' else 'FAILED'}"]
        if self.stopped:
            parts.append(f"stopped on request after {', '.join(self.stages) or 'no complete stage'}")
        parts.append(f"in {self.seconds:.1f}s")
        if self.sync:
            parts.append(f"sync {self.sync.total} records ({self.sync.quarantined} quarantined)")
            if self.sync.failed_streams:
                parts.append("failed streams: " + ", ".join(sorted(self.sync.failed_streams)))
        if self.scoring:
            bands = ", ".join(f"{k} {v}" for k, v in sorted(self.scoring.bands.items()))
            which = "all" if self.scoring.full else "changed"
            parts.append(f"scored {self.scoring.scored} ({which}; {self.scoring.changed} moved"
                         + (f"; {bands})" if bands else ")"))
        if self.alerts:
            parts.append(f"alerts fired {self.alerts.fired}, resolved {self.alerts.resolved}"
                         + (f" (baselines wait for a whole sync: {', '.join(self.alerts.baselines_waiting)})"
                            if self.alerts.baselines_waiting else ""))
        if self.writeback:
            parts.append(f"wrote back {self.writeback.sent} ({self.writeback.failed} failed)")
            if self.writeback.read_only_fields:
                parts.append("read-only for the integration user, not written: "
                             + ", ".join(self.writeback.read_only_fields))
        if self.snapshots and (self.snapshots.sent or self.snapshots.failed or self.snapshots.waiting):
            parts.append(f"health snapshots {self.snapshots.sent} ({self.snapshots.failed} failed, "
                         f"{self.snapshots.waiting} waiting)")
        if self.notify:
            parts.append(f"nudges sent {self.notify.sent} ({self.notify.failed} failed, "
                         f"{self.notify.waiting} waiting)")
        if self.refit:
            parts.append(f"churn model refit: {self.refit}")
        if self.error:
            parts.append(f"error: {self.error}")
        return "; ".join(parts)

    def problems(self) -> list[str]:
        """What made this cycle fail, one line each, for the exit status and the operator."""
        found = [f"{stream}: {error}" for stream, error in sorted(self.sync.failed_streams.items())] \
            if self.sync else []
        if self.writeback and self.writeback.errors:
            found += [f"writeback: {error}" for error in self.writeback.errors]
        if self.snapshots and self.snapshots.errors:
            found += [f"snapshots: {error}" for error in self.snapshots.errors]
        if self.notify and self.notify.blocked:
            found.append(f"notify: {self.notify.blocked}")
        if self.error:
            found.append(self.error)
        return found

    def as_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))  # type: ignore[no-any-return]


@contextmanager
def _recorded(store: Store, report: CycleReport) -> Iterator[None]:
    cycle_id = store.conn.execute("INSERT INTO cycles (started_at, status) VALUES (?, 'running')",
                                  (iso(report.started_at),)).lastrowid
    try:
        yield
    finally:
        store.conn.execute("UPDATE cycles SET finished_at = ?, status = ?, summary = ? WHERE id = ?",
                           (iso(report.finished_at or report.started_at), report.status,
                            json.dumps(report.as_json()), cycle_id))


def record_url(store: Store, settings: Settings) -> str:
    """Links in nudges go to the org's own instance, learnt when we last connected."""
    return store.cursor("salesforce.instance_url") or settings.salesforce_login_url


BASELINE_WAIT = timedelta(days=1)
"""How long a new alert rule's baseline waits for a sync that reads every source (`Cycle.evaluate`)."""
_BASELINES_WAITING = "alerts.baselines_waiting_since"


RefitJob = Callable[[Store, LoadedScorecard, Path, datetime, timedelta, Callable[[], bool]], str | None]
"""Fits the churn model again when `every` has passed since the last time and leaves a proposal beside the rules
(`worker.analysis.churn_fit.scheduled_refit`); None when not due. The commands that start cycles hand it in:
the fit replays history with `worker.analysis`, which sits above the cycle. It asks `stop` between snapshots
and returns early once it is set."""


class _StopRequested(Exception):
    """Raised at a safe point (a page just committed) once a stop is requested; `Cycle.run` ends the cycle."""


class _PageWatch:
    """Called by the sync after each page it stores: the terminal's progress, a debug line, each stream's time,
    and the stop request's safe point. Streams whose module does not time itself are given the time from the
    previous stored page (of any stream) to their own."""

    def __init__(self, progress: Callable[[str, int], None] | None, stop: threading.Event | None) -> None:
        self.progress = progress
        self.stop = stop
        self.records: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def __call__(self, stream: str, records: int) -> None:
        now = time.monotonic()
        self.seconds[stream] = self.seconds.get(stream, 0.0) + now - self._last
        self._last = now
        self.records[stream] = records
        log.debug("sync %s: %d records stored so far", stream, records)
        if self.progress is not None:
            self.progress(stream, records)
        if self.stop is not None and self.stop.is_set():
            raise _StopRequested

    def fill(self, report: SyncReport) -> None:
        for stream, seconds in self.seconds.items():
            stats = report.streams.get(stream)
            if stats is not None and not stats.seconds:
                stats.seconds = seconds

    def partial(self) -> SyncReport:
        """What a sync stopped midway had stored, as far as its pages said."""
        report = SyncReport(records=dict(self.records))
        for stream, records in self.records.items():
            report.streams[stream] = StreamStats(read=records, seconds=self.seconds.get(stream, 0.0))
        return report


class Cycle:
    """The stages, runnable alone (`healthbeat sync`, `score`, ...) or together (`run --once`).

    `stop`, once set, ends the cycle at the next safe point: before the next stage, or after the page a sync
    is storing; the report says `stopped`, and every stage resumes from what the store recorded."""

    def __init__(self, store: Store, settings: Settings, rulebook: RuleBook, clients: Clients, *,
                 clock: Clock = system_clock, sentiment: SentimentModel | None = None,
                 dry_run: bool = False, progress: Callable[[str, int], None] | None = None,
                 stop: threading.Event | None = None, refit: RefitJob | None = None) -> None:
        self.store = store
        self.settings = settings
        self.rulebook = rulebook
        self.clients = clients
        self.clock = clock
        self.dry_run = dry_run
        self.progress = progress
        self.stop = stop
        self.refit = refit
        self._sentiment = sentiment

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise _StopRequested

    @property
    def sentiment(self) -> SentimentModel:
        if self._sentiment is None:
            self._sentiment = VaderModel()
        return self._sentiment

    def sync(self, report: CycleReport) -> None:
        settings = self.settings
        watch = _PageWatch(self.progress, self.stop)
        try:
            report.sync = sync_all(self.store, self.clock(), salesforce=self.clients.salesforce,
                                   zendesk=self.clients.zendesk, usage_dir=settings.usage_dir,
                                   salesforce_overlap=settings.salesforce_overlap,
                                   salesforce_api_share=settings.salesforce_api_share,
                                   salesforce_backfill=settings.salesforce_backfill,
                                   salesforce_bulk_threshold=settings.salesforce_bulk_threshold,
                                   zendesk_backfill=settings.zendesk_backfill, progress=watch)
        except _StopRequested:
            report.sync = watch.partial()
            raise
        watch.fill(report.sync)
        report.sync.progress = None  # the cycle's hook, done with: the report is data (it is kept as JSON)
        instance = self.clients.salesforce.instance_url
        if instance:
            with self.store.transaction():
                self.store.save_cursor("salesforce.instance_url", str(instance), 0, self.clock())
        self._check_stop()
        report.sentiment_scored = score_pending_texts(self.store, self.sentiment)

    def score(self, report: CycleReport) -> None:
        scorecard, _ = self.rulebook.require()
        report.scoring = score_changed_accounts(self.store, scorecard, self.clock(),
                                                churn_model=self.rulebook.churn_model)

    def evaluate(self, report: CycleReport) -> None:
        _, alerts = self.rulebook.require()
        report.alerts = evaluate_alerts(self.store, alerts, self.clock(),
                                        record_url=record_url(self.store, self.settings),
                                        take_baselines=self._baselines_may_be_taken(report))

    def _baselines_may_be_taken(self, report: CycleReport) -> bool:
        """A new rule's baseline waits for a cycle whose sync read every source (`evaluate_alerts`), but not for
        ever: a source that fails every cycle (a wrong Zendesk token) must not keep every new rule silent, so
        after `BASELINE_WAIT` of partial syncs the baseline is taken on what there is."""
        now = self.clock()
        waiting_since = self.store.cursor(_BASELINES_WAITING)
        if report.sync is None or not report.sync.failed_streams:
            if waiting_since is not None:
                with self.store.transaction():
                    self.store.save_cursor(_BASELINES_WAITING, None, 0, now)
            return True
        if waiting_since is None:
            with self.store.transaction():
                self.store.save_cursor(_BASELINES_WAITING, iso(now), 0, now)
            return False
        if datetime.fromisoformat(waiting_since.replace("Z", "+00:00")) + BASELINE_WAIT > now:
            return False
        log.warning("alert baselines have waited %s for a sync that reads every source (failing: %s); taking them "
                    "on what there is", BASELINE_WAIT, ", ".join(sorted(report.sync.failed_streams)))
        return True

    def writeback(self, report: CycleReport) -> None:
        plan_writeback(self.store, self.clock())
        limited = report.sync is not None and report.sync.salesforce_limited
        if limited:
            log.warning("writeback: Salesforce's daily API limit was reached during sync; the writes wait "
                        "in the outbox for the next cycle")
        else:
            # a stop request ends the wait before retrying locked records: those rows are in flight, and the next
            # cycle checks them against Salesforce before sending anything again
            sleep = _sleep_unless_stopped(self.stop) if self.stop is not None else time.sleep
            report.writeback = push_scores(self.store, self.clients.salesforce, self.clock(), dry_run=self.dry_run,
                                           sleep=sleep)
            limited = "daily_limit" in report.writeback.error_kinds
        # the day's health snapshots (HEALTHBEAT_SALESFORCE_SNAPSHOTS): planned even when the limit holds them back
        report.snapshots = push_snapshots(self.store, self.clients.salesforce, self.clock(), self.settings,
                                          limited=limited, dry_run=self.dry_run)

    def notify(self, report: CycleReport) -> None:
        _, alerts = self.rulebook.require()
        report.notify = send_nudges(self.store, self.clients.slack, self.clock(),
                                    fallback_channel=self.settings.slack_fallback_channel,
                                    digest_min=alerts.rules.digest.min, dry_run=self.dry_run)
        # the Home tabs owners opened, where one of their accounts changed band
        report.home = republish_home_tabs(self.store, self.clients.slack, record_url(self.store, self.settings),
                                          self.clock(), dry_run=self.dry_run)

    def prune(self, report: CycleReport) -> None:
        if prune_due(self.store, self.clock()):
            report.pruned = prune(self.store, self.clock(), text_retention=self.settings.retention_text,
                                  history_retention=self.settings.retention_history)
        self._refit(report)

    def _refit(self, report: CycleReport) -> None:
        """The churn model's slow refit, when due (`HEALTHBEAT_CHURN_REFIT`); never in a dry run. It writes a
        proposal file only: what is in force changes when ops rename it."""
        every = self.settings.churn_refit
        if self.refit is None or self.dry_run or every <= timedelta(0) or self.rulebook.scorecard is None:
            return
        report.refit = self.refit(self.store, self.rulebook.scorecard, self.settings.rules_dir, self.clock(), every,
                                  lambda: self.stop is not None and self.stop.is_set())
        self._check_stop()

    def run(self, stages: Iterable[str] | None = None) -> CycleReport:
        """The stages named (all of `FULL_CYCLE` by default), always in `FULL_CYCLE`'s order."""
        chosen = FULL_CYCLE if stages is None else stages_named(*stages)
        report = CycleReport(started_at=self.clock())
        started = time.monotonic()
        self.rulebook.reload()
        with _recorded(self.store, report):
            try:
                for stage in chosen:
                    self._check_stop()
                    log.debug("stage %s: %s", stage.name, stage.does)
                    began = time.monotonic()
                    stage.run(self, report)
                    report.stages.append(stage.name)
                    log.debug("stage %s done in %.2fs", stage.name, time.monotonic() - began)
                report.ok = not report.problems()
            except _StopRequested:
                report.stopped = True
                log.info("cycle: stopping on request; what the stages stored is kept, the next cycle resumes")
            except SalesforceError as exc:
                report.error = f"Salesforce: {exc}"
            except (SyncAborted, NoGoodRules) as exc:
                report.error = str(exc)
            except Exception as exc:
                report.error = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                report.finished_at = self.clock()
                report.seconds = time.monotonic() - started
                log.info(report.summary())
        return report


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM or SIGINT sets the event a `Cycle` watches, so the cycle ends at its next safe point within
    seconds (Docker sends SIGKILL 10 s after SIGTERM). A second signal ends the process at once. Main thread
    only; the handlers before are restored on the way out."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping at the next safe point (a page stored, or a stage's end); a second "
                 "signal stops at once", signal.Signals(signum).name)
        stop.set()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    before = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


@dataclass(frozen=True)
class Stage:
    """One step of a cycle: the name commands pick it by, what it does in words, and the method that runs it."""

    name: str
    does: str
    run: Callable[[Cycle, CycleReport], None]


FULL_CYCLE: tuple[Stage, ...] = (
    Stage("sync", "pull new and changed activity into the store; score the new texts' sentiment", Cycle.sync),
    Stage("score", "score the accounts whose data changed", Cycle.score),
    Stage("evaluate", "step the alert rules over the scores that moved; owe nudges in the outbox", Cycle.evaluate),
    Stage("writeback", "write the changed scores to the Salesforce Account fields, and the day's health snapshots "
                       "(HEALTHBEAT_SALESFORCE_SNAPSHOTS)", Cycle.writeback),
    Stage("notify", "send the nudges the outbox owes to Slack; republish the Home tabs whose accounts changed band",
          Cycle.notify),
    Stage("prune", "clear old text and history, once a day (HEALTHBEAT_RETENTION_*); fit the churn model again, "
                   "once a week (HEALTHBEAT_CHURN_REFIT), as a proposal beside the rules", Cycle.prune),
)
"""The one ordered list of stages. `run` and `run --once` run all of it; `sync`, `writeback` and `notify`
pick from it by name, so no command can forget a stage or run two out of order."""


def stages_named(*names: str) -> tuple[Stage, ...]:
    """The stages of `FULL_CYCLE` with these names, in `FULL_CYCLE`'s order; an unknown name is an error."""
    known = {stage.name for stage in FULL_CYCLE}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"no such stage: {', '.join(unknown)} (stages: {', '.join(s.name for s in FULL_CYCLE)})")
    return tuple(stage for stage in FULL_CYCLE if stage.name in names)
