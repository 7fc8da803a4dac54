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

**Senders** (``pitcrew-events-send``, started on demand, at most
``max_in_flight``, each with its own keep-alive connection) POST batches to
``/sdk/v1/events``. A batch is retried until accepted (2xx) or refused for
good: connection errors, 408, 429 and 5xx are retried with exponential
backoff and jitter, and every sender waits for the same gate, so an outage
or a ``Retry-After`` (429/503) slows all of them; 413 splits the batch;
other 4xx fail it (logged once). Ids are fixed before the first attempt, so
a retry of a batch the service stored counts as duplicates there.
"""

from __future__ import annotations

import json
import logging
import marshal
import math
import os
import threading
import time
from collections import deque
from collections.abc import Mapping

from ..evaluation.bucketing import unit_of
from ..transport import TransportError, backoff_delay, is_retryable, retry_after_seconds
from ..wire import (
    EVENTS_PATH,
    EXPOSURE,
    MAX_BATCH_EVENTS,
    MAX_EVENT_KEY_LENGTH,
    MAX_UNIT_LENGTH,
    TRACK,
)
from ..wire import exposure_attributes as _exposure_attributes
from .batching import Batch, body_count, build_batch, split_batch
from .dedup import DEDUP_CAPACITY, ExposureDedup
from .queue import EventQueue
from .spool import Spool
from .summary import EvaluationSummary

log = logging.getLogger("pitcrew")

__all__ = ["EventProcessor"]

FLUSH_AT = 500  # queued events that make a batch before the timer
MAX_IN_FLIGHT = 4  # batches sent at once, each on its own connection
RETRY_BASE = 1.0
RETRY_MAX = 30.0
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
        self._ready: deque = deque()  # built batches waiting for a sender
        self._inflight: set = set()
        self._carry: list = []  # items taken from the queue that did not fit a batch
        self._raw: deque = deque()  # spilled files to convert: [path, events, first seq]
        self._summary_carry: list = []
        self._limit = MAX_BATCH_EVENTS  # halved after a 413, doubled back on success
        # The gate every sender waits for (backoff after a failure, Retry-After).
        self._retry_at = 0.0
        self._forced = False  # Retry-After: even flush() waits for it
        self._attempt = 0
        self._outage = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._deadline = _INF
        self._flush_gen = 0
        self._flush_done = 0
        self._thread: threading.Thread | None = None
        self._senders: list = []
        self._transports: list = []
        self._start_lock = threading.Lock()
        self._logged: set = set()
        self._drops_logged = (0, -_INF)  # (dropped total when last logged, when)
        self.sent = 0
        self.failed = 0
        self.invalid = 0
        self.retries = 0

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
        self._log_once(why, logging.WARNING, "event not recorded: %s", why)
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

    def flush(self, timeout: float | None) -> bool:
        """Deliver everything queued so far; wait up to ``timeout`` seconds (0: just schedule).

        True when every event queued before the call was delivered or failed for good.
        """
        target = self.queue.last_seq
        with self._cond:
            self._flush_gen += 1
            gen = self._flush_gen
            if not self._forced:
                self._retry_at = 0.0  # an explicit flush retries now, except after Retry-After
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
            self._deadline = deadline - min(0.05, timeout * 0.2)
            if not self._forced:
                self._retry_at = 0.0  # last chance: no backoff wait, but Retry-After still holds
            self._stop.set()
            self._cond.notify_all()
        self._wake.set()
        joined: list = []
        while True:  # the events thread may start senders while closing: join those too
            with self._cond:
                threads = [t for t in [self._thread, *self._senders] if t is not None]
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
            self._settle_after_close()
        for transport in self._transports:
            transport.abort() if alive else transport.close()
        if self._spool is not None and not alive:
            self._spool.close()
        return not alive

    def after_fork(self) -> None:
        """In a forked child: the parent's queue, batches, spool slot and sockets stay the
        parent's; the child starts afresh (its own threads once it has events)."""
        was_running = self._thread is not None
        for transport in self._transports:
            transport.forget()
        if self._spool is not None:
            self._spool.forget()
        self._reset()
        if self._closed:
            self.queue.close()
        elif was_running:
            self.start()

    def stats(self) -> dict:
        with self._cond:
            pending = sum(b.count for b in self._ready) + sum(b.count for b in self._inflight)
            pending += len(self._carry) + sum(r[1] for r in self._raw)
        dropped = dict(self.queue.dropped)
        return {
            "queued": len(self.queue) + pending,
            "sent": self.sent,
            "dropped": sum(dropped.values()),
            "failed": self.failed,
            "invalid": self.invalid,
            "deduplicated": self.dedup.deduplicated,
            "retries": self.retries,
            "dropped_by_reason": dropped,
            "spooled": self._spool.events if self._spool is not None else 0,
            "in_flight": len(self._inflight),
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
        for b in self._ready:
            oldest = min(oldest, b.first_seq)
        for b in self._inflight:
            oldest = min(oldest, b.first_seq)
        return oldest

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
                if stopping and now >= self._deadline:
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
                        if drained and not self._ready and not self._inflight:
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
            self._log_once("spool", logging.ERROR,
                           "cannot use spool_path %s (%s); events stay in memory",
                           self._spool_path, exc)
            return
        self._spool = spool
        if leftovers:
            log.info("resending %d events left in the spool by an earlier process",
                     sum(n for _, n, _ in leftovers))
            with self._cond:
                for path, count, raw in leftovers:
                    if raw:
                        self._raw.append([path, count, 0, None])
                    else:
                        self._ready.append(Batch("", None, count, 0, path))
                self._cond.notify_all()
            self._ensure_senders()

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
            if self._spool is None:
                with self._cond:
                    if len(self._ready) >= self._max_in_flight:
                        self._cond.notify_all()
                        return "full"  # the rest waits in the (bounded) queue
            items = self._carry
            want = self._limit - len(items)
            if want > 0:
                items = items + self.queue.take(want)
            batch, self._carry, self._summary_carry, bad = build_batch(
                items, self._summary_carry, self._limit)
            if bad:
                self._fail(bad, "an event could not be encoded or is larger than the 1 MiB "
                           "request limit", key="encode")
            if batch is None:
                continue
            if self._spool is not None:
                self._spool_batch(batch)
            with self._cond:
                self._ready.append(batch)
                self._cond.notify_all()
            self._ensure_senders()

    def _spill(self, items: list) -> None:
        """Write queued events to the spool as they are (much cheaper than encoding them)."""
        if not items:
            return
        try:
            path = self._spool.write_raw(marshal.dumps((os.urandom(16), items)), len(items))
        except (OSError, ValueError) as exc:
            self._log_once("spool-write", logging.ERROR,
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
                self._fail(raw[1], "a spilled spool file could not be read", key="spool-read")
                seed, items = b"", []
            state = raw[3] = [seed, items, 0, 0]  # seed, items left, position, part number
        seed, items, position, k = state
        batch = None
        while items and batch is None:
            batch, rest, _, bad = build_batch(items, [], self._limit, seed=(seed, position))
            position += len(items) - len(rest)
            items = rest
            if bad:
                self._fail(bad, "an event could not be encoded or is larger than the 1 MiB "
                           "request limit", key="encode")
        state[1], state[2] = items, position
        if batch is not None:
            batch.first_seq = first_seq
            try:
                batch.path, dropped = self._spool.write_part(path, k, batch.body, batch.count)
                if dropped:
                    self.queue.drop("spool_full", sum(n for _, n in dropped))
            except OSError as exc:
                self._log_once("spool-write", logging.ERROR,
                               "cannot write to spool_path (%s); sending from memory", exc)
            state[3] = k + 1
            with self._cond:
                raw[1] -= batch.count
                if len(self._ready) >= 2 * self._max_in_flight and batch.path is not None:
                    batch.body = None
                self._ready.append(batch)
                self._cond.notify_all()
            self._ensure_senders()
        if not items:
            self._spool.remove(path)
            with self._cond:
                self._raw.popleft()

    def _spool_batch(self, batch: Batch) -> None:
        try:
            path, dropped = self._spool.write(batch.body, batch.count)
        except OSError as exc:
            self._log_once("spool-write", logging.ERROR,
                           "cannot write to spool_path (%s); sending from memory", exc)
            return
        batch.path = path
        if dropped:
            lost = sum(n for _, n in dropped)
            self.queue.drop("spool_full", lost)
            with self._cond:
                gone = {p for p, _ in dropped}
                self._ready = deque(b for b in self._ready if b.path not in gone)
        with self._cond:
            if len(self._ready) >= 2 * self._max_in_flight:
                batch.body = None  # read back from disk when its turn comes: memory stays flat

    def _ensure_senders(self) -> None:
        with self._cond:
            want = min(self._max_in_flight, len(self._ready) + len(self._inflight))
            while len(self._senders) < want:
                transport = self._transport_factory()
                self._transports.append(transport)
                t = threading.Thread(target=self._send_loop, args=(transport,),
                                     name="pitcrew-events-send", daemon=True)
                t.start()
                self._senders.append(t)

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
            self._lost(lost)

    def _lost(self, n: int) -> None:
        with self._cond:
            self.failed += n
        log.warning("%d events not delivered before the close timeout", n)

    def _settle_after_close(self) -> None:
        """Batches still waiting once every thread stopped: lost, or left in the spool."""
        with self._cond:
            ready = list(self._ready) + list(self._inflight)
            self._ready.clear()
        lost = sum(b.count for b in ready if b.path is None)
        kept = sum(b.count for b in ready if b.path is not None)
        if lost:
            self._lost(lost)
        if kept:
            log.info("%d events stay in the spool for the next process", kept)

    # ================================================================= senders

    def _send_loop(self, transport) -> None:
        while True:
            with self._cond:
                while True:
                    stopping = self._stop.is_set()
                    if stopping and time.monotonic() >= self._deadline:
                        return
                    if self._ready and time.monotonic() >= self._retry_at:
                        batch = self._ready.popleft()
                        self._inflight.add(batch)
                        break
                    if stopping and not self._ready and self._thread_done():
                        return
                    if self._ready and stopping and self._retry_at > self._deadline:
                        return  # Retry-After beyond the deadline: the events thread gives up
                    wait = self._retry_at - time.monotonic() if self._ready else 0.5
                    self._cond.wait(min(max(wait, 0.001), 0.5))
            try:
                self._deliver(transport, batch)
            except Exception:
                log.exception("unexpected error in event delivery")
                with self._cond:
                    self._ready.appendleft(batch)
                time.sleep(0.5)
            finally:
                with self._cond:
                    self._inflight.discard(batch)
                    self._cond.notify_all()
                self._wake.set()

    def _thread_done(self) -> bool:
        t = self._thread
        return t is None or not t.is_alive()

    def _deliver(self, transport, batch: Batch) -> None:
        """One attempt at most per gate opening; loops until the batch is resolved or the
        close deadline passes (then it goes back to the ready list)."""
        while True:
            body = batch.body
            if body is None:
                body = self._spool.read(batch.path) if self._spool is not None else None
                if body is None:
                    self._resolved(batch)
                    self._fail(batch.count, "a spooled batch could not be read", key="spool-read")
                    return
            timeout = self._timeout
            if self._stop.is_set():
                timeout = min(timeout, max(self._deadline - time.monotonic(), 0.05))
            batch.attempt += 1
            try:
                resp = transport.request(
                    "POST", EVENTS_PATH, body=body, timeout=timeout,
                    headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
            except TransportError as exc:
                if not self._retry_later(batch, None, f"event delivery failed, service unreachable: {exc}"):
                    return
                continue
            status = resp.status
            if 200 <= status < 300:
                self._accepted(batch, resp)
                return
            if status == 413 and batch.count > 1:
                self._split(batch, body)
                return
            if is_retryable(status):
                after = retry_after_seconds(resp.header("retry-after")) if status in (429, 503) else None
                if not self._retry_later(batch, after, f"event delivery got HTTP {status}"):
                    return
                continue
            self._resolved(batch)
            self._fail(batch.count, f"the service refused events with HTTP {status}",
                       key=("status", status), detail=resp.body[:300])
            return

    def _retry_later(self, batch: Batch, retry_after, message: str) -> bool:
        """Close the gate for everyone; False when the close deadline leaves no retry."""
        now = time.monotonic()
        with self._cond:
            self._attempt += 1
            self.retries += 1
            if retry_after is not None:
                delay = retry_after
                self._forced = True
            else:
                delay = backoff_delay(self._attempt, RETRY_BASE, RETRY_MAX)
                self._forced = False
                if self._stop.is_set():
                    delay = min(delay, 0.2)  # closing: keep trying until the deadline
            self._retry_at = max(self._retry_at, now + delay)
            first = not self._outage
            self._outage = True
            give_back = self._stop.is_set() and self._retry_at >= self._deadline
            if give_back:
                self._ready.appendleft(batch)
            self._cond.notify_all()
        if first:
            log.warning("%s; keeping the events and retrying", message)
        else:
            log.debug("%s; retry in %.1fs", message, delay)
        if give_back:
            return False
        with self._cond:  # wait for the gate (a flush() may open it early)
            while time.monotonic() < self._retry_at:
                if self._stop.is_set():
                    if time.monotonic() >= self._deadline or self._retry_at >= self._deadline:
                        self._ready.appendleft(batch)
                        return False
                until = min(self._retry_at, self._deadline)
                self._cond.wait(min(max(until - time.monotonic(), 0.001), 0.5))
        return True

    def _accepted(self, batch: Batch, resp) -> None:
        self._resolved(batch)
        with self._cond:
            self._attempt = 0
            self._forced = False
            if self._limit < MAX_BATCH_EVENTS:
                self._limit = min(MAX_BATCH_EVENTS, self._limit * 2)
            restored = self._outage
            self._outage = False
        if restored:
            log.info("event delivery restored")
        accepted = duplicates = None
        rejected = []
        try:
            doc = json.loads(resp.body) if resp.body else {}
            accepted, duplicates = doc.get("accepted"), doc.get("duplicates")
            rejected = doc.get("rejected") or []
        except (ValueError, AttributeError):
            pass
        if not isinstance(rejected, list):
            rejected = []
        with self._cond:
            if isinstance(accepted, int) and isinstance(duplicates, int):
                self.sent += accepted + duplicates
            else:
                self.sent += batch.count - len(rejected)
        if rejected:
            first = rejected[0] if isinstance(rejected[0], dict) else {}
            self._fail(len(rejected), "the service rejected events",
                       key=("rejected", str(first.get("error"))[:100]), detail=first)

    def _split(self, batch: Batch, body: bytes) -> None:
        parts = [(half, body_count(half)) for half in split_batch(body)]
        with self._cond:
            self._limit = max(1, batch.count // 2)
        log.info("event batch too large for the service; splitting it")
        new = [Batch("", half, count, batch.first_seq) for half, count in parts]
        if self._spool is not None and batch.path is not None:
            try:
                paths = self._spool.replace(batch.path, parts)
                for b, p in zip(new, paths, strict=True):
                    b.path = p
            except OSError:
                pass
        with self._cond:
            for b in reversed(new):
                self._ready.appendleft(b)
            self._cond.notify_all()
        self._ensure_senders()

    def _resolved(self, batch: Batch) -> None:
        """The batch's fate is decided: it leaves the spool."""
        if batch.path is not None and self._spool is not None:
            try:
                self._spool.remove(batch.path)
            except OSError:
                pass

    def _fail(self, n: int, message: str, key=None, detail=None) -> None:
        with self._cond:
            self.failed += n
        key = key or message
        if detail:
            self._log_once(key, logging.WARNING, "%s (%d events, not retried): %r",
                           message, n, detail)
        else:
            self._log_once(key, logging.WARNING, "%s (%d events, not retried)", message, n)

    def _log_once(self, key, level, msg, *args) -> None:
        if key in self._logged:
            log.debug(msg, *args)
            return
        self._logged.add(key)
        log.log(level, msg, *args)
