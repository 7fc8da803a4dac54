"""Delivery: built batches -> ``POST /sdk/v1/events``, several at once (docs/sdk-events.md).

Senders (``pitcrew-events-send`` threads, started on demand, at most
``max_in_flight``, each with its own keep-alive connection) take batches
from the ready list in order. A batch is retried until accepted (2xx) or
refused for good: connection errors, 408, 429 and 5xx are retried with
exponential backoff and jitter, and every sender waits for the same gate,
so an outage or a ``Retry-After`` (429/503) slows all of them; 413 splits
the batch in halves (same event ids); other 4xx fail it (logged once).
A spooled batch leaves the spool once its fate is decided.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque

from ..transport import TransportError, backoff_delay, is_retryable, retry_after_seconds
from ..wire import EVENTS_PATH, MAX_BATCH_EVENTS
from .batching import Batch, body_count, split_batch

log = logging.getLogger("pitcrew")

__all__ = ["Delivery"]

MAX_IN_FLIGHT = 4  # batches sent at once, each on its own connection
RETRY_BASE = 1.0
RETRY_MAX = 30.0
_INF = float("inf")


class Delivery:
    """The ready list, the batches in flight, the senders and their retry gate.

    ``cond`` is shared with the events thread: every change of the ready or
    in-flight sets is made under it and notified on it. ``stop`` is set at
    close; ``deadline`` (monotonic) is when the senders give up.
    ``on_idle()`` is called when a sender finishes a batch (room for more);
    ``batcher_done()`` says no more batches will come.
    """

    def __init__(self, transport_factory, cond, stop, *, timeout: float,
                 max_in_flight: int = MAX_IN_FLIGHT, on_idle=lambda: None,
                 batcher_done=lambda: True):
        self._transport_factory = transport_factory
        self.cond = cond
        self._stop = stop
        self.timeout = timeout
        self.max_in_flight = max(int(max_in_flight), 1)
        self._on_idle = on_idle
        self._batcher_done = batcher_done
        self.ready: deque = deque()  # built batches waiting for a sender, oldest first
        self.inflight: set = set()
        self.spool = None  # set by the events thread once the spool is open
        self.limit = MAX_BATCH_EVENTS  # events per batch: halved after a 413, doubled back
        self.deadline = _INF
        # The gate every sender waits for (backoff after a failure, Retry-After).
        self._retry_at = 0.0
        self._forced = False  # Retry-After: even flush() waits for it
        self._attempt = 0
        self._outage = False
        self._senders: list = []
        self._transports: list = []
        self._logged: set = set()
        self.sent = 0
        self.failed = 0
        self.retries = 0

    # ------------------------------------------------------------------ for the events thread

    def submit(self, batches) -> None:
        """Queue built batches behind the others and make sure someone sends them."""
        with self.cond:
            self.ready.extend(batches)
            self.cond.notify_all()
        self.ensure_senders()

    def has_room(self) -> bool:
        """Fewer batches wait than there are senders (memory stays bounded without a spool)."""
        return len(self.ready) < self.max_in_flight

    def forget_paths(self, paths) -> None:
        """Spooled batches whose files were dropped to keep the spool within its bound."""
        with self.cond:
            self.ready = deque(b for b in self.ready if b.path not in paths)

    def pending_events(self) -> int:
        return sum(b.count for b in self.ready) + sum(b.count for b in self.inflight)

    def oldest_seq(self) -> float:
        oldest = _INF
        for b in self.ready:
            oldest = min(oldest, b.first_seq)
        for b in self.inflight:
            oldest = min(oldest, b.first_seq)
        return oldest

    def open_gate(self) -> None:
        """flush()/close(): retry now, unless a Retry-After says otherwise (call under cond)."""
        if not self._forced:
            self._retry_at = 0.0

    def threads(self) -> list:
        with self.cond:
            return list(self._senders)

    def close_transports(self, abort: bool) -> None:
        for transport in self._transports:
            transport.abort() if abort else transport.close()

    def forget(self) -> None:
        """In a forked child: the parent's connections stay the parent's."""
        for transport in self._transports:
            transport.forget()

    # ------------------------------------------------------------------ senders

    def ensure_senders(self) -> None:
        with self.cond:
            want = min(self.max_in_flight, len(self.ready) + len(self.inflight))
            while len(self._senders) < want:
                transport = self._transport_factory()
                self._transports.append(transport)
                t = threading.Thread(target=self._send_loop, args=(transport,),
                                     name="pitcrew-events-send", daemon=True)
                t.start()
                self._senders.append(t)

    def settle_after_close(self) -> None:
        """Batches still waiting once every thread stopped: lost, or left in the spool."""
        with self.cond:
            ready = list(self.ready) + list(self.inflight)
            self.ready.clear()
        lost = sum(b.count for b in ready if b.path is None)
        kept = sum(b.count for b in ready if b.path is not None)
        if lost:
            self.lost(lost)
        if kept:
            log.info("%d events stay in the spool for the next process", kept)

    def _send_loop(self, transport) -> None:
        while True:
            with self.cond:
                while True:
                    stopping = self._stop.is_set()
                    if stopping and time.monotonic() >= self.deadline:
                        return
                    if self.ready and time.monotonic() >= self._retry_at:
                        batch = self.ready.popleft()
                        self.inflight.add(batch)
                        break
                    if stopping and not self.ready and self._batcher_done():
                        return
                    if self.ready and stopping and self._retry_at > self.deadline:
                        return  # Retry-After beyond the deadline: the events thread gives up
                    wait = self._retry_at - time.monotonic() if self.ready else 0.5
                    self.cond.wait(min(max(wait, 0.001), 0.5))
            try:
                self._deliver(transport, batch)
            except Exception:
                log.exception("unexpected error in event delivery")
                with self.cond:
                    self.ready.appendleft(batch)
                time.sleep(0.5)
            finally:
                with self.cond:
                    self.inflight.discard(batch)
                    self.cond.notify_all()
                self._on_idle()

    def _deliver(self, transport, batch: Batch) -> None:
        """One attempt at most per gate opening; loops until the batch is resolved or the
        close deadline passes (then it goes back to the ready list)."""
        while True:
            body = batch.body
            if body is None:
                body = self.spool.read(batch.path) if self.spool is not None else None
                if body is None:
                    self.resolved(batch)
                    self.fail(batch.count, "a spooled batch could not be read", key="spool-read")
                    return
            timeout = self.timeout
            if self._stop.is_set():
                timeout = min(timeout, max(self.deadline - time.monotonic(), 0.05))
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
            self.resolved(batch)
            self.fail(batch.count, f"the service refused events with HTTP {status}",
                       key=("status", status), detail=resp.body[:300])
            return

    def _retry_later(self, batch: Batch, retry_after, message: str) -> bool:
        """Close the gate for everyone; False when the close deadline leaves no retry."""
        now = time.monotonic()
        with self.cond:
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
            give_back = self._stop.is_set() and self._retry_at >= self.deadline
            if give_back:
                self.ready.appendleft(batch)
            self.cond.notify_all()
        if first:
            log.warning("%s; keeping the events and retrying", message)
        else:
            log.debug("%s; retry in %.1fs", message, delay)
        if give_back:
            return False
        with self.cond:  # wait for the gate (a flush() may open it early)
            while time.monotonic() < self._retry_at:
                if self._stop.is_set():
                    if time.monotonic() >= self.deadline or self._retry_at >= self.deadline:
                        self.ready.appendleft(batch)
                        return False
                until = min(self._retry_at, self.deadline)
                self.cond.wait(min(max(until - time.monotonic(), 0.001), 0.5))
        return True

    def _accepted(self, batch: Batch, resp) -> None:
        self.resolved(batch)
        with self.cond:
            self._attempt = 0
            self._forced = False
            if self.limit < MAX_BATCH_EVENTS:
                self.limit = min(MAX_BATCH_EVENTS, self.limit * 2)
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
        with self.cond:
            if isinstance(accepted, int) and isinstance(duplicates, int):
                self.sent += accepted + duplicates
            else:
                self.sent += batch.count - len(rejected)
        if rejected:
            first = rejected[0] if isinstance(rejected[0], dict) else {}
            self.fail(len(rejected), "the service rejected events",
                       key=("rejected", str(first.get("error"))[:100]), detail=first)

    def _split(self, batch: Batch, body: bytes) -> None:
        parts = [(half, body_count(half)) for half in split_batch(body)]
        with self.cond:
            self.limit = max(1, batch.count // 2)
        log.info("event batch too large for the service; splitting it")
        new = [Batch("", half, count, batch.first_seq) for half, count in parts]
        if self.spool is not None and batch.path is not None:
            try:
                paths = self.spool.replace(batch.path, parts)
                for b, p in zip(new, paths, strict=True):
                    b.path = p
            except OSError:
                pass
        with self.cond:
            for b in reversed(new):
                self.ready.appendleft(b)
            self.cond.notify_all()
        self.ensure_senders()

    def resolved(self, batch: Batch) -> None:
        """The batch's fate is decided: it leaves the spool."""
        if batch.path is not None and self.spool is not None:
            try:
                self.spool.remove(batch.path)
            except OSError:
                pass

    def fail(self, n: int, message: str, key=None, detail=None) -> None:
        with self.cond:
            self.failed += n
        key = key or message
        if detail:
            self.log_once(key, logging.WARNING, "%s (%d events, not retried): %r",
                           message, n, detail)
        else:
            self.log_once(key, logging.WARNING, "%s (%d events, not retried)", message, n)

    def lost(self, n: int) -> None:
        with self.cond:
            self.failed += n
        log.warning("%d events not delivered before the close timeout", n)

    def log_once(self, key, level, msg, *args) -> None:
        if key in self._logged:
            log.debug(msg, *args)
            return
        self._logged.add(key)
        log.log(level, msg, *args)
