"""Kill-switch propagation: from the admin API's PUT to the SDK serving the new value.

Run: .venv/bin/python benchmarks/bench_propagation.py   (part of `make bench`)

Starts the real service (gunicorn, a throw-away SQLite database, or
BENCH_DATABASE_URL) and one edge in front of it. A streaming SDK client
(pitcrew.Client(stream=True)) connects to the service's own stream, another
to the edge; BENCH_FLIPS times a flag's targeting is switched on and off
through the admin API over HTTP, and the time from sending the PUT until
each client's ``variation()`` returns the new value is recorded. The PUT's
own round trip (the write committing) is shown as the baseline measured in
the same run. Goal (docs/delivery.md): p95 < 150 ms through the service's
own stream.
"""

import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FLIPS = int(os.environ.get("BENCH_FLIPS", "30"))


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    import bench_config

    from pitcrew import Client
    from tests.service.support import EdgeServer, LiveServer

    with tempfile.TemporaryDirectory() as tmp:
        database_url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp}/bench.db"
        env = dict(os.environ, DATABASE_URL=database_url, FLASK_APP="service", PITCREW_INSTANCE_DIR=tmp)
        if database_url.startswith("postgres"):
            import sqlalchemy as sa

            from service.config import normalise_database_url
            engine = sa.create_engine(normalise_database_url(database_url))
            with engine.begin() as conn:
                conn.execute(sa.text("DROP SCHEMA public CASCADE"))
                conn.execute(sa.text("CREATE SCHEMA public"))
            engine.dispose()
        bench_config.FLAGS = 50
        key, _ = bench_config.setup(database_url, env)
        token = bench_config.admin_token(env)
        server = LiveServer(database_url, {"PITCREW_INSTANCE_DIR": tmp, "LOG_LEVEL": "ERROR",
                                           "TOKEN_TOUCH_INTERVAL": "60", "STREAM_HEARTBEAT": "15"})
        server.start()
        edge = EdgeServer(server.url, {"LOG_LEVEL": "ERROR", "EDGE_STREAM_HEARTBEAT": "15"})
        edge.start()
        results = {"service": [], "edge": [], "put": []}
        try:
            clients = {"service": Client(server.url, key, stream=True, events=False, poll_interval=60),
                       "edge": Client(edge.url, key, stream=True, events=False, poll_interval=60)}
            for client in clients.values():
                assert client.wait_until_ready(10)
            deadline = time.monotonic() + 10
            while not all(c.status()["stream_connected"] for c in clients.values()) and time.monotonic() < deadline:
                time.sleep(0.05)
            context = {"id": "u", "country": "US"}
            for i in range(-1, FLIPS):  # flip -1 is a warm-up, so every measured flip changes the value
                enabled = i % 2 == 0
                expected = True if enabled else False
                body = json.dumps({"enabled": enabled, "off_variation": "off",
                                   "fallthrough": {"variation": "on"}}).encode()
                put = urllib.request.Request(f"{server.url}/api/v1/flags/flag-0/environments/production",
                                             data=body, method="PUT",
                                             headers={"Authorization": f"Bearer {token}",
                                                      "Content-Type": "application/json"})
                seen = {}

                def watch(name, client, started, expected=expected, seen=seen):
                    limit = started + 5
                    while time.monotonic() < limit:
                        if client.variation("flag-0", context, None) is expected:
                            seen[name] = time.monotonic() - started
                            return
                        time.sleep(0.001)

                started = time.monotonic()
                watchers = [threading.Thread(target=watch, args=(n, c, started)) for n, c in clients.items()]
                for w in watchers:
                    w.start()
                urllib.request.urlopen(put, timeout=10).read()
                put_seconds = time.monotonic() - started
                for w in watchers:
                    w.join()
                if i < 0:
                    continue
                results["put"].append(put_seconds)
                if os.environ.get("BENCH_VERBOSE"):
                    print(i, round(results["put"][-1] * 1000), {k: round(v * 1000) for k, v in seen.items()})
                for name in clients:
                    if name in seen:
                        results[name].append(seen[name])
                time.sleep(0.2)
            for client in clients.values():
                client.close()
        finally:
            edge.stop()
            server.stop()
    db_kind = "PostgreSQL" if database_url.startswith("postgres") else "SQLite"
    print(f"\n### Kill-switch propagation, {FLIPS} flips ({db_kind}; streaming SDK clients)\n")
    print("| path | reached | median | p95 | max |")
    print("|---|---:|---:|---:|---:|")
    rows = (("admin PUT round trip (baseline: the write itself)", "put"),
            ("PUT -> SDK on the service's own stream", "service"),
            ("PUT -> SDK on an edge (service stream -> edge -> SDK)", "edge"))
    for label, name in rows:
        values = [v * 1000 for v in results[name]]
        if values:
            print(f"| {label} | {len(values)}/{FLIPS} | {statistics.median(values):.0f} ms | "
                  f"{percentile(values, 0.95):.0f} ms | {max(values):.0f} ms |")
        else:
            print(f"| {label} | 0/{FLIPS} | | | |")


if __name__ == "__main__":
    main()
