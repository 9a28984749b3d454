"""The three sandboxes as one standalone process: ``python -m connectors.sandboxes.server``.

What the demo does in-process, for a worker (or a test) in *another* process, or for a ``compose.yaml``
"sandboxes" service: start the Salesforce (HTTPS), Zendesk and Slack sandboxes on loopback, fill them with
the deterministic world of :mod:`connectors.sandboxes.world`, write an env file with the settings a worker needs,
print one JSON line ``{"event": "ready", ...}`` with the URLs, and serve until SIGTERM or SIGINT.

The world is built "as of" ``--now`` with the sandboxes' clock held at that moment while it is written, so
two servers given the same ``--accounts``, ``--seed`` and ``--now`` hold the same records, ids and stamps:
an uninterrupted run and a crashed run can be compared record for record.

A small control API on its own port lets another process change the world and look at it (JSON in, JSON
out, loopback only)::

    GET  /control/state        Account records (Id, Name, every custom field), Slack messages, API calls
    POST /control/advance      {"days": 21, "quiet": [ids], "trouble": [ids], "at": iso?}: move the
                               clock ``days`` ahead, then bring the world up to now (or ``at``):
                               ordinary activity for all but the quiet and troubled accounts, then a
                               bad week ending now for the troubled ones (angry inbound emails, urgent
                               tickets); all of it stamped as changed now
    POST /control/fault        {"system": "salesforce", "fault": "fail", ...keyword arguments}: one of
                               the sandboxes' fault injections (see FAULTS)
    POST /control/reset-calls  forget the recorded API calls

The sandboxes keep this package's dependency rule: nothing here imports ``worker``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from connectors.salesforce.sandbox import SalesforceSandbox
from connectors.sandboxes.world import World, advance, build_world, stir_trouble
from connectors.slack.sandbox import SlackSandbox
from connectors.zendesk.sandbox import ZendeskSandbox

__all__ = ["FAULTS", "SandboxClock", "SandboxServer", "ServerOptions", "main"]

# The sandboxes' own throw-away credentials (the same as the demo's).
CLIENT_ID = "healthbeat-demo"
CLIENT_SECRET = "demo-client-secret"  # noqa: S105 - the local sandbox's own credential
ZENDESK_EMAIL = "healthbeat@support.example"
ZENDESK_TOKEN = "demo-zendesk-token"  # noqa: S105
SLACK_TOKEN = "xoxb-demo-sandbox"  # noqa: S105
FALLBACK_CHANNEL = "cs-alerts"  # no "#": env-file parsers differ on where a comment starts

FAULTS: dict[tuple[str, str], str] = {
    ("salesforce", "fail"): "fail_next",  # status, error_code, message, path_contains, times
    ("salesforce", "stall"): "stall_next",  # seconds, path_contains, times
    ("salesforce", "drop"): "drop_next",  # path_contains, times
    ("salesforce", "expire_sessions"): "expire_sessions",
    ("salesforce", "fail_records"): "fail_records_next_update",  # record_ids, error_code, message
    ("zendesk", "fail"): "fail_next",  # status, retry_after, path_contains, times
    ("slack", "fail"): "fail_next",  # method, error, status, retry_after, times
}
"""(system, fault) → the sandbox method that injects it; the request's other keys are its arguments."""


class SandboxClock:
    """Real time plus an offset (days may pass in a call), held still while the world is written.

    Holding it still is what makes two servers' worlds identical: every stamp the sandboxes set while
    writing comes from the given moment, not from whenever each process happened to run.
    """

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self._held: datetime | None = None
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            if self._held is not None:
                return self._held
            return (datetime.now(UTC) + self.offset).replace(microsecond=0)

    @contextlib.contextmanager
    def held_at(self, moment: datetime) -> Iterator[datetime]:
        with self._lock:
            self._held = moment.astimezone(UTC).replace(microsecond=0)
            held = self._held
        try:
            yield held
        finally:
            with self._lock:
                self._held = None


@dataclass
class ServerOptions:
    """What `main` reads from the command line; see `_parse_args` for each option's meaning."""

    accounts: int = 30
    seed: int = 7
    now: datetime | None = None  # the world's "now"; None = when the server starts
    usage_dir: Path | None = None  # None = a temporary folder, removed at stop
    env_file: Path | None = None
    control_port: int = 0
    zendesk_requests_per_minute: int = 10


class ControlError(ValueError):
    """A control request that cannot be carried out; answered with 400 and the message."""


class SandboxServer:
    """The three sandboxes, their world, and the control endpoint, started and stopped as one."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.clock = SandboxClock()
        self.salesforce = SalesforceSandbox(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=self.clock)
        self.zendesk = ZendeskSandbox(email=ZENDESK_EMAIL, api_token=ZENDESK_TOKEN, clock=self.clock,
                                      incremental_requests_per_minute=options.zendesk_requests_per_minute)
        self.slack = SlackSandbox(token=SLACK_TOKEN)
        self.world: World | None = None
        self._world_until = datetime.min.replace(tzinfo=UTC)  # the world is written up to here
        self._own_usage_dir = options.usage_dir is None
        self.usage_dir = options.usage_dir or Path(tempfile.mkdtemp(prefix="healthbeat-sandbox-usage-"))
        self._control: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()  # one control change at a time

    @property
    def control_url(self) -> str:
        if self._control is None:
            raise RuntimeError("the control endpoint is not started")
        return f"http://127.0.0.1:{self._control.server_address[1]}"

    def start(self) -> None:
        for server in (self.salesforce, self.zendesk, self.slack):
            server.start()
        with self.clock.held_at(self.options.now or self.clock()) as now:
            self._world_until = now
            self.world = build_world(self.salesforce, self.zendesk, self.slack, self.usage_dir,
                                     accounts=self.options.accounts, seed=self.options.seed, now=now,
                                     fallback_channel=FALLBACK_CHANNEL)
        if self.options.env_file is not None:
            write_env_file(self.options.env_file, self.environment())
        self._control = ThreadingHTTPServer(("127.0.0.1", self.options.control_port), _control_handler(self))
        self._control.daemon_threads = True
        threading.Thread(target=self._control.serve_forever, kwargs={"poll_interval": 0.05},
                         name="sandbox-control", daemon=True).start()

    def stop(self) -> None:
        if self._control is not None:
            self._control.shutdown()
            self._control.server_close()
            self._control = None
        for server in (self.slack, self.zendesk, self.salesforce):
            server.stop()
        if self._own_usage_dir:
            shutil.rmtree(self.usage_dir, ignore_errors=True)

    def environment(self) -> dict[str, str]:
        """The settings a worker needs to use these sandboxes (names as in the worker's README)."""
        return {
            "SALESFORCE_LOGIN_URL": self.salesforce.url, "SALESFORCE_CLIENT_ID": CLIENT_ID,
            "SALESFORCE_CLIENT_SECRET": CLIENT_SECRET, "REQUESTS_CA_BUNDLE": self.salesforce.ca_cert_path,
            "ZENDESK_URL": self.zendesk.url, "ZENDESK_EMAIL": ZENDESK_EMAIL, "ZENDESK_API_TOKEN": ZENDESK_TOKEN,
            "HEALTHBEAT_ZENDESK_REQUESTS_PER_MINUTE": str(self.options.zendesk_requests_per_minute),
            "SLACK_BOT_TOKEN": SLACK_TOKEN, "SLACK_API_URL": self.slack.url,
            "SLACK_FALLBACK_CHANNEL": FALLBACK_CHANNEL, "USAGE_DIR": str(self.usage_dir),
        }

    def ready(self) -> dict[str, Any]:
        world = self._world()
        return {"event": "ready", "salesforce": self.salesforce.url, "zendesk": self.zendesk.url,
                "slack": self.slack.url, "control": self.control_url,
                "env_file": str(self.options.env_file) if self.options.env_file else None,
                "usage_dir": str(self.usage_dir), "accounts": [a.id for a in world.accounts],
                "seed": world.seed, "now": self.clock().isoformat()}

    # -- control operations -------------------------------------------------------------------------

    def advance(self, days: float = 0, quiet: list[str] | None = None, trouble: list[str] | None = None,
                at: str | None = None) -> dict[str, Any]:
        """Let ``days`` pass on the sandboxes' clock, then bring the world up to now (or to ``at``).

        Catching up means ordinary activity from where the world was last written to now for every
        account but the quiet and troubled ones (when at least a day is missing), then a bad week
        ending now for the troubled ones. Every Salesforce record written is stamped as changed now,
        as a late-logged email is: the next incremental pull must see it, whatever its cursor says.
        """
        world = self._world()
        unknown = sorted({*(quiet or ()), *(trouble or ())} - {a.id for a in world.accounts})
        if unknown:
            raise ControlError(f"no such accounts in this world: {', '.join(unknown)}")
        if days < 0:
            raise ControlError("days must not be negative")
        given = _aware(datetime.fromisoformat(at)) if at else None
        with self._lock:
            end = given or self.clock() + timedelta(days=days)
            if end < self._world_until:
                raise ControlError(f"the world is already written up to {self._world_until.isoformat()}")
            self.clock.offset += timedelta(days=days)
            with self.clock.held_at(end) as now, self._stamped_now():
                if now - self._world_until >= timedelta(days=1):
                    advance(world, self._world_until, now, quiet=[*(quiet or ()), *(trouble or ())])
                    self._world_until = now
                if trouble:
                    stir_trouble(world, trouble, now)
        return {"now": now.isoformat(), "clock_offset_seconds": self.clock.offset.total_seconds()}

    @contextlib.contextmanager
    def _stamped_now(self) -> Iterator[None]:
        """Records created inside get ``SystemModstamp`` = the clock's now when the block ends."""
        names = [spec.name for spec in self.salesforce.schema]
        before = {name: {r["Id"] for r in self.salesforce.records(name, include_deleted=True)} for name in names}
        yield
        for name in names:
            for record in self.salesforce.records(name, include_deleted=True):
                if record["Id"] not in before[name]:
                    self.salesforce.update(name, record["Id"], {})

    def fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        system, kind = spec.pop("system", None), spec.pop("fault", None)
        method_name = FAULTS.get((str(system), str(kind)))
        if method_name is None:
            raise ControlError(f"unknown fault {system!r}/{kind!r}; known: "
                               + ", ".join(f"{s}/{f}" for s, f in FAULTS))
        target = {"salesforce": self.salesforce, "zendesk": self.zendesk, "slack": self.slack}[str(system)]
        method: Callable[..., None] = getattr(target, method_name)
        args = [spec.pop("method")] if system == "slack" and "method" in spec else []
        try:
            method(*args, **spec)
        except (TypeError, ValueError) as exc:
            raise ControlError(f"{system}/{kind}: {exc}") from None
        return {"injected": f"{system}/{kind}"}

    def state(self) -> dict[str, Any]:
        """What a test compares: the Account fields we write, the Slack messages, and the traffic."""
        world = self._world()
        accounts = [{k: v for k, v in record.items() if k in ("Id", "Name", "SystemModstamp") or k.endswith("__c")}
                    for record in self.salesforce.records("Account")]
        salesforce_calls = self.salesforce.calls
        return {
            "now": self.clock().isoformat(),
            "clock_offset_seconds": self.clock.offset.total_seconds(),
            "accounts": accounts,
            "slack_messages": [asdict(m) for m in list(self.slack.messages)],
            "calls": {
                "salesforce": len(salesforce_calls),
                "salesforce_composite_updates": sum(1 for c in salesforce_calls if "composite/sobjects" in c.path),
                "salesforce_api_calls_used": self.salesforce.api_calls_used,
                "salesforce_bulk_jobs": self.salesforce.bulk.jobs_created,
                "zendesk": len(self.zendesk.calls),
                "slack": dict(Counter(c.method for c in list(self.slack.calls))),
            },
            "world": {"owners_without_slack": sorted(world.owners_without_slack),
                      "slack_user_ids": world.slack_user_ids, "fallback_channel_id": world.fallback_channel_id},
        }

    def reset_calls(self) -> dict[str, Any]:
        for server in (self.salesforce, self.zendesk, self.slack):
            server.reset_calls()
        return {"reset": True}

    def _world(self) -> World:
        if self.world is None:
            raise RuntimeError("the sandbox server is not started")
        return self.world


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ControlError(f"{moment.isoformat()} needs a time zone, e.g. +00:00")
    return moment


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """``KEY=value`` lines, unquoted (as ``docker run --env-file`` reads them), written atomically."""
    bad = [key for key, value in env.items() if "\n" in value or "\r" in value]
    if bad:
        raise ValueError(f"values with line breaks cannot go in an env file: {', '.join(bad)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(f"{key}={value}\n" for key, value in env.items()), encoding="utf-8")
    partial.replace(path)


def _control_handler(server: SandboxServer) -> type[BaseHTTPRequestHandler]:
    posts: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "/control/advance": lambda body: server.advance(**body),
        "/control/fault": server.fault,
        "/control/reset-calls": lambda body: server.reset_calls(),
    }

    class _ControlHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/control/state":
                self._answer(200, server.state())
            else:
                self._answer(404, {"error": f"no such control endpoint: GET {self.path}"})

        def do_POST(self) -> None:
            action = posts.get(self.path.split("?")[0])
            if action is None:
                self._answer(404, {"error": f"no such control endpoint: POST {self.path}"})
                return
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ControlError("the body must be a JSON object")
                self._answer(200, action(body))
            except (TypeError, ValueError) as exc:  # unknown keys, bad JSON or dates, ControlError
                self._answer(400, {"error": str(exc)})

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the worker's logs are what matter on this terminal."""

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return _ControlHandler


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m connectors.sandboxes.server",
        description="Run the Salesforce, Zendesk and Slack sandboxes with a deterministic world until "
                    "SIGTERM; print one JSON 'ready' line with their URLs.")
    parser.add_argument("--accounts", type=int, default=30, help="accounts in the world (default 30)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the world (default 7)")
    parser.add_argument("--now", type=datetime.fromisoformat, default=None,
                        help="the world's 'now', ISO 8601 with a zone (default: the start time); two "
                             "servers with the same accounts, seed and now hold the same world")
    parser.add_argument("--env-file", type=Path, help="write the worker's settings here (KEY=value lines)")
    parser.add_argument("--usage-dir", type=Path, help="folder for the usage files (default: a temporary one)")
    parser.add_argument("--port-file", type=Path, help="also write the ready line to this file")
    parser.add_argument("--control-port", type=int, default=0, help="port of the control API (default: free)")
    parser.add_argument("--zendesk-requests-per-minute", type=int, default=10,
                        help="the Zendesk sandbox's incremental-export limit, also given to the worker")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.now is not None and args.now.tzinfo is None:
        print("--now needs a time zone, e.g. 2026-01-05T12:00:00+00:00", file=sys.stderr)
        return 2
    server = SandboxServer(ServerOptions(
        accounts=args.accounts, seed=args.seed, now=args.now, usage_dir=args.usage_dir, env_file=args.env_file,
        control_port=args.control_port, zendesk_requests_per_minute=args.zendesk_requests_per_minute))
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server.start()
    try:
        line = json.dumps(server.ready())
        if args.port_file is not None:
            partial = args.port_file.with_name(args.port_file.name + ".partial")
            partial.write_text(line + "\n", encoding="utf-8")
            partial.replace(args.port_file)
        print(line, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
