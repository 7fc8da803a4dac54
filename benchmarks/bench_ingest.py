"""Sustained event ingestion through HTTP: POST /sdk/v1/events under gunicorn.

Run: .venv/bin/python benchmarks/bench_ingest.py [--seconds 10] [--database postgresql|sqlite|both]

For each database: a fresh, migrated database (PostgreSQL: the database of
``BENCH_DATABASE_URL``, default postgresql://postgres@127.0.0.1:5432/pitcrew_bench,
whose public schema is dropped and recreated; SQLite: a temporary file),
gunicorn on a free 127.0.0.1 port with the production config
(asyncio workers with Flask in a thread pool, WEB_CONCURRENCY of them), and ``--clients`` client processes, each
posting pre-built batches of ``--batch`` distinct events (one third exposures
with two dimension attributes, two thirds track events with values) over a
keep-alive connection for ``--seconds``. Bodies are generated and encoded
before the clock starts, so the figure is the service's, not the
generator's. Events/s counts events the service reported as accepted (a 202
means committed), and the row count in the database is checked against it.

Prints a markdown table. Everything runs on 127.0.0.1 and is bounded in
time (setup + ``--seconds`` + teardown per database).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/pitcrew_bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_database(url: str) -> str:
    """Empty + migrate the database; return a fresh SDK key for production."""
    import sqlalchemy as sa
    from flask_migrate import upgrade

    from service import create_app
    from service.config import normalise_database_url
    from service.domain import Actor
    from service.domain import environments as environment_domain
    from service.domain import tokens as token_domain

    if url.startswith("postgresql"):
        admin_url = url.rsplit("/", 1)[0] + "/postgres"
        name = url.rsplit("/", 1)[1]
        engine = sa.create_engine(normalise_database_url(admin_url), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        engine = sa.create_engine(normalise_database_url(url))
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
        engine.dispose()
    app = create_app({"SQLALCHEMY_DATABASE_URI": normalise_database_url(url)})
    with app.app_context():
        upgrade()
        environment_domain.ensure_defaults()
        key = token_domain.create_sdk_key(Actor("bench"), environment_domain.get("production"))[1]
        from service.extensions import db

        db.engine.dispose()
    return key


def start_server(url: str, port: int, workers: int, threads: int, cpus: set | None = None) -> subprocess.Popen:
    """gunicorn with the production config; ``cpus``: the CPUs it (and its workers) may run on."""
    env = dict(os.environ, DATABASE_URL=url, PORT=str(port), WEB_CONCURRENCY=str(workers),
               GUNICORN_THREADS=str(threads), LOG_LEVEL="WARNING", TOKEN_TOUCH_INTERVAL="60")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:service.gunicorn_conf", "service:create_app()"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")


def make_body(batch: int, seed: int, counter: int) -> bytes:
    now = time.time()
    events = []
    for i in range(batch):
        unit = f"user-{(seed * 7919 + counter * batch + i) % 1_000_000}"
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - (i % 600))) + f".{i % 1000:03d}Z"
        if i % 3 == 0:
            events.append({"id": str(uuid.uuid4()), "type": "exposure", "ts": ts, "unit": unit,
                           "experiment": "checkout-redesign", "variation": "treatment" if i % 2 else "control",
                           "attributes": {"unit_type": "id", "country": "DE", "platform": "ios"}})
        else:
            events.append({"id": str(uuid.uuid4()), "type": "track", "ts": ts, "unit": unit,
                           "event": "purchase" if i % 3 == 1 else "page_view", "value": (i % 50) + 0.5,
                           "attributes": {"unit_type": "id"}})
    return json.dumps({"events": events}).encode()


def client(index, port, key, batch, bodies, start_at, seconds, out, barrier=None):
    """Post pre-built batches from ``start_at`` for ``seconds``; with ``barrier`` (shared with the
    other clients and the parent) start 0.2 s after every client has built its bodies instead."""
    payloads = [make_body(batch, index, c) for c in range(bodies)]
    if barrier is not None:
        barrier.wait()
        start_at = time.time() + 0.2
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.time() < start_at:
        time.sleep(0.001)
    accepted = requests = 0
    latencies = []
    deadline = start_at + seconds
    used = 0
    while time.time() < deadline and used < len(payloads):
        t0 = time.perf_counter()
        conn.request("POST", "/sdk/v1/events", body=payloads[used], headers=headers)
        response = conn.getresponse()
        data = response.read()
        latencies.append(time.perf_counter() - t0)
        used += 1
        if response.status != 202:
            raise RuntimeError(f"{response.status}: {data[:200]!r}")
        accepted += json.loads(data)["accepted"]
        requests += 1
    out.put((accepted, requests, latencies, time.time() - start_at, used == len(payloads)))


def count_rows(url: str) -> int:
    import sqlalchemy as sa

    from service.config import normalise_database_url

    engine = sa.create_engine(normalise_database_url(url))
    with engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM events")).scalar()
    engine.dispose()
    return n


def run(label: str, url: str, args) -> dict:
    key = prepare_database(url)
    port = free_port()
    server = start_server(url, port, args.workers, args.threads)
    try:
        # Enough distinct bodies for 200k events/s for the whole run.
        bodies = max(5, int(200_000 * args.seconds / args.batch / args.clients) + 1)
        out = mp.Queue()
        start_at = time.time() + 3 + bodies * args.batch / 60_000  # after the bodies are built
        procs = [mp.Process(target=client, args=(i, port, key, args.batch, bodies, start_at, args.seconds, out))
                 for i in range(args.clients)]
        for p in procs:
            p.start()
        results = [out.get(timeout=args.seconds + 120) for _ in procs]
        for p in procs:
            p.join()
    finally:
        server.terminate()
        server.wait(15)
    accepted = sum(r[0] for r in results)
    requests = sum(r[1] for r in results)
    elapsed = max(r[3] for r in results)
    latencies = sorted(x for r in results for x in r[2])
    stored = count_rows(url)
    return {
        "database": label, "events": accepted, "stored": stored, "seconds": elapsed,
        "rate": accepted / elapsed, "batches": requests,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "exhausted": any(r[4] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("GUNICORN_THREADS", "16")))
    args = parser.parse_args()
    rows = []
    if args.database in ("postgresql", "both"):
        rows.append(run("PostgreSQL", os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG), args))
    if args.database in ("sqlite", "both"):
        tmp = tempfile.mkdtemp(prefix="pitcrew-bench-")
        try:
            rows.append(run("SQLite", f"sqlite:///{tmp}/bench.db", args))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    command = "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:])
    print(f"\n`{command}` on {platform.node()} ({os.cpu_count()} CPUs, Python {platform.python_version()}); "
          f"gunicorn (asyncio workers, Flask in a thread pool) {args.workers} workers x {args.threads} threads, {args.clients} client processes, "
          f"batches of {args.batch}, {args.seconds:g} s sustained per database\n")
    print("| database | events accepted | rows stored | seconds | events/s | batch p50 ms | batch p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        note = " (bodies exhausted)" if r["exhausted"] else ""
        print(f"| {r['database']} | {r['events']:,} | {r['stored']:,} | {r['seconds']:.1f} | "
              f"{r['rate']:,.0f}{note} | {r['p50']:.1f} | {r['p99']:.1f} |")


if __name__ == "__main__":
    main()
