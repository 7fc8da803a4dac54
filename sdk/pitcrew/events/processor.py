"""The event processor: callers' events -> batches -> several senders (docs/sdk-events.md).

Callers (``variation()``/``track()``, any thread) only append to the bounded
:class:`~pitcrew.events.queue.EventQueue` (about a microsecond, no I/O).

The **events thread** (``pitcrew-events``) turns the queue into batches
(:mod:`~pitcrew.events.batching`): as soon as ``FLUSH_AT`` events wait, on
the ``flush_interval`` timer (which also adds the evaluation summary), on
:meth:`EventProcessor.flush` and at close. Without a spool it builds a batch
only when a sender can take it soon (at most ``max_in_flight`` batches wait),
so memory stays bounded by ``max_queue`` plus the batches in flight, and a
full queue drops its oldest events (counted by reason). With ``spool_path``
every batch is written to disk first (:mod:`~pitcrew.events.spool`), so the
queue is drained as fast as the disk takes it and nothing is dropped while
the spool has room.

The **senders** (:mod:`~pitcrew.events.delivery`) POST the batches, up to
``max_in_flight`` at once, with the retry policy. Ids are fixed before the
first attempt, so a retry of a batch the service stored counts as duplicates
there.
"""

from __future__ import annotations

import logging
import marshal
import math
import os
import threading
import time
from collections import deque
from collections.abc import Mapping

from ..evaluation.bucketing import unit_of
from ..wire import EXPOSURE, MAX_EVENT_KEY_LENGTH, MAX_UNIT_LENGTH, TRACK
from ..wire import exposure_attributes as _exposure_attributes
from .batching import Batch, build_batch
from .dedup import DEDUP_CAPACITY, ExposureDedup
from .delivery import MAX_IN_FLIGHT, Delivery
from .queue import EventQueue
from .spool import Spool
from .summary import EvaluationSummary

log = logging.getLogger("pitcrew")

__all__ = ["EventProcessor"]

FLUSH_AT = 500  # queued events that make a batch before the timer
DROP_LOG_INTERVAL = 60.0  # at most one "dropped events" warning per interval
_INF = float("inf")


class EventProcessor:
    """Producer API (exposure, track, counters), control (start, flush, close, after_fork),
    and ``stats()``. ``transport_factory()`` makes one Transport per sender."""

    def __init__(self, transport_factory, *, flush_interval: float = 5.0, max_queue: int = 10000,
                 timeout: float = 5.0, spool_path: str | None = None,
                 max_in_flight: int = MAX_IN_FLIGHT, dedup_capacity: int = DEDUP_CAPACITY):
        self._transport_factory = transport_factory
        self._flush_interval = max(float(flush_interval), 0.01)
        self._max_queue = max(int(max_queue), 1)
        self._flush_at = max(1, min(FLUSH_AT, self._max_queue // 2))  # a small queue wakes sooner
        # With a spool, a queue this long is spilled raw: most of the queue stays free to
        # absorb the time a disk write takes in the middle of a burst.
        self._spill_at = max(self._flush_at, min(2 * FLUSH_AT, self._max_queue // 4))
        self._timeout = max(float(timeout), 0.01)
        self._spool_path = spool_path
        self._max_in_flight = max(int(max_in_flight), 1)
        self._dedup_capacity = dedup_capacity
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        """Fresh queue, counters, locks and threads (construction, and in a forked child)."""
        self.queue = EventQueue(self._max_queue)
        self.summary = EvaluationSummary()
        self.counters = self.summary.counters  # read by the client on every evaluation
        self.counter = self.summary.counter
        self.dedup = ExposureDedup(self._dedup_capacity)
        self._spool: Spool | None = None
        self._cond = threading.Condition(threading.Lock())
        self._carry: list = []  # items taken from the queue that did not fit a batch
        self._raw: deque = deque()  # spilled files to convert: [path, events, first seq]
        self._summary_carry: list = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._delivery = Delivery(self._transport_factory, self._cond, self._stop,
                                  timeout=self._timeout, max_in_flight=self._max_in_flight,
                                  on_idle=self._wake.set, batcher_done=self._batcher_done)
        self._flush_gen = 0
        self._flush_done = 0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._logged: set = set()
        self._drops_logged = (0, -_INF)  # (dropped total when last logged, when)
        self.invalid = 0

    # ================================================================= producer side

    def exposure(self, result, compiled, context) -> None:
        """Record an exposure for an in-experiment result, unless already seen. Never raises."""
        try:
            unit = result.unit
            if len(unit) > MAX_UNIT_LENGTH:
                self._invalid(f"exposure unit longer than {MAX_UNIT_LENGTH} characters")
                return
            exp_key, variation = result.experiment, result.variation
            if not self.dedup.first_time((exp_key, unit, variation)):
                return
            attrs = _exposure_attributes(compiled.experiment(exp_key) or {}, context)
            self._append(((EXPOSURE, time.time(), unit, exp_key, variation, None, None, attrs),))
        except Exception:
            log.debug("exposure not recorded", exc_info=True)

    def holdout_exposure(self, holdout) -> None:
        """Record a holdout exposure ``(experiment, variation, unit, unit_type)`` (an
        :class:`~pitcrew.evaluation.EvaluationResult`'s ``holdout``), unless already seen.
        Deduplicated with the experiment exposures, per (experiment, unit, variation).
        Never raises."""
        try:
            exp_key, variation, unit, unit_type = holdout
            if len(unit) > MAX_UNIT_LENGTH:
                self._invalid(f"exposure unit longer than {MAX_UNIT_LENGTH} characters")
                return
            if not self.dedup.first_time((exp_key, unit, variation)):
                return
            attrs = {"unit_type": unit_type}
            self._append(((EXPOSURE, time.time(), unit, exp_key, variation, None, None, attrs),))
        except Exception:
            log.debug("holdout exposure not recorded", exc_info=True)

    def track(self, event, context, value, unit_attrs) -> bool:
        """Queue the outcome events of one ``track()`` call. Never raises; False if not recorded."""
        try:
            if event.__class__ is not str and not isinstance(event, str):
                return self._invalid("track() needs an event key string")
            if not event or len(event) > MAX_EVENT_KEY_LENGTH:
                return self._invalid(
                    f"track() needs an event key of 1 to {MAX_EVENT_KEY_LENGTH} characters")
            event = str(event)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    return self._invalid("track() value must be a number or None")
                try:
                    if not math.isfinite(float(value)):
                        return self._invalid("track() value must be finite")
                except OverflowError:
                    return self._invalid("track() value is too large")
                value = int(value) if isinstance(value, int) else float(value)
            if context.__class__ is not dict and not isinstance(context, Mapping):
                return self._invalid("track() context must be an object")
            ts = time.time()
            items = []
            unit = unit_of(context.get("id"))
            if unit is not None and len(unit) <= MAX_UNIT_LENGTH:
                items.append((TRACK, ts, unit, None, None, event, value, {"unit_type": "id"}))
            for attr in unit_attrs:
                unit = unit_of(context.get(attr))
                if unit is not None and len(unit) <= MAX_UNIT_LENGTH:
                    items.append((TRACK, ts, unit, None, None, event, value, {"unit_type": attr}))
            if not items:
                return self._invalid("track() context has no unit (an 'id' or an experiment unit)")
            self._append(items)
            return True
        except Exception:
            log.debug("track event not recorded", exc_info=True)
            self.invalid += 1
            return False

    def _append(self, items) -> None:
        n = self.queue.append(items)
        if self._thread is None:
            self.start()
        if n >= self._flush_at and not self._wake.is_set():
            self._wake.set()

    def _invalid(self, why: str) -> bool:
        with self._cond:
            self.invalid += 1
        self._delivery.log_once(why, logging.WARNING, "event not recorded: %s", why)
        return False

    # ================================================================= control

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start the events thread (idempotent; not after close)."""
        with self._start_lock:
            if self._thread is not None or self._stop.is_set():
                return
            thread = threading.Thread(target=self._run, name="pitcrew-events", daemon=True)
            thread.start()
            self._thread = thread  # only a started thread is ever seen (close() joins it)

    def _batcher_done(self) -> bool:
        t = self._thread
        return t is None or not t.is_alive()

    def flush(self, timeout: float | None) -> bool:
        """Deliver everything queued so far; wait up to ``timeout`` seconds (0: just schedule).

        True when every event queued before the call was delivered or failed for good.
        """
        target = self.queue.last_seq
        with self._cond:
            self._flush_gen += 1
            gen = self._flush_gen
            self._delivery.open_gate()  # an explicit flush retries now, except after Retry-After
            self._cond.notify_all()
        self.start()
        self._wake.set()
        timeout = self._timeout if timeout is None else timeout
        deadline = time.monotonic() + max(float(timeout), 0.0)
        with self._cond:
            while self._flush_done < gen or self._oldest_pending() <= target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.5))
        return True

    def close(self, timeout: float) -> bool:
        """Deliver what is queued within ``timeout`` seconds, then stop. Returns in time.
        With a spool, what could not be delivered stays on disk for the next process."""
        timeout = max(float(timeout), 0.0)
        deadline = time.monotonic() + timeout
        self.queue.close()
        self._closed = True
        if self._thread is None and (len(self.queue) or self.counters):
            self.start()
        with self._cond:
            # The threads stop a little before the caller's deadline, so joining them fits in it.
            self._delivery.deadline = deadline - min(0.05, timeout * 0.2)
            self._delivery.open_gate()  # last chance: no backoff wait, but Retry-After holds
            self._stop.set()
            self._cond.notify_all()
        self._wake.set()
        joined: list = []
        while True:  # the events thread may start senders while closing: join those too
            threads = [t for t in [self._thread, *self._delivery.threads()] if t is not None]
            new = [t for t in threads if t not in joined]
            if not new:
                break
            for t in new:
                if t is not threading.current_thread():
                    t.join(max(deadline - time.monotonic(), 0))
                joined.append(t)
        alive = any(t.is_alive() for t in joined if t is not threading.current_thread())
        if alive:
            log.warning("event delivery did not finish within the close timeout")
        else:
            self._delivery.settle_after_close()
        self._delivery.close_transports(abort=alive)
        if self._spool is not None and not alive:
            self._spool.close()
        return not alive

    def after_fork(self) -> None:
        """In a forked child: the parent's queue, batches, spool slot and sockets stay the
        parent's; the child starts afresh (its own threads once it has events)."""
        was_running = self._thread is not None
        self._delivery.forget()
        if self._spool is not None:
            self._spool.forget()
        self._reset()
        if self._closed:
            self.queue.close()
        elif was_running:
            self.start()

    def stats(self) -> dict:
        delivery = self._delivery
        with self._cond:
            pending = delivery.pending_events() + len(self._carry) + sum(r[1] for r in self._raw)
            in_flight = len(delivery.inflight)
        dropped = dict(self.queue.dropped)
        return {
            "queued": len(self.queue) + pending,
            "sent": delivery.sent,
            "dropped": sum(dropped.values()),
            "failed": delivery.failed,
            "invalid": self.invalid,
            "deduplicated": self.dedup.deduplicated,
            "retries": delivery.retries,
            "dropped_by_reason": dropped,
            "spooled": self._spool.events if self._spool is not None else 0,
            "in_flight": in_flight,
        }

    def _oldest_pending(self):
        """Lowest sequence number not yet resolved (call with ``_cond`` held)."""
        oldest = _INF
        head = self.queue.oldest_seq()
        if head is not None:
            oldest = head
        if self._carry:
            oldest = min(oldest, self._carry[0][0])
        for r in self._raw:
            oldest = min(oldest, r[2])
        return min(oldest, self._delivery.oldest_seq())

    # ================================================================= events thread

    def _run(self) -> None:
        if self._spool_path:
            self._open_spool()
        next_tick = time.monotonic() + self._flush_interval
        while True:
            try:
                self._wake.clear()
                with self._cond:
                    gen = self._flush_gen
                now = time.monotonic()
                stopping = self._stop.is_set()
                if stopping and now >= self._delivery.deadline:
                    self._give_up()
                    return
                tick = now >= next_tick
                if tick:
                    next_tick = now + self._flush_interval
                force = tick or stopping or gen != self._flush_done
                state = self._fill(force, summary=force)
                drained = state == "drained"
                if drained:
                    with self._cond:
                        if self._flush_done < gen:
                            self._flush_done = gen
                        self._cond.notify_all()
                self._log_drops()
                if stopping:
                    with self._cond:
                        if drained and not self._delivery.ready and not self._delivery.inflight:
                            self._cond.notify_all()
                            return
                    self._wake.wait(0.02)
                elif state == "full":
                    with self._cond:  # a sender that finishes a batch notifies
                        self._cond.wait(min(max(next_tick - time.monotonic(), 0.001), 0.1))
                else:
                    self._wake.wait(max(next_tick - time.monotonic(), 0.001))
            except Exception:
                log.exception("unexpected error in event delivery")
                self._stop.wait(1.0)

    def _open_spool(self) -> None:
        try:
            spool = Spool(self._spool_path)
            leftovers = spool.open()
        except OSError as exc:
            self._delivery.log_once("spool", logging.ERROR,
                           "cannot use spool_path %s (%s); events stay in memory",
                           self._spool_path, exc)
            return
        self._spool = self._delivery.spool = spool
        if leftovers:
            log.info("resending %d events left in the spool by an earlier process",
                     sum(n for _, n, _ in leftovers))
            with self._cond:
                self._raw.extend([path, count, 0, None] for path, count, raw in leftovers if raw)
            self._delivery.submit([Batch("", None, count, 0, path)
                                   for path, count, raw in leftovers if not raw])

    def _fill(self, force: bool, summary: bool) -> str:
        """Build batches while there is work and room: "drained" (nothing left), "waiting"
        (fewer than FLUSH_AT events and no reason to send them yet) or "full" (no room)."""
        if summary:
            self._summary_carry.extend(self.summary.take())
        while True:
            if self._spool is not None:
                if len(self.queue) >= self._spill_at:
                    self._spill(self.queue.take(self._max_queue))  # a burst: to disk, fast
                    continue
                if self._raw and len(self.queue) < self._flush_at:
                    self._convert_step(self._raw[0])  # the burst is over: oldest first
                    continue
            available = len(self._carry) + len(self.queue)
            if not available and not self._summary_carry:
                return "drained"
            if available < self._flush_at and not force and not self._summary_carry:
                return "waiting"
            if self._spool is None and not self._delivery.has_room():
                return "full"  # the rest waits in the (bounded) queue
            limit = self._delivery.limit
            items = self._carry
            want = limit - len(items)
            if want > 0:
                items = items + self.queue.take(want)
            batch, self._carry, self._summary_carry, bad = build_batch(
                items, self._summary_carry, limit)
            if bad:
                self._delivery.fail(bad, "an event could not be encoded or is larger than the 1 MiB "
                           "request limit", key="encode")
            if batch is None:
                continue
            if self._spool is not None:
                self._spool_batch(batch)
            self._delivery.submit([batch])

    def _spill(self, items: list) -> None:
        """Write queued events to the spool as they are (much cheaper than encoding them)."""
        if not items:
            return
        try:
            path = self._spool.write_raw(marshal.dumps((os.urandom(16), items)), len(items))
        except (OSError, ValueError) as exc:
            self._delivery.log_once("spool-write", logging.ERROR,
                           "cannot write to spool_path (%s); events are dropped", exc)
            self.queue.drop("spool_full", len(items))
            return
        with self._cond:
            self._raw.append([path, len(items), items[0][0], None])

    def _convert_step(self, raw: list) -> None:
        """Turn the next batch of a spilled file into a batch file (ids from the file's seed);
        one batch per call, so a new burst is spilled in between. Removes the file at the end."""
        path, _count, first_seq, state = raw
        if state is None:
            try:
                seed, items = marshal.loads(self._spool.read(path))
            except (TypeError, ValueError, EOFError):
                self._delivery.fail(raw[1], "a spilled spool file could not be read",
                                    key="spool-read")
                seed, items = b"", []
            state = raw[3] = [seed, items, 0, 0]  # seed, items left, position, part number
        seed, items, position, k = state
        batch = None
        while items and batch is None:
            batch, rest, _, bad = build_batch(items, [], self._delivery.limit,
                                              seed=(seed, position))
            position += len(items) - len(rest)
            items = rest
            if bad:
                self._delivery.fail(bad, "an event could not be encoded or is larger than the 1 MiB "
                           "request limit", key="encode")
        state[1], state[2] = items, position
        if batch is not None:
            batch.first_seq = first_seq
            try:
                batch.path, dropped = self._spool.write_part(path, k, batch.body, batch.count)
                if dropped:
                    self.queue.drop("spool_full", sum(n for _, n in dropped))
            except OSError as exc:
                self._delivery.log_once("spool-write", logging.ERROR,
                                        "cannot write to spool_path (%s); sending from memory", exc)
            state[3] = k + 1
            with self._cond:
                raw[1] -= batch.count
                if len(self._delivery.ready) >= 2 * self._max_in_flight and batch.path is not None:
                    batch.body = None  # read back from disk when its turn comes
            self._delivery.submit([batch])
        if not items:
            self._spool.remove(path)
            with self._cond:
                self._raw.popleft()

    def _spool_batch(self, batch: Batch) -> None:
        try:
            path, dropped = self._spool.write(batch.body, batch.count)
        except OSError as exc:
            self._delivery.log_once("spool-write", logging.ERROR,
                                    "cannot write to spool_path (%s); sending from memory", exc)
            return
        batch.path = path
        if dropped:
            self.queue.drop("spool_full", sum(n for _, n in dropped))
            self._delivery.forget_paths({p for p, _ in dropped})
        with self._cond:
            if len(self._delivery.ready) >= 2 * self._max_in_flight:
                batch.body = None  # read back from disk when its turn comes: memory stays flat

    def _log_drops(self) -> None:
        dropped = dict(self.queue.dropped)
        total = sum(dropped.values())
        last_total, last_at = self._drops_logged
        now = time.monotonic()
        if total > last_total and now - last_at >= DROP_LOG_INTERVAL:
            self._drops_logged = (total, now)
            why = ", ".join(f"{reason}: {n}" for reason, n in sorted(dropped.items()))
            log.warning("%d events dropped so far (%s); queue_full means the service "
                        "or the network could not keep up with max_queue=%d events in memory "
                        "(set spool_path to spill to disk instead)", total, why, self._max_queue)

    def _give_up(self) -> None:
        """Close deadline passed: events not yet in a batch are lost (counted)."""
        lost = self.queue.clear() + len(self._carry)
        self._carry = []
        if lost:
            self._delivery.lost(lost)

    # ================================================================= senders
