"""The bounded in-memory event queue between the callers and the events thread.

Callers (``variation()``/``track()`` on any thread) append under a short lock
that the events thread never holds during I/O. When the queue is full the
oldest event is dropped and counted by reason; memory stays bounded. Each
event gets a sequence number, so ``flush()`` can wait for "everything queued
before the call".
"""

from __future__ import annotations

import threading
from collections import deque

__all__ = ["EventQueue"]


class EventQueue:
    """Items are ``(seq, kind, ts, unit, experiment, variation, event, value, attributes)``."""

    def __init__(self, capacity: int):
        self.capacity = max(int(capacity), 1)
        self._items: deque = deque(maxlen=self.capacity)
        self._lock = threading.Lock()
        self._seq = 0
        self.closed = False
        self.dropped: dict = {}  # reason -> events

    def append(self, items) -> int:
        """Queue event tuples (without seq); returns the queue length after (0 when closed)."""
        with self._lock:
            if self.closed:
                self._drop("closed", len(items))
                return 0
            q = self._items
            seq = self._seq
            for item in items:
                if len(q) == self.capacity:  # deque(maxlen) discards the oldest on append
                    self._drop("queue_full", 1)
                seq += 1
                q.append((seq, *item))
            self._seq = seq
            return len(q)

    def _drop(self, reason: str, n: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def drop(self, reason: str, n: int) -> None:
        """Count events lost elsewhere in the pipeline (spool full, close timeout, ...)."""
        with self._lock:
            self._drop(reason, n)

    def take(self, n: int) -> list:
        with self._lock:
            q = self._items
            popleft = q.popleft
            return [popleft() for _ in range(min(n, len(q)))]

    def close(self) -> None:
        with self._lock:
            self.closed = True

    def clear(self) -> int:
        with self._lock:
            n = len(self._items)
            self._items.clear()
            return n

    @property
    def last_seq(self) -> int:
        return self._seq

    def oldest_seq(self):
        try:
            return self._items[0][0]
        except IndexError:
            return None

    def __len__(self) -> int:
        return len(self._items)

    def units(self) -> list:
        """The queued events' units, oldest first (for tests and debugging)."""
        with self._lock:
            return [item[3] for item in self._items]
