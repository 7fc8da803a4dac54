"""SDK event delivery against the real service on PostgreSQL: does the SDK keep up?

Run: .venv/bin/python benchmarks/bench_events.py [--seconds 5] [--clients 4]

Database: ``BENCH_EVENTS_DATABASE_URL`` (default
postgresql://postgres@127.0.0.1:5432/test, the database CI uses; its public
schema is dropped and recreated, so point it at a scratch database).
gunicorn with the production config on a free 127.0.0.1 port. In one run:

1. **The service's own ingestion rate**: ``--clients`` processes posting
   pre-built batches of 1000 events over keep-alive connections
   (benchmarks/bench_ingest.py's client) for ``--seconds``.
2. **One SDK process at steady rates**: a fresh process with a default
   ``Client`` (``max_queue=10000``) calls ``track()`` at a paced rate for
   ``--seconds``, then ``flush()``. Rates climb as fractions of the service's
   rate from step 1 until events are dropped; the table shows each rung
   (dropped, time to drain after the last ``track()``, rows in the table) and
   the host process's CPU for delivery (all threads but the caller's) per
   10,000 events, next to the caller's own cost per ``track()``.
3. **A burst of 100,000 events in one second**, with the default queue
   (drops and drain time) and with ``spool_path`` (zero drops expected).
4. **The SDK's own ceiling**: the same steady runs against a sink process
   that answers every batch with 202 at once (no parsing, no database), to
   tell "the service is the bottleneck" from "the SDK is".

Rows in the database are counted for every run (a 202 means committed).

``--pin``: gunicorn runs on CPU 1 only, this script and every client, SDK
and sink process on CPU 0 only (PostgreSQL is not pinned), so the SDK
process does not take the service's CPU, as on separate machines; without
it everything shares every CPU.
Everything runs on 127.0.0.1 and is bounded in time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.bench_ingest import client as raw_client  # noqa: E402
from benchmarks.bench_ingest import free_port, prepare_database, start_server  # noqa: E402

DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/test"


def sdk_host(url, key, rate, seconds, event, spool_path, out):
    """One host process: track() ``rate`` events/s for ``seconds``, then flush; report."""
    import resource

    from pitcrew import Client

    client = Client(url, key, flush_interval=1, timeout=30, spool_path=spool_path)
    n = int(rate * seconds)
    contexts = [{"id": f"u{i}"} for i in range(n)]
    track = client.track
    per_ms = rate / 1000.0
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    caller0 = time.thread_time()
    tracking = 0.0
    start = time.perf_counter()
    i = tick = 0
    busy = []  # batches in flight, sampled every 10 ms: 4 means the senders wait on the service
    while i < n:
        tick += 1
        if tick % 10 == 0:
            busy.append(client.stats()["in_flight"])
        due = min(n, int(tick * per_ms))
        t = time.perf_counter()
        while i < due:
            track(event, contexts[i])
            i += 1
        tracking += time.perf_counter() - t
        wait = start + tick / 1000.0 - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    offered = time.perf_counter() - start
    caller_cpu = time.thread_time() - caller0
    end = time.perf_counter()
    flushed = client.flush(120)
    drain = time.perf_counter() - end
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    stats = client.stats()
    client.close(10)
    process_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    out.put({"rate": rate, "n": n, "offered_s": offered, "drain_s": drain, "flushed": flushed,
             "dropped": stats["dropped"], "sent": stats["sent"], "failed": stats["failed"],
             "track_us": tracking / n * 1e6, "delivery_cpu_s": max(process_cpu - caller_cpu, 0.0),
             "in_flight": sum(busy) / max(len(busy), 1),
             "process_cpu_s": process_cpu})


def null_sink(port, ready):
    """An HTTP server answering every request with 202 at once (the SDK's ceiling)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = b'{"accepted": 0, "duplicates": 0, "rejected": []}'

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    ready.set()
    server.serve_forever()


def run_sdk(ctx, url, key, rate, seconds, event, spool_path=None) -> dict:
    out = ctx.Queue()
    p = ctx.Process(target=sdk_host, args=(url, key, rate, seconds, event, spool_path, out))
    p.start()
    result = out.get(timeout=seconds + 300)
    p.join(30)
    return result


def count_rows(url: str, event: str) -> int:
    import sqlalchemy as sa

    from service.config import normalise_database_url

    engine = sa.create_engine(normalise_database_url(url))
    with engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM events WHERE event = :e"), {"e": event}).scalar()
    engine.dispose()
    return n


def service_rate(port, key, clients, seconds) -> float:
    bodies = max(5, int(120_000 * seconds / 1000 / clients) + 1)
    out = mp.Queue()
    barrier = mp.Barrier(clients + 1)  # the clock starts once every client has built its bodies
    procs = [mp.Process(target=raw_client, args=(i, port, key, 1000, bodies, None, seconds, out, barrier))
             for i in range(clients)]
    for p in procs:
        p.start()
    barrier.wait(timeout=600)
    results = [out.get(timeout=seconds + 180) for _ in procs]
    for p in procs:
        p.join()
    return sum(r[0] for r in results) / max(r[3] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("GUNICORN_THREADS", "16")))
    parser.add_argument("--pin", action="store_true",
                        help="gunicorn on CPU 1, clients and the SDK on CPU 0 (as on separate machines)")
    args = parser.parse_args()
    server_cpus = None
    if args.pin:
        if len(os.sched_getaffinity(0)) < 2:
            parser.error("--pin needs two CPUs")
        first, second = sorted(os.sched_getaffinity(0))[:2]
        server_cpus = {second}
        os.sched_setaffinity(0, {first})  # inherited by every process started below
    url = os.environ.get("BENCH_EVENTS_DATABASE_URL", DEFAULT_DB)
    started = time.perf_counter()
    key = prepare_database(url)
    port = free_port()
    server = start_server(url, port, args.workers, args.threads, server_cpus)
    base = f"http://127.0.0.1:{port}"
    spawn = mp.get_context("spawn")
    spool_dir = tempfile.mkdtemp(prefix="pitcrew-spool-")
    rungs, bursts = [], []
    try:
        svc = service_rate(port, key, args.clients, args.seconds)
        best = None
        for step, frac in enumerate((0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25)):
            rate = max(100, int(svc * frac / 100) * 100)
            event = f"steady-{step}"
            r = run_sdk(spawn, base, key, rate, args.seconds, event)
            r["rows"] = count_rows(url, event)
            r["frac"] = frac
            rungs.append(r)
            if r["dropped"] == 0 and r["rows"] == r["n"]:
                best = r
            else:
                break
        sink_port = free_port()
        ready = spawn.Event()
        sink = spawn.Process(target=null_sink, args=(sink_port, ready), daemon=True)
        sink.start()
        ready.wait(30)
        ceiling = []
        try:
            for rate in (50_000, 75_000, 100_000, 150_000, 200_000):
                r = run_sdk(spawn, f"http://127.0.0.1:{sink_port}", key, rate, 3.0, "ceiling")
                ceiling.append(r)
                if r["dropped"]:
                    break
        finally:
            sink.terminate()
        for label, spool in (("default queue (max_queue=10000)", None),
                             ("spool_path set", os.path.join(spool_dir, "spool"))):
            event = "burst-spool" if spool else "burst-default"
            r = run_sdk(spawn, base, key, 100_000, 1.0, event, spool)
            r["rows"] = count_rows(url, event)
            r["label"] = label
            bursts.append(r)
    finally:
        server.terminate()
        server.wait(15)
        shutil.rmtree(spool_dir, ignore_errors=True)

    print(f"\n`python benchmarks/bench_events.py --seconds {args.seconds:g}{' --pin' if args.pin else ''}` on {platform.node()} "
          f"({os.cpu_count()} CPUs, Python {platform.python_version()}); PostgreSQL; gunicorn (asyncio "
          f"workers, Flask in a thread pool) {args.workers} workers x {args.threads} threads"
          f"{'; gunicorn pinned to one CPU, clients and SDK to the other' if args.pin else ''}; finished in "
          f"{time.perf_counter() - started:.0f} s\n")
    print(f"Service's own ingestion rate, {args.clients} client processes posting batches of 1000: "
          f"**{svc:,.0f} events/s**\n")
    print("| one SDK process, steady rate | x service | events | dropped | rows stored | drain after "
          "last track | track() | delivery CPU per 10,000 events | mean batches in flight (of 4) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rungs:
        print(f"| {r['rate']:,}/s | {r['rate'] / svc:.2f} | {r['n']:,} | {r['dropped']:,} | {r['rows']:,} | "
              f"{r['drain_s']:.2f} s | {r['track_us']:.2f} µs | "
              f"{r['delivery_cpu_s'] / r['n'] * 10000 * 1000:.0f} ms | {r['in_flight']:.1f} |")
    if best:
        print(f"\nHighest steady rate with zero drops: **{best['rate']:,} events/s = "
              f"{best['rate'] / svc:.2f}x the service's rate** (goal >= 0.9x).")
    else:
        print("\nNo rate without drops.")
    print("\n| one SDK process against a sink answering 202 at once (3 s) | dropped | drain after last "
          "track | track() | delivery CPU per 10,000 events | mean batches in flight |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in ceiling:
        print(f"| {r['rate']:,}/s | {r['dropped']:,} | {r['drain_s']:.2f} s | {r['track_us']:.2f} µs | "
              f"{r['delivery_cpu_s'] / r['n'] * 10000 * 1000:.0f} ms | {r['in_flight']:.1f} |")
    print("\n| burst: 100,000 events offered in 1 s | dropped | rows stored | offered in | drain after "
          "last track | delivery CPU per 10,000 events |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in bursts:
        print(f"| {r['label']} | {r['dropped']:,} | {r['rows']:,} | {r['offered_s']:.2f} s | "
              f"{r['drain_s']:.2f} s | {r['delivery_cpu_s'] / r['n'] * 10000 * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
