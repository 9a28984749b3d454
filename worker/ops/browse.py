"""`healthbeat browse`: the store in Datasette (the `browse` extra), read-only, safe beside a running worker.

Read-only for real, whatever Datasette or a plugin installed beside it asks: every connection opens the file
with SQLite's `mode=ro` and `query_only`, and the connection Datasette would write through is refused. Not
`immutable=1`: that tells SQLite the file never changes, so it skips the WAL and its locks, and a page would
miss the worker's commits (or read a half-checkpointed file). In WAL mode a reader never blocks the worker's
writes, and Datasette stops every query after `sql_time_limit_ms`, so no read holds back a checkpoint for long;
a reader waits up to `BUSY_TIMEOUT` for the moment SQLite needs to itself (opening a WAL being recovered).

It shows customer data without a login, so it listens on loopback unless the operator says otherwise.
"""

from __future__ import annotations

import importlib
import ipaddress
import signal
import socket
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Final

from worker.errors import ConfigError, HealthbeatError, NoDatabase
from worker.ops.catalogue import DATABASE, TRUNCATE_CELLS, metadata
from worker.store import Store

INSTALL: Final = "pip install 'healthbeat[browse]'"
BUSY_TIMEOUT: Final = 5.0
"""Seconds a page's query waits for a lock SQLite takes briefly (WAL recovery) before it fails."""

SETTINGS: Final[dict[str, Any]] = {
    "sql_time_limit_ms": 1000,  # Datasette's default, said out loud: the longest any read may last
    "allow_download": False,  # a mutable database is never offered whole anyway; say so
    "truncate_cells_html": TRUNCATE_CELLS,
}


class BrowseUnavailable(HealthbeatError):
    """Datasette, the `browse` extra, is not installed."""

    exit_status = 2


class ReadOnly(sqlite3.OperationalError):
    """What a write through `healthbeat browse` meets, before SQLite would refuse it too."""


def check_datasette() -> None:
    try:
        importlib.import_module("datasette")
    except ImportError:
        raise BrowseUnavailable(f"healthbeat browse needs Datasette: {INSTALL}") from None


def check_host(host: str, *, allow_remote: bool) -> None:
    """Refuse an address others can reach unless `--allow-remote`: the pages show customer names, emails and
    ticket text to whoever asks, with no login."""
    if allow_remote or _is_loopback(host):
        return
    raise ConfigError(f"--host {host} would show customer data (names, emails, ticket text) to anyone who can "
                      f"reach it, with no login: browse listens on loopback (127.0.0.1, ::1 or localhost); "
                      f"reach it through an SSH tunnel, or pass --allow-remote behind a proxy that "
                      f"authenticates")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in found)


def check_store(db: Path) -> int:
    """The schema version of the store at `db`, read without writing: a missing file is not created, a file
    that is not a Healthbeat store is named."""
    if not db.is_file():
        raise NoDatabase(f"no database at {db}: check --db or HEALTHBEAT_DB, or run a cycle first "
                         f"(healthbeat run --once)")
    with closing(Store.open_readonly(db)) as store:
        try:
            return int(store.scalar("SELECT coalesce(max(version), 0) FROM schema_migrations"))
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            raise NoDatabase(f"{db} is not a Healthbeat store (it has no schema_migrations table): check --db "
                             f"or HEALTHBEAT_DB") from None


def read_only_uri(db: Path) -> str:
    return f"{db.resolve().as_uri()}?mode=ro"


def datasette_app(db: Path) -> Any:
    """The Datasette ASGI app over the store at `db` (named `healthbeat` in its URLs), with the catalogue."""
    return reads_only(read_only_datasette(db).app())


def read_only_datasette(db: Path) -> Any:
    """Datasette over the store at `db`, none of whose connections can write (`datasette.app.Datasette`)."""
    check_datasette()
    datasette = importlib.import_module("datasette.app")  # untyped: no stubs, no py.typed
    base: Any = importlib.import_module("datasette.database").Database

    class ReadOnlyDatabase(base):  # type: ignore[misc]
        """Datasette's database, every connection of it read-only."""

        def connect(self, write: bool = False) -> sqlite3.Connection:
            if write:
                raise ReadOnly(f"{DATABASE} is read-only in healthbeat browse")
            conn = sqlite3.connect(read_only_uri(Path(self.path)), uri=True, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            conn.execute("PRAGMA query_only = 1")
            self._all_file_connections.append(conn)
            return conn

    ds = datasette.Datasette(metadata=metadata(), settings=SETTINGS)
    ds.remove_database("_memory")  # Datasette adds an empty one when it is given no file
    ds.add_database(ReadOnlyDatabase(ds, path=str(db.resolve()), is_mutable=True), name=DATABASE)
    return ds


READ_METHODS: Final = frozenset({"GET", "HEAD"})

Asgi = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
                Awaitable[None]]


def reads_only(app: Asgi) -> Asgi:
    """Answer anything but GET and HEAD with 405 before Datasette sees it: every page, facet and canned query
    is a GET, and Datasette's POST endpoints (write queries, `/-/messages`, `/-/permissions`, a plugin's API)
    have nothing to do in a read-only browser."""

    async def guarded(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                      send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "http" and scope["method"] not in READ_METHODS:
            body = b"healthbeat browse is read-only: only GET and HEAD are answered\n"
            await send({"type": "http.response.start", "status": 405,
                        "headers": [(b"allow", b"GET, HEAD"), (b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return guarded


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts, so a port in use is one clear line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host} port {port} ({exc.strerror or exc}): choose another "
                          f"with --port") from None
    sock.listen(128)
    return sock


def serve(db: Path, host: str, port: int, *, allow_remote: bool = False, verbose: bool = False,
          ready: Callable[[str], None] = lambda url: None) -> None:
    """Serve the store until SIGINT or SIGTERM; `ready` gets the URL once the port listens."""
    check_datasette()
    check_host(host, allow_remote=allow_remote)
    check_store(db)
    app = datasette_app(db)
    import uvicorn

    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(app, log_config=None, log_level="info" if verbose else "warning", lifespan="on",
                            access_log=verbose)
    server = uvicorn.Server(config)
    ready(f"http://{shown}:{bound_port}/")
    with sock, _stopping_quietly():
        server.run(sockets=[sock])


@contextmanager
def _stopping_quietly() -> Iterator[None]:
    """uvicorn stops on SIGINT or SIGTERM, then raises the signal again under the handler it found: Python's
    would print a KeyboardInterrupt traceback, or end the process with status 143. Under this one, stopping
    is the end of the command: exit 0."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped(signum: int, frame: FrameType | None) -> None:
    """The signal uvicorn passes on once it has stopped: nothing left to do."""
