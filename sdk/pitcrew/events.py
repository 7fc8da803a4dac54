"""Event pipeline: exposure dedup, bounded queue, evaluation summaries, batched delivery.

Producer side (called from ``variation()`` / ``track()`` in any thread; no I/O,
only a short lock that the delivery thread never holds while doing I/O):

* :meth:`EventProcessor.exposure` deduplicates per (experiment, unit,
  variation) in a bounded LRU, then queues an exposure event;
* :meth:`EventProcessor.track` queues one outcome event per unit the context has;
* events go to a ``deque`` of at most ``max_queue`` items: when full, the
  oldest event is dropped and counted (``stats()["dropped"]``);
* :attr:`EventProcessor.counts` maps ``(flag, variation)`` to an
  ``itertools.count``; the client bumps it on every evaluation (``next()`` is
  atomic under the GIL, so no lock and no lost increments). Summaries report
  the difference since the previous flush.

Delivery side (one daemon thread, started lazily): every ``flush_interval``
seconds, when 500 events are waiting, or on :meth:`flush`, it takes up to
1000 events (and at most 1 MiB of JSON), gives each a UUID once, gzips the
batch and POSTs it to ``/sdk/v1/events``. A batch is retried until it is
accepted (202) or refused for good: connection errors, 408, 429 and 5xx are
retried with exponential backoff and jitter (``Retry-After`` honoured for 429
and 503); 413 halves the batch; other 4xx fail the batch and are logged once.
Because ids are fixed before the first attempt, a retry of a batch the service
already stored counts as duplicates there, never as new events.
"""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Mapping

from .evaluation.bucketing import unit_of
from .transport import Transport, TransportError, backoff_delay, is_retryable, retry_after_seconds

log = logging.getLogger("pitcrew")

__all__ = ["EventProcessor"]

EVENTS_PATH = "/sdk/v1/events"
FLUSH_AT = 500  # queued events that trigger a delivery before the timer
MAX_BATCH = 1000  # events per request (service limit)
MAX_BATCH_BYTES = 1024 * 1024  # uncompressed JSON per request (service limit)
RETRY_BASE = 1.0
RETRY_MAX = 30.0
DEDUP_CAPACITY = 10000  # (experiment, unit, variation) triples remembered
MAX_COUNTER_KEYS = 20000  # distinct (flag, variation) pairs counted
MAX_FLAG_KEY_LEN = 256  # longer "flag keys" (never valid) are not counted
MAX_UNIT_LEN = 256  # the service's limits: longer values would be rejected there
MAX_EVENT_KEY_LEN = 200

_EXPOSURE = "exposure"
_TRACK = "track"
_INF = float("inf")
_overflow_counter = itertools.count()  # absorbs counts beyond MAX_COUNTER_KEYS


def iso_ts(t: float) -> str:
    """``2026-01-31T12:34:56.789Z`` (UTC, milliseconds)."""
    ms = int(t * 1000)
    secs, ms = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z"


def _count_value(counter) -> int:
    # repr(itertools.count(5)) == "count(5)"; reading it does not increment it.
    return int(repr(counter)[6:-1])


def _scalar(value):
    """``value`` if it is a JSON scalar worth recording (string, bool, finite number), else None."""
    cls = value.__class__
    if cls is str or cls is bool or cls is int:
        return value
    if cls is float:
        return value if math.isfinite(value) else None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    return None


def exposure_attributes(experiment: dict, context) -> dict:
    """An exposure's ``attributes``: the unit type, and the experiment's
    dimensions as recorded from the context (scalars only).

    Shared with the service, which logs exposures of remote evaluations."""
    attrs = {"unit_type": experiment.get("unit") or "id"}
    dims = experiment.get("dimensions")
    if dims and isinstance(dims, list):
        for name in dims:
            if name.__class__ is str and name != "unit_type":
                v = _scalar(context.get(name))
                if v is not None:
                    attrs[name] = v
    return attrs


class _Batch:
    __slots__ = ("body", "items", "summary", "count")

    def __init__(self, body: bytes, items: list, summary: list):
        self.body = body  # gzipped JSON, ids fixed
        self.items = items  # queue items, for splitting after a 413
        self.summary = summary  # encoded evaluation entries
        self.count = len(items)


class EventProcessor:
    def __init__(self, transport: Transport, *, flush_interval: float = 5.0,
                 max_queue: int = 10000, timeout: float = 5.0,
                 dedup_capacity: int = DEDUP_CAPACITY):
        self._transport = transport
        self._flush_interval = max(float(flush_interval), 0.01)
        self._max_queue = max(int(max_queue), 1)
        self._timeout = max(float(timeout), 0.01)
        self._dedup_capacity = max(int(dedup_capacity), 1)
        self._seen: OrderedDict = OrderedDict()
        self._reset_state()
        self._closed = False

    def _reset_state(self) -> None:
        """Fresh queue, counters, locks and thread state (construction and after fork)."""
        self._lock = threading.Lock()
        self._queue: deque = deque(maxlen=self._max_queue)
        self._seq = 0
        self.counts: dict = {}
        self._reported: dict = {}
        self._counts_since = time.time()
        # owned by the delivery thread
        self._carry: list = []  # items taken from the queue, not yet in a batch
        self._summary_carry: list = []
        self._inflight: _Batch | None = None
        self._held_first = None  # seq of the oldest taken but unfinished item
        self._held = 0  # how many such items
        self._limit = MAX_BATCH
        self._retry_at = 0.0
        self._forced_wait = False  # Retry-After: even flush() waits for it
        self._attempt = 0
        # signalling
        self._wake = threading.Event()
        self._progress = threading.Condition(threading.Lock())
        self._stop = threading.Event()
        self._deadline = _INF
        self._flush_gen = 0  # bumped by flush(); the thread drains until it caught up
        self._flush_done = 0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._logged: set = set()
        self._outage = False
        # statistics
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self.invalid = 0
        self.deduplicated = 0
        self.retries = 0

    # ================================================================= producer side

    def _append(self, items) -> None:
        """Queue event items (tuples without seq); drop the oldest when full."""
        lock = self._lock
        with lock:
            if self._closed:
                self.dropped += len(items)
                return
            q = self._queue
            for item in items:
                if len(q) == self._max_queue:
                    self.dropped += 1  # deque(maxlen) discards the oldest on append
                    if "full" not in self._logged:
                        self._logged.add("full")
                        log.warning("pitcrew: event queue full (%d); dropping the oldest events",
                                    self._max_queue)
                self._seq += 1
                q.append((self._seq, *item))
            n = len(q)
        if self._thread is None:
            self.start()
        if n >= FLUSH_AT and not self._wake.is_set():
            self._wake.set()

    def new_counter(self, key):
        """Counter for a ``(flag, variation)`` key not seen yet (the rare path of counting)."""
        counts = self.counts
        flag = key[0]
        if (flag.__class__ is not str or len(flag) > MAX_FLAG_KEY_LEN
                or len(counts) >= MAX_COUNTER_KEYS):
            return _overflow_counter
        return counts.setdefault(key, itertools.count())

    def exposure(self, result, compiled, context) -> None:
        """Record an exposure for an in-experiment result, unless already seen. Never raises."""
        try:
            exp_key = result.experiment
            unit = result.unit
            variation = result.variation
            if len(unit) > MAX_UNIT_LEN:
                self._invalid(f"exposure unit longer than {MAX_UNIT_LEN} characters")
                return
            key = (exp_key, unit, variation)
            with self._lock:
                seen = self._seen
                if key in seen:
                    seen.move_to_end(key)
                    self.deduplicated += 1
                    return
                seen[key] = None
                if len(seen) > self._dedup_capacity:
                    seen.popitem(last=False)
            attrs = exposure_attributes(compiled.experiment(exp_key) or {}, context)
            self._append(((_EXPOSURE, time.time(), unit, exp_key, variation, None, None, attrs),))
        except Exception:
            log.debug("pitcrew: exposure not recorded", exc_info=True)

    def track(self, event, context, value, unit_attrs) -> bool:
        """Queue the outcome events of one ``track()`` call. Never raises; False if not recorded."""
        try:
            if event.__class__ is not str and not isinstance(event, str):
                return self._invalid("track() needs an event key string")
            if not event or len(event) > MAX_EVENT_KEY_LEN:
                return self._invalid(f"track() needs an event key of 1 to {MAX_EVENT_KEY_LEN} characters")
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
            if unit is not None and len(unit) <= MAX_UNIT_LEN:
                items.append((_TRACK, ts, unit, None, None, event, value, {"unit_type": "id"}))
            for attr in unit_attrs:
                unit = unit_of(context.get(attr))
                if unit is not None and len(unit) <= MAX_UNIT_LEN:
                    items.append((_TRACK, ts, unit, None, None, event, value, {"unit_type": attr}))
            if not items:
                return self._invalid("track() context has no unit (an 'id' or an experiment unit)")
            self._append(items)
            return True
        except Exception:
            log.debug("pitcrew: track event not recorded", exc_info=True)
            with self._lock:
                self.invalid += 1
            return False

    def _invalid(self, why: str) -> bool:
        with self._lock:
            self.invalid += 1
        if why not in self._logged:
            self._logged.add(why)
            log.warning("pitcrew: event not recorded: %s", why)
        return False

    # ================================================================= control

    def start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._stop.is_set():
                return
            thread = threading.Thread(target=self._run, name="pitcrew-events", daemon=True)
            thread.start()
            self._thread = thread

    def flush(self, timeout: float | None) -> bool:
        """Deliver everything queued so far; wait up to ``timeout`` seconds (0: just schedule).

        True when every event queued before the call was delivered or failed for good.
        """
        target = self._seq
        self._flush_gen += 1
        if self._forced_wait is False:
            self._retry_at = 0.0  # an explicit flush retries now, except after Retry-After
        if self._thread is None:
            self.start()
        self._wake.set()
        if timeout is None:
            timeout = self._timeout
        deadline = time.monotonic() + max(float(timeout), 0.0)
        with self._progress:
            while self._oldest_pending() <= target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(min(remaining, 0.5))
        return True

    def close(self, timeout: float) -> bool:
        """Deliver what is queued within ``timeout`` seconds, then stop. Returns in time."""
        deadline = time.monotonic() + max(float(timeout), 0.0)
        with self._lock:
            pending = len(self._queue) + self._held
            self._closed = True
        if self._thread is None and (pending or self.counts):
            self.start()
        self._deadline = deadline
        if not self._forced_wait:
            self._retry_at = 0.0  # last chance: no backoff wait, but Retry-After still holds
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(deadline - time.monotonic(), 0))
            if thread.is_alive():
                log.warning("pitcrew: event delivery did not finish within the close timeout")
                return False
        self._transport.close()
        return True

    def after_fork(self) -> None:
        """In a forked child: the parent's queue, counts and sockets stay the parent's."""
        was_running = self._thread is not None
        self._transport.forget()
        self._reset_state()
        if was_running and not self._closed:
            self.start()

    def stats(self) -> dict:
        return {
            "queued": len(self._queue) + self._held,
            "sent": self.sent,
            "dropped": self.dropped,
            "failed": self.failed,
            "invalid": self.invalid,
            "deduplicated": self.deduplicated,
            "retries": self.retries,
        }

    def _oldest_pending(self):
        with self._lock:
            if self._held_first is not None:
                return self._held_first
            try:
                return self._queue[0][0]
            except IndexError:
                return _INF

    # ================================================================= delivery thread

    def _run(self) -> None:
        next_tick = time.monotonic() + self._flush_interval
        while True:
            try:
                self._wake.clear()
                gen = self._flush_gen  # read before taking: see _take_batch's None below
                now = time.monotonic()
                stopping = self._stop.is_set()
                if stopping and now >= self._deadline:
                    self._give_up()
                    return
                if self._inflight is None:
                    tick = now >= next_tick
                    if tick:
                        next_tick = now + self._flush_interval
                    flushing = gen != self._flush_done or stopping
                    if (tick or flushing or len(self._queue) >= FLUSH_AT or self._carry
                            or self._summary_carry):
                        self._inflight = self._take_batch(summary=tick or flushing)
                    if self._inflight is None:
                        # Nothing left that was queued before flush() number `gen`.
                        self._flush_done = gen
                        self._notify()
                        if stopping:
                            return
                        self._wake.wait(max(next_tick - now, 0.001))
                        continue
                if now < self._retry_at:
                    wait = self._retry_at - now
                    if stopping:
                        if self._retry_at > self._deadline:
                            self._give_up()
                            return
                    self._wake.wait(wait)
                    continue
                self._deliver(self._inflight, stopping)
                self._notify()
            except Exception:
                log.exception("pitcrew: unexpected error in event delivery")
                self._stop.wait(1.0)

    def _notify(self) -> None:
        with self._progress:
            self._progress.notify_all()

    def _take_batch(self, summary: bool) -> _Batch | None:
        items = self._carry[: self._limit]
        self._carry = self._carry[self._limit :]
        want = self._limit - len(items)
        if want > 0:
            with self._lock:
                q = self._queue
                popleft = q.popleft
                for _ in range(min(want, len(q))):
                    items.append(popleft())
                self._held_first = items[0][0] if items else None
                self._held = len(items)
        entries = self._summary_carry
        self._summary_carry = []
        if summary:
            entries.extend(self._take_summary())
        if not items and not entries:
            return None

        parts = []
        size = 32  # {"events":[],"evaluations":[]}
        kept = []
        for i, item in enumerate(items):
            try:
                b = self._encode(item)
            except Exception:
                self._fail(1, "an event could not be encoded")
                continue
            if size + len(b) + 1 > MAX_BATCH_BYTES:
                if not parts:
                    self._fail(1, "an event is larger than the 1 MiB request limit")
                    continue
                self._carry = items[i:] + self._carry
                break
            parts.append(b)
            kept.append(item)
            size += len(b) + 1
        used = []
        for j, e in enumerate(entries):
            if size + len(e) + 1 > MAX_BATCH_BYTES and (parts or used):
                self._summary_carry = entries[j:]
                break
            used.append(e)
            size += len(e) + 1
        self._set_held(kept)
        if not kept and not used:
            return None
        body = b'{"events":[' + b",".join(parts) + b'],"evaluations":[' + b",".join(used) + b"]}"
        return _Batch(gzip.compress(body, compresslevel=6, mtime=0), kept, used)

    def _set_held(self, batch_items) -> None:
        with self._lock:
            first = batch_items[0][0] if batch_items else None
            if first is None and self._carry:
                first = self._carry[0][0]
            self._held_first = first
            self._held = len(batch_items) + len(self._carry)

    @staticmethod
    def _encode(item) -> bytes:
        _seq, kind, ts, unit, experiment, variation, event, value, attrs = item
        ev = {"id": str(uuid.uuid4()), "type": kind, "ts": iso_ts(ts), "unit": unit}
        if kind == _EXPOSURE:
            ev["experiment"] = experiment
            ev["variation"] = variation
        else:
            ev["event"] = event
            if value is not None:
                ev["value"] = value
        if attrs:
            ev["attributes"] = attrs
        return json.dumps(ev, separators=(",", ":"), ensure_ascii=False).encode()

    def _take_summary(self) -> list:
        now = time.time()
        start, end = iso_ts(self._counts_since), iso_ts(now)
        self._counts_since = now
        counts = self.counts.copy()  # atomic under the GIL
        reported = self._reported
        out = []
        idle = []
        for key, counter in counts.items():
            total = _count_value(counter)
            delta = total - reported.get(key, 0)
            if delta > 0:
                reported[key] = total
                flag, variation = key
                out.append(json.dumps(
                    {"flag": flag, "variation": variation, "count": delta, "start": start, "end": end},
                    separators=(",", ":"), ensure_ascii=False).encode())
            else:
                idle.append(key)
        if len(counts) > MAX_COUNTER_KEYS // 2:  # forget keys idle for a whole window
            for key in idle:
                self.counts.pop(key, None)
                reported.pop(key, None)
        return out

    def _deliver(self, batch: _Batch, stopping: bool) -> None:
        timeout = self._timeout
        if stopping:
            timeout = min(timeout, max(self._deadline - time.monotonic(), 0.05))
        try:
            resp = self._transport.request(
                "POST", EVENTS_PATH, body=batch.body, timeout=timeout,
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            )
        except TransportError as exc:
            self._retry(batch, None, f"event delivery failed, service unreachable: {exc}")
            return
        status = resp.status
        if 200 <= status < 300:
            self._accepted(batch, resp)
        elif status == 413 and batch.count > 1:
            self._limit = max(1, batch.count // 2)
            self._requeue(batch)
            log.info("pitcrew: event batch too large for the service; splitting it")
        elif is_retryable(status):
            after = None
            if status in (429, 503):
                after = retry_after_seconds(resp.header("retry-after"))
            self._retry(batch, after, f"event delivery got HTTP {status}")
        else:
            self._finish(batch)
            self._fail(batch.count, f"the service refused events with HTTP {status}",
                       key=("status", status), detail=resp.body[:300])

    def _accepted(self, batch: _Batch, resp) -> None:
        self._finish(batch)
        if self._limit < MAX_BATCH:
            self._limit = min(MAX_BATCH, self._limit * 2)
        if self._outage:
            self._outage = False
            log.info("pitcrew: event delivery restored")
        accepted = duplicates = None
        rejected = []
        try:
            doc = json.loads(resp.body) if resp.body else {}
            accepted = doc.get("accepted")
            duplicates = doc.get("duplicates")
            rejected = doc.get("rejected") or []
        except (ValueError, AttributeError):
            pass
        if not isinstance(rejected, list):
            rejected = []
        if isinstance(accepted, int) and isinstance(duplicates, int):
            self.sent += accepted + duplicates
        else:
            self.sent += batch.count - len(rejected)
        if rejected:
            first = rejected[0] if isinstance(rejected[0], dict) else {}
            self._fail(len(rejected), "the service rejected events",
                       key=("rejected", str(first.get("error"))[:100]), detail=first)

    def _retry(self, batch: _Batch, retry_after: float | None, message: str) -> None:
        self._attempt += 1
        self.retries += 1
        if retry_after is not None:
            delay = retry_after
            self._forced_wait = True
        else:
            delay = backoff_delay(self._attempt, RETRY_BASE, RETRY_MAX)
            self._forced_wait = False
            if self._stop.is_set():
                delay = min(delay, 0.2)  # closing: keep trying until the deadline
        self._retry_at = time.monotonic() + delay
        if not self._outage:
            self._outage = True
            log.warning("pitcrew: %s; keeping %d events and retrying", message, self._held)
        else:
            log.debug("pitcrew: %s; retry in %.1fs", message, delay)

    def _finish(self, batch: _Batch) -> None:
        """The batch's fate is decided: it leaves the pending set."""
        self._inflight = None
        self._attempt = 0
        self._retry_at = 0.0
        self._forced_wait = False
        self._set_held([])

    def _requeue(self, batch: _Batch) -> None:
        """Put a batch's events back in front (new ids will be assigned; none were stored)."""
        self._inflight = None
        self._carry = batch.items + self._carry
        self._summary_carry = batch.summary + self._summary_carry
        self._set_held([])

    def _fail(self, n: int, message: str, key=None, detail=None) -> None:
        self.failed += n
        key = key or message
        if key in self._logged:
            log.debug("pitcrew: %s (%d events)", message, n)
            return
        self._logged.add(key)
        if detail:
            log.warning("pitcrew: %s (%d events, not retried): %r", message, n, detail)
        else:
            log.warning("pitcrew: %s (%d events, not retried)", message, n)

    def _give_up(self) -> None:
        """Close deadline passed: what is still pending is lost."""
        with self._lock:
            lost = len(self._queue) + self._held
            self._queue.clear()
            self._held = 0
            self._held_first = None
        self._inflight = None
        self._carry = []
        if lost:
            self.failed += lost
            log.warning("pitcrew: %d events not delivered before the close timeout", lost)
        self._notify()
