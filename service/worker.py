"""The worker: ``flask --app service worker`` applies what is due.

Each pass applies every due scheduled change (service/domain/schedules.py)
and checks every guarded rollout whose check is due
(service/domain/rollouts.py), one item per transaction, each claimed with a
row lock (service/domain/concurrency.py). Any number of workers can run
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
running).
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

from .domain import rollouts, schedules
from .extensions import db
from .models.types import utcnow
from .observability import SCRAPE_REGISTRY

log = logging.getLogger("pitcrew.worker")
MAX_BACKOFF = 30.0


class Worker:
    def __init__(self, *, clock: Callable[[], datetime] = utcnow, poll_interval: float = 1.0,
                 check_interval: timedelta = rollouts.DEFAULT_CHECK_INTERVAL, batch: int = 100):
        self.clock = clock
        self.poll_interval = poll_interval
        self.check_interval = check_interval
        self.batch = batch
        self.stop_event = threading.Event()

    def run_once(self) -> int:
        """Apply what is due now (at most ``batch`` items of each kind); the number of items handled."""
        done = 0
        for _ in range(self.batch):
            if self.stop_event.is_set() or schedules.apply_next_due(self.clock()) is None:
                break
            done += 1
        for _ in range(self.batch):
            if self.stop_event.is_set() or rollouts.check_next_due(self.clock(), interval=self.check_interval) is None:
                break
            done += 1
        db.session.remove()  # hold no connection while idle
        return done

    def run(self) -> None:
        """Pass after pass until :meth:`stop`."""
        delay = self.poll_interval
        log.info("worker started", extra={"fields": {"poll_interval": self.poll_interval}})
        while not self.stop_event.is_set():
            try:
                done = self.run_once()
                delay = self.poll_interval
            except sa.exc.DBAPIError as exc:  # database down, or not migrated yet
                db.session.rollback()
                db.session.remove()
                done = 0
                delay = min(MAX_BACKOFF, max(delay, self.poll_interval) * 2)
                log.warning("worker pass failed: %s; retrying in %.0f s", type(exc).__name__, delay)
            if done == 0:
                self.stop_event.wait(delay)
        log.info("worker stopped")

    def stop(self, *_args) -> None:
        self.stop_event.set()


@click.command("worker")
@click.option("--once", is_flag=True, help="Apply what is due now, then exit.")
@click.option("--poll-interval", type=float, default=None,
              help="Seconds between passes (default WORKER_POLL_INTERVAL, 1).")
def worker_command(once: bool, poll_interval: float | None) -> None:
    """Apply scheduled changes and run guarded rollouts (any number may run)."""
    config = current_app.config
    worker = Worker(poll_interval=poll_interval or config["WORKER_POLL_INTERVAL"],
                    check_interval=timedelta(seconds=config["ROLLOUT_CHECK_INTERVAL"]))
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
            stats = {"schedules": schedules.queue_stats(now), "rollouts": rollouts.queue_stats(now)}
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
