"""Exposure deduplication: one exposure per (experiment, unit, variation), bounded LRU."""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["ExposureDedup"]

DEDUP_CAPACITY = 10000  # (experiment, unit, variation) triples remembered


class ExposureDedup:
    def __init__(self, capacity: int = DEDUP_CAPACITY):
        self._capacity = max(int(capacity), 1)
        self._seen: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.deduplicated = 0

    def first_time(self, key) -> bool:
        """True the first time ``key`` is seen (recently); later calls count a deduplication."""
        with self._lock:
            seen = self._seen
            if key in seen:
                seen.move_to_end(key)
                self.deduplicated += 1
                return False
            seen[key] = None
            if len(seen) > self._capacity:
                seen.popitem(last=False)
            return True

    def after_fork(self) -> None:
        self._lock = threading.Lock()
