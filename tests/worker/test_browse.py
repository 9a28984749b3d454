"""`healthbeat browse` without a browser: every table and view described, every canned query a SELECT that runs,
the refusals (no Datasette, a non-loopback address, no database) in one line, and no write through Datasette.

The pages themselves, in a real Chromium against a real server beside a running worker: test_browse_in_chromium.py.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from tests.worker.test_terminal_output import invoke
from worker.ops.browse import ReadOnly, read_only_datasette, read_only_uri
from worker.ops.catalogue import DATABASE, QUERIES, TABLES, metadata
from worker.store import Store


def start_browse(db: Path, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    """The console script's `browse` on a free loopback port; its URL from the line it prints when listening."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEALTHBEAT_", "SALESFORCE_", "ZENDESK_",
                                                                     "SLACK_", "USAGE_"))}
    process = subprocess.Popen([sys.executable, "-c", "from worker.cli import main; main()", "browse", "--db",
                                str(db), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, cwd=cwd)
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            if "http://" in line:
                return process, line.split(" at ", 1)[1].split()[0]
        if process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"browse did not start: {process.communicate()[1][-3000:]}")


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store with every migration applied and nothing else: the schema a future migration extends."""
    path = tmp_path_factory.mktemp("browse") / "healthbeat.db"
    Store(path).close()
    yield path


def _schema(db: Path) -> dict[str, set[str]]:
    """Every table and view a Healthbeat migration made, with its columns (SQLite's own `sqlite_*` tables are
    SQLite's to describe, and Datasette hides them)."""
    with closing(sqlite3.connect(db)) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                                                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")]
        return {name: {row[1] for row in conn.execute(f"PRAGMA table_xinfo({name})")} for name in names}


def test_every_table_and_view_in_the_schema_is_described(migrated: Path) -> None:
    undescribed = [name for name in _schema(migrated)
                   if name not in TABLES or not TABLES[name].title or not TABLES[name].description]

    assert undescribed == [], "add each to worker/ops/catalogue.py TABLES"


def test_no_description_names_a_table_the_schema_lacks(migrated: Path) -> None:
    assert sorted(set(TABLES) - set(_schema(migrated))) == []


def test_every_described_faceted_or_sortable_column_exists(migrated: Path) -> None:
    schema = _schema(migrated)
    missing = [f"{name}.{column}" for name, table in TABLES.items()
               for column in (*table.columns, *table.facets, *table.sortable, table.sort, table.sort_desc)
               if column is not None and column not in schema[name]]

    assert missing == []


def test_scores_and_account_health_facet_by_band_owner_and_segment() -> None:
    assert {"band", "segment"} <= set(TABLES["scores"].facets)
    assert {"band", "owner"} <= set(TABLES["account_health"].facets)


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_every_canned_query_runs_on_a_connection_that_cannot_write(migrated: Path, name: str) -> None:
    with closing(sqlite3.connect(read_only_uri(migrated), uri=True)) as conn:
        conn.execute("PRAGMA query_only = 1")
        cursor = conn.execute(QUERIES[name].sql)

        assert cursor.fetchall() == []  # an empty store: no rows, and no error
        assert cursor.description


def test_no_canned_query_is_a_datasette_write_query() -> None:
    queries = metadata()["databases"][DATABASE]["queries"]

    assert sorted(queries) == sorted(QUERIES)
    assert [name for name, query in queries.items() if query.get("write") or "on_success_message" in query] == []
    assert [name for name, query in queries.items()
            if not query["sql"].lstrip().upper().startswith(("SELECT", "WITH"))] == []


def test_a_write_through_datasette_itself_is_refused(migrated: Path) -> None:
    """What a write plugin or a write canned query would do: Datasette's own write path. It never gets a
    connection, and the file keeps its rows."""
    database = read_only_datasette(migrated).get_database(DATABASE)
    before = migrated.read_bytes()

    with pytest.raises(ReadOnly, match="read-only"):
        asyncio.run(database.execute_write("DELETE FROM schema_migrations"))

    assert migrated.read_bytes() == before


def test_datasette_reads_through_a_read_only_connection(migrated: Path) -> None:
    database = read_only_datasette(migrated).get_database(DATABASE)

    async def attempt() -> str:
        try:
            await database.execute("WITH gone AS (SELECT 1) DELETE FROM schema_migrations")
        except sqlite3.OperationalError as exc:
            return str(exc)
        return "written"

    assert "readonly" in asyncio.run(attempt())


def test_without_datasette_browse_says_which_extra_to_install_in_one_line(tmp_path: Path) -> None:
    """The extra left out: `import datasette` fails (None in sys.modules is how Python spells an import that
    must fail), in a process of its own."""
    result = healthbeat_without_datasette("browse", "--db", str(tmp_path / "hb.db"), cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.strip() == "healthbeat browse needs Datasette: pip install 'healthbeat[browse]'"
    assert result.stdout == ""


def healthbeat_without_datasette(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HEALTHBEAT_", "SALESFORCE_", "ZENDESK_",
                                                                       "SLACK_", "USAGE_"))}
    code = "import sys; sys.modules['datasette'] = None; from worker.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**clean, "COLUMNS": "200"}, cwd=cwd, timeout=60, check=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])  # noqa: S104 (the refusal under test)
def test_an_address_other_machines_reach_is_refused_and_says_why(host: str, migrated: Path, tmp_path: Path) -> None:
    result = invoke("browse", "--db", str(migrated), "--host", host, cwd=tmp_path)

    assert result.returncode == 2
    assert "customer data" in result.stderr and "--allow-remote" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_missing_database_is_named_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "hb.db"

    result = invoke("browse", "--db", str(missing), "--port", "0", cwd=tmp_path)

    assert result.returncode == 2
    assert f"no database at {missing}" in result.stderr
    assert not missing.parent.exists()


def test_a_file_that_is_not_a_store_is_named(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.commit()

    result = invoke("browse", "--db", str(other), "--port", "0", cwd=tmp_path)

    assert result.returncode == 2
    assert "is not a Healthbeat store" in result.stderr


def test_sigterm_stops_browse_with_exit_status_0(migrated: Path, tmp_path: Path) -> None:
    """A supervisor's SIGTERM (or Ctrl-C: the module in Chromium ends its server so) is how browse ends: not a
    traceback, not status 143."""
    server, url = start_browse(migrated, tmp_path)
    assert httpx.get(url).status_code == 200

    server.send_signal(signal.SIGTERM)
    _, stderr = server.communicate(timeout=10)

    assert server.returncode == 0
    assert stderr == ""
