"""The SQLite store: the one place where the worker's state lives, and the unit of every transaction.

Each stage records what it has done in the same transaction as its effect (a page of records and the
cursor that covers it; a state change and the outbox row for its nudge), so a crash at any line resumes
without loss and without repeats. Tables are named for people who open the file with `sqlite3` or
Datasette; the views at the end answer the common questions without reading the code.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

log = logging.getLogger(__name__)

# Each migration is applied once, in order, inside a transaction; never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        source TEXT NOT NULL, source_id TEXT NOT NULL, name TEXT, email TEXT, role TEXT,
        timezone TEXT, is_active INTEGER NOT NULL DEFAULT 1, modstamp TEXT,
        PRIMARY KEY (source, source_id));
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, type TEXT, industry TEXT, website TEXT, owner_id TEXT,
        annual_revenue REAL, contracted_seats REAL, override_value REAL, override_reason TEXT,
        override_until TEXT, is_deleted INTEGER NOT NULL DEFAULT 0, merged_into TEXT, modstamp TEXT);
    CREATE TABLE opportunities (
        id TEXT PRIMARY KEY, account_id TEXT, name TEXT, type TEXT, stage TEXT, amount REAL,
        close_date TEXT, is_closed INTEGER, is_won INTEGER, is_deleted INTEGER NOT NULL DEFAULT 0,
        modstamp TEXT);
    CREATE INDEX opportunities_account ON opportunities (account_id);
    CREATE TABLE activities (
        source TEXT NOT NULL, source_id TEXT NOT NULL, kind TEXT NOT NULL, account_id TEXT,
        related_id TEXT, parent_id TEXT, occurred_at TEXT NOT NULL, direction TEXT, subject TEXT,
        text TEXT, text_hash TEXT, sentiment REAL, status TEXT, priority TEXT, closed_at TEXT,
        is_deleted INTEGER NOT NULL DEFAULT 0, modstamp TEXT,
        PRIMARY KEY (source, source_id));
    CREATE INDEX activities_account ON activities (account_id, kind, occurred_at);
    CREATE INDEX activities_related ON activities (related_id) WHERE account_id IS NULL;
    CREATE TABLE zendesk_organizations (
        id INTEGER PRIMARY KEY, name TEXT, external_id TEXT, domains TEXT, account_id TEXT,
        mapped_by TEXT);
    CREATE TABLE usage_daily (
        account_id TEXT NOT NULL, day TEXT NOT NULL, active_users INTEGER NOT NULL,
        events INTEGER NOT NULL, features_used TEXT NOT NULL, seats INTEGER, source_file TEXT,
        PRIMARY KEY (account_id, day));
    CREATE TABLE sentiment_cache (
        text_hash TEXT NOT NULL, model TEXT NOT NULL, compound REAL NOT NULL,
        PRIMARY KEY (text_hash, model));
    CREATE TABLE sync_state (
        stream TEXT PRIMARY KEY, cursor TEXT, records INTEGER NOT NULL DEFAULT 0, updated_at TEXT);
    CREATE TABLE scores (
        account_id TEXT PRIMARY KEY, score REAL, band TEXT, computed_score REAL, trend TEXT,
        trend_delta REAL, reason TEXT, coverage REAL, churn_risk REAL, expansion_readiness REAL,
        confidence TEXT, overridden INTEGER NOT NULL DEFAULT 0, measures TEXT, segment TEXT,
        scorecard_hash TEXT, scored_at TEXT);
    CREATE TABLE score_history (
        account_id TEXT NOT NULL, day TEXT NOT NULL, score REAL, band TEXT, churn_risk REAL,
        expansion_readiness REAL, coverage REAL, scored_at TEXT,
        PRIMARY KEY (account_id, day));
    CREATE TABLE alerts (
        rule TEXT NOT NULL, account_id TEXT NOT NULL, state TEXT NOT NULL, since TEXT,
        pending_cycles INTEGER NOT NULL DEFAULT 0, episode INTEGER NOT NULL DEFAULT 0,
        last_notified_at TEXT, rule_hash TEXT, updated_at TEXT,
        PRIMARY KEY (rule, account_id));
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT, dedup_key TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
        account_id TEXT, payload TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, remote_ref TEXT, created_at TEXT NOT NULL,
        sent_at TEXT);
    CREATE INDEX outbox_status ON outbox (kind, status);
    CREATE TABLE writeback_state (
        account_id TEXT PRIMARY KEY, fields TEXT NOT NULL, written_at TEXT NOT NULL);
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, stream TEXT NOT NULL,
        source_id TEXT, reason TEXT NOT NULL, raw TEXT, seen_at TEXT NOT NULL);
    CREATE TABLE cycles (
        id INTEGER PRIMARY KEY AUTOINCREMENT, started_at TEXT NOT NULL, finished_at TEXT,
        status TEXT NOT NULL, summary TEXT);
    CREATE VIEW account_health AS
        SELECT a.id AS account_id, a.name, u.name AS owner, s.score, s.band, s.trend, s.reason,
               s.coverage, s.churn_risk, s.expansion_readiness, s.overridden, s.scored_at
        FROM accounts a LEFT JOIN scores s ON s.account_id = a.id
        LEFT JOIN users u ON u.source = 'salesforce' AND u.source_id = a.owner_id
        WHERE a.is_deleted = 0;
    CREATE VIEW open_alerts AS
        SELECT al.rule, al.account_id, a.name, al.state, al.since, al.episode, al.last_notified_at
        FROM alerts al JOIN accounts a ON a.id = al.account_id
        WHERE al.state IN ('pending', 'firing');
    CREATE VIEW pending_outbox AS
        SELECT id, kind, account_id, status, attempts, last_error, created_at FROM outbox
        WHERE status NOT IN ('sent', 'confirmed');
    """,
    """
    CREATE TABLE overrides (
        account_id TEXT PRIMARY KEY, value REAL NOT NULL, reason TEXT NOT NULL, until TEXT,
        set_by TEXT, set_at TEXT NOT NULL);
    """,
    """
    ALTER TABLE outbox ADD COLUMN not_before TEXT;
    ALTER TABLE outbox ADD COLUMN batch_key TEXT;
    CREATE TABLE silences (
        id INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT, account_id TEXT, owner TEXT, until TEXT NOT NULL,
        reason TEXT NOT NULL, created_by TEXT, created_at TEXT NOT NULL);
    DROP VIEW pending_outbox;
    CREATE VIEW pending_outbox AS
        SELECT id, kind, account_id, status, attempts, last_error, not_before, created_at FROM outbox
        WHERE status IN ('pending', 'inflight', 'failed', 'dead');
    """,
    """
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT, dedup_key TEXT NOT NULL, user_id TEXT NOT NULL,
        axis TEXT NOT NULL, verdict TEXT NOT NULL, rule TEXT NOT NULL, account_id TEXT NOT NULL,
        episode INTEGER NOT NULL, kind TEXT NOT NULL, user_name TEXT, channel_id TEXT, message_ts TEXT,
        action_ts TEXT, reason TEXT, proposed_value REAL, proposed_until TEXT, override_status TEXT,
        decided_by TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        UNIQUE (dedup_key, user_id, axis));
    CREATE INDEX feedback_rule ON feedback (rule, verdict);
    CREATE INDEX feedback_account ON feedback (account_id);
    CREATE TABLE feedback_messages (
        channel_id TEXT NOT NULL, message_ts TEXT NOT NULL, text TEXT NOT NULL, blocks TEXT NOT NULL,
        seen_at TEXT NOT NULL, PRIMARY KEY (channel_id, message_ts));
    """,
    # Work left for a later stage, per account, marked by triggers whatever path wrote: 'score' when the
    # data a score is made of changed (sync, sentiment, remapping, retention, the CLI, Slack buttons);
    # 'evaluate' and 'writeback' when a score row changed (the time it was computed apart). A stage reads
    # its marks, does the work and deletes exactly the marks it read in the same transaction as its
    # results, so a crash re-does the work and a change made meanwhile survives. `effective_at` is '' for
    # "now", or the time a future-dated activity (a scheduled meeting) starts to count. `version` grows
    # when a mark is made again, for the tables written beside a running cycle (overrides, from Slack
    # buttons); the hot tables do nothing on conflict (a trigger doing an upsert per activity costs twice
    # as much during a backfill, and only the cycle itself writes them).
    # `activities_unscored` holds the texts still waiting for a sentiment, in rowid order, so a cycle finds
    # the few new ones without reading the whole table.
    """
    CREATE TABLE account_changes (
        stage TEXT NOT NULL, account_id TEXT NOT NULL, effective_at TEXT NOT NULL DEFAULT '',
        version INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (stage, account_id, effective_at)) WITHOUT ROWID;
    CREATE INDEX activities_unscored ON activities (sentiment) WHERE sentiment IS NULL AND text IS NOT NULL
        AND text != '';
    CREATE TRIGGER activities_marked_on_insert AFTER INSERT ON activities WHEN NEW.account_id IS NOT NULL
    BEGIN
        INSERT INTO account_changes (stage, account_id, effective_at) VALUES ('score', NEW.account_id,
            CASE WHEN NEW.occurred_at > coalesce(NEW.modstamp, NEW.occurred_at) THEN NEW.occurred_at ELSE '' END)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER activities_marked_on_update AFTER UPDATE ON activities
    WHEN OLD.account_id IS NOT NEW.account_id OR OLD.kind IS NOT NEW.kind OR OLD.occurred_at IS NOT NEW.occurred_at
        OR OLD.direction IS NOT NEW.direction OR OLD.sentiment IS NOT NEW.sentiment OR OLD.status IS NOT NEW.status
        OR OLD.priority IS NOT NEW.priority OR OLD.closed_at IS NOT NEW.closed_at
        OR OLD.is_deleted IS NOT NEW.is_deleted
    BEGIN
        INSERT INTO account_changes (stage, account_id)
            SELECT 'score', OLD.account_id WHERE OLD.account_id IS NOT NULL
            ON CONFLICT DO NOTHING;
        INSERT INTO account_changes (stage, account_id, effective_at)
            SELECT 'score', NEW.account_id,
                   CASE WHEN NEW.occurred_at > coalesce(NEW.modstamp, NEW.occurred_at) THEN NEW.occurred_at ELSE '' END
            WHERE NEW.account_id IS NOT NULL
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER activities_marked_on_delete AFTER DELETE ON activities WHEN OLD.account_id IS NOT NULL
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', OLD.account_id)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER usage_marked_on_insert AFTER INSERT ON usage_daily
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', NEW.account_id)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER usage_marked_on_update AFTER UPDATE ON usage_daily
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', OLD.account_id)
            ON CONFLICT DO NOTHING;
        INSERT INTO account_changes (stage, account_id) VALUES ('score', NEW.account_id)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER usage_marked_on_delete AFTER DELETE ON usage_daily
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', OLD.account_id)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER accounts_marked_on_insert AFTER INSERT ON accounts
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', NEW.id)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER accounts_marked_on_update AFTER UPDATE ON accounts
    WHEN OLD.type IS NOT NEW.type OR OLD.industry IS NOT NEW.industry
        OR OLD.contracted_seats IS NOT NEW.contracted_seats OR OLD.override_value IS NOT NEW.override_value
        OR OLD.override_reason IS NOT NEW.override_reason OR OLD.override_until IS NOT NEW.override_until
        OR OLD.is_deleted IS NOT NEW.is_deleted
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', NEW.id)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER opportunities_marked_on_insert AFTER INSERT ON opportunities WHEN NEW.account_id IS NOT NULL
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', NEW.account_id)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER opportunities_marked_on_update AFTER UPDATE ON opportunities
    WHEN OLD.account_id IS NOT NEW.account_id OR OLD.amount IS NOT NEW.amount
        OR OLD.close_date IS NOT NEW.close_date OR OLD.is_closed IS NOT NEW.is_closed
        OR OLD.is_won IS NOT NEW.is_won OR OLD.is_deleted IS NOT NEW.is_deleted
    BEGIN
        INSERT INTO account_changes (stage, account_id)
            SELECT 'score', OLD.account_id WHERE OLD.account_id IS NOT NULL
            ON CONFLICT DO NOTHING;
        INSERT INTO account_changes (stage, account_id)
            SELECT 'score', NEW.account_id WHERE NEW.account_id IS NOT NULL
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER opportunities_marked_on_delete AFTER DELETE ON opportunities WHEN OLD.account_id IS NOT NULL
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', OLD.account_id)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER scores_marked_on_insert AFTER INSERT ON scores
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('evaluate', NEW.account_id)
            ON CONFLICT DO UPDATE SET version = version + 1;
        INSERT INTO account_changes (stage, account_id) VALUES ('writeback', NEW.account_id)
            ON CONFLICT DO UPDATE SET version = version + 1;
    END;
    CREATE TRIGGER scores_marked_on_update AFTER UPDATE ON scores
    WHEN OLD.score IS NOT NEW.score OR OLD.band IS NOT NEW.band OR OLD.computed_score IS NOT NEW.computed_score
        OR OLD.trend IS NOT NEW.trend OR OLD.trend_delta IS NOT NEW.trend_delta OR OLD.reason IS NOT NEW.reason
        OR OLD.coverage IS NOT NEW.coverage OR OLD.churn_risk IS NOT NEW.churn_risk
        OR OLD.expansion_readiness IS NOT NEW.expansion_readiness OR OLD.confidence IS NOT NEW.confidence
        OR OLD.overridden IS NOT NEW.overridden OR OLD.measures IS NOT NEW.measures OR OLD.segment IS NOT NEW.segment
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('evaluate', NEW.account_id)
            ON CONFLICT DO UPDATE SET version = version + 1;
        INSERT INTO account_changes (stage, account_id) VALUES ('writeback', NEW.account_id)
            ON CONFLICT DO UPDATE SET version = version + 1;
    END;
    CREATE TRIGGER overrides_marked_on_insert AFTER INSERT ON overrides
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', NEW.account_id)
            ON CONFLICT DO UPDATE SET version = version + 1;
    END;
    CREATE TRIGGER overrides_marked_on_update AFTER UPDATE ON overrides
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', NEW.account_id)
            ON CONFLICT DO UPDATE SET version = version + 1;
    END;
    CREATE TRIGGER overrides_marked_on_delete AFTER DELETE ON overrides
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', OLD.account_id)
            ON CONFLICT DO UPDATE SET version = version + 1;
    END;
    """,
    # Every activity measure asks for live rows (`is_deleted = 0`) and the email ones for a direction: with
    # both in the account index, a lookup such as "the first reply after this email" walks the index alone
    # instead of reading each candidate row from the table. A whole re-score of 100,000 accounts: 32.5 ->
    # 29.4 CPU s. Each entry grows by a few bytes, and neither column changes after the insert but on a
    # delete. Sentiment stays out: it is written after the insert, and moving the entry of every text scored
    # cost 16 microseconds more per text (18 against 2) for 0.6 CPU s less per 50,000 accounts scored.
    """
    DROP INDEX activities_account;
    CREATE INDEX activities_account ON activities (account_id, kind, occurred_at, is_deleted, direction);
    """,
)


# The activities' account index as the latest migration defines it. A first backfill stores its activities
# without it and builds it once at the end (`Store.account_index_deferred`). If the worker dies before that
# end, it is built when the worker opens the store again, or at the end of the next sync.
ACCOUNT_INDEX = ("CREATE INDEX IF NOT EXISTS activities_account "
                 "ON activities (account_id, kind, occurred_at, is_deleted, direction)")


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """The store's one timestamp form: UTC, second precision, `Z` suffix, so text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class StoreLocked(Exception):
    """Another worker holds this database: two writers must never share one."""


@dataclass(frozen=True)
class Quarantined:
    source: str
    stream: str
    source_id: str | None
    reason: str
    raw: Any


class Store:
    """A thin owner of the sqlite-utils database: migrations, transactions and the worker's lock."""

    def __init__(self, path: Path | str, *, lock: bool = False, readonly: bool = False) -> None:
        self.path = Path(path)
        self.on_disk = str(path) != ":memory:"
        if self.on_disk and not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None
        if lock:
            self._acquire_lock()
        target = f"{self.path.resolve().as_uri()}?mode=ro" if readonly else str(path)
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, uri=readonly)
        self.db = sqlite_utils.Database(conn)
        conn.execute("PRAGMA busy_timeout = 5000")
        if readonly:
            return
        if self.on_disk:
            self.db.enable_wal()
            conn.execute("PRAGMA synchronous = NORMAL")  # durable at each checkpoint; safe with WAL
            # A backfill commits a page of 20,000 records at a time: checkpointing every 1,000 WAL pages (the
            # default) copied the same index pages into the database again and again. A 64 MB page cache keeps
            # the activity indexes' hot pages: a quarter less CPU for a backfill of 5,000 accounts (14.8 and
            # 11.7 s -> 11.0 and 8.3 s); memory grows by at most that much, whatever the store's size.
            conn.execute("PRAGMA wal_autocheckpoint = 10000")
            conn.execute("PRAGMA cache_size = -65536")
        conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()
        if lock and not self._has_account_index():  # only the worker's own: a command beside it only reads
            log.info("store: building the activities' account index (a first backfill stopped before it)")
            self._build_account_index()

    @classmethod
    def open_readonly(cls, path: Path | str) -> Store:
        """A second reader of a migrated database (a helper process): it can neither write nor migrate."""
        return cls(path, readonly=True)

    # -- lifecycle ---------------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        import fcntl

        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLocked(f"{self.path} is in use by another Healthbeat worker "
                              f"(lock file {lock_path})") from None
        self._lock_fd = fd

    def close(self) -> None:
        self.db.conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All-or-nothing: the unit of "upsert a page and advance its cursor"."""
        conn = self.conn
        if conn.in_transaction:  # nested use joins the outer transaction
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        self.conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                          "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        applied = {row[0] for row in self.conn.execute("SELECT version FROM schema_migrations")}
        for version, script in enumerate(MIGRATIONS, start=1):
            if version in applied:
                continue
            with self.transaction() as conn:
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, iso(utcnow())))
            log.info("store: applied migration %d", version)

    @contextmanager
    def account_index_deferred(self) -> Iterator[bool]:
        """Fill an empty activities table without its account index, then build the index in one pass.

        Kept up entry by entry, the index takes each activity to a random leaf, and once it outgrows the
        page cache most of those leaves are read back from the file: sorting every entry once at the end
        costs a fraction of that (a backfill of 10,000 accounts, 650,000 records: 2.4-2.8 CPU s less with
        the 0.7 s build included). Yields whether the index is deferred: only for a table with no activity,
        or one a first backfill killed before its end left without the index (it resumes the same way), so no
        cycle but a first one runs without it. The index is built on the way out, whatever ends the block."""
        missing = not self._has_account_index()
        if not missing and self.scalar("SELECT EXISTS (SELECT 1 FROM activities)"):
            yield False
            return
        with self.transaction() as conn:
            conn.execute("DROP INDEX IF EXISTS activities_account")
        try:
            yield True
        finally:
            self._build_account_index()

    def _has_account_index(self) -> bool:
        return bool(self.scalar("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'activities_account'"))

    def _build_account_index(self) -> None:
        """Sorted within a 16 MB page cache: SQLite's sorter takes as much memory as the page cache may, and
        with the full 64 MB on top of a backfill's it raised the worker's peak by 50 MB (333 -> 384 MB at
        20,000 accounts); with 16 MB the build of 983,000 entries added nothing and took 1.2 s, not 1.6."""
        (cache_size,) = self.conn.execute("PRAGMA cache_size").fetchone()
        self.conn.execute("PRAGMA cache_size = -16384")
        try:
            with self.transaction() as conn:
                conn.execute(ACCOUNT_INDEX)
        finally:
            self.conn.execute(f"PRAGMA cache_size = {int(cache_size)}")

    @property
    def schema_version(self) -> int:
        row = self.conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    # -- generic helpers ---------------------------------------------------------------------------
    def upsert(self, table: str, rows: Sequence[dict[str, Any]], pk: Sequence[str]) -> None:
        """Insert or replace by key: re-reading a record never duplicates it."""
        if not rows:
            return
        columns = list(rows[0].keys())
        placeholders = ", ".join("?" for _ in columns)
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in pk)
        conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        sql = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) "
               f"ON CONFLICT ({', '.join(pk)}) {conflict}")
        self.conn.executemany(sql, _values(rows, columns))

    def insert_missing(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Insert rows whose key is not there yet; existing rows (a better source) are left alone."""
        if not rows:
            return
        columns = list(rows[0].keys())
        sql = (f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
               f"VALUES ({', '.join('?' for _ in columns)})")
        self.conn.executemany(sql, _values(rows, columns))

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        cursor = self.conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    # -- sync cursors ------------------------------------------------------------------------------
    def cursor(self, stream: str) -> str | None:
        value = self.scalar("SELECT cursor FROM sync_state WHERE stream = ?", (stream,))
        return str(value) if value is not None else None

    def save_cursor(self, stream: str, cursor: str | None, records: int, now: datetime) -> None:
        self.conn.execute(
            "INSERT INTO sync_state (stream, cursor, records, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (stream) DO UPDATE SET cursor = excluded.cursor, "
            "records = sync_state.records + excluded.records, updated_at = excluded.updated_at",
            (stream, cursor, records, iso(now)))

    # -- quarantine --------------------------------------------------------------------------------
    def quarantine(self, items: Iterable[Quarantined], now: datetime) -> int:
        rows = [(q.source, q.stream, q.source_id, q.reason, json.dumps(q.raw, default=str), iso(now))
                for q in items]
        self.conn.executemany("INSERT INTO quarantine (source, stream, source_id, reason, raw, seen_at) "
                              "VALUES (?, ?, ?, ?, ?, ?)", rows)
        return len(rows)


def _values(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """Each row's values in column order (`itemgetter` does it in C: a backfill stores a million rows)."""
    if len(columns) == 1:
        return [(row[columns[0]],) for row in rows]
    return list(map(operator.itemgetter(*columns), rows))


def _statements(script: str) -> list[str]:
    """Split a migration into statements; a trigger's body (`BEGIN ...; ...; END;`) stays one statement."""
    statements, pending = [], ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip())
            pending = ""
    if pending.strip(" \n;"):
        statements.append(pending.strip())
    return statements
