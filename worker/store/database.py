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
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from worker.clock import system_clock
from worker.errors import HealthbeatError, SchemaTooNew, StoreBusy, StoreDamaged, StoreLocked, StoreUnusable
from worker.store.schema import ACCOUNT_INDEX, MIGRATIONS

log = logging.getLogger(__name__)


def iso(moment: datetime) -> str:
    """The store's one timestamp form: UTC, second precision, `Z` suffix, so text order is time order."""
    return moment.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"  # years zero-padded


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

    def __init__(self, path: Path | str, *, lock: bool = False, readonly: bool = False, reading: bool = False,
                 busy_timeout: float = 5.0) -> None:
        """`lock`: this is the worker (one per database file, however it is named). `reading`: a command that only
        reads, so a database a newer Healthbeat wrote may still be read. `busy_timeout`: how long a write waits
        for another connection's write to end, in seconds."""
        self.path = Path(path)
        self.on_disk = str(path) != ":memory:"
        self._savepoints = itertools.count(1)
        self._lock_fd: int | None = None
        self._conn: sqlite3.Connection | None = None
        try:
            self._open(lock=lock, readonly=readonly, reading=reading, busy_timeout=busy_timeout)
        except BaseException as exc:
            self.close()
            refusal = store_error(exc, self.path)
            if refusal is None:
                raise
            raise refusal from None

    def _open(self, *, lock: bool, readonly: bool, reading: bool, busy_timeout: float) -> None:
        if self.on_disk and not readonly:
            self._create_file()
        if lock:
            self._acquire_lock()
        target = f"{self.path.resolve().as_uri()}?mode=ro" if readonly else str(self.path)
        conn = self._conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, uri=readonly)
        self.db = sqlite_utils.Database(conn)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
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
        if not self._migrate(reading=reading):
            return
        if lock and not self._has_account_index():  # only the worker's own: a command beside it only reads
            log.info("store: building the activities' account index (a first backfill stopped before it)")
            self._build_account_index()

    def _create_file(self) -> None:
        """A new database is its owner's alone (0600): it holds customer emails and ticket text. SQLite gives
        the -wal and -shm files it creates beside it the database file's own permissions."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

    @classmethod
    def open_readonly(cls, path: Path | str) -> Store:
        """A second reader of a migrated database (a helper process): it can neither write nor migrate."""
        return cls(path, readonly=True)

    # -- lifecycle ---------------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        import fcntl

        lock_path = lock_file(self.path)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLocked(f"{self.path} is in use by another Healthbeat worker "
                              f"(lock file {lock_path})") from None
        self._lock_fd = fd

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def scratch_copy(self, *, on_disk_from: int = 256 * 1024 * 1024) -> Store:
        """A private copy to replay or rewrite (a backtest, a churn model's fit, a preview, a dry run) through
        SQLite's online backup: a consistent picture, written to without touching this store. A store of
        `on_disk_from` bytes or more is copied to a temporary file beside it, deleted when the copy closes: a
        copy in memory would double the worker's memory for the length of a weekly refit, and a container's
        limit would kill it; a smaller one is copied into memory."""
        size = self.path.stat().st_size if self.on_disk and self.path.exists() else 0
        if size < on_disk_from:
            copy = Store(":memory:")
        else:
            fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.scratch-", suffix=".db", dir=self.path.parent)
            os.close(fd)
            os.unlink(name)  # Store creates it 0600 itself
            copy = _ScratchStore(name)
        try:
            self.conn.backup(copy.conn)
        except BaseException:
            copy.close()
            raise
        return copy

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def backup(self, target: Path) -> None:
        """A consistent copy through SQLite's online backup, safe while the worker writes: a new file, its
        owner's alone like the database. A target that exists, or a folder that does not, is refused."""
        target = Path(target)
        if not target.parent.is_dir():
            raise StoreUnusable(f"cannot back up to {target}: the folder {target.parent} does not exist")
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise StoreUnusable(f"cannot back up to {target}: it exists; choose a new file") from None
        except OSError as exc:
            raise StoreUnusable(f"cannot back up to {target}: {exc.strerror}") from None
        try:
            destination = sqlite3.connect(target)
            try:
                self.conn.backup(destination)
            finally:
                destination.close()
        except BaseException:
            target.unlink(missing_ok=True)
            raise

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

    def _migrate(self, *, reading: bool) -> bool:
        """Apply the migrations this database lacks; False for a newer schema that a reader leaves alone."""
        self.conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                          "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        applied = {row[0] for row in self.conn.execute("SELECT version FROM schema_migrations")}
        newest = max(applied, default=0)
        if newest > len(MIGRATIONS):
            if not reading:
                raise SchemaTooNew(f"{self.path} has schema version {newest}, newer than this Healthbeat's "
                                   f"({len(MIGRATIONS)}): upgrade Healthbeat before running a command that writes "
                                   f"to it (commands that only read still work)")
            log.warning("store: %s has schema version %d, newer than this Healthbeat's (%d): reading it as it is",
                        self.path, newest, len(MIGRATIONS))
            return False
        for version, script in enumerate(MIGRATIONS, start=1):
            if version in applied:
                continue
            with self.transaction() as conn:
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, iso(system_clock())))
            log.info("store: applied migration %d", version)
        return True

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


def lock_file(path: Path) -> Path:
    """The worker's lock beside the database file itself, whatever path names it (a symlink, `..`, a relative
    path): two names for one file must not let two workers in."""
    real = Path(os.path.realpath(path))
    return real.with_name(real.name + ".lock")


def store_error(exc: BaseException, path: Path | str | None, *, opened: bool = False) -> HealthbeatError | None:
    """What an error from SQLite or the file system means for the operator, in one line naming the file and
    the way out; None for anything else (a bug, to be seen whole). `opened`: the database at `path` was open
    when the error came, so a file SQLite cannot open is another one (a backup's target, say)."""
    where = f"{path}" if path is not None else "the database (HEALTHBEAT_DB)"
    if isinstance(exc, sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "malformed" in str(exc) \
                or "not a database" in str(exc):
            return StoreDamaged(f"{where} is not a usable SQLite database ({exc}): restore the latest backup "
                                f"(made with `healthbeat db backup FILE`) in its place, or point HEALTHBEAT_DB at "
                                f"a new file")
        if primary == sqlite3.SQLITE_BUSY:
            return StoreBusy(f"{where} stayed busy with the worker's writes for longer than this command waits "
                             f"({exc}); try again in a minute")
        if primary == sqlite3.SQLITE_CANTOPEN and opened:
            return StoreUnusable(f"SQLite cannot open a file this command names ({exc}): its folder must exist "
                                 f"and be writable by this user")
        if primary == sqlite3.SQLITE_CANTOPEN:
            return StoreUnusable(f"cannot open {where} ({exc}): its folder must exist and be writable by this "
                                 f"user (SQLite keeps its -wal and -shm files beside it); check HEALTHBEAT_DB")
        if primary == sqlite3.SQLITE_READONLY:
            return StoreUnusable(f"{where} is read-only for this user ({exc}): the file and its folder must be "
                                 f"writable; check HEALTHBEAT_DB")
        if primary == sqlite3.SQLITE_FULL:
            return StoreUnusable(f"{where}: the disk is full ({exc})")
        return None
    if isinstance(exc, OSError) and not isinstance(exc, BlockingIOError):
        culprit = exc.filename or where
        return StoreUnusable(f"cannot create or open {where}: {exc.strerror or exc} ({culprit}); HEALTHBEAT_DB "
                             f"must name a file in a folder this user can write")
    return None


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


class _ScratchStore(Store):
    """A store in a temporary file (`Store.scratch_copy`): its file and SQLite's -wal and -shm go when it closes."""

    def close(self) -> None:
        super().close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            with suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")
