"""Evaluation summaries: how often each (flag, variation) was served, per flush window.

The client bumps a counter on every evaluation; it must cost almost nothing
and never lose an increment under threads, without a lock: each key has an
``itertools.count`` and the client calls ``next()`` on it (atomic under the
GIL). Reading a count must not use private state either, so the summary
reads a counter the same way, with ``next()``, and subtracts its own reads:
after ``r`` earlier reads, ``next()`` returns ``evaluations + r``.
"""

from __future__ import annotations

import itertools
import time

from ..evaluation import Reason
from ..wire import MAX_KEY_LENGTH, iso_ts

__all__ = ["EvaluationSummary", "served_counts"]

MAX_COUNTER_KEYS = 20000  # distinct (flag, variation) pairs counted
_NOT_FOUND = Reason.FLAG_NOT_FOUND
_overflow = itertools.count()  # absorbs counts of keys beyond the limit (never reported)


def served_counts(results):
    """The ``(flag, variation)`` keys a remote evaluation's results count as (one evaluation
    each): ``results`` maps flag keys to ``EvaluationResult``. Flags the ruleset does not
    know are not counted, nor keys longer than a summary may hold; no variation counts as
    ``""``. The service (answering ``POST /sdk/v1/evaluate``) and the edge (answering it
    from memory) both count with this."""
    for key, result in results.items():
        if result.reason == _NOT_FOUND or len(key) > MAX_KEY_LENGTH:
            continue
        variation = result.variation
        yield key, (variation[:MAX_KEY_LENGTH] if variation.__class__ is str else "")


class EvaluationSummary:
    """``counters`` maps ``(flag, variation)`` to a counter the evaluation path bumps."""

    def __init__(self):
        self.counters: dict = {}
        self._reads: dict = {}  # key -> next() calls made by take()
        self._reported: dict = {}  # key -> evaluations already reported
        self._since = time.time()

    def counter(self, key):
        """The counter of a ``(flag, variation)`` key (the rare path: a key not seen yet)."""
        flag = key[0]
        if (flag.__class__ is not str or len(flag) > MAX_KEY_LENGTH
                or len(self.counters) >= MAX_COUNTER_KEYS):
            return _overflow
        return self.counters.setdefault(key, itertools.count())

    def take(self) -> list[dict]:
        """Entries ``{flag, variation, count, start, end}`` for evaluations since the last take."""
        now = time.time()
        start, end = iso_ts(self._since), iso_ts(now)
        self._since = now
        counters = self.counters.copy()  # atomic under the GIL
        reads, reported = self._reads, self._reported
        out, idle = [], []
        for key, counter in counters.items():
            done = reads.get(key, 0)
            total = next(counter) - done
            reads[key] = done + 1
            delta = total - reported.get(key, 0)
            if delta > 0:
                reported[key] = total
                out.append({"flag": key[0], "variation": key[1], "count": delta,
                            "start": start, "end": end})
            else:
                idle.append(key)
        if len(counters) > MAX_COUNTER_KEYS // 2:  # forget keys idle for a whole window
            for key in idle:
                self.counters.pop(key, None)
                reads.pop(key, None)
                reported.pop(key, None)
        return out
