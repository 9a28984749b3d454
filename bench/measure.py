"""Timers for the benchmarks: wall time, CPU seconds (this process's and its finished children's), peak memory.

A measured step that must be alone (its peak memory, its CPU seconds) runs in a fresh spawned process
through `isolated`: peak RSS only ever grows within a process, so two sizes measured in one process would
report the larger twice.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any


@dataclass
class Timing:
    """Filled in when the `timed()` block ends."""

    wall: float = 0.0
    cpu: float = 0.0
    peak_rss_mb: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def cpu_seconds() -> float:
    """This process's CPU seconds plus those of its children once reaped: the worker scores a whole store
    and a backlog of texts in process pools, and their work is the worker's work."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def timed() -> Iterator[Timing]:
    timing = Timing()
    wall, cpu = time.perf_counter(), cpu_seconds()
    try:
        yield timing
    finally:
        timing.wall = time.perf_counter() - wall
        timing.cpu = cpu_seconds() - cpu
        timing.peak_rss_mb = peak_rss_mb()


def isolated(fn: Callable[..., Any], *args: Any, timeout: float = 3600.0) -> Any:
    """Run `fn(*args)` in a fresh spawned process and return its (picklable) result."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    # Not a daemon: the step may start a process pool of its own, as the worker does; it is joined below.
    process = context.Process(target=_run_child, args=(child, fn, args), daemon=False)
    process.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise TimeoutError(f"{getattr(fn, '__name__', fn)} did not finish within {timeout:.0f} s")
        ok, value = parent.recv()
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.terminate()
        parent.close()
    if not ok:
        raise RuntimeError(f"{getattr(fn, '__name__', fn)} failed in its process: {value}")
    return value


def _run_child(conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        conn.send((True, fn(*args)))
    except BaseException as exc:  # the parent must hear of any failure, not wait for a timeout
        import traceback

        conn.send((False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def machine() -> dict[str, str]:
    """The machine a run was measured on, for BENCHMARKS.md."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    memory = "?"
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            kb = next(int(line.split()[1]) for line in handle if line.startswith("MemTotal"))
        memory = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    sqlite = "?"
    try:
        import sqlite3

        sqlite = sqlite3.sqlite_version
    except ImportError:
        pass
    kernel = subprocess.run(["uname", "-sr"], capture_output=True, text=True, check=False).stdout.strip()  # noqa: S607
    return {"cpu": cpu, "nproc": str(os.cpu_count()), "memory": memory, "python": platform.python_version(),
            "sqlite": sqlite, "os": kernel or platform.platform(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
