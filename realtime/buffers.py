"""Bounded buffers between threads: the only things the stages share.

Both kinds have the same ``put(item, stop)`` / ``get(timeout_s)`` interface:

- :class:`LatestSlot` holds one item and a put replaces what was not taken
  (latest wins): for live sources, so a consumer never works on a stale item
  and nothing grows when it is slower than the producer.
- :class:`BoundedQueue` blocks the producer when full (back-pressure): for
  files, so every item is processed, in order, with bounded memory.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Protocol


class Buffer(Protocol):
    maxsize: int

    def put(self, item: Any, stop: threading.Event | None = None) -> bool: ...

    def get(self, timeout_s: float) -> Any | None: ...

    def qsize(self) -> int: ...


class LatestSlot:
    """A single-slot buffer: put never blocks and replaces an item not yet taken."""

    maxsize = 1

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self.replaced = 0   # items overwritten before anyone took them (dropped frames)

    def put(self, item: Any, stop: threading.Event | None = None) -> bool:
        with self._cond:
            self.replaced += self._full
            self._item, self._full = item, True
            self._cond.notify_all()
        return True

    def get(self, timeout_s: float) -> Any | None:
        """The newest item not taken yet; None when none arrives within the timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._full, timeout_s):
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def qsize(self) -> int:
        return int(self._full)


class BoundedQueue:
    """A FIFO of at most `maxsize` items; put waits for room (back-pressure) unless stopped."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._queue: queue.Queue = queue.Queue(maxsize)

    def put(self, item: Any, stop: threading.Event | None = None) -> bool:
        """False when `stop` was set before there was room."""
        while True:
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                if stop is not None and stop.is_set():
                    return False

    def get(self, timeout_s: float) -> Any | None:
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def qsize(self) -> int:
        return self._queue.qsize()
