"""Scheduled change latency: due -> applied by the worker -> visible to a streaming SDK.

Run: .venv/bin/python benchmarks/bench_schedule_latency.py   (part of `make bench`)

Starts the real service (gunicorn) and one worker process (`flask --app
service worker`, default WORKER_POLL_INTERVAL 1 s) on a throw-away SQLite
database (or BENCH_DATABASE_URL), and a `pitcrew.Client(stream=True)`.
SCHEDULE_CHANGES changes are scheduled 1.7 s apart; each puts a marker unit
in the flag's targets, and an SDK listener notes when the marker first
evaluates to the new variation. Baseline in the same run: the same change
written directly (a targeting PUT through the domain), commit -> visible,
i.e. the propagation every write pays; the difference is what scheduling
adds (the worker's polling).
"""

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHANGES = int(os.environ.get("SCHEDULE_CHANGES", "12"))
BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]


def reset_postgres(url: str) -> None:
    import sqlalchemy as sa

    from service.config import normalise_database_url

    engine = sa.create_engine(normalise_database_url(url))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


def main() -> None:
    from pitcrew import Client
    from pitcrew.evaluation import evaluate
    from tests.service.support import LiveServer

    with tempfile.TemporaryDirectory() as tmp:
        database_url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp}/bench.db"
        if database_url.startswith("postgres"):
            reset_postgres(database_url)
        env = dict(os.environ, DATABASE_URL=database_url, FLASK_APP="service", PITCREW_INSTANCE_DIR=tmp,
                   LOG_LEVEL="ERROR")
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        os.environ.update(DATABASE_URL=database_url, PITCREW_INSTANCE_DIR=tmp)
        subprocess.run([sys.executable, "-m", "flask", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                       capture_output=True)

        from service import create_app
        from service.domain import Actor, environments, flags, schedules, tokens
        from service.extensions import db
        from service.models import ScheduledChange

        app = create_app()
        actor = Actor("bench")
        with app.app_context():
            flags.create(actor, {"key": "launch", "kind": "boolean", "variations": BOOL})
            flags.put_targeting(actor, "launch", "production", {"enabled": True, "off_variation": "off",
                                                                "fallthrough": {"variation": "off"}})
            sdk_key = tokens.create_sdk_key(actor, environments.get("production"))[1]

        server = LiveServer(database_url, {"PITCREW_INSTANCE_DIR": tmp, "LOG_LEVEL": "ERROR",
                                           "STREAM_POLL_INTERVAL": "0.5", "STREAM_HEARTBEAT": "15"})
        server.start()
        worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "service", "worker"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen: dict[str, float] = {}
        lock = threading.Lock()
        markers: list[str] = []

        def on_ruleset(_old, new):
            now = time.time()
            with lock:
                for marker in markers:
                    if marker not in seen and evaluate(new, "launch", {"id": marker}, None).variation == "on":
                        seen[marker] = now

        client = Client(server.url, sdk_key, stream=True, events=False)
        try:
            assert client.wait_until_ready(10)
            client.add_listener(on_ruleset)
            time.sleep(1)

            def wait_for(marker: str, timeout: float = 90) -> None:
                deadline = time.time() + timeout
                while marker not in seen:
                    if time.time() > deadline:
                        raise RuntimeError(f"{marker} never became visible")
                    time.sleep(0.01)

            # Baseline: direct writes, commit -> visible.
            direct = []
            with app.app_context():
                for i in range(CHANGES):
                    marker = f"direct-{i}"
                    with lock:
                        markers.append(marker)
                    flags.patch_targeting(actor, "launch", "production", {
                        "targets": [{"variation": "on", "values": [marker]}]})
                    committed = time.time()
                    wait_for(marker)
                    direct.append(seen[marker] - committed)
                    time.sleep(0.3)

            # Scheduled: due -> applied -> visible.
            start = datetime.now(UTC) + timedelta(seconds=3)
            due = {}
            with app.app_context():
                for i in range(CHANGES):
                    marker = f"scheduled-{i}"
                    at = start + timedelta(seconds=1.7 * i)
                    item = schedules.create(actor, "launch", "production", {
                        "at": at, "patch": {"targets": [{"variation": "on", "values": [marker]}]}})
                    due[marker] = (item.id, at)
                    with lock:
                        markers.append(marker)
            for marker in due:
                wait_for(marker)
            with app.app_context():
                applied = {row.id: row.applied_at for row in db.session.query(ScheduledChange)}
        finally:
            client.close()
            worker.terminate()
            worker.wait(20)
            server.stop()

    applied_lag = [(applied[i] - at).total_seconds() for i, at in due.values()]
    visible_lag = [seen[m] - at.timestamp() for m, (_, at) in due.items()]

    def row(name, values):
        values = sorted(values)
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        return f"| {name} | {statistics.median(values):.2f} | {p95:.2f} | {values[-1]:.2f} |"

    kind = "PostgreSQL" if database_url.startswith("postgres") else "SQLite"
    print(f"\n### Scheduled change latency ({kind}, {CHANGES} changes, worker poll 1 s, stream poll 0.5 s)\n")
    print("| seconds | median | p95 | max |")
    print("|---|---:|---:|---:|")
    print(row("direct write: commit -> visible to a streaming SDK (baseline)", direct))
    print(row("scheduled: due -> applied by the worker", applied_lag))
    print(row("scheduled: due -> visible to a streaming SDK", visible_lag))
    extra = statistics.median(visible_lag) - statistics.median(direct)
    print(f"\nScheduling adds {extra:.2f} s (median) to the propagation of a direct write; "
          f"the promise is 60 s, worst seen {max(visible_lag):.2f} s.")


if __name__ == "__main__":
    main()
