"""GET /sdk/v1/config throughput of the service and of the edge, for 304 and
200, and of two Flask routes: an admin GET and POST /sdk/v1/evaluate.

Run: .venv/bin/python benchmarks/bench_config.py   (part of `make bench`)

Starts the real service (gunicorn with service/gunicorn_conf.py: 2 asyncio
workers, Flask in a thread pool) on a free loopback port with a throw-away
SQLite database (or BENCH_DATABASE_URL) holding BENCH_FLAGS flags, and the
edge (python -m pitcrew_edge) with EDGE_WORKERS=2 worker processes, as the
service has 2 workers, in front of it, then drives each with
wrk when installed (Debian package `wrk`), else with a Python keep-alive
load script. The baseline in the same run is the service's GET /healthz
(auth-free, no database, through Flask), so the ratios say what each path
costs next to the service's cheapest route. Goals (docs/delivery.md): the
service's 304 >= 0.8x its /healthz; the edge's 304 >= 5x the service's
/healthz and >= 10,000 req/s. The admin GET (GET /api/v1/flags/<key>,
admin token) and POST /sdk/v1/evaluate (one flag, SDK key; it records the
evaluation count) measure the Flask routes behind the event loop
(service.asgi.FlaskBridge). Each row is measured BENCH_RUNS times (default
3), rows interleaved round by round; the table gives medians and the ratio
of each median to the /healthz median. The load generator shares the 2
cores with the servers: figures are lower bounds.
"""

import http.client
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DURATION = float(os.environ.get("BENCH_SECONDS", "8"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
FLAGS = int(os.environ.get("BENCH_FLAGS", "200"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
EDGE_WORKERS = 2  # as the service's 2 gunicorn workers
EVALUATE_BODY = json.dumps({"context": {"id": "u1", "country": "DE"}, "flags": ["flag-0"]})


def setup(database_url: str, env: dict) -> tuple[str, str]:
    """Migrate, create an admin token, FLAGS flags with targeting, an SDK key."""
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "flask", "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    code = f"""
import json
from service import create_app
from service.domain import Actor
from service.domain import environments, flags, tokens
app = create_app()
with app.app_context():
    actor = Actor("bench")
    for i in range({FLAGS}):
        flags.create(actor, {{"key": f"flag-{{i}}", "kind": "boolean",
            "variations": [{{"key": "on", "value": True}}, {{"key": "off", "value": False}}]}})
        flags.put_targeting(actor, f"flag-{{i}}", "production", {{"enabled": True, "off_variation": "off",
            "rules": [{{"id": "r1", "conditions": [{{"attribute": "country", "op": "in", "values": ["DE", "FR"]}}],
                        "serve": {{"variation": "on"}}}}],
            "fallthrough": {{"rollout": {{"weights": [["on", 5000], ["off", 5000]]}}}}}})
    key = tokens.create_sdk_key(actor, environments.get("production"))[1]
    print(json.dumps({{"key": key}}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["key"], ""


def admin_token(env: dict) -> str:
    bin_dir = Path(sys.executable).parent
    return subprocess.run([bin_dir / "flask", "tokens", "create", "--role", "admin", "--name", "bench"], cwd=ROOT,
                          env=env, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]


def _python_worker(port, path, headers, deadline, queue, method="GET", body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    count = 0
    while time.monotonic() < deadline:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        count += 1
    queue.put(count)


def load(port: int, path: str, headers: dict, method: str = "GET", body: str | None = None) -> tuple[float, str]:
    """Requests per second over DURATION seconds, and the tool used."""
    if shutil.which("wrk"):
        args = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{int(DURATION)}s", "--latency"]
        for name, value in headers.items():
            args += ["-H", f"{name}: {value}"]
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
            if method != "GET" or body is not None:
                script.write(f"wrk.method = {json.dumps(method)}\nwrk.body = {json.dumps(body or '')}\n")
                script.flush()
                args += ["-s", script.name]
            out = subprocess.run(args + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True,
                                 check=True).stdout
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if non2xx:
            raise RuntimeError(f"errors during load: {non2xx.group(0)}")
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), f"wrk -t2 -c{CONNECTIONS}"
    queue = multiprocessing.Queue()
    deadline = time.monotonic() + DURATION
    procs = [multiprocessing.Process(target=_python_worker, args=(port, path, headers, deadline, queue, method,
                                                                  body and body.encode()))
             for _ in range(min(CONNECTIONS, 4))]
    for p in procs:
        p.start()
    total = sum(queue.get() for _ in procs)
    for p in procs:
        p.join()
    return total / DURATION, f"python http.client x{len(procs)}"


def measure(cases: list[tuple]) -> tuple[list[float], str]:
    """The median requests/s of each case (port, path, headers[, method, body]), RUNS interleaved rounds."""
    runs = [[] for _ in cases]
    tool = ""
    for _ in range(RUNS):
        for i, case in enumerate(cases):
            rps, tool = load(*case)
            runs[i].append(rps)
    return [sorted(r)[len(r) // 2] for r in runs], tool


def response_body(port: int, path: str, headers: dict, method: str = "GET", payload: str | None = None) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request(method, path, body=payload, headers=headers)
    return conn.getresponse().read()


def main() -> None:
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
        key, _ = setup(database_url, env)
        server = LiveServer(database_url, {"PITCREW_INSTANCE_DIR": tmp, "LOG_LEVEL": "ERROR", "GUNICORN_THREADS": "16",
                                           "TOKEN_TOUCH_INTERVAL": "60"})
        server.start()
        try:
            auth = {"Authorization": f"Bearer {key}"}
            conn = http.client.HTTPConnection("127.0.0.1", server.port)
            conn.request("GET", "/sdk/v1/config", headers=auth)
            response = conn.getresponse()
            body = response.read()
            etag = response.getheader("ETag")
            admin = {"Authorization": f"Bearer {admin_token(env)}"}
            as_json = {**auth, "Content-Type": "application/json"}
            for path, headers, method, payload in (("/api/v1/flags/flag-0", admin, "GET", None),
                                                   ("/sdk/v1/evaluate", as_json, "POST", EVALUATE_BODY)):
                conn = http.client.HTTPConnection("127.0.0.1", server.port)
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                assert response.status == 200, (path, response.status, response.read())
                response.read()
            evaluate_size = len(response_body(server.port, "/sdk/v1/evaluate", as_json, "POST", EVALUATE_BODY))
            flag_size = len(response_body(server.port, "/api/v1/flags/flag-0", admin))
            medians, tool = measure([
                (server.port, "/healthz", {}),
                (server.port, "/sdk/v1/config", {**auth, "If-None-Match": etag}),
                (server.port, "/sdk/v1/config", {**auth, "If-None-Match": '"1"'}),
                (server.port, "/api/v1/flags/flag-0", admin),
                (server.port, "/sdk/v1/evaluate", as_json, "POST", EVALUATE_BODY),
            ])
            base = medians[0]
            rows = list(zip(["GET /healthz (baseline)", "GET /sdk/v1/config -> 304",
                             f"GET /sdk/v1/config -> 200, stale ETag ({FLAGS} flags)",
                             "GET /api/v1/flags/<key> (admin token, Flask)",
                             "POST /sdk/v1/evaluate (one flag, Flask)"],
                            medians, [len(b'{"status":"ok"}'), 0, len(body), flag_size, evaluate_size], strict=True))
            edge = EdgeServer(server.url, {"LOG_LEVEL": "ERROR", "EDGE_WORKERS": str(EDGE_WORKERS)})
            edge.start()
            try:
                ready = 0
                for _ in range(100):  # every worker has validated the key and holds the ruleset
                    conn = http.client.HTTPConnection("127.0.0.1", edge.port)  # fresh: any worker
                    conn.request("GET", "/sdk/v1/config", headers={**auth, "If-None-Match": etag})
                    response = conn.getresponse()
                    response.read()
                    conn.close()
                    ready = ready + 1 if response.status == 304 else 0
                    if ready == 20:
                        break
                    time.sleep(0.05)
                medians, _ = measure([(edge.port, "/sdk/v1/config", {**auth, "If-None-Match": etag}),
                                      (edge.port, "/sdk/v1/config", auth)])
                rows.append(("edge: GET /sdk/v1/config -> 304", medians[0], 0))
                rows.append((f"edge: GET /sdk/v1/config -> 200 ({FLAGS} flags)", medians[1], len(body)))
            finally:
                edge.stop()
        finally:
            server.stop()
    db_kind = "PostgreSQL" if database_url.startswith("postgres") else "SQLite"
    print(f"\n### /sdk/v1/config: service (gunicorn, 2 asyncio workers, {db_kind}) and edge, "
          f"{EDGE_WORKERS} worker processes (load: {tool}, {DURATION:.0f}s each, "
          f"median of {RUNS} interleaved runs)\n")
    print("| request | requests/s | x service /healthz | body bytes |")
    print("|---|---:|---:|---:|")
    for name, value, size in rows:
        print(f"| {name} | {value:,.0f} | {value / base:.2f} | {size:,} |")


if __name__ == "__main__":
    main()
