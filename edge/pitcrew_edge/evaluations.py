"""Evaluations the edge answers itself, counted per environment and sent upstream in bulk.

When the edge answers ``POST /sdk/v1/evaluate`` from memory the service never
sees the request, so the edge counts what the service would have counted
(:func:`pitcrew.events.summary.served_counts`, the rule the service applies to
its own remote evaluations) and forwards the counts as the ``evaluations``
part of an ordinary ``POST /sdk/v1/events`` batch, exactly what an SDK sends
(docs/delivery.md, docs/lifecycle.md):

* counting is the SDK's own :class:`~pitcrew.events.summary.EvaluationSummary`
  (one per environment): a dict lookup and a ``next()`` per flag, on the event
  loop, no I/O;
* every ``evaluation_flush`` seconds, and at shutdown, each environment's new
  counts are taken and merged into its *carry* (counts of one
  ``(flag, variation)`` add up; the window's first start and last end are
  kept), and the carry is cut into batches by the SDK's
  :func:`~pitcrew.events.batching.build_batch` (its batch id, its size limits);
* a batch keeps its id and bytes until the service accepts it (2xx): a flush
  that failed (unreachable, timeout, 408/429/5xx) is resent unchanged by the
  next one, so a batch the service committed but whose answer was lost is
  counted once (the service records the id, ``evaluation_batches``); what was
  counted meanwhile waits in the carry and follows in the next batch;
* memory is bounded: at most ``evaluation_entries`` distinct
  ``(environment, flag, variation)`` keys are counted and carried, beyond them
  counts are dropped (``pitcrew_edge_flag_evaluations_dropped_total``), and
  one batch (at most 1 MiB of JSON) per environment waits for the service.
"""

from __future__ import annotations

import asyncio
import logging

from pitcrew.events.batching import Batch, build_batch
from pitcrew.events.summary import EvaluationSummary, served_counts
from pitcrew.wire import MAX_EVALUATION_ENTRIES

log = logging.getLogger("pitcrew.edge")

__all__ = ["EvaluationCounts", "Tally"]


class Tally:
    """One environment's counts: ``summary`` (bumped per evaluation), ``carry`` (taken,
    not yet in a batch: ``{(flag, variation): [count, start, end]}``) and ``pending``
    (the batch sent and not yet accepted, with the number of evaluations in it)."""

    __slots__ = ("environment", "secret", "summary", "carry", "pending", "pending_count", "metric")

    def __init__(self, environment: str, secret: str, metric):
        self.environment = environment
        self.secret = secret  # an SDK key of the environment, for the upstream requests
        self.summary = EvaluationSummary()
        self.carry: dict = {}
        self.pending: Batch | None = None
        self.pending_count = 0
        self.metric = metric

    def undelivered(self) -> int:
        """Evaluations counted and not yet accepted upstream (those taken already)."""
        return self.pending_count + sum(entry[0] for entry in self.carry.values())


class EvaluationCounts:
    """Every environment's :class:`Tally`; ``max_entries`` bounds the distinct keys."""

    def __init__(self, max_entries: int, evaluated, dropped):
        self.max_entries = max_entries
        self.tallies: dict[str, Tally] = {}
        self._evaluated = evaluated  # prometheus Counter(environment)
        self._dropped = dropped  # prometheus Counter

    # ------------------------------------------------------------------ the request path

    def count(self, environment: str, secret: str, results: dict) -> None:
        """Count a remote evaluation's results (``{flag: EvaluationResult}``) answered by the edge."""
        tally = self.tallies.get(environment)
        if tally is None:
            tally = self.tallies[environment] = Tally(environment, secret,
                                                      self._evaluated.labels(environment))
        counters = tally.summary.counters
        n = 0
        for key in served_counts(results):
            counter = counters.get(key)
            if counter is None:
                counter = self._counter(tally, key)
            next(counter)
            n += 1
        if n:
            tally.metric.inc(n)

    def _counter(self, tally: Tally, key):
        """The rare path, a key not counted yet: the summary's counter, if the limit allows."""
        if self.entries() >= self.max_entries:
            return _Dropping(self._dropped)
        return tally.summary.counter(key)

    def entries(self) -> int:
        return sum(len(t.summary.counters) for t in self.tallies.values())

    # ------------------------------------------------------------------ the flush

    def take(self, tally: Tally) -> None:
        """Move the counts made since the last take into ``tally.carry`` (adding up). Runs in a
        thread beside the loop's counting, as the SDK's summary is taken beside its callers."""
        carry = tally.carry
        others = list(self.tallies.values())  # one step under the GIL: the loop may add a tally meanwhile
        room = self.max_entries - sum(len(t.carry) for t in others if t is not tally)
        for entry in tally.summary.take():
            key = (entry["flag"], entry["variation"])
            held = carry.get(key)
            if held is None:
                if len(carry) >= room:
                    self._dropped.inc(entry["count"])
                    continue
                carry[key] = [entry["count"], entry["start"], entry["end"]]
            else:
                held[0] += entry["count"]
                held[1] = min(held[1], entry["start"])  # ISO 8601 UTC, fixed width: sorts as time
                held[2] = max(held[2], entry["end"])

    async def next_batch(self, tally: Tally) -> Batch | None:
        """``tally.pending``, or a new batch cut from the carry (then pending), or None.

        The body is built (JSON, gzip) in a thread: a carry of thousands of keys takes
        tens of milliseconds, which the event loop's requests must not wait for. Only
        the flush (one at a time) changes the carry, so it is the same after the await;
        cancelled meanwhile, the carry is left whole."""
        if tally.pending is not None:
            return tally.pending
        if not tally.carry:
            return None
        entries = [{"flag": flag, "variation": variation, "count": count, "start": start, "end": end}
                   for (flag, variation), (count, start, end) in tally.carry.items()]
        batch, _rest, leftover, _bad = await asyncio.to_thread(build_batch, [], entries[:MAX_EVALUATION_ENTRIES])
        leftover += entries[MAX_EVALUATION_ENTRIES:]
        tally.carry = {(e["flag"], e["variation"]): [e["count"], e["start"], e["end"]] for e in leftover}
        tally.pending = batch
        tally.pending_count = sum(e["count"] for e in entries) - sum(e["count"] for e in leftover)
        return batch

    def delivered(self, tally: Tally) -> int:
        """The pending batch was accepted (or refused for good): forget it; its evaluations."""
        n = tally.pending_count
        tally.pending = None
        tally.pending_count = 0
        return n

    def forget(self, environment: str) -> int:
        """Drop an environment's counts (its keys are refused); the evaluations dropped."""
        tally = self.tallies.pop(environment, None)
        if tally is None:
            return 0
        self.take(tally)
        n = tally.undelivered()
        self._dropped.inc(n)
        return n


class _Dropping:
    """Stands in for a counter beyond the limit: each ``next()`` is a dropped evaluation."""

    __slots__ = ("_metric",)

    def __init__(self, metric):
        self._metric = metric

    def __next__(self):
        self._metric.inc()
        return 0
