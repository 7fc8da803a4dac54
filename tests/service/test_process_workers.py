"""Real worker processes on the test database: four racing over 200 due
schedules apply each exactly once; one killed with SIGKILL mid-batch leaves
nothing half-applied and the next finishes the work; ``python -m
service.serve`` runs the web server and the worker and stops both together."""

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from service.domain import Actor
from service.domain import flags as flag_domain
from service.domain import schedules as schedule_domain
from service.extensions import db
from service.models import AuditEntry, Flag, FlagTargeting, FlagVersion, ScheduledChange

from .support import ROOT, free_port

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
FLAGS, PER_FLAG = 50, 4  # 200 scheduled changes
ACTOR = Actor("tests")


def worker_env(database_url: str, **extra) -> dict:
    env = dict(os.environ, DATABASE_URL=database_url, LOG_LEVEL="WARNING", WORKER_POLL_INTERVAL="0.05", **extra)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def start_worker(database_url: str, log) -> subprocess.Popen:
    return start_worker_with(database_url, log, {})


def start_worker_with(database_url: str, log, extra: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "service", "worker"], cwd=ROOT,
                            env=worker_env(database_url, **extra), stdout=log, stderr=log)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def make_schedules(at: datetime, now: datetime) -> None:
    """FLAGS flags on in staging, each with PER_FLAG patches at at, at+1ms, ... (in that order)."""
    for f in range(FLAGS):
        key = f"flag-{f}"
        flag_domain.create(ACTOR, {"key": key, "kind": "boolean", "variations": BOOL})
        flag_domain.put_targeting(ACTOR, key, "staging", {"enabled": True, "off_variation": "off",
                                                          "fallthrough": {"variation": "off"}})
        for i in range(PER_FLAG):
            schedule_domain.create(ACTOR, key, "staging", {
                "at": at + timedelta(milliseconds=i),
                "patch": {"targets": [{"variation": "on", "values": [f"user-{i}"]}]}}, now=now)


def count(stmt) -> int:
    db.session.rollback()  # a fresh snapshot of what the workers committed
    return db.session.scalar(stmt)


APPLIED = sa.select(sa.func.count()).select_from(ScheduledChange).where(ScheduledChange.state == "applied")
PENDING = sa.select(sa.func.count()).select_from(ScheduledChange).where(ScheduledChange.state == "pending")
AUDITS = sa.select(sa.func.count()).select_from(AuditEntry).where(
    AuditEntry.resource_type == "schedule", AuditEntry.action == "apply")
VERSIONS = sa.select(sa.func.count()).select_from(FlagVersion).where(FlagVersion.action == "apply_schedule")


def wait_until(predicate, timeout: float, processes=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for p in processes:
            assert p.poll() is None, f"worker exited with {p.returncode}"
        time.sleep(0.05)
    raise AssertionError("timed out")


def assert_exactly_once(total: int) -> None:
    db.session.rollback()
    per_item = db.session.execute(sa.select(AuditEntry.resource_key, sa.func.count())
                                  .where(AuditEntry.resource_type == "schedule", AuditEntry.action == "apply")
                                  .group_by(AuditEntry.resource_key)).all()
    assert len(per_item) == total and {n for _, n in per_item} == {1}
    assert count(APPLIED) == count(AUDITS) == count(VERSIONS) == total
    # Each flag's versions: create, targeting, then one per applied change, with no gaps or repeats.
    for flag in db.session.scalars(sa.select(Flag)):
        applied = count(sa.select(sa.func.count()).select_from(ScheduledChange).where(
            ScheduledChange.flag_id == flag.id, ScheduledChange.state == "applied"))
        versions = db.session.scalars(sa.select(FlagVersion.version).where(FlagVersion.flag_id == flag.id)
                                      .order_by(FlagVersion.version)).all()
        assert versions == list(range(1, 3 + applied)) and flag.version == 2 + applied


def test_four_workers_racing_apply_each_change_exactly_once(app, database_url, tmp_path):
    now = datetime.now(UTC)
    at = now + timedelta(seconds=6)  # all four workers are up and polling by then
    make_schedules(at, now)
    with open(tmp_path / "workers.log", "wb") as log:
        workers = [start_worker(database_url, log) for _ in range(4)]
        try:
            wait_until(lambda: count(PENDING) == 0, 120, workers)
        finally:
            for worker in workers:
                stop(worker)
    assert_exactly_once(FLAGS * PER_FLAG)
    # Per flag, changes applied in time order: the last one's targets are live.
    rows = db.session.scalars(sa.select(FlagTargeting.targeting)).all()
    assert len(rows) == FLAGS
    assert all(t["targets"] == [{"variation": "on", "values": [f"user-{PER_FLAG - 1}"]}] for t in rows)
    appliers = set(db.session.scalars(sa.select(ScheduledChange.applied_by)))
    if db.engine.dialect.name == "postgresql":  # SKIP LOCKED shares the work (SQLite: one at a time)
        assert len(appliers) >= 2, appliers
    late = db.session.scalars(sa.select(ScheduledChange.applied_at)).all()
    assert max(late) - at < timedelta(seconds=60)


def test_a_worker_killed_mid_batch_leaves_nothing_half_applied(app, database_url, tmp_path):
    now = datetime.now(UTC)
    make_schedules(now - timedelta(seconds=1), now - timedelta(minutes=1))
    total = FLAGS * PER_FLAG
    with open(tmp_path / "workers.log", "wb") as log:
        first = start_worker(database_url, log)
        try:
            wait_until(lambda: count(APPLIED) >= 40, 120, [first])
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            stop(first)
        applied = count(APPLIED)
        assert 40 <= applied < total  # killed in the middle of its batch
        # Everything committed is whole: each applied change has its audit entry and
        # its flag version, and nothing pending has either.
        assert count(AUDITS) == count(VERSIONS) == applied
        assert count(PENDING) == total - applied
        assert_exactly_once(applied)

        second = start_worker(database_url, log)
        try:
            wait_until(lambda: count(PENDING) == 0, 120, [second])
        finally:
            stop(second)
    assert_exactly_once(total)


# ---------------------------------------------------------------- make serve

def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start_serve(database_url: str, port: int) -> subprocess.Popen:
    env = worker_env(database_url, PORT=str(port), WEB_CONCURRENCY="1", GUNICORN_THREADS="4")
    process = subprocess.Popen([sys.executable, "-m", "service.serve"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=tempfile.TemporaryFile())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("serve did not start")


def test_serve_runs_web_and_worker_and_ctrl_c_stops_both(app, database_url):
    port = free_port()
    serve = _start_serve(database_url, port)
    try:
        children = _children(serve.pid)
        assert len(children) == 2, children
        # The worker is running: a due change gets applied.
        now = datetime.now(UTC)
        flag_domain.create(ACTOR, {"key": "served", "kind": "boolean", "variations": BOOL})
        item = schedule_domain.create(ACTOR, "served", "staging", {
            "at": now + timedelta(seconds=1), "patch": {"enabled": True}}, now=now)
        item_id = item.id
        wait_until(lambda: count(sa.select(ScheduledChange.state).where(ScheduledChange.id == item_id))
                   == "applied", 30)
        serve.send_signal(signal.SIGINT)
        assert serve.wait(30) == 0
        assert not any(_alive(pid) for pid in children)
    finally:
        serve.kill()
        serve.wait()


def test_serve_stops_the_web_server_when_the_worker_dies(app, database_url):
    serve = _start_serve(database_url, free_port())
    try:
        children = _children(serve.pid)
        worker = next(pid for pid in children if b"worker" in open(f"/proc/{pid}/cmdline", "rb").read())
        os.kill(worker, signal.SIGKILL)
        assert serve.wait(30) != 0
        assert not any(_alive(pid) for pid in children)
    finally:
        serve.kill()
        serve.wait()
