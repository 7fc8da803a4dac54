"""The SDK's spool against the real service (gunicorn, events counted in the database):
a host process killed with SIGKILL in the middle of delivery loses nothing it had
spooled, and the next process on the same spool_path delivers every event exactly once,
including a batch the service stored but whose response was lost (docs/sdk-events.md).
The batch id the SDK adds to every body is accepted by the service."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import sqlalchemy as sa

from service.extensions import db
from tests.sdk.support import FaultProxy
from tests.service.support import ROOT, make_sdk_key

N = 20000


def count(sql: str) -> int:
    n = db.session.execute(sa.text(sql)).scalar()
    db.session.commit()
    return n


def host(url, key, spool, body) -> str:
    return textwrap.dedent(f"""
        import sys, time
        from pitcrew import Client
        client = Client({url!r}, {key!r}, flush_interval=0.05, timeout=10, max_queue=50000,
                        spool_path={str(spool)!r})
    """) + textwrap.dedent(body)


def test_kill_9_mid_delivery_then_restart_delivers_every_event_exactly_once(live_server, tmp_path):
    key = make_sdk_key("production")
    spool = tmp_path / "spool"
    with FaultProxy(live_server.url) as proxy:
        # The first batch is stored but its answer is lost; every batch is slowed down, so
        # the kill lands while batches are in flight.
        proxy.faults.append(("/sdk/v1/events", "forward_and_drop"))
        proxy.faults.extend([("/sdk/v1/events", ("delay", 0.4))] * 200)
        child = subprocess.Popen([sys.executable, "-c", host(proxy.url, key, spool, f"""
            for i in range({N}):
                client.track("crash-event", {{"id": f"u{{i}}"}}, i)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                s = client.stats()
                if s["spooled"] + s["sent"] == {N}:
                    break
                time.sleep(0.01)
            print("SPOOLED", s["spooled"], s["sent"], flush=True)
            time.sleep(120)
        """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            line = child.stdout.readline().split()
            assert line and line[0] == "SPOOLED", line
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait(10)
        assert child.returncode == -signal.SIGKILL
        spooled = int(line[1])
        assert spooled > 0  # killed mid-delivery: events were still on disk
        time.sleep(1.0)  # let requests the proxy was still forwarding land
        before = count("SELECT count(*) FROM events WHERE event = 'crash-event'")
        assert before < N

    # A new process on the same spool_path, straight to the service: replays the spool.
    restart = subprocess.run([sys.executable, "-c", host(live_server.url, key, spool, """
        deadline = time.monotonic() + 60
        while client.stats()["spooled"] and time.monotonic() < deadline:
            time.sleep(0.05)
        client.close(10)
        s = client.stats()
        print(s["spooled"], s["failed"], s["dropped"])
    """)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert restart.returncode == 0, restart.stderr
    assert restart.stdout.split() == ["0", "0", "0"], restart.stdout
    assert count("SELECT count(*) FROM events WHERE event = 'crash-event'") == N
    assert count("SELECT count(DISTINCT unit) FROM events WHERE event = 'crash-event'") == N
    assert count("SELECT count(DISTINCT value) FROM events WHERE event = 'crash-event'") == N
    leftover = [f for _, _, files in os.walk(spool) for f in files if f.endswith(".batch")]
    assert leftover == []
