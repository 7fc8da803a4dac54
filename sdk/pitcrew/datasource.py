"""Keeps the client's ruleset current: polling with ETag, or streaming, and the disk cache.

One daemon thread per client:

* polling (default): ``GET /sdk/v1/config`` with ``If-None-Match`` every
  ``poll_interval`` seconds (times a random factor in [0.9, 1.0), so a fleet
  started together spreads out). Until the first ruleset arrives, failures are
  retried sooner, with exponential backoff capped at the poll interval;
* streaming (``stream=True``): one fetch, then ``GET /sdk/v1/stream``
  (Server-Sent Events). Each ``config`` event announcing a version other than
  the one held triggers a fetch. A broken or silent stream (no line, not
  even the keep-alive comment, within ``STREAM_READ_TIMEOUT``) is
  reconnected with jittered exponential backoff; while it is down the source
  polls on each attempt, so a service or proxy without streaming degrades to
  polling at ``min(poll_interval, STREAM_RETRY_MAX)``.

  Behind a load balancer the fetch an event triggers may reach an instance
  that has not learned the announced version yet (a 304, or an older
  ruleset). The fetch is then retried by a short-lived second thread,
  ``pitcrew-catchup``, with its own connection and jittered backoff from
  ``CATCHUP_RETRY_BASE`` for at most ``CATCHUP_BUDGET`` seconds, until the
  announced version is held; a later event raises the target of the running
  retries rather than starting more. Past the budget the regular poll takes
  over.

A fetched ruleset is compiled first and then swapped in (see :mod:`pitcrew.store`);
an invalid one is logged and ignored. Failures never clear the ruleset held,
and with ``cache_path`` every new ruleset is written to disk atomically.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time

from .evaluation import InvalidRuleset
from .store import RulesetStore, write_cache
from .transport import Transport, TransportError, backoff_delay
from .wire import CONFIG_PATH, STREAM_PATH

log = logging.getLogger("pitcrew")

__all__ = ["DataSource"]

STREAM_READ_TIMEOUT = 45.0  # > 2 x the service's 15 s keep-alive
STREAM_RETRY_BASE = 0.5
STREAM_RETRY_MAX = 30.0
INITIAL_RETRY_BASE = 1.0
CATCHUP_RETRY_BASE = 0.1  # first retry of a refetch that missed the announced version
CATCHUP_RETRY_MAX = 1.6
CATCHUP_BUDGET = 5.0  # seconds of retries per announced version, then the poll takes over


class DataSource:
    """The background thread that fills a :class:`~pitcrew.store.RulesetStore`."""

    def __init__(self, transport: Transport, store: RulesetStore, *, poll_interval: float,
                 stream: bool, cache_path: str | None, fingerprint: str):
        self._transport = transport
        self._store = store
        self._poll_interval = max(float(poll_interval), 0.05)
        self._stream = bool(stream)
        self._cache_path = cache_path
        self._fingerprint = fingerprint
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._logged: set = set()
        # "initializing" -> "valid" | "interrupted" | "unauthorized" (401/403) | "closed"
        self.state = "initializing"
        self.last_error: str | None = None
        self.stream_connected = False
        # Catch-up retries after a refetch that missed a version the stream announced.
        self._catchup_lock = threading.Lock()
        self._catchup_target: int | None = None  # newest announced version not yet held
        self._catchup_deadline = 0.0
        self._catchup_thread: threading.Thread | None = None
        self._catchup_transport: Transport | None = None
        self._apply_lock = threading.Lock()  # a swap and its cache write, one thread at a time

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="pitcrew-datasource", daemon=True)
            self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop the thread; returns within ``timeout`` even if it is stuck in the network."""
        self._stop.set()
        self.state = "closed"
        self._transport.abort()  # unblocks a read on the stream or a slow fetch
        catchup_transport = self._catchup_transport
        if catchup_transport is not None:
            catchup_transport.abort()
        deadline = time.monotonic() + max(timeout, 0)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(timeout, 0))
        if thread is None or not thread.is_alive():
            self._transport.close()
        catchup = self._catchup_thread
        if catchup is not None and catchup is not threading.current_thread():
            catchup.join(max(deadline - time.monotonic(), 0))
        if catchup_transport is not None and (catchup is None or not catchup.is_alive()):
            catchup_transport.close()

    def after_fork(self) -> None:
        """In a forked child: forget the parent's thread and sockets, start afresh."""
        self._transport.forget()
        if self._catchup_transport is not None:
            self._catchup_transport.forget()
        self._start_lock = threading.Lock()
        self._thread = None
        self.stream_connected = False
        self._catchup_lock = threading.Lock()
        self._apply_lock = threading.Lock()
        self._catchup_thread = None
        self._catchup_target = None
        if not self._stop.is_set():
            self._stop = threading.Event()
            self.start()

    @property
    def alive(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    # ------------------------------------------------------------------ main loops

    def _run(self) -> None:
        try:
            if self._stream:
                self._run_streaming()
            else:
                self._run_polling()
        except Exception:  # never let the thread die silently
            log.exception("data source stopped after an unexpected error")

    def _run_polling(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if self.poll_once():
                failures = 0
                delay = self._poll_interval * (0.9 + 0.1 * random.random())
            else:
                failures += 1
                if self._store.compiled is None:
                    delay = backoff_delay(failures, INITIAL_RETRY_BASE, self._poll_interval)
                else:
                    delay = self._poll_interval * (0.9 + 0.1 * random.random())
            self._stop.wait(delay)

    def _run_streaming(self) -> None:
        self.poll_once()  # ready without waiting for the stream (a proxy may buffer it)
        failures = 0
        while not self._stop.is_set():
            received = self._stream_once()
            if self._stop.is_set():
                return
            failures = 1 if received else failures + 1
            # Fall back to polling while the stream is down, so no change is missed.
            self.poll_once()
            cap = min(STREAM_RETRY_MAX, self._poll_interval)
            self._stop.wait(backoff_delay(failures, STREAM_RETRY_BASE, cap))

    def _stream_once(self) -> bool:
        """Hold one stream connection until it ends; True if any event arrived on it."""
        received = False
        try:
            resp = self._transport.open_stream(STREAM_PATH, read_timeout=STREAM_READ_TIMEOUT)
        except TransportError as exc:
            self._note_failure(f"stream: service unreachable: {exc}")
            return False
        try:
            if resp.status != 200:
                resp.read_body()
                self._note_failure(f"stream: HTTP {resp.status}", status=resp.status)
                return False
            self.stream_connected = True
            for event, data in _sse_events(resp.lines()):
                if self._stop.is_set():
                    return received
                received = True
                if event == "config":
                    self._on_config_event(data)
            self._note_failure("stream: closed by the service", quiet=True)
        except TransportError as exc:
            if not self._stop.is_set():
                self._note_failure(f"stream: {exc}", quiet=received)
        finally:
            self.stream_connected = False
            resp.close()
        return received

    def _on_config_event(self, data: str) -> None:
        try:
            payload = json.loads(data) if data else {}
        except ValueError:
            payload = {}
        if isinstance(payload, dict) and isinstance(payload.get("flags"), dict):
            # A whole ruleset pushed on the stream (docs/delivery.md, "Streams").
            self._apply(payload, data.encode(), None)
            return
        version = payload.get("version") if isinstance(payload, dict) else None
        if version is not None and version == self._store.version and self._store.source == "service":
            return
        self.poll_once()
        if isinstance(version, int) and not isinstance(version, bool) and self._behind(version):
            self._catch_up(version)

    # ------------------------------------------------------------------ catching up

    def _behind(self, version: int) -> bool:
        held = self._store.version
        return held is None or held < version

    def _catch_up(self, version: int) -> None:
        """The refetch after an event announcing ``version`` did not deliver it (another
        instance, not yet updated, answered): retry in the background, briefly."""
        with self._catchup_lock:
            if self._stop.is_set():
                return
            if self._catchup_target is None or version > self._catchup_target:
                self._catchup_target = version
                self._catchup_deadline = time.monotonic() + CATCHUP_BUDGET
            if self._catchup_thread is not None:
                return  # the running retries now aim at the newest version announced
            if self._catchup_transport is None:
                self._catchup_transport = self._transport.clone()
            self._catchup_thread = threading.Thread(target=self._run_catchup, name="pitcrew-catchup",
                                                    daemon=True)
            self._catchup_thread.start()

    def _run_catchup(self) -> None:
        attempt = 0
        target = None
        try:
            while True:
                with self._catchup_lock:
                    if target != self._catchup_target:
                        target, attempt = self._catchup_target, 0  # a newer announcement
                    now = time.monotonic()
                    if self._stop.is_set() or target is None or not self._behind(target):
                        done = True
                    elif now >= self._catchup_deadline:
                        self._log_once("catchup", logging.INFO,
                                       "the stream announced version %s but the service answered "
                                       "with version %s for %.0f s (an instance behind a load "
                                       "balancer not yet updated?); the next poll will catch up",
                                       target, self._store.version, CATCHUP_BUDGET)
                        done = True
                    else:
                        done = False
                        attempt += 1
                        delay = min(backoff_delay(attempt, CATCHUP_RETRY_BASE, CATCHUP_RETRY_MAX),
                                    self._catchup_deadline - now)
                    if done:
                        self._catchup_target = None
                        self._catchup_thread = None
                        return
                if not self._stop.wait(delay):
                    self.poll_once(self._catchup_transport)
        except Exception:
            log.exception("catch-up retries stopped after an unexpected error")
            with self._catchup_lock:
                self._catchup_target = None
                self._catchup_thread = None

    # ------------------------------------------------------------------ fetching

    def poll_once(self, transport: Transport | None = None) -> bool:
        """One ``GET /sdk/v1/config``; True when the service answered 200 or 304.

        ``transport``: the calling thread's, when not the data source thread's own."""
        headers = {}
        if self._store.etag and self._store.compiled is not None:
            headers["If-None-Match"] = self._store.etag
        try:
            resp = (transport or self._transport).request("GET", CONFIG_PATH, headers=headers)
        except TransportError as exc:
            self._note_failure(f"service unreachable: {exc}")
            return False
        if resp.status == 304:
            self._succeeded()
            self._store.confirm()
            return True
        if resp.status != 200:
            self._note_failure(f"GET {CONFIG_PATH}: HTTP {resp.status}", status=resp.status)
            return False
        try:
            ruleset = json.loads(resp.body)
        except ValueError as exc:
            self._note_failure(f"GET {CONFIG_PATH}: invalid JSON: {exc}")
            return False
        return self._apply(ruleset, resp.body, resp.header("etag"))

    def _apply(self, ruleset, body: bytes, etag: str | None) -> bool:
        with self._apply_lock:  # so the cache file ends with the newest ruleset applied
            try:
                applied = self._store.apply(ruleset, source="service", etag=etag)
            except InvalidRuleset as exc:
                self._note_failure(f"invalid ruleset from the service: {exc}")
                return False
            self._succeeded()
            if applied is None:
                log.debug("ignoring ruleset version %s from the service: version %s is held",
                          ruleset.get("version"), self._store.version)
                return True
            if self._cache_path:
                try:
                    write_cache(self._cache_path, body, etag, self._fingerprint)
                except Exception as exc:
                    self._log_once("cache-write", logging.WARNING,
                                   "could not write cache file %s: %s", self._cache_path, exc)
        return True

    # ------------------------------------------------------------------ status and logging

    def _succeeded(self) -> None:
        self._store.checked_at = time.time()
        if self._stop.is_set():
            return
        if self.state in ("interrupted", "unauthorized"):
            log.info("connection to the service restored")
        self.state = "valid"
        self.last_error = None

    def _note_failure(self, message: str, status: int | None = None, quiet: bool = False) -> None:
        self.last_error = message
        if self._stop.is_set():
            return
        was = self.state
        if status in (401, 403):
            # Permanent until someone fixes the key: no use waiting for a ruleset meanwhile.
            self.state = "unauthorized"
            self._log_once(("status", status), logging.ERROR,
                           "the service refused the SDK key (%s); check the key", message)
            return
        if was == "valid":
            self.state = "interrupted"
        elif quiet:
            log.debug("%s", message)
        elif was == "valid":  # once per outage
            log.warning("%s; serving the last ruleset until the service is back", message)
        elif was == "initializing":
            self._log_once("initial", logging.WARNING,
                           "%s; no ruleset from the service yet, retrying", message)
        else:
            log.debug("%s", message)

    def _log_once(self, key, level, msg, *args) -> None:
        if key in self._logged:
            log.debug(msg, *args)
            return
        self._logged.add(key)
        log.log(level, msg, *args)


def _sse_events(lines):
    """Parse Server-Sent Events: yield ``(event, data)`` for each dispatched event."""
    event = None
    data: list = []
    for line in lines:
        if not line:
            if data or event is not None:
                yield (event or "message"), "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        # "id" and "retry" are not used
