"""Evaluations the edge answers from memory reach the flag lifecycle (docs/lifecycle.md):
counted by the edge, forwarded as the ``evaluations`` of a ``POST /sdk/v1/events``
batch, once, across an upstream outage, a lost answer and a shutdown. Real
processes: gunicorn services and ``python -m pitcrew_edge`` edges."""

import asyncio
import gzip
import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import sqlalchemy as sa

from service.extensions import db
from service.models import FlagUsage

from . import test_edge
from .support import make_sdk_key
from .test_edge import ONOFF, call, put_targeting, targeting, wait_until

servers = test_edge.servers  # the fixture: services and edges of our own, stopped at the end
FLUSH = "0.3"  # EDGE_EVALUATION_FLUSH in these tests (seconds)


def create_flag(admin, key: str, **serve) -> None:
    assert admin.post("/api/v1/flags", json={"key": key, "name": key, "kind": "boolean",
                                             "variations": ONOFF}).status_code == 201
    put_targeting(admin, key, targeting(**serve))


def counted(admin, flag: str) -> tuple[int, dict, str | None]:
    """(evaluations in production, {variation: count}, last_evaluated_at) from the admin API."""
    env = admin.get(f"/api/v1/flags/{flag}/evaluations?days=7").json["environments"]["production"]
    variations: dict = {}
    for day in env["days"]:
        for variation, n in day["variations"].items():
            variations[variation] = variations.get(variation, 0) + n
    return sum(variations.values()), variations, env["last_evaluated_at"]


def evaluate(edge_url: str, key: str, body: dict) -> dict:
    status, _headers, data = call(edge_url, "POST", "/sdk/v1/evaluate",
                                  {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                                  json.dumps(body).encode())
    assert status == 200, data
    return json.loads(data)["flags"]


def metric(edge_url: str, name: str) -> float:
    """The sum of a metric's samples on the edge's /metrics."""
    _status, _headers, body = call(edge_url, "GET", "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_evaluations_answered_by_the_edge_reach_the_lifecycle(servers, admin):
    start_service, start_edge = servers
    service = start_service()
    edge = start_edge(service, EDGE_EVALUATION_FLUSH=FLUSH)
    create_flag(admin, "checkout")
    create_flag(admin, "banner", enabled=False)
    key = make_sdk_key("production")
    assert counted(admin, "checkout") == (0, {}, None)
    assert admin.get("/api/v1/flags/checkout").json["lifecycle"] == "new"

    named, every = 17, 8
    for i in range(named):  # named flags, one the ruleset does not know (not counted)
        flags = evaluate(edge.url, key, {"context": {"id": f"u{i}"}, "flags": ["checkout", "ghost"]})
        assert flags["checkout"]["value"] is True
    for i in range(every):  # every flag of the ruleset
        assert set(evaluate(edge.url, key, {"context": {"id": f"v{i}"}})) == {"checkout", "banner"}

    assert wait_until(lambda: counted(admin, "checkout")[0] == named + every, 10), counted(admin, "checkout")
    time.sleep(3 * float(FLUSH))  # later flushes add nothing
    total, variations, last = counted(admin, "checkout")
    assert (total, variations) == (named + every, {"on": named + every}) and last is not None
    assert counted(admin, "banner")[:2] == (every, {"off": every})
    assert db.session.scalars(sa.select(FlagUsage.flag).order_by(FlagUsage.flag)).all() == ["banner", "checkout"]
    db.session.commit()
    flag = admin.get("/api/v1/flags/checkout").json
    assert flag["last_evaluated_at"] is not None and flag["lifecycle"] == "active"
    # The edge answered them all itself, and says so.
    assert metric(edge.url, "pitcrew_edge_requests_total") >= named + every
    assert metric(edge.url, "pitcrew_edge_flag_evaluations_total") == named + 2 * every
    assert metric(edge.url, "pitcrew_edge_flag_evaluations_forwarded_total") == named + 2 * every
    assert metric(edge.url, "pitcrew_edge_flag_evaluations_dropped_total") == 0


def test_counts_held_through_an_upstream_outage_arrive_once(servers, admin):
    start_service, start_edge = servers
    service = start_service()
    edge = start_edge(service, EDGE_EVALUATION_FLUSH=FLUSH)
    create_flag(admin, "checkout")
    key = make_sdk_key("production")
    before, during = 5, 12
    for i in range(before):
        evaluate(edge.url, key, {"context": {"id": f"u{i}"}, "flags": ["checkout"]})
    assert wait_until(lambda: counted(admin, "checkout")[0] == before, 10)

    service.stop()
    for i in range(during):  # answered from memory while the service is down
        evaluate(edge.url, key, {"context": {"id": f"w{i}"}, "flags": ["checkout"]})
    failed = 'pitcrew_edge_upstream_requests_total{kind="evaluations",outcome="unreachable"}'
    assert wait_until(lambda: metric(edge.url, failed) >= 2, 10)  # flushes failed, counts kept
    assert counted(admin, "checkout")[0] == before

    service.start()  # same port
    assert wait_until(lambda: counted(admin, "checkout")[0] == before + during, 15), counted(admin, "checkout")
    time.sleep(3 * float(FLUSH))
    assert counted(admin, "checkout")[:2] == (before + during, {"on": before + during})
    assert metric(edge.url, "pitcrew_edge_flag_evaluations_forwarded_total") == before + during


class LosingProxy:
    """An HTTP proxy between an edge and the service that forwards ``POST /sdk/v1/events``
    but answers the first ``lose`` of them 502 (the service committed; the edge never hears
    so), and refuses ``/sdk/v1/stream`` (the edge then polls /config). Records each events
    body it forwarded, decoded."""

    def __init__(self, upstream: str, lose: int):
        self.upstream = urlsplit(upstream)
        self.lose = lose
        self.bodies: list[dict] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                proxy.forward(self)

            def do_POST(self):
                proxy.forward(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def forward(self, request) -> None:
        if request.path.startswith("/sdk/v1/stream"):
            self.reply(request, 503, [], b"")
            return
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "connection")}
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=10)
        try:
            connection.request(request.command, request.path, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders()
                    if k.lower() not in ("connection", "transfer-encoding", "content-length")]
            status = response.status
        finally:
            connection.close()
        if request.path == "/sdk/v1/events":
            self.bodies.append(json.loads(gzip.decompress(body)))
            if len(self.bodies) <= self.lose:
                status, kept, data = 502, [], b""  # committed upstream, lost on the way back
        self.reply(request, status, kept, data)

    @staticmethod
    def reply(request, status: int, headers: list, data: bytes) -> None:
        request.send_response(status)
        for name, value in headers:
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(data)))
        request.send_header("Connection", "close")
        request.end_headers()
        request.wfile.write(data)
        request.close_connection = True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_flush_resent_after_a_lost_answer_counts_once(servers, admin):
    start_service, start_edge = servers
    service = start_service()
    proxy = LosingProxy(service.url, lose=2)
    try:
        edge = start_edge(proxy, EDGE_EVALUATION_FLUSH=FLUSH)
        create_flag(admin, "checkout")
        key = make_sdk_key("production")
        n = 9
        for i in range(n):
            evaluate(edge.url, key, {"context": {"id": f"u{i}"}, "flags": ["checkout"]})
        assert wait_until(lambda: len(proxy.bodies) >= 3, 10)
        time.sleep(3 * float(FLUSH))
    finally:
        proxy.close()
    first = proxy.bodies[0]
    # The same batch, three times: twice committed with the answer lost, then acknowledged.
    assert first["batch"] and proxy.bodies[1] == first and proxy.bodies[2] == first, proxy.bodies
    batches = {}
    for body in proxy.bodies:
        assert body["events"] == [] and body["evaluations"]  # nothing sent empty
        assert batches.setdefault(body["batch"], body) == body  # a batch id always means the same counts
    sent = [(e["flag"], e["variation"], e["count"]) for b in batches.values() for e in b["evaluations"]]
    assert {(f, v) for f, v, _ in sent} == {("checkout", "on")} and sum(c for _, _, c in sent) == n
    assert counted(admin, "checkout")[:2] == (n, {"on": n})


def test_the_edge_forwards_its_counts_when_it_stops(servers, admin):
    start_service, start_edge = servers
    service = start_service()
    edge = start_edge(service, EDGE_EVALUATION_FLUSH="3600")
    create_flag(admin, "checkout")
    key = make_sdk_key("production")
    for i in range(4):
        evaluate(edge.url, key, {"context": {"id": f"u{i}"}, "flags": ["checkout"]})
    time.sleep(0.5)
    assert counted(admin, "checkout")[0] == 0  # no flush before an hour
    edge.stop()  # SIGTERM: the shutdown flushes
    assert counted(admin, "checkout")[:2] == (4, {"on": 4})


def test_each_edge_worker_forwards_its_counts_when_the_edge_stops(servers, admin):
    """EDGE_WORKERS=2: each worker counts what it answered and flushes it at SIGTERM."""
    start_service, start_edge = servers
    service = start_service()
    edge = start_edge(service, EDGE_EVALUATION_FLUSH="3600", EDGE_WORKERS="2")
    create_flag(admin, "checkout")
    key = make_sdk_key("production")
    # A fresh connection each: either worker answers (the second may still be starting).
    # /metrics answers for the worker that took its connection: a count between 0 and the
    # evaluations made means the other worker holds the rest, so both have counts to flush.
    n, seen = 0, []
    while n < 400:
        evaluate(edge.url, key, {"context": {"id": f"u{n}"}, "flags": ["checkout"]})
        n += 1
        seen.append(metric(edge.url, "pitcrew_edge_flag_evaluations_total"))
        if n >= 20 and 0 < seen[-1] < n:
            break
    assert 0 < seen[-1] < n, seen
    assert counted(admin, "checkout")[0] == 0  # no flush before an hour
    edge.stop()  # SIGTERM to the edge: it stops its workers, each flushes
    assert counted(admin, "checkout")[:2] == (n, {"on": n})


def test_counts_are_bounded_and_merge_while_a_batch_waits():
    """In memory: at most ``evaluation_entries`` keys; counts taken while a batch waits add up
    in the carry; the waiting batch keeps its id and bytes until delivered."""
    from prometheus_client import CollectorRegistry, Counter

    from pitcrew.evaluation import EvaluationResult, Reason
    from pitcrew_edge.evaluations import EvaluationCounts

    registry = CollectorRegistry()
    counts = EvaluationCounts(3, Counter("evaluated", "", ["environment"], registry=registry),
                              Counter("dropped", "", registry=registry))
    served = {"a": EvaluationResult(True, "on", Reason.FALLTHROUGH), "b": EvaluationResult(False, "off", Reason.OFF),
              "ghost": EvaluationResult(None, None, Reason.FLAG_NOT_FOUND)}
    for _ in range(5):
        counts.count("production", "key-p", served)
    counts.count("staging", "key-s", {"x": served["a"], "y": served["a"]})  # "y" is a fourth key: dropped
    assert registry.get_sample_value("dropped_total") == 1
    assert registry.get_sample_value("evaluated_total", {"environment": "production"}) == 10

    tally = counts.tallies["production"]
    counts.take(tally)
    batch = asyncio.run(counts.next_batch(tally))
    sent = json.loads(gzip.decompress(batch.body))
    assert sent["batch"] == batch.id and sent["events"] == []
    assert [(e["flag"], e["variation"], e["count"]) for e in sent["evaluations"]] == [("a", "on", 5), ("b", "off", 5)]
    for _ in range(2):  # flushes failing: the batch waits, new counts merge
        counts.count("production", "key-p", served)
        counts.take(tally)
        assert asyncio.run(counts.next_batch(tally)) is batch
    assert {k: v[0] for k, v in tally.carry.items()} == {("a", "on"): 2, ("b", "off"): 2}
    assert tally.undelivered() == 14
    assert counts.delivered(tally) == 10
    following = json.loads(gzip.decompress(asyncio.run(counts.next_batch(tally)).body))
    assert following["batch"] != batch.id and [e["count"] for e in following["evaluations"]] == [2, 2]
