"""The three sandboxes in a child process, filled with a generated world and driven through a pipe.

A benchmark of the worker must measure the worker: with the sandboxes in the same process, their CPU
time, their memory (a million records) and their share of the GIL would be counted as the client's. So
the sandboxes run in a spawned child; the parent (or a measured grandchild) talks to them over loopback
HTTP exactly as the worker talks to Salesforce, and asks the child through a pipe for what a test would
read from a sandbox object: the calls it answered, the Slack messages it received, a change to the world.
"""

from __future__ import annotations

import gc
import multiprocessing
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

from bench.generate import LoadedWorld, WorldSpec, load_sandboxes, owner_id, stir_trouble
from bench.measure import isolated
from bench.zendesk import call_kind

SANDBOX_API_LIMIT = 10_000_000  # an org's daily limit grows with licences; the suite measures calls itself


@dataclass(frozen=True)
class Endpoints:
    """Where the child's sandboxes listen, and what they hold."""

    salesforce_url: str
    ca_cert_path: str
    zendesk_url: str
    slack_url: str
    usage_dir: Path
    world: LoadedWorld


def environment(endpoints: Endpoints, db: Path, rules_dir: Path, *, zendesk: bool = True, slack: bool = True,
                usage: bool = True) -> dict[str, object]:
    """The settings a deployment would set, pointed at the child's sandboxes (as `worker.demo.harness` does)."""
    from worker.demo.harness import (
        SANDBOX_CLIENT_ID,
        SANDBOX_CLIENT_SECRET,
        SANDBOX_SLACK_TOKEN,
        SANDBOX_ZENDESK_TOKEN,
    )

    env: dict[str, object] = {
        "HEALTHBEAT_DB": db, "HEALTHBEAT_RULES_DIR": rules_dir,
        "SALESFORCE_LOGIN_URL": endpoints.salesforce_url, "SALESFORCE_CLIENT_ID": SANDBOX_CLIENT_ID,
        "SALESFORCE_CLIENT_SECRET": SANDBOX_CLIENT_SECRET, "REQUESTS_CA_BUNDLE": endpoints.ca_cert_path,
        # The sandbox's export limit is per minute too; these benchmarks do not measure our pacing (Z1 does).
        "HEALTHBEAT_ZENDESK_REQUESTS_PER_MINUTE": 100_000, "HEALTHBEAT_ZENDESK_API_REQUESTS_PER_MINUTE": 100_000,
        "ZENDESK_URL": "", "ZENDESK_EMAIL": "",
        "ZENDESK_API_TOKEN": "", "SLACK_BOT_TOKEN": "", "SLACK_FALLBACK_CHANNEL": "",
    }
    if zendesk:
        env.update({"ZENDESK_URL": endpoints.zendesk_url, "ZENDESK_EMAIL": "healthbeat@support.example",
                    "ZENDESK_API_TOKEN": SANDBOX_ZENDESK_TOKEN})
    if slack:
        env.update({"SLACK_BOT_TOKEN": SANDBOX_SLACK_TOKEN, "SLACK_API_URL": endpoints.slack_url,
                    "SLACK_FALLBACK_CHANNEL": "#cs-alerts"})
    if usage:
        env["USAGE_DIR"] = endpoints.usage_dir
    return env


class SandboxServer:
    """Start with `with SandboxServer(spec) as server:`; `server.endpoints` says where to connect."""

    def __init__(self, spec: WorldSpec, *, usage_dir: Path | None = None, timeout: float = 1800.0) -> None:
        self.spec = spec
        self._own_usage_dir = usage_dir is None
        self._usage_dir = usage_dir or Path(tempfile.mkdtemp(prefix="healthbeat-bench-usage-"))
        self._timeout = timeout
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, spec, self._usage_dir),
                                        name="healthbeat-bench-sandboxes", daemon=True)
        self._child_conn = child
        self._endpoints: Endpoints | None = None

    @property
    def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            raise RuntimeError("the sandbox server is not started")
        return self._endpoints

    def start(self) -> Endpoints:
        self._process.start()
        self._child_conn.close()
        self._endpoints = self._receive()
        return self._endpoints

    def ask(self, command: str, *args: Any) -> Any:
        """Run one of the child's commands (see `_COMMANDS`) and return its answer."""
        self._conn.send((command, args))
        return self._receive()

    def isolated(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in a fresh process (`bench.measure.isolated`), once the child has collected the garbage of
        the loops before: its collector is off while loops run (`_without_collector_pauses`)."""
        self.ask("collect")
        return isolated(fn, *args)

    def _receive(self) -> Any:
        if not self._conn.poll(self._timeout):
            raise TimeoutError(f"the sandbox process did not answer within {self._timeout:.0f} s")
        ok, value = self._conn.recv()
        if not ok:
            raise RuntimeError(f"the sandbox process failed: {value}")
        return value

    def stop(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(("stop", ()))
                self._process.join(timeout=20)
            except (BrokenPipeError, OSError):
                pass
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)
        self._conn.close()
        if self._own_usage_dir:
            shutil.rmtree(self._usage_dir, ignore_errors=True)

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# -- the child --------------------------------------------------------------------------------------------

class _Child:
    def __init__(self, spec: WorldSpec, usage_dir: Path) -> None:
        from connectors.salesforce.sandbox import SalesforceSandbox
        from connectors.slack.sandbox import SlackSandbox
        from connectors.zendesk.sandbox import ZendeskSandbox
        from worker.clock import ShiftedClock
        from worker.demo.harness import (
            SANDBOX_CLIENT_ID,
            SANDBOX_CLIENT_SECRET,
            SANDBOX_SLACK_TOKEN,
            SANDBOX_ZENDESK_TOKEN,
        )

        self.clock = ShiftedClock()
        self.salesforce = SalesforceSandbox(client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET,
                                            clock=self.clock, daily_api_limit=SANDBOX_API_LIMIT)
        self.zendesk = ZendeskSandbox(email="healthbeat@support.example", api_token=SANDBOX_ZENDESK_TOKEN,
                                      clock=self.clock, api_requests_per_minute=SANDBOX_API_LIMIT,
                                      incremental_requests_per_minute=SANDBOX_API_LIMIT)  # as the worker is told
        self.slack = SlackSandbox(token=SANDBOX_SLACK_TOKEN)
        for server in (self.salesforce, self.zendesk, self.slack):
            server.start()
        self.world = load_sandboxes(self.salesforce, self.zendesk, self.slack, usage_dir, spec, self.clock())
        self.usage_dir = usage_dir

    def endpoints(self) -> Endpoints:
        return Endpoints(self.salesforce.url, self.salesforce.ca_cert_path, self.zendesk.url, self.slack.url,
                         self.usage_dir, self.world)

    def calls(self) -> dict[str, dict[str, int]]:
        """What each sandbox answered since the last reset, by stream or method."""
        salesforce: Counter[str] = Counter()
        for call in self.salesforce.calls:
            salesforce[_salesforce_kind(call.path, call.query)] += 1
            if call.record_count:
                salesforce["composite records"] += call.record_count
        zendesk = Counter(call_kind(call.path) for call in self.zendesk.calls)
        slack = Counter(call.method for call in self.slack.calls)
        return {"salesforce": dict(salesforce), "zendesk": dict(zendesk), "slack": dict(slack)}

    def reset_calls(self) -> None:
        for server in (self.salesforce, self.zendesk, self.slack):
            server.reset_calls()

    def trouble(self, account: str) -> int:
        owner = self.salesforce.get("Account", account)["OwnerId"]
        return stir_trouble(self.salesforce, account, owner or owner_id(0), self.clock())

    def shift_days(self, days: float) -> None:
        self.clock.offset += timedelta(days=days)

    def slack_messages(self) -> list[dict[str, Any]]:
        return [{"channel": m.channel, "user": m.user, "kind": m.kind, "text": m.text} for m in self.slack.messages]

    def account(self, account: str) -> dict[str, Any]:
        return self.salesforce.get("Account", account)

    def collect(self) -> int:
        return gc.collect()

    def stop(self) -> None:
        for server in (self.slack, self.zendesk, self.salesforce):
            server.stop()


_COMMANDS: dict[str, Callable[..., Any]] = {
    "calls": _Child.calls, "reset_calls": _Child.reset_calls, "trouble": _Child.trouble,
    "shift_days": _Child.shift_days, "slack_messages": _Child.slack_messages, "account": _Child.account,
    "collect": _Child.collect,
}


def _serve(conn: Connection, spec: WorldSpec, usage_dir: Path) -> None:
    try:
        child = _Child(spec, usage_dir)
        _without_collector_pauses()
        conn.send((True, child.endpoints()))
    except Exception as exc:
        conn.send((False, f"{type(exc).__name__}: {exc}"))
        return
    try:
        while True:
            command, args = conn.recv()
            if command == "stop":
                return
            try:
                conn.send((True, _COMMANDS[command](child, *args)))
            except Exception as exc:
                conn.send((False, f"{command}: {type(exc).__name__}: {exc}"))
    except EOFError:
        return
    finally:
        child.stop()


def _without_collector_pauses() -> None:
    """The child's cyclic garbage collector off while the loops are measured, the world it loaded set aside.

    A sandbox holds each open query's rows until its last page is read, as Salesforce holds a query's results
    on its side: at 20,000 accounts, hundreds of thousands of dicts. They made Python's collector walk every
    object the child holds a few times a loop, each time stopping every thread for about 2 s: 4.8-8.8 s a loop that
    landed at random in the floor's pages and the worker's alike (measured: BENCHMARKS.md, 'The fifth
    session'). Salesforce makes a client wait for no such thing. Reference counting still frees every page and
    every query's rows; what the collector alone would free waits for the next loop's start
    (`SandboxServer.isolated`)."""
    gc.collect()
    gc.freeze()
    gc.disable()


def _salesforce_kind(path: str, query: str) -> str:
    """A Salesforce call by what it did: `query Account`, `query_more`, `describe`, `composite`, `token`."""
    if path.endswith("/oauth2/token"):
        return "token"
    if "/composite/sobjects" in path:
        return "composite"
    if path.endswith("/describe"):
        return f"describe {path.rstrip('/').split('/')[-2]}"
    parts = path.rstrip("/").split("/")
    if "query" in parts or "queryAll" in parts:
        if parts[-1] in ("query", "queryAll"):
            soql = parse_qs(query).get("q", [""])[0]
            words = soql.split()
            sobject = next((words[i + 1] for i, w in enumerate(words[:-1]) if w.upper() == "FROM"), "?")
            return f"query {sobject}"
        return "query_more"
    return parts[-1] if parts else "?"
