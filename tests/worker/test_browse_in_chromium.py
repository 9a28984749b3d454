"""`healthbeat browse` as ops uses it: the real command serving a store that real cycles filled, beside the worker
still holding it open and committing, looked at in a real headless Chromium (the Debian package, driven by
Playwright), and poked with requests that would write.

One store, one server and one browser for the whole module: each test adds a page load or two.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from connectors.sandboxes.world import advance, build_world, stir_trouble
from tests.conftest import RULES_DIR
from tests.worker.test_browse import start_browse
from worker.clock import ShiftedClock
from worker.config import load_settings
from worker.cycle import Cycle, build_clients
from worker.demo.harness import pick_changes, sandbox_environment, start_sandboxes
from worker.ops.catalogue import DATABASE, QUERIES, TABLES
from worker.rulebook.in_force import RuleBook
from worker.scoring.sentiment import VaderModel
from worker.store import Quarantined, Store

CHROMIUM = Path(os.environ.get("HEALTHBEAT_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium")
"""Chromium from the system's packages: the README's test command installs Debian's `chromium` where it is
missing; HEALTHBEAT_TEST_CHROMIUM names another build (Chrome, chromium-browser)."""
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

@dataclass
class Browsing:
    db: Path
    url: str
    store: Store  # the worker's own connection, open for the module like a running worker's
    cycle: Cycle
    browser: Browser


@pytest.fixture(scope="module")
def browsing(tmp_path_factory: pytest.TempPathFactory, vader: VaderModel) -> Iterator[Browsing]:
    """Two cycles three weeks apart, with a bad week for three accounts in between (so some turned red, fell
    and were nudged), a quarantined record, then `healthbeat browse --port 0` and one Chromium."""
    assert CHROMIUM.exists(), (f"these tests drive a real browser and found none at {CHROMIUM}: run the README's "
                               "test command (it installs Debian's chromium) or set HEALTHBEAT_TEST_CHROMIUM")
    folder = tmp_path_factory.mktemp("browse")
    clock = ShiftedClock()
    sandboxes = start_sandboxes(clock)
    usage = folder / "usage"
    usage.mkdir()
    world = build_world(sandboxes.salesforce, sandboxes.zendesk, sandboxes.slack, usage, accounts=18, seed=11,
                        now=clock())
    settings = load_settings(**sandbox_environment(sandboxes, folder / "hb.db", usage, RULES_DIR))
    store = Store(settings.db, lock=True)
    clients = build_clients(settings)
    cycle = Cycle(store, settings, RuleBook(settings.rules_dir), clients, clock=clock, sentiment=vader)
    server: subprocess.Popen[str] | None = None
    try:
        assert cycle.run().ok
        troubled, silent = pick_changes(store)
        start = clock()
        clock.offset += timedelta(days=21)
        advance(world, start, clock(), quiet=[silent, *troubled])
        stir_trouble(world, troubled, clock())
        assert cycle.run().ok
        with store.transaction():
            store.quarantine([Quarantined("zendesk", "tickets", None, "ticket 7: no requester", {"id": 7})], clock())
        server, url = start_browse(settings.db, folder)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                yield Browsing(settings.db, url, store, cycle, browser)
            finally:
                browser.close()
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                server.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.communicate()
            assert server.returncode == 0, "Ctrl-C should stop browse with exit status 0"
        clients.close()
        store.close()
        sandboxes.stop()


@pytest.fixture
def page(browsing: Browsing) -> Iterator[Page]:
    opened = browsing.browser.new_page()
    yield opened
    opened.close()


def _rows(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, params).fetchall()


def _cells(page: Page, column: str) -> list[str]:
    return [text.strip() for text in page.locator(f"table.rows-and-columns tbody td.col-{column}").all_inner_texts()]


# -- what ops sees -------------------------------------------------------------------------------------------


def test_the_index_lists_every_visible_table_with_its_description(browsing: Browsing, page: Page) -> None:
    page.goto(browsing.url)

    catalogue = page.locator("table.healthbeat-catalogue tbody tr")
    shown = {row[0]: row[2] for row in (line.split("\t") for line in catalogue.all_inner_texts())}
    assert shown == {name: table.description for name, table in TABLES.items() if not table.hidden}
    for query in QUERIES.values():
        assert page.get_by_role("link", name=query.title).is_visible()


def test_a_facet_by_band_counts_the_scores_and_a_click_filters_them(browsing: Browsing, page: Page) -> None:
    red = sorted(str(r[0]) for r in _rows(browsing.db, "SELECT account_id FROM scores WHERE band = 'red'"))
    page.goto(f"{browsing.url}{DATABASE}/scores")

    facet = page.locator("#facet-band")
    assert facet.get_by_role("listitem").filter(has_text="red").inner_text().split() == ["red", str(len(red))]
    facet.get_by_role("link", name="red", exact=True).click()
    page.wait_for_url("**band=red**")

    assert sorted(_cells(page, "account_id")) == red
    assert set(_cells(page, "band")) == {"red"}


def test_account_health_facets_by_owner(browsing: Browsing, page: Page) -> None:
    owners = _rows(browsing.db, "SELECT owner, count(*) FROM account_health GROUP BY owner ORDER BY 2 DESC, 1")
    page.goto(f"{browsing.url}{DATABASE}/account_health")

    items = page.locator("#facet-owner li").all_inner_texts()
    assert sorted(items) == sorted(f"{owner} {count}" for owner, count in owners)


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_each_canned_query_returns_rows(browsing: Browsing, page: Page, name: str) -> None:
    page.goto(f"{browsing.url}{DATABASE}/{name}")

    assert page.locator("h1").inner_text().strip() == QUERIES[name].title
    assert page.locator(".message-error").count() == 0
    assert page.locator("table.rows-and-columns tbody tr").count() > 0


def test_accounts_that_turned_red_this_week_are_the_troubled_ones(browsing: Browsing, page: Page) -> None:
    was_not_red = {str(r[0]) for r in _rows(browsing.db, "SELECT DISTINCT account_id FROM score_history "
                                                         "WHERE band IN ('green', 'yellow')")}
    red_now = {str(r[0]) for r in _rows(browsing.db, "SELECT account_id FROM scores WHERE band = 'red'")}
    page.goto(f"{browsing.url}{DATABASE}/turned_red_this_week")

    assert set(_cells(page, "account_id")) == red_now & was_not_red


def test_a_cycle_the_worker_commits_after_browse_started_shows_on_reload(browsing: Browsing, page: Page) -> None:
    page.goto(f"{browsing.url}{DATABASE}/last_cycles")
    before = int(_cells(page, "id")[0])

    browsing.cycle.run()
    page.reload()

    assert int(_cells(page, "id")[0]) == before + 1


def test_pages_leave_no_read_open_that_holds_back_the_workers_checkpoint(browsing: Browsing, page: Page) -> None:
    for path in ("", f"{DATABASE}/activities", f"{DATABASE}/score_history?_facet=day", f"{DATABASE}/last_cycles"):
        page.goto(f"{browsing.url}{path}")
    browsing.store.conn.execute("PRAGMA busy_timeout = 2000")

    busy, _, _ = browsing.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    assert busy == 0


# -- what it refuses -----------------------------------------------------------------------------------------


def _fingerprint(browsing: Browsing) -> tuple[str, int]:
    """The file's bytes (the database and its WAL) and SQLite's count of commits by other connections."""
    digest = hashlib.sha256()
    for suffix in ("", "-wal"):
        path = browsing.db.with_name(browsing.db.name + suffix)
        digest.update(path.read_bytes() if path.exists() else b"")
    (version,) = browsing.store.conn.execute("PRAGMA data_version").fetchone()
    return digest.hexdigest(), int(version)


WRITES = [("POST", f"/{DATABASE}/last_cycles"), ("POST", f"/{DATABASE}"), ("POST", f"/{DATABASE}/cycles"),
          ("POST", f"/{DATABASE}/-/create"), ("POST", f"/{DATABASE}/cycles/-/insert"),
          ("POST", f"/{DATABASE}/cycles/1/-/delete"), ("POST", "/-/messages"), ("POST", "/-/permissions"),
          ("PUT", f"/{DATABASE}/cycles"), ("DELETE", f"/{DATABASE}/cycles/1"), ("PATCH", f"/{DATABASE}/cycles/1")]


def test_every_request_that_could_write_is_refused_and_the_file_is_unchanged(browsing: Browsing) -> None:
    before = _fingerprint(browsing)
    statuses = {}
    with httpx.Client(base_url=browsing.url) as client:
        for method, path in WRITES:
            statuses[f"{method} {path}"] = client.request(method, path, data={"sql": "DELETE FROM cycles"}).status_code
        refused_sql = client.get(f"/{DATABASE}.json",
                                 params={"sql": "WITH doomed AS (SELECT 1) DELETE FROM cycles"}).json()
        download = client.get(f"/{DATABASE}.db").status_code

    assert set(statuses.values()) == {405}, statuses
    assert "readonly" in refused_sql["error"]
    assert download == 403
    assert _fingerprint(browsing) == before


def test_the_served_metadata_has_no_write_query(browsing: Browsing) -> None:
    served = httpx.get(f"{browsing.url}-/metadata.json").json()["databases"][DATABASE]["queries"]

    assert sorted(served) == sorted(QUERIES)
    assert [name for name, query in served.items() if query.get("write")] == []
