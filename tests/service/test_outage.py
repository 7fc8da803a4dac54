"""A database that is unreachable answers 503 ``unavailable`` with ``Retry-After``, logged once per
outage; the service recovers by itself and loses nothing it acknowledged.

The restart test runs its own throw-away PostgreSQL cluster (initdb + pg_ctl
on a free port in a temporary directory), never the shared server."""

import contextlib
import glob
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from service.errors import classify_database_error

from .support import ROOT, LiveClient, LiveServer, free_port

BAD_TOKEN = "pc_admin_" + "x" * 43


def log_lines(path: Path, text: str) -> list[str]:
    return [line for line in path.read_text(errors="replace").splitlines() if text in line]


def assert_unavailable(response):
    assert response.status == 503, (response.status, response.body[:300])
    assert response.json["error"]["code"] == "unavailable"
    assert set(response.json["error"]) == {"code", "message", "details"}
    assert int(response.header("Retry-After")) > 0


def test_unreachable_database_answers_503_with_retry_after(tmp_path):
    # Nothing listens on this port: every connection attempt is refused.
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    log = tmp_path / "server.log"
    server = LiveServer(url, {"PITCREW_INSTANCE_DIR": str(tmp_path)}, log_path=str(log))
    server.start(ready_path="/healthz")
    try:
        client = LiveClient(server.url, BAD_TOKEN)
        for _ in range(10):
            assert_unavailable(client.get("/api/v1/flags"))
            assert_unavailable(client.post("/api/v1/flags", json={"key": "f"}))
            assert_unavailable(client.post("/sdk/v1/events", json={"events": []}, token="pc_sdk_" + "y" * 43))
            assert_unavailable(client.post("/sdk/v1/evaluate", json={"context": {}}, token="pc_sdk_" + "y" * 43))
            ready = client.get("/readyz", token=None)
            assert ready.status == 503 and ready.json["status"] == "unavailable" and ready.header("Retry-After")
            assert client.get("/healthz", token=None).status == 200
    finally:
        server.stop()
    # Logged once per outage in each worker process (2), not once per request (50).
    lines = log_lines(log, "database unavailable")
    assert 1 <= len(lines) <= 2, lines
    assert "internal_error" not in log.read_text() and "Traceback" not in log.read_text()


# ---------------------------------------------------------------- restart under load

def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class ThrowawayCluster:
    """A private PostgreSQL cluster in a temporary directory (initdb refuses root: run as postgres)."""

    def __init__(self):
        self.bin = _postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="pitcrew-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120)

    def init(self) -> None:
        self.run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        self.run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "pitcrew")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                 "-w", "-t", "60", "start")

    def stop(self) -> None:
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/pitcrew"

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _batch(size: int = 50) -> list[dict]:
    moment = (datetime.now(UTC) - timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    return [{"id": str(uuid.uuid4()), "type": "track", "ts": moment, "unit": f"u{i}", "event": "buy"}
            for i in range(size)]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"),
                    reason="PostgreSQL pass only (TEST_DATABASE_URL unset): restarts a throw-away PostgreSQL cluster")
def test_postgresql_restart_under_event_load_loses_nothing_acknowledged(tmp_path):
    if _postgres_bin() is None:
        pytest.fail("initdb/pg_ctl not found (PostgreSQL server binaries are needed for this test)")
    cluster = ThrowawayCluster()
    server = None
    try:
        cluster.init()
        env = dict(os.environ, DATABASE_URL=cluster.url, FLASK_APP="service", PITCREW_INSTANCE_DIR=str(tmp_path))
        flask = Path(sys.executable).parent / "flask"
        subprocess.run([flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
        sdk_key = subprocess.run(
            [sys.executable, "-c", "from service import create_app; from tests.service.support import make_sdk_key\n"
             "app = create_app()\nwith app.app_context(): print(make_sdk_key('production'))"],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=120).stdout.strip().splitlines()[-1]

        log = tmp_path / "server.log"
        server = LiveServer(cluster.url, {"PITCREW_INSTANCE_DIR": str(tmp_path)}, log_path=str(log))
        server.start()
        client = LiveClient(server.url, sdk_key, timeout=30)

        acknowledged: list[str] = []
        statuses: list[int] = []
        failures: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def load():
            while not stop.is_set():
                events = _batch()
                try:
                    response = client.post("/sdk/v1/events", json={"events": events})
                except OSError as exc:  # the server itself must stay up
                    with lock:
                        failures.append(repr(exc))
                    continue
                with lock:
                    statuses.append(response.status)
                    if response.status == 202:
                        assert response.json["rejected"] == []
                        acknowledged.extend(e["id"] for e in events)
                    elif response.status == 503:
                        try:
                            assert_unavailable(response)
                        except AssertionError as exc:
                            failures.append(repr(exc))
                    else:
                        failures.append(f"{response.status}: {response.body[:200]!r}")
                if response.status == 503:
                    time.sleep(0.05)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        cluster.stop()
        down_at = len(statuses)
        time.sleep(0.5)
        ready = client.get("/readyz", token=None)
        assert ready.status == 503 and ready.header("Retry-After")
        time.sleep(2.0)
        cluster.start()
        deadline = time.monotonic() + 30
        while client.get("/readyz", token=None).status != 200:
            assert time.monotonic() < deadline, "the service did not recover without a restart"
            time.sleep(0.1)
        with lock:
            recovered_at = len(statuses)
        time.sleep(1.5)
        stop.set()
        for thread in threads:
            thread.join(60)

        assert not failures, failures[:5]
        assert set(statuses) <= {202, 503}
        assert 503 in statuses[down_at:recovered_at], "no 503 while the database was down"
        assert 202 in statuses[recovered_at:], "no batch accepted after the restart"
        assert statuses[:down_at].count(202) > 0

        engine = sa.create_engine(cluster.url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as connection:
            stored = {str(r[0]) for r in connection.execute(sa.text("SELECT client_id FROM events"))}
        engine.dispose()
        missing = set(acknowledged) - stored
        assert not missing, f"{len(missing)} acknowledged events lost of {len(acknowledged)}"

        print(f"restart under load: {len(acknowledged)} events acknowledged, all stored; "
              f"{statuses.count(202)} batches 202, {statuses.count(503)} batches 503")
        down_lines = log_lines(log, "database unavailable")
        assert 1 <= len(down_lines) <= 2, down_lines  # once per worker process, not per request
        assert statuses.count(503) > len(down_lines)
        assert log_lines(log, "database reachable again")
        assert "internal_error" not in log.read_text()
    finally:
        if server is not None:
            server.stop()
        cluster.destroy()


def test_database_errors_are_classified():
    def wrapped(orig, cls=sa.exc.OperationalError):
        return cls("SELECT 1", {}, orig)

    cases = [
        (wrapped(psycopg.errors.AdminShutdown("terminating connection")), "unavailable"),
        (wrapped(psycopg.errors.CannotConnectNow("the database system is starting up")), "unavailable"),
        (wrapped(psycopg.errors.TooManyConnections("too many clients")), "unavailable"),
        (wrapped(psycopg.OperationalError("connection refused")), "unavailable"),
        (psycopg.OperationalError("server closed the connection"), "unavailable"),  # raw driver (COPY path)
        (wrapped(sqlite3.OperationalError("database is locked")), "unavailable"),
        (wrapped(sqlite3.OperationalError("unable to open database file")), "unavailable"),
        (wrapped(sqlite3.OperationalError("no such table: events")), None),  # a bug (or no migration): 500
        (sa.exc.TimeoutError("QueuePool limit reached"), "unavailable"),
        (wrapped(psycopg.errors.DeadlockDetected("deadlock")), "retry"),
        (wrapped(psycopg.errors.SerializationFailure("could not serialize")), "retry"),
        (wrapped(psycopg.errors.UniqueViolation("duplicate key"), sa.exc.IntegrityError), "conflict"),
        (wrapped(sqlite3.IntegrityError("UNIQUE constraint failed"), sa.exc.IntegrityError), "conflict"),
        (wrapped(psycopg.errors.NumericValueOutOfRange("out of range"), sa.exc.DataError), "data"),
        (sa.exc.ProgrammingError("SELECT nope", {}, Exception("syntax error")), None),  # a bug: 500
    ]
    assert [classify_database_error(error) for error, _ in cases] == [kind for _, kind in cases]
