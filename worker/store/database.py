"""The SQLite store: the one place where the worker's state lives, and the unit of every transaction.

Each stage records what it has done in the same transaction as its effect (a page of records and the
cursor that covers it; a state change and the outbox row for its nudge), so a crash at any line resumes
without loss and without repeats. Tables are named for people who open the file with `sqlite3` or
Datasette; the views at the end answer the common questions without reading the code.
"""

from __future__ import annotations

import itertools
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

from worker.clock import system_clock
from worker.errors import StoreLocked
from worker.store.schema import ACCOUNT_INDEX, MIGRATIONS

log = logging.getLogger(__name__)


def iso(moment: datetime) -> str:
    """The store's one timestamp form: UTC, second precision, `Z` suffix, so text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
        self._savepoints = itertools.count(1)
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
            # the activity indexes' hot pages, and a backfill takes markedly less CPU (measured: BENCHMARKS.md,
            # 'Figures behind the code'); memory grows by at most that much, whatever the store's size.
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
        """All-or-nothing: the unit of "upsert a page and advance its cursor".

        Nested use is a savepoint (as sqlite-utils' `atomic()` does): an inner block that fails is undone on its
        own, whatever the outer block then does with the error, and what it wrote is committed only with the
        outer transaction."""
        conn = self.conn
        if conn.in_transaction:
            savepoint = f"healthbeat_{next(self._savepoints)}"
            conn.execute(f"SAVEPOINT {savepoint}")
            try:
                yield conn
            except BaseException:
                conn.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
                conn.execute(f"RELEASE SAVEPOINT {savepoint}")
                raise
            conn.execute(f"RELEASE SAVEPOINT {savepoint}")
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
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, iso(system_clock())))
            log.info("store: applied migration %d", version)

    @contextmanager
    def account_index_deferred(self) -> Iterator[bool]:
        """Fill an empty activities table without its account index, then build the index in one pass.

        Kept up entry by entry, the index takes each activity to a random leaf, and once it outgrows the
        page cache most of those leaves are read back from the file: sorting every entry once at the end
        costs a fraction of that, the build included (measured: BENCHMARKS.md, 'Figures behind the code').
        Yields whether the index is deferred: only for a table with no activity, or one a first backfill
        killed before its end left without the index (it resumes the same way), so no cycle but a first one
        runs without it. The index is built on the way out, whatever ends the block."""
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
        with the full 64 MB on top of a backfill's it raised the worker's peak memory; with 16 MB the build
        adds nothing to the peak, and takes less time too (measured: BENCHMARKS.md, 'Figures behind the
        code')."""
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
