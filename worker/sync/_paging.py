"""The threads and buffers behind a fast backfill: pages regrouped, and fetched while the last is stored.

Private to the sync package: each source's module uses them, nothing outside `worker.sync` should.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from worker.sync.report import Row

_Mark = TypeVar("_Mark")


def _chunks(responses: Iterable[list[Row] | _Mark], size: int, *, after_each: Callable[[], None]
            ) -> Iterator[list[Row] | _Mark]:
    """The client's responses (Salesforce picks their size) regrouped into pages of `size` records.

    A page is handed on as soon as it is full, before the next response is asked for. Anything that is not
    a list of records is a mark between responses (a window read to its end): the records before it are
    handed on first, as a page however short, then the mark, so that what the mark says holds for every page
    before it. `after_each` runs after each response or mark, before the next is asked for: the API budget
    check, so that once the budget is spent no further call is made. If it raises, the records already
    fetched are handed on first (they were paid for), then the error."""
    buffer: list[Row] = []
    for item in responses:
        if isinstance(item, list):
            buffer += item
            while len(buffer) >= size:
                yield buffer[:size]
                del buffer[:size]
        else:
            if buffer:
                yield buffer
                buffer = []
            yield item
        try:
            after_each()
        except Exception:
            if buffer:
                yield buffer
            raise
    if buffer:
        yield buffer


_Item = TypeVar("_Item")


class _Prefetched(Generic[_Item]):
    """Iterate `source` in a thread, up to `depth` items ahead, so that waiting for Salesforce and parsing
    its JSON overlap storing the page before.

    An error in the thread is raised to the consumer in order, after the items before it. Leaving the
    `with` block stops the thread and waits for it: a call already under way finishes, no new one starts,
    and the client (not thread-safe) is the caller's alone again."""

    def __init__(self, source: Iterator[_Item], *, depth: int = 2) -> None:
        self._source = source
        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="salesforce-pages", daemon=True)

    def __enter__(self) -> _Prefetched[_Item]:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def __iter__(self) -> Iterator[_Item]:
        while True:
            last, item = self._queue.get()
            if not last:
                yield item
            elif item is None:
                return
            else:
                raise item

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._hand_over((False, item)):
                    return
            self._hand_over((True, None))
        except BaseException as exc:  # any error: the consumer re-raises it, in order, in its own thread
            self._hand_over((True, exc))
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()

    def _hand_over(self, entry: tuple[bool, Any]) -> bool:
        """Wait for room in the queue; False once the consumer has gone."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False
