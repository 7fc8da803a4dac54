"""The worker: ``flask --app service worker`` applies what is due.

Each pass applies every due scheduled change (service/domain/schedules.py)
and checks every guarded rollout whose check is due
(service/domain/rollouts.py), one item per transaction, each claimed with a
row lock (service/domain/concurrency.py). Every ``WORKER_HOUSEKEEPING_INTERVAL``
(an hour) a pass also announces flags that became potentially stale
(``flag.stale``, service/domain/lifecycle.py) and prunes old webhook
deliveries and evaluation batch ids.

Webhook deliveries (service/domain/webhooks.py) are sent by
:class:`Dispatcher`: ``WEBHOOK_CONCURRENCY`` threads (4) beside the main
loop, each leasing one due delivery at a time and sending it with a hard
deadline (service/webhook_sender.py), at most ``max_in_flight`` per
webhook. Slow or dead endpoints therefore never delay schedules and
rollouts, nor take every sender. Any number of workers can run
against one database: on PostgreSQL they share the work, on SQLite they
take turns. A worker that dies (even by SIGKILL) leaves no half-applied
item: the item's transaction never committed, and the next pass of any
worker applies it.

Between passes the worker sleeps ``WORKER_POLL_INTERVAL`` seconds (1 by
default, so a change is applied about a second after its time, well within
the 60 s promised); a database error backs off up to 30 s. SIGTERM or
SIGINT finish the current item and stop. The clock is injectable
(``Worker(clock=...)``) for tests and simulations.

``/metrics`` reads the queues from the database when scraped
(:class:`QueueCollector`), so the figures are right whichever process
serves them and however many workers run, and they keep growing when no
worker runs at all: ``pitcrew_worker_queue_depth{queue}`` (due items),
``pitcrew_worker_queue_lag_seconds{queue}`` (how overdue the oldest is) and
``pitcrew_worker_queue_pending{queue}`` (scheduled for later, or rollouts
running), for the queues ``schedules``, ``rollouts`` and ``webhooks``.
"""

import logging
import signal
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import click
import sqlalchemy as sa
from flask import current_app, has_app_context
from prometheus_client.core import GaugeMetricFamily

from . import ingest, webhook_sender
from .domain import lifecycle, rollouts, schedules, tokens, webhooks
from .domain.concurrency import begin_exclusive
from .extensions import db
from .models.types import utcnow
from .observability import SCRAPE_REGISTRY

log = logging.getLogger("pitcrew.worker")
MAX_BACKOFF = 30.0
HOUSEKEEPING_INTERVAL = timedelta(hours=1)


class Dispatcher:
    """Webhook senders: threads that lease due deliveries and send them, one at a time each."""

    def __init__(self, *, clock: Callable[[], datetime] = utcnow, threads: int = 4, poll_interval: float = 1.0,
                 stop_event: threading.Event | None = None):
        self.clock = clock
        self.threads = max(1, threads)
        self.poll_interval = poll_interval
        self.stop_event = stop_event or threading.Event()
        self._threads: list[threading.Thread] = []

    def deliver_one(self) -> bool:
        """Lease, send and record one due delivery; False when none is due."""
        claim = webhooks.claim_next(self.clock())
        if claim is None:
            return False
        db.session.remove()  # no connection held while the request is in flight
        try:
            outcome = webhook_sender.send(claim)
        except Exception as exc:  # a bug: record it as a failed attempt rather than lose the lease silently
            log.exception("webhook delivery %s: unexpected error while sending", claim.id)
            outcome = webhooks.Outcome(None, 0, error=f"Internal error ({type(exc).__name__}); see the worker log.")
        webhooks.record(claim, outcome, self.clock())
        return True

    def drain(self, limit: int = 1000) -> int:
        """Send what is due now in this thread (``worker --once`` and tests); the number sent."""
        sent = 0
        while sent < limit and not self.stop_event.is_set() and self.deliver_one():
            sent += 1
        db.session.remove()
        return sent

    def _loop(self, app) -> None:
        delay = self.poll_interval
        with app.app_context():
            while not self.stop_event.is_set():
                try:
                    if self.deliver_one():
                        delay = self.poll_interval
                        continue
                except sa.exc.DBAPIError as exc:  # the lease, if taken, expires and the delivery is retried
                    db.session.rollback()
                    delay = min(MAX_BACKOFF, max(delay, self.poll_interval) * 2)
                    log.warning("webhook sender failed: %s; retrying in %.0f s", type(exc).__name__, delay)
                finally:
                    db.session.remove()
                self.stop_event.wait(delay)

    def start(self) -> None:
        app = current_app._get_current_object()
        for i in range(self.threads):
            thread = threading.Thread(target=self._loop, args=(app,), name=f"webhook-sender-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)


class Worker:
    def __init__(self, *, clock: Callable[[], datetime] = utcnow, poll_interval: float = 1.0,
                 check_interval: timedelta = rollouts.DEFAULT_CHECK_INTERVAL, batch: int = 100,
                 senders: int = 4, housekeeping_interval: timedelta = HOUSEKEEPING_INTERVAL):
        self.clock = clock
        self.poll_interval = poll_interval
        self.check_interval = check_interval
        self.batch = batch
        self.housekeeping_interval = housekeeping_interval
        self.next_housekeeping: datetime | None = None
        self.stop_event = threading.Event()
        self.dispatcher = Dispatcher(clock=clock, threads=senders, poll_interval=poll_interval,
                                     stop_event=self.stop_event)

    def run_once(self, *, deliveries: bool = True) -> int:
        """Apply what is due now (at most ``batch`` items of each kind); the number of items handled.

        With ``deliveries`` (``worker --once``, tests) due webhook deliveries are
        sent too, in this thread; :meth:`run` leaves them to the dispatcher's threads."""
        done = 0
        for _ in range(self.batch):
            if self.stop_event.is_set() or schedules.apply_next_due(self.clock()) is None:
                break
            done += 1
        for _ in range(self.batch):
            if self.stop_event.is_set() or rollouts.check_next_due(self.clock(), interval=self.check_interval) is None:
                break
            done += 1
        self.housekeeping()
        if deliveries:
            done += self.dispatcher.drain(self.batch)
        db.session.remove()  # hold no connection while idle
        return done

    def housekeeping(self) -> None:
        """Hourly: announce newly stale flags; prune old deliveries, evaluation batch ids and console sessions."""
        now = self.clock()
        if self.next_housekeeping is not None and now < self.next_housekeeping:
            return
        begin_exclusive()
        try:
            lifecycle.announce_stale(now)
        except sa.exc.IntegrityError:  # another worker announced the same flags first
            db.session.rollback()
        webhooks.prune(now)
        ingest.prune_batches(now)
        tokens.prune_console_sessions(now)
        self.next_housekeeping = now + self.housekeeping_interval

    def run(self) -> None:
        """Pass after pass until :meth:`stop`; webhook senders run beside it."""
        delay = self.poll_interval
        log.info("worker started", extra={"fields": {"poll_interval": self.poll_interval}})
        self.dispatcher.start()
        while not self.stop_event.is_set():
            try:
                done = self.run_once(deliveries=False)
                delay = self.poll_interval
            except sa.exc.DBAPIError as exc:  # database down, or not migrated yet
                db.session.rollback()
                db.session.remove()
                done = 0
                delay = min(MAX_BACKOFF, max(delay, self.poll_interval) * 2)
                log.warning("worker pass failed: %s; retrying in %.0f s", type(exc).__name__, delay)
            if done == 0:
                self.stop_event.wait(delay)
        self.dispatcher.join(webhooks.settings.timeout + 5)
        log.info("worker stopped")

    def stop(self, *_args) -> None:
        self.stop_event.set()


@click.command("worker")
@click.option("--once", is_flag=True, help="Apply what is due now, then exit.")
@click.option("--poll-interval", type=float, default=None,
              help="Seconds between passes (default WORKER_POLL_INTERVAL, 1).")
def worker_command(once: bool, poll_interval: float | None) -> None:
    """Apply scheduled changes, run guarded rollouts, send webhooks (any number may run)."""
    config = current_app.config
    worker = Worker(poll_interval=poll_interval or config["WORKER_POLL_INTERVAL"],
                    check_interval=timedelta(seconds=config["ROLLOUT_CHECK_INTERVAL"]),
                    senders=config["WEBHOOK_CONCURRENCY"],
                    housekeeping_interval=timedelta(seconds=config["WORKER_HOUSEKEEPING_INTERVAL"]))
    if once:
        click.echo(f"{worker.run_once()} item(s) handled")
        return
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.run()


class QueueCollector:
    """Queue gauges computed from the database at scrape time (see the module docstring)."""

    def describe(self):
        return [GaugeMetricFamily("pitcrew_worker_queue_depth", "Due items not yet handled", labels=["queue"]),
                GaugeMetricFamily("pitcrew_worker_queue_lag_seconds", "Age of the oldest due item",
                                  labels=["queue"]),
                GaugeMetricFamily("pitcrew_worker_queue_pending", "Items waiting (due or later)",
                                  labels=["queue"])]

    def collect(self):
        if not has_app_context():  # scraped outside a request: nothing to read from
            return
        now = utcnow()
        try:
            stats = {"schedules": schedules.queue_stats(now), "rollouts": rollouts.queue_stats(now),
                     "webhooks": webhooks.queue_stats(now)}
        except sa.exc.SQLAlchemyError:
            db.session.rollback()
            return
        depth, lag, pending = self.describe()
        for queue, (due, waiting, seconds) in stats.items():
            depth.add_metric([queue], due)
            lag.add_metric([queue], seconds)
            pending.add_metric([queue], waiting)
        yield from (depth, lag, pending)


_registered = False


def init_app(app) -> None:
    """Register the ``worker`` command and the queue gauges (once per process)."""
    global _registered
    app.cli.add_command(worker_command)
    if not _registered:
        SCRAPE_REGISTRY.register(QueueCollector())
        _registered = True
