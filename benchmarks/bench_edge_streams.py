"""One edge process holding BENCH_STREAMS (10,000) SSE clients while a flag flips.

Run: .venv/bin/python benchmarks/bench_edge_streams.py   (part of `make bench`)

Starts the real service (gunicorn, SQLite) and one edge process
(python -m pitcrew_edge) in front of it, opens BENCH_STREAMS concurrent
/sdk/v1/stream connections to the edge on loopback from this process (one
asyncio loop, raw sockets, the fd limit raised to the hard limit), waits
until each has its first `config` event, measures the edge's resident
memory per idle stream, then flips a flag through the service's admin API
and times the arrival of the new `config` event at every client (from the
moment the PUT is sent). Bounded: BENCH_STREAMS_SECONDS for the whole run.
Goals (docs/delivery.md): all clients reached, p95 < 500 ms, p99 < 1 s.
The clients share the machine's 2 cores with the edge and the service.
"""

import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STREAMS = int(os.environ.get("BENCH_STREAMS", "10000"))
BUDGET = float(os.environ.get("BENCH_STREAMS_SECONDS", "120"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class StreamClient(asyncio.Protocol):
    def __init__(self, request: bytes, on_event):
        self.request = request
        self.on_event = on_event
        self.configs = 0
        self.transport = None
        self.closed = False
        self.counted = False

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes):
        found = data.count(b"event: config")
        if found:
            self.configs += found
            self.on_event(self, time.monotonic())

    def connection_lost(self, exc):
        self.closed = True


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run(edge_port: int, service_url: str, key: str, token: str, edge_pid: int) -> dict:
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + BUDGET
    request = (f"GET /sdk/v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
               f"Accept: text/event-stream\r\n\r\n").encode()
    first = asyncio.Event()
    second: dict = {}
    all_second = asyncio.Event()
    state = {"ready": 0}

    def on_event(client, at):
        if "flip" not in state:
            if not client.counted:
                client.counted = True
                state["ready"] += 1
                if state["ready"] >= STREAMS:
                    first.set()
        elif client not in second:
            second[client] = at
            if len(second) >= STREAMS:
                all_second.set()

    def put(enabled: bool):
        body = json.dumps({"enabled": enabled, "off_variation": "off", "fallthrough": {"variation": "on"}}).encode()
        request = urllib.request.Request(f"{service_url}/api/v1/flags/flag-0/environments/production", data=body,
                                         method="PUT", headers={"Authorization": f"Bearer {token}",
                                                                "Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).read()

    # A warm-up write before any stream opens: the measured flip is not the service's first.
    await loop.run_in_executor(None, put, True)
    await asyncio.sleep(1)
    before = rss_kib(edge_pid)
    clients = []
    opened_at = time.monotonic()
    batch = 250
    for start in range(0, STREAMS, batch):
        results = await asyncio.gather(*(
            loop.create_connection(lambda: StreamClient(request, on_event), "127.0.0.1", edge_port)
            for _ in range(min(batch, STREAMS - start))), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                raise RuntimeError(f"could not open a stream: {result!r}")
            clients.append(result[1])
        if time.monotonic() > deadline:
            raise RuntimeError("opening streams took too long")
    await asyncio.wait_for(first.wait(), max(deadline - time.monotonic(), 1))
    open_seconds = time.monotonic() - opened_at
    await asyncio.sleep(2)  # settle
    after = rss_kib(edge_pid)

    state["flip"] = True
    flipped = time.monotonic()
    await loop.run_in_executor(None, put, False)
    try:
        await asyncio.wait_for(all_second.wait(), 10)
    except TimeoutError:
        pass
    latencies = [(at - flipped) * 1000 for at in second.values()]
    for client in clients:
        client.transport.close()
    return {"opened": len(clients), "open_seconds": open_seconds, "rss_before": before, "rss_after": after,
            "reached": len(latencies), "latencies": latencies}


def main() -> None:
    import bench_config

    from tests.service.support import EdgeServer, LiveServer

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < STREAMS + 100:
        print(f"fd hard limit {hard} is below {STREAMS} streams; lower BENCH_STREAMS")
        sys.exit(1)
    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/bench.db"
        env = dict(os.environ, DATABASE_URL=database_url, FLASK_APP="service", PITCREW_INSTANCE_DIR=tmp)
        bench_config.FLAGS = 20
        key, _ = bench_config.setup(database_url, env)
        token = bench_config.admin_token(env)
        server = LiveServer(database_url, {"PITCREW_INSTANCE_DIR": tmp, "LOG_LEVEL": "ERROR",
                                           "TOKEN_TOUCH_INTERVAL": "60", "STREAM_HEARTBEAT": "15"})
        server.start()
        edge = EdgeServer(server.url, {"LOG_LEVEL": "ERROR", "EDGE_STREAM_HEARTBEAT": "15"})
        edge.start()
        try:
            try:
                import uvloop

                runner = uvloop.run
            except ImportError:
                runner = asyncio.run
            result = runner(run(edge.port, server.url, key, token, edge.process.pid))
        finally:
            edge.stop()
            server.stop()
    latencies = result["latencies"]
    per_stream = (result["rss_after"] - result["rss_before"]) / max(result["opened"], 1)
    print(f"\n### One edge process, {STREAMS:,} concurrent SSE clients on loopback (SQLite service)\n")
    print("| measure | value | goal |")
    print("|---|---:|---|")
    print(f"| streams opened (seconds to open all and get their first event) | {result['opened']:,} "
          f"({result['open_seconds']:.1f} s) | {STREAMS:,} |")
    print(f"| clients reached by the flip | {result['reached']:,} | all |")
    if latencies:
        print(f"| flip to client, p50 | {statistics.median(latencies):.0f} ms | |")
        print(f"| flip to client, p95 | {percentile(latencies, 0.95):.0f} ms | < 500 ms |")
        print(f"| flip to client, p99 | {percentile(latencies, 0.99):.0f} ms | < 1000 ms |")
        print(f"| flip to client, max | {max(latencies):.0f} ms | |")
    print(f"| edge resident memory, idle -> {STREAMS:,} streams | {result['rss_before'] / 1024:.0f} -> "
          f"{result['rss_after'] / 1024:.0f} MiB | |")
    print(f"| edge memory per idle stream | {per_stream:.1f} KiB | |")


if __name__ == "__main__":
    main()
