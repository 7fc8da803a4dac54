"""What each service process keeps in memory for SDK delivery, and the one
watcher that keeps it current (docs/delivery.md).

Per process (per gunicorn worker) one :class:`Delivery` holds:

* every environment's ruleset version and its built ruleset (body, ETag);
* every active SDK key (by the SHA-256 of its secret) and its environment;
* a :class:`pitcrew_edge.hub.Hub` that wakes the open streams.

One watcher thread refreshes them: on PostgreSQL it LISTENs on the channel
the migration's triggers NOTIFY in the transaction of every ruleset bump,
environment change and SDK key change (plus a slow resync as a safety net);
on SQLite it polls two cheap queries every ``DELIVERY_POLL_INTERVAL``. A
changed ruleset is built once, in the watcher, before the streams are
woken, so the refetch they trigger is answered from memory. SDK requests
never touch the database on this path; key use (``last_used_at``) is
recorded in memory and written by the watcher at most every
``TOKEN_TOUCH_INTERVAL`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa

from pitcrew_edge.hub import Hub

from . import ruleset as ruleset_cache
from .domain.tokens import hash_secret
from .extensions import db
from .models import Environment, SdkKey
from .models.types import utcnow

log = logging.getLogger("pitcrew.delivery")

CHANNEL = "pitcrew_delivery"  # the migration 0008 triggers NOTIFY it


@dataclass(frozen=True, slots=True)
class KeyEntry:
    id: int
    environment_id: int


class Delivery:
    def __init__(self, app):
        self.app = app
        config = app.config
        self.poll_interval = float(config["DELIVERY_POLL_INTERVAL"])
        self.resync_interval = float(config["DELIVERY_RESYNC_INTERVAL"])
        self.touch_interval = float(config["TOKEN_TOUCH_INTERVAL"])
        self.hub = Hub(heartbeat=float(config["STREAM_HEARTBEAT"]),
                       max_streams=int(config["STREAM_MAX_PER_PROCESS"]))
        # Read on the event loop, replaced (never mutated) by _apply on it.
        self.keys: dict[str, KeyEntry] = {}
        self.versions: dict[int, int] = {}
        self.rulesets: dict[int, ruleset_cache.Ruleset] = {}
        self.synced = threading.Event()
        self._touched: set[int] = set()
        self._last_touch = 0.0
        self._fingerprint = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._listener = None
        self._failing = False
        self._sync_waiters: list[asyncio.Future] = []
        self._waiters_lock = threading.Lock()
        self.shared = None  # SharedVersions, under gunicorn (see start)

    # ------------------------------------------------------------------ lifecycle

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._thread is not None:
            return
        self._loop = loop
        try:
            from .delivery_shared import SharedVersions

            self.shared = SharedVersions()
        except OSError as exc:
            log.warning("delivery: no shared version map (%s); workers may answer 304 a moment late", exc)
        self._thread = threading.Thread(target=self._run, name="pitcrew-delivery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        listener = self._listener
        if listener is not None:
            with contextlib.suppress(Exception):  # closing anyway
                listener.cancel_safe(timeout=1)
        self.hub.close()

    # ------------------------------------------------------------------ event-loop side

    def lookup(self, secret: str) -> tuple[str, KeyEntry] | None:
        digest = hash_secret(secret)
        entry = self.keys.get(digest)
        return None if entry is None else (digest, entry)

    def behind(self, environment_id: int) -> bool:
        """Whether a sibling worker has seen a newer version of the environment than this one."""
        if self.shared is None:
            return False
        newest = self.shared.newest(environment_id)
        held = self.versions.get(environment_id)
        return newest is not None and held is not None and newest > held

    def stream_state(self, digest: str, environment_id: int) -> int | str:
        """The version a stream should announce, or why it must end."""
        version = self.versions.get(environment_id)
        if version is None:
            return "environment deleted"
        entry = self.keys.get(digest)
        if entry is None or entry.environment_id != environment_id:
            return "key revoked"
        return version

    async def next_sync(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until the watcher has synced once more."""
        future = asyncio.get_running_loop().create_future()
        with self._waiters_lock:
            self._sync_waiters.append(future)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(future, timeout)

    @staticmethod
    def _release(waiters) -> None:
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def touch(self, key_id: int) -> None:
        self._touched.add(key_id)

    def _apply(self, versions: dict, keys: dict | None, rulesets: dict) -> None:
        old = self.versions
        self.versions = versions
        merged = {env: rs for env, rs in self.rulesets.items() if env in versions}
        merged.update(rulesets)
        self.rulesets = merged
        if keys is not None:
            self.keys = keys
        if keys is not None or any(env not in versions for env in old):
            self.hub.wake_all()  # every stream re-checks its key and environment
        else:
            for env, version in versions.items():
                if old.get(env) != version:
                    self.hub.wake(env)

    # ------------------------------------------------------------------ watcher thread

    def _run(self) -> None:
        failures = 0
        with self.app.app_context():
            while not self._stop.is_set():
                try:
                    self._sync()
                    self._flush_touches()
                    if self._failing:
                        log.info("delivery watcher: database reachable again")
                    self._failing = False
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - the watcher must outlive outages
                    failures += 1
                    if not self._failing:
                        log.warning("delivery watcher: cannot read the database (%s); "
                                    "serving what is in memory and retrying", exc.__class__.__name__)
                    self._failing = True
                    db.session.rollback()
                finally:
                    db.session.remove()
                self._wait(failures)
        self._close_listener()

    def _sync(self) -> None:
        # Waiters that arrived before this sync started are released after it.
        with self._waiters_lock:
            waiters, self._sync_waiters = self._sync_waiters, []
        versions = dict(db.session.execute(sa.select(Environment.id, Environment.ruleset_version)).all())
        # Any insert, revocation or deletion of a key moves one of these.
        fingerprint = tuple(db.session.execute(sa.select(
            sa.func.count(SdkKey.id), sa.func.min(SdkKey.id), sa.func.max(SdkKey.id),
            sa.func.max(SdkKey.created_at), sa.func.count(SdkKey.revoked_at))).one())
        keys = None
        if fingerprint != self._fingerprint:
            rows = db.session.execute(sa.select(SdkKey.id, SdkKey.key_hash, SdkKey.environment_id)
                                      .where(SdkKey.revoked_at.is_(None))).all()
            keys = {row.key_hash: KeyEntry(row.id, row.environment_id) for row in rows}
        rulesets = {}
        for env, version in versions.items():
            held = self.rulesets.get(env)
            if held is None or held.version != version:
                try:
                    rulesets[env] = ruleset_cache.current(env, version)
                except ruleset_cache.EnvironmentGone:
                    continue  # deleted since the first query; the next sync drops it
        db.session.rollback()  # end the read transaction before handing over
        if self.shared is not None:
            self.shared.record(versions)  # before any stream of this process announces them
        if keys is not None or rulesets or versions != self.versions:
            done = threading.Event()

            def apply():
                try:
                    self._apply(versions, keys, rulesets)
                finally:
                    done.set()

            self._loop.call_soon_threadsafe(apply)
            done.wait(5)
        self._fingerprint = fingerprint
        self.synced.set()
        if waiters:
            self._loop.call_soon_threadsafe(self._release, waiters)

    def _flush_touches(self) -> None:
        if not self._touched or time.monotonic() - self._last_touch < self.touch_interval:
            return
        touched, self._touched = self._touched, set()
        self._last_touch = time.monotonic()
        db.session.execute(sa.update(SdkKey).where(SdkKey.id.in_(sorted(touched)))
                           .values(last_used_at=utcnow()))
        db.session.commit()

    # ------------------------------------------------------------------ waiting for the next change

    def _wait(self, failures: int) -> None:
        if failures:
            self._stop.wait(min(0.2 * 2 ** min(failures, 5), 5.0))
            return
        if db.engine.dialect.name != "postgresql":
            self._stop.wait(self.poll_interval)
            return
        try:
            if self._listener is None:
                self._listen()
                return  # sync again: nothing between the last sync and LISTEN is missed
            listener = self._listener
            for _ in listener.notifies(timeout=self.resync_interval, stop_after=1):
                break
            # Coalesce a burst of notifications into one refresh.
            for _ in listener.notifies(timeout=0.001):
                pass
        except Exception as exc:  # noqa: BLE001 - reconnect on the next round, poll meanwhile
            if self._listener is not None:
                log.warning("delivery watcher: LISTEN connection lost (%s); reconnecting",
                            exc.__class__.__name__)
            self._close_listener()
            self._stop.wait(self.poll_interval)

    def _listen(self):
        import psycopg

        url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        connection = psycopg.connect(url, autocommit=True, connect_timeout=5)
        connection.execute(f"LISTEN {CHANNEL}")
        self._listener = connection
        return connection

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):  # closing anyway
                listener.close()
