"""Prometheus metrics for the worker: one registry object, brought up to date after each finished cycle.

The registry is Healthbeat's own `CollectorRegistry`, never prometheus-client's global default: two
workers in one process (tests) never share counters, and `/metrics` shows exactly Healthbeat's series.

What the metrics say comes from two places, both read by the thread that ran the cycle: the cycle's
report (durations, records, write-backs, nudges) and the store (outbox depth, quarantine, the last
successful cycle). `read_store_facts` keeps the store's answers as plain values, so the HTTP threads
that serve `/healthz` and `/metrics` never touch SQLite while a cycle writes to it.

With HEALTHBEAT_ORG set, every series carries the label `org`, so that one Prometheus can scrape a worker per
org and still tell them apart (README "Scale"). prometheus-client has no registry-wide constant labels: the
series are kept without it and `_WithOrg` adds it to each sample as `/metrics` is rendered, so a series added
later (by any module, in `Metrics.__init__`) carries it with no change of its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from worker.delivery.writeback import DEFAULT_FIELDS, ERROR_KINDS
from worker.store import Store, iso, parse_iso

if TYPE_CHECKING:
    from connectors.salesforce.client import SalesforceClient
    from worker.cycle import Clients, CycleReport
    from worker.delivery.snapshots import SnapshotReport
    from worker.delivery.writeback import WritebackReport
    from worker.rulebook.in_force import RuleBook

__all__ = ["CONTENT_TYPE", "ORG_LABEL", "LastCycle", "Metrics", "StoreFacts", "observe_cycle", "read_store_facts"]

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format every Prometheus reads; `generate_latest` writes it (names escaped to it)."""
OUTBOX_KINDS: Final = ("salesforce", "slack")
SYSTEMS: Final = ("salesforce", "zendesk", "slack")
OWED_STATUSES: Final = ("pending", "inflight", "failed")
"""Outbox rows the remote side has not confirmed yet and that will still be tried."""
CYCLE_BUCKETS: Final = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
SNAPSHOT_ERROR_KINDS: Final = ("locked", "deleted", "other", "daily_limit", "busy", "unavailable")
"""Refusals of snapshot upserts: per record (locked, deleted: its account is gone, other) or per call."""
HOME_RESULTS: Final = ("published", "failed")
SOCKET_ENVELOPE_TYPES: Final = ("events_api", "interactive")
SOCKET_ENVELOPE_OUTCOMES: Final = ("acked", "refused", "not_acked")
"""Of a Socket Mode envelope (`worker.service.socket_mode`): acked, handled; refused, acknowledged but not ours to
record (a bad or refused payload, as an HTTP 4xx); not_acked, left for Slack to send again (the store busy, or
the handler failed)."""
SOCKET_CONNECTION_RESULTS: Final = ("opened", "refused", "failed")
"""Of apps.connections.open: opened, a URL given; refused, Slack refused SLACK_APP_TOKEN; failed, Slack or the way
to it."""
SKIP_REASONS: Final = ("read_only", "missing")
"""Why the write-back leaves an Account field out: field-level security grants no Edit, or there is no such field."""
ORG_LABEL: Final = "org"
"""The label naming the worker's org (HEALTHBEAT_ORG) on every series, when it is set."""


@dataclass(frozen=True)
class LastCycle:
    """The latest cycle as the store recorded it: enough for `/healthz` before this process ran one."""

    outcome: str  # ok, failed, or running (a cycle that never finished: the worker stopped mid-way)
    finished_at: datetime | None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoreFacts:
    """What the store says about the worker's state, read once by the cycle's thread."""

    schema_version: int
    outbox_depth: Mapping[str, int] = field(default_factory=dict)
    outbox_dead: Mapping[str, int] = field(default_factory=dict)
    quarantined: int = 0
    last_success: datetime | None = None
    last_cycle: LastCycle | None = None
    dead_nudges: tuple[str, ...] = ()  # "account (rule)" of nudges given up on lately, for /healthz


DEAD_NUDGES_SHOWN: Final = timedelta(days=7)
"""How long a nudge given up on keeps `/healthz` degraded: long enough for someone to see it, not forever."""


def read_store_facts(store: Store) -> StoreFacts:
    """Outbox depth per kind, quarantine size, schema version and the latest cycles, in a few small queries."""
    depth = dict.fromkeys(OUTBOX_KINDS, 0)
    dead = dict.fromkeys(OUTBOX_KINDS, 0)
    marks = ", ".join("?" for _ in OWED_STATUSES)
    for row in store.query(f"SELECT kind, count(*) AS n FROM outbox WHERE status IN ({marks}) GROUP BY kind",
                           OWED_STATUSES):
        depth[row["kind"]] = int(row["n"])
    for row in store.query("SELECT kind, count(*) AS n FROM outbox WHERE status = 'dead' GROUP BY kind"):
        dead[row["kind"]] = int(row["n"])
    since = iso(datetime.now(UTC) - DEAD_NUDGES_SHOWN)
    dead_nudges = tuple(f"{row['account']} ({row['rule']})" for row in store.query(
        "SELECT coalesce(json_extract(payload, '$.account_name'), account_id) AS account, "
        "json_extract(payload, '$.rule') AS rule FROM outbox WHERE kind = 'slack' AND status = 'dead' "
        "AND created_at >= ? ORDER BY id DESC LIMIT 5", (since,)))
    last_ok = store.scalar("SELECT max(finished_at) FROM cycles WHERE status = 'ok'")
    latest = store.query("SELECT status, finished_at, summary FROM cycles ORDER BY id DESC LIMIT 1")
    return StoreFacts(
        schema_version=store.schema_version, outbox_depth=depth, outbox_dead=dead,
        quarantined=int(store.scalar("SELECT count(*) FROM quarantine") or 0),
        last_success=parse_iso(last_ok) if last_ok else None,
        last_cycle=_last_cycle(latest[0]) if latest else None, dead_nudges=dead_nudges)


def _last_cycle(row: Mapping[str, object]) -> LastCycle:
    problems: list[str] = []
    try:
        summary = json.loads(str(row["summary"])) if row["summary"] else {}
    except ValueError:
        summary = {}
    if isinstance(summary, dict):
        sync = summary.get("sync") or {}
        if isinstance(sync, dict):
            problems += [f"{stream}: {error}" for stream, error in sorted((sync.get("failed_streams") or {}).items())]
        if summary.get("error"):
            problems.append(str(summary["error"]))
    finished = row["finished_at"]
    return LastCycle(str(row["status"]), parse_iso(str(finished)) if finished else None, tuple(problems))


class _WithOrg(Collector):
    """The series of `inner`, each sample with the label `org` added: what `/metrics` shows when the worker
    serves a named org. Collected anew at every scrape, so it never holds a stale copy."""

    def __init__(self, inner: CollectorRegistry, org: str) -> None:
        self.inner = inner
        self.org = org

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            labelled.samples = [sample._replace(labels={ORG_LABEL: self.org, **sample.labels})
                                for sample in family.samples]
            yield labelled


class Metrics:
    """Every Healthbeat series in one registry; `render` gives the Prometheus text format.

    `registry` holds the series as the code counts them (tests read samples from it by their own labels);
    with `org`, `render` shows each with the label `org` too.
    """

    def __init__(self, *, org: str | None = None) -> None:
        self.registry = CollectorRegistry()
        self.org = org
        self._exposed = self.registry
        if org:
            self._exposed = CollectorRegistry(auto_describe=False)
            self._exposed.register(_WithOrg(self.registry, org))
        r = self.registry
        self.cycle_seconds = Histogram("healthbeat_cycle_duration_seconds", "Duration of a full cycle.",
                                       buckets=CYCLE_BUCKETS, registry=r)
        self.cycles = Counter("healthbeat_cycles", "Cycles run, by outcome (ok, failed, crashed).",
                              ["outcome"], registry=r)
        self.records_synced = Counter("healthbeat_records_synced", "Records read into the store, by stream.",
                                      ["stream"], registry=r)
        self.sync_seconds = Counter("healthbeat_sync_seconds",
                                    "Seconds each stream's sync took, by stream and by what they went to: storing "
                                    "(records turned into rows and written) or source (waiting on the API or "
                                    "file, and the rest).", ["stream", "spent_on"], registry=r)
        self.api_calls = Counter("healthbeat_api_calls", "API calls made, by system.", ["system"], registry=r)
        self.salesforce_api_usage = Gauge("healthbeat_salesforce_api_usage_ratio",
                                          "Share of the Salesforce org's daily API request limit used "
                                          "(Sforce-Limit-Info).", registry=r)
        self.writebacks = Counter("healthbeat_writebacks", "Account write-backs to Salesforce, by result.",
                                  ["result"], registry=r)
        self.writeback_errors = Counter("healthbeat_writeback_errors",
                                        "Salesforce's refusals of write-backs, by kind: per record locked (still, "
                                        "after the retries), validation (an org's validation rule), deleted, "
                                        "other; per call daily_limit, busy (too many concurrent requests), "
                                        "unavailable.", ["kind"], registry=r)
        self.writeback_skipped_fields = Gauge("healthbeat_writeback_skipped_fields",
                                              "1 for each Account field the last write-back left out, by field "
                                              "and reason (read_only: the integration user lacks Edit on it; "
                                              "missing: no such field); 0 once it is written.",
                                              ["field", "reason"], registry=r)
        self.snapshots = Counter("healthbeat_snapshots", "Daily Health_Snapshot__c rows upserted to Salesforce, by "
                                 "result (sent, failed).", ["result"], registry=r)
        self.snapshot_calls = Counter("healthbeat_snapshot_calls", "sObject Collections upserts of "
                                      "Health_Snapshot__c made (up to 200 rows each).", registry=r)
        self.snapshot_errors = Counter("healthbeat_snapshot_errors", "Salesforce's refusals of snapshot upserts, by "
                                       "kind: per record locked, deleted (the account is gone), other; per call "
                                       "daily_limit, busy, unavailable.", ["kind"], registry=r)
        self.nudges = Counter("healthbeat_nudges", "Slack nudges, by result.", ["result"], registry=r)
        self.outbox_depth = Gauge("healthbeat_outbox_depth", "Outbox rows not yet confirmed, by kind.",
                                  ["kind"], registry=r)
        self.outbox_dead = Gauge("healthbeat_outbox_dead", "Outbox rows given up after too many attempts, "
                                 "by kind.", ["kind"], registry=r)
        self.quarantine = Gauge("healthbeat_quarantine_records", "Records held in quarantine.", registry=r)
        self.last_success = Gauge("healthbeat_last_success_timestamp_seconds",
                                  "Unix time the last successful cycle finished (0: none yet).", registry=r)
        self.rules_ok = Gauge("healthbeat_rules_ok", "1 if the rule files loaded cleanly, 0 if broken.",
                              registry=r)
        self.home_views = Counter("healthbeat_home_views", "Slack Home tab views published (views.publish), by "
                                  "result (published, failed): when an owner opens the tab, and after a cycle "
                                  "for tabs whose accounts changed band.", ["result"], registry=r)
        self.bulk_jobs = Counter("healthbeat_salesforce_bulk_jobs", "Bulk API 2.0 query jobs created: backfills and "
                                 "long catch-ups of objects above HEALTHBEAT_SALESFORCE_BULK_THRESHOLD records.",
                                 registry=r)
        self.bulk_result_bytes = Counter("healthbeat_salesforce_bulk_result_bytes", "Bytes of Bulk API 2.0 query "
                                         "results read (the org's allocation counts them).", registry=r)
        self.bulk_allocation = Gauge("healthbeat_salesforce_bulk_allocation_remaining", "The org's Bulk API 2.0 "
                                     "query allocation left today, by unit (jobs, mb), as /limits said after the "
                                     "last cycle that ran a job.", ["unit"], registry=r)
        self.socket_envelopes = Counter("healthbeat_socket_mode_envelopes", "Slack Socket Mode envelopes (buttons, "
                                        "modals, Home tab openings), by type and outcome (acked; refused: "
                                        "acknowledged, not recorded; not_acked: left for Slack to send again).",
                                        ["type", "outcome"], registry=r)
        self.socket_connections = Counter("healthbeat_socket_mode_connections", "Socket Mode connections asked for "
                                          "(apps.connections.open), by result (opened; refused: Slack refused "
                                          "SLACK_APP_TOKEN; failed: Slack unreachable).", ["result"], registry=r)
        self._calls_seen: dict[str, int] = {}
        # Known label values exist from the start at zero, so rate() and absent() behave from the first scrape.
        for outcome in ("ok", "failed", "crashed"):
            self.cycles.labels(outcome)
        for result in ("sent", "failed"):
            self.writebacks.labels(result)
            self.nudges.labels(result)
        for system in SYSTEMS:
            self.api_calls.labels(system)
        for kind in ERROR_KINDS:
            self.writeback_errors.labels(kind)
        for result in ("sent", "failed"):
            self.snapshots.labels(result)
        for kind in SNAPSHOT_ERROR_KINDS:
            self.snapshot_errors.labels(kind)
        for name in DEFAULT_FIELDS.values():
            for reason in SKIP_REASONS:
                self.writeback_skipped_fields.labels(name, reason)
        for kind in OUTBOX_KINDS:
            self.outbox_depth.labels(kind)
            self.outbox_dead.labels(kind)
        for result in HOME_RESULTS:
            self.home_views.labels(result)
        for kind in SOCKET_ENVELOPE_TYPES:
            for outcome in SOCKET_ENVELOPE_OUTCOMES:
                self.socket_envelopes.labels(kind, outcome)
        for result in SOCKET_CONNECTION_RESULTS:
            self.socket_connections.labels(result)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format (see `CONTENT_TYPE`), labelled with the org
        when there is one."""
        return generate_latest(self._exposed)

    def count_crash(self) -> None:
        """A cycle raised instead of returning a report: counted, so a crash loop shows on a graph."""
        self.cycles.labels("crashed").inc()

    def count_calls(self, totals: Mapping[str, int]) -> None:
        """Add the calls made since last time, from the clients' running totals."""
        for system, total in totals.items():
            delta = self._since_last(system, total)
            if delta > 0:
                self.api_calls.labels(system).inc(delta)

    def count_socket_envelope(self, kind: str, outcome: str) -> None:
        """An envelope Slack delivered over Socket Mode (called from the socket's thread)."""
        self.socket_envelopes.labels(kind, outcome).inc()

    def count_socket_connection(self, result: str) -> None:
        """A connection asked of Slack with SLACK_APP_TOKEN (at start, and at each refresh Slack asks for)."""
        self.socket_connections.labels(result).inc()

    def count_bulk(self, client: SalesforceClient) -> None:
        """Bulk API 2.0 jobs and result bytes since last time; after a cycle that created a job, the allocation
        left (one call to /limits: none in a cycle without Bulk, which is every incremental one)."""
        jobs = self._since_last("bulk_jobs", client.bulk_jobs)
        self.bulk_result_bytes.inc(self._since_last("bulk_bytes", client.bulk_bytes))
        if jobs <= 0:
            return
        self.bulk_jobs.inc(jobs)
        allocation = client.bulk_allocation()
        if allocation is not None:
            self.bulk_allocation.labels("jobs").set(allocation.jobs_left)
            self.bulk_allocation.labels("mb").set(allocation.mb_left)

    def _since_last(self, name: str, total: int) -> int:
        """The clients count for their whole life; a counter wants what happened since the last cycle. A total
        lower than the one seen means a new client started from zero."""
        seen = self._calls_seen.get(name, 0)
        self._calls_seen[name] = total
        return total - seen if total >= seen else total

    def set_store_facts(self, facts: StoreFacts) -> None:
        for kind, depth in facts.outbox_depth.items():
            self.outbox_depth.labels(kind).set(depth)
        for kind, dead in facts.outbox_dead.items():
            self.outbox_dead.labels(kind).set(dead)
        self.quarantine.set(facts.quarantined)
        if facts.last_success is not None:
            self.last_success.set(facts.last_success.timestamp())

    def count_writeback(self, report: WritebackReport) -> None:
        """A push's results, refusals by kind, and the fields it left out (each set to 0 or 1, so a field that
        became writable reads 0 from the next push on)."""
        self.writebacks.labels("sent").inc(report.sent)
        self.writebacks.labels("failed").inc(report.failed)
        for kind, count in report.error_kinds.items():
            self.writeback_errors.labels(kind).inc(count)
        skipped = {"read_only": set(report.read_only_fields), "missing": set(report.missing_fields)}
        for name in DEFAULT_FIELDS.values():
            for reason in SKIP_REASONS:
                self.writeback_skipped_fields.labels(name, reason).set(1 if name in skipped[reason] else 0)

    def count_snapshots(self, report: SnapshotReport) -> None:
        """A snapshot push's calls, rows written and refused, and refusals by kind."""
        self.snapshot_calls.inc(report.calls)
        self.snapshots.labels("sent").inc(report.sent)
        self.snapshots.labels("failed").inc(report.failed)
        for kind, count in report.error_kinds.items():
            self.snapshot_errors.labels(kind).inc(count)

    def count_home(self, *, published: int = 0, failed: int = 0) -> None:
        """Home tab publishes: from `/slack/events` (a tab opened) and from a cycle's republish pass."""
        self.home_views.labels("published").inc(published)
        self.home_views.labels("failed").inc(failed)

    def set_rules(self, rulebook: RuleBook) -> None:
        self.rules_ok.set(1 if rulebook.healthy else 0)


def observe_cycle(metrics: Metrics, report: CycleReport, store: Store, *, clients: Clients | None = None,
                  rulebook: RuleBook | None = None) -> StoreFacts:
    """Bring the metrics up to date after a finished cycle; returns what the store said, for `/healthz`.

    With `clients`, API calls are counted across all stages (write-back and nudges included) and the
    Salesforce limit share is read; without, only the calls the sync stage reported are counted.
    """
    metrics.cycles.labels("ok" if report.ok else "failed").inc()
    metrics.cycle_seconds.observe(report.seconds)
    if report.sync is not None:
        for stream, count in report.sync.records.items():
            if count:
                metrics.records_synced.labels(stream).inc(count)
        for stream, stats in report.sync.streams.items():
            metrics.sync_seconds.labels(stream, "storing").inc(stats.storing)
            metrics.sync_seconds.labels(stream, "source").inc(max(stats.seconds - stats.storing, 0.0))
    if report.writeback is not None:
        metrics.count_writeback(report.writeback)
    if report.snapshots is not None:
        metrics.count_snapshots(report.snapshots)
    if report.notify is not None:
        metrics.nudges.labels("sent").inc(report.notify.sent)
        metrics.nudges.labels("failed").inc(report.notify.failed)
    if report.home is not None:
        metrics.count_home(published=report.home.published, failed=report.home.failed)
    if clients is not None:
        metrics.count_bulk(clients.salesforce)
        totals = {"salesforce": clients.salesforce.calls}
        if clients.zendesk is not None:
            totals["zendesk"] = clients.zendesk.calls
        if clients.slack is not None:
            totals["slack"] = clients.slack.calls
        metrics.count_calls(totals)
        usage = clients.salesforce.api_usage
        if usage is not None and usage.share is not None:
            metrics.salesforce_api_usage.set(usage.share)
    elif report.sync is not None:
        metrics.count_calls(report.sync.api_calls)
    if rulebook is not None:
        metrics.set_rules(rulebook)
    facts = read_store_facts(store)
    metrics.set_store_facts(facts)
    return facts
