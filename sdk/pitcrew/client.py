"""The SDK facade: :class:`Client` (docs/sdk.md).

Shape (after LaunchDarkly's server SDK): the client owns a data store
(:mod:`pitcrew.store`), a data source that fills it (:mod:`pitcrew.datasource`), the
evaluation engine (:mod:`pitcrew.evaluation`) and an event sink
(:mod:`pitcrew.events`), and uses each only through its interface in
:mod:`pitcrew.interfaces`; each network component has its own
:class:`~pitcrew.transport.Transport`. Background threads: ``pitcrew-datasource``,
``pitcrew-events`` (started lazily) and its senders ``pitcrew-events-send`` (one at
low load, up to four under load), and ``pitcrew-catchup`` while a streaming client
retries a fetch that missed an announced version (:mod:`pitcrew.datasource`).

The evaluation path does no I/O and takes no lock that a background thread
holds during I/O: it reads the current compiled ruleset from one attribute,
evaluates, bumps a counter, and only for an in-experiment result (or a unit
held out or measured by a holdout) takes the event processor's short lock to
deduplicate and queue the exposure.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping

from .datasource import DataSource
from .evaluation import EvaluationResult, Reason, evaluate
from .events import EventProcessor
from .interfaces import DataSource as DataSourceInterface
from .interfaces import DataStore, EventSink
from .store import RulesetStore, key_fingerprint, load_into, read_cache
from .transport import Transport

log = logging.getLogger("pitcrew")
log.addHandler(logging.NullHandler())

__all__ = ["Client"]

_evaluate = evaluate
_NOT_READY = Reason.CLIENT_NOT_READY
_WRONG_TYPE = Reason.WRONG_TYPE


def _copy_json(v):
    """A copy of a JSON value's containers, so callers cannot mutate the shared ruleset."""
    cls = v.__class__
    if cls is dict:
        return {k: _copy_json(x) for k, x in v.items()}
    if cls is list:
        return [_copy_json(x) for x in v]
    return v


def _is_bool(v):
    return v.__class__ is bool


def _is_str(v):
    return isinstance(v, str)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_json(v):
    return True


_KINDS = {"boolean": _is_bool, "string": _is_str, "number": _is_number, "json": _is_json}


class Client:
    """A Pitcrew SDK client: local evaluation, background sync, event reporting.

    Construction never blocks on the network and never raises on network
    problems. Until a ruleset is loaded (``bootstrap``, ``cache_path`` or the
    service), evaluations return the caller's default with reason
    CLIENT_NOT_READY. Create one client per process (it is thread-safe and
    fork-safe) and ``close()`` it on shutdown (interpreter exit does it too).
    """

    def __init__(self, url: str, sdk_key: str, *, poll_interval: float = 30, stream: bool = False,
                 events: bool = True, flush_interval: float = 5, max_queue: int = 10000,
                 cache_path: str | None = None, bootstrap: dict | None = None,
                 timeout: float = 5, spool_path: str | None = None):
        if not isinstance(url, str) or not isinstance(sdk_key, str):
            raise TypeError("Client(url, sdk_key): both must be strings")
        self._url = url.rstrip("/")
        self._timeout = max(float(timeout), 0.01)
        self._closed = False
        self._compiled = None
        self._events: EventSink | None = None
        self._counts = None
        self._store: DataStore = RulesetStore()
        store = self._store
        store.add_listener(self._on_ruleset)
        fingerprint = key_fingerprint(self._url, sdk_key)

        if bootstrap is not None:
            load_into(store, bootstrap, "bootstrap")
        if cache_path:
            # Only a file written with this URL and key: another environment's flags are
            # worse than none (the first fetch overwrites the file).
            cached = read_cache(cache_path, fingerprint)
            if cached is not None:
                ruleset, etag, _ = cached
                held = store.version
                v = ruleset.get("version")
                if held is None or (isinstance(v, int) and v >= held):
                    load_into(store, ruleset, "cache", etag)

        if events:
            url, timeout = self._url, self._timeout
            self._events = EventProcessor(
                lambda: Transport(url, sdk_key, timeout), flush_interval=flush_interval,
                max_queue=max_queue, timeout=timeout, spool_path=spool_path,
            )
            self._counts = self._events.counters
            if store.compiled is not None or spool_path:
                self._events.start()  # with a spool: resend what an earlier process left
        self._datasource: DataSourceInterface = DataSource(
            Transport(self._url, sdk_key, self._timeout), store, poll_interval=poll_interval,
            stream=stream, cache_path=cache_path, fingerprint=fingerprint,
        )
        _register(self)
        self._datasource.start()

    # ================================================================= evaluation

    def variation(self, flag: str, context: Mapping, default=None):
        """The flag's value for ``context``, or ``default``. Never raises."""
        compiled = self._compiled
        if compiled is None:
            return default
        try:
            r = _evaluate(compiled, flag, context, default)
            counts = self._counts
            if counts is not None:
                key = (flag, r.variation)
                c = counts.get(key)
                if c is None:
                    c = self._events.counter(key)
                next(c)
                if r.in_experiment:
                    self._events.exposure(r, compiled, context)
                if r.holdout is not None:
                    self._events.holdout_exposure(r.holdout)
            v = r.value
            if v.__class__ is dict or v.__class__ is list:
                return _copy_json(v) if r.variation is not None else v
            return v
        except Exception:
            return default

    def variation_detail(self, flag: str, context: Mapping, default=None, *,
                         kind: str | None = None) -> EvaluationResult:
        """The full :class:`EvaluationResult` (value, variation, reason, rule_id, experiment, ...).

        With ``kind`` ("boolean", "string", "number", "json"), a flag of another
        kind gives ``default`` with reason WRONG_TYPE. Never raises.
        """
        compiled = self._compiled
        if compiled is None:
            return EvaluationResult(default, None, _NOT_READY)
        try:
            if kind is not None:
                check = _KINDS.get(kind)
                f = compiled.flag(flag)
                if check is None or (f is not None and f.kind != kind):
                    self._count(flag, None)
                    return EvaluationResult(default, None, _WRONG_TYPE)
            r = _evaluate(compiled, flag, context, default)
            if kind is not None and r.variation is not None and not check(r.value):
                self._count(flag, None)
                return EvaluationResult(default, None, _WRONG_TYPE)
            if self._counts is not None:
                self._count(flag, r.variation)
                if r.in_experiment:
                    self._events.exposure(r, compiled, context)
                if r.holdout is not None:
                    self._events.holdout_exposure(r.holdout)
            # A private copy: results of constant serves are shared by every call.
            v = r.value
            if (v.__class__ is dict or v.__class__ is list) and r.variation is not None:
                v = _copy_json(v)
            return EvaluationResult(v, r.variation, r.reason, r.rule_id, r.experiment,
                                    r.in_experiment, r.unit, r.holdout)
        except Exception:
            return EvaluationResult(default, None, Reason.ERROR)

    def _count(self, flag, variation) -> None:
        counts = self._counts
        if counts is None:
            return
        try:
            key = (flag, variation)
            c = counts.get(key)
            if c is None:
                c = self._events.counter(key)
            next(c)
        except Exception:
            pass

    def enabled(self, flag: str, context: Mapping) -> bool:
        """True when the boolean flag evaluates to true; False otherwise (also on any error)."""
        return self.variation_detail(flag, context, False, kind="boolean").value is True

    def bool_variation(self, flag: str, context: Mapping, default: bool = False):
        return self.variation_detail(flag, context, default, kind="boolean").value

    def string_variation(self, flag: str, context: Mapping, default: str = ""):
        return self.variation_detail(flag, context, default, kind="string").value

    def number_variation(self, flag: str, context: Mapping, default: float = 0):
        return self.variation_detail(flag, context, default, kind="number").value

    def json_variation(self, flag: str, context: Mapping, default=None):
        return self.variation_detail(flag, context, default, kind="json").value

    def all_flags(self, context: Mapping) -> dict:
        """``{flag: value}`` for every flag, without recording exposures or counts."""
        compiled = self._compiled
        if compiled is None:
            return {}
        out = {}
        try:
            for key in list(compiled.flag_keys):
                out[key] = _copy_json(_evaluate(compiled, key, context, None).value)
        except Exception:
            pass
        return out

    # ================================================================= events

    def track(self, event: str, context: Mapping, value: float | None = None) -> None:
        """Record an outcome event for the context's units. Never raises, never blocks."""
        ep = self._events
        if ep is None:
            return
        try:
            compiled = self._compiled
            ep.track(event, context, value, () if compiled is None else compiled.track_units)
        except Exception:
            pass

    def flush(self, timeout: float | None = None) -> bool:
        """Send queued events now and wait up to ``timeout`` seconds (default: the client's
        ``timeout``; 0 only schedules). True when everything queued before the call was
        delivered (or refused for good). Blocks the calling thread: from asyncio code use
        ``await asyncio.to_thread(client.flush)``."""
        ep = self._events
        if ep is None:
            return True
        try:
            return ep.flush(timeout)
        except Exception:
            log.exception("flush failed")
            return False

    def stats(self) -> dict:
        """Event pipeline counters: queued, sent, dropped, failed, plus invalid, deduplicated,
        retries, ``dropped_by_reason`` (``queue_full``, ``spool_full``, ``closed``), spooled
        (events on disk) and in_flight (batches being sent). See docs/sdk-events.md."""
        ep = self._events
        if ep is None:
            return {"queued": 0, "sent": 0, "dropped": 0, "failed": 0, "invalid": 0,
                    "deduplicated": 0, "retries": 0, "dropped_by_reason": {}, "spooled": 0,
                    "in_flight": 0}
        return ep.stats()

    # ================================================================= state

    def is_ready(self) -> bool:
        """True once a ruleset was actually loaded (from the service, the cache or bootstrap)."""
        return self._compiled is not None

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds (default: the client's ``timeout``) for a ruleset.

        Returns False early when the service refused the SDK key (401/403: ``status()``
        then says ``"unauthorized"``); the client keeps retrying in the background."""
        if self._compiled is not None:
            return True
        if timeout is None:
            timeout = self._timeout
        try:
            deadline = time.monotonic() + max(float(timeout), 0.0)
            ready = self._store.ready
            while True:
                remaining = deadline - time.monotonic()
                if ready.wait(max(min(remaining, 0.05), 0.0)):
                    return True
                if remaining <= 0 or self._datasource.state == "unauthorized":
                    return False
        except Exception:
            return self._compiled is not None

    def status(self) -> dict:
        """Where the ruleset comes from and how the connection to the service is doing."""
        store = self._store
        compiled = self._compiled
        ds = self._datasource
        return {
            "ready": compiled is not None,
            "source": store.source,
            "version": None if compiled is None else compiled.version,
            "environment": None if compiled is None else compiled.environment,
            "state": ds.state,  # initializing, valid, interrupted, unauthorized, closed
            "last_error": ds.last_error,
            "stream_connected": ds.stream_connected,
            "updated_at": store.updated_at,
            "checked_at": store.checked_at,
        }

    @property
    def ruleset(self):
        """The current :class:`~pitcrew.evaluation.CompiledRuleset` (None before the first one)."""
        return self._compiled

    def add_listener(self, fn) -> None:
        """``fn(old, new)`` is called with compiled rulesets after every update (on a background
        thread; keep it quick)."""
        self._store.add_listener(fn)

    def remove_listener(self, fn) -> None:
        self._store.remove_listener(fn)

    def _on_ruleset(self, old, new) -> None:
        self._compiled = new
        ep = self._events
        if ep is not None and not ep.started and not self._closed:
            ep.start()

    # ================================================================= lifecycle

    def close(self, timeout: float | None = None) -> None:
        """Stop syncing and deliver queued events, returning within ``timeout`` seconds
        (default: the client's ``timeout``) even if the network hangs. Idempotent. The client
        keeps serving its last ruleset after close; events recorded afterwards are dropped."""
        if self._closed:
            return
        self._closed = True
        if timeout is None:
            timeout = self._timeout
        deadline = time.monotonic() + max(float(timeout), 0.0)
        try:
            self._datasource.stop(0)  # signal and unblock; joined below
            if self._events is not None:
                self._events.close(max(deadline - time.monotonic(), 0.0))
            self._datasource.stop(max(min(deadline - time.monotonic(), 1.0), 0.0))
        except Exception:
            log.exception("error while closing the client")
        _unregister(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        self._store.after_fork()
        if self._events is not None:
            self._events.after_fork()
            self._counts = self._events.counters
        self._datasource.after_fork()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("ready" if self._compiled is not None else "not ready")
        return f"<pitcrew.Client {self._url} {state} v{self._store.version}>"


# ===================================================================== process hooks

_CLIENTS: weakref.WeakSet = weakref.WeakSet()
_CLIENTS_LOCK = threading.Lock()


def _register(client: Client) -> None:
    with _CLIENTS_LOCK:
        _CLIENTS.add(client)
    _watch_multiprocessing()


def _unregister(client: Client) -> None:
    with _CLIENTS_LOCK:
        _CLIENTS.discard(client)


def _after_fork_in_child() -> None:
    """os.fork() child: each client gets its own threads, queue and connections."""
    global _CLIENTS_LOCK
    _CLIENTS_LOCK = threading.Lock()
    for client in list(_CLIENTS):
        try:
            client._after_fork_in_child()
        except Exception:
            log.exception("could not restart a client after fork")


def _close_all(timeout_cap: float | None = None) -> None:
    """Close every open client (interpreter exit), bounded by the largest client timeout."""
    clients = [c for c in list(_CLIENTS) if not c._closed]
    if not clients:
        return
    bound = max(c._timeout for c in clients)
    if timeout_cap is not None:
        bound = min(bound, timeout_cap)
    deadline = time.monotonic() + bound
    for c in clients:
        try:
            c.close(max(deadline - time.monotonic(), 0.0))
        except Exception:
            pass


_MP_WATCHED = False


def _watch_multiprocessing() -> None:
    """multiprocessing children end with os._exit(), skipping atexit: close clients from its
    own exit hook instead. Registered once per process, only if multiprocessing is in use."""
    global _MP_WATCHED
    if _MP_WATCHED:
        return
    import sys

    if "multiprocessing" not in sys.modules:
        return
    _MP_WATCHED = True
    try:
        from multiprocessing import util

        util.register_after_fork(_MP_TOKEN, _mp_child)
    except Exception:
        pass


class _Token:
    pass


_MP_TOKEN = _Token()


def _mp_child(_token) -> None:
    from multiprocessing import util

    util.Finalize(None, _close_all, exitpriority=100)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all)
