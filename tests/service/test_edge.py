"""The edge (python -m pitcrew_edge, what `make edge` runs) in front of the real
service: the same bytes as the service, through an outage, events exactly
once across an edge crash, and a scale-out of two services and two edges."""

import http.client
import json
import os
import time
import uuid
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from pitcrew import Client
from service.extensions import db

from .sse import SseReader
from .support import EdgeServer, LiveServer, make_sdk_key, make_token

ONOFF = [{"key": "on", "value": True}, {"key": "off", "value": False}]
COMPARED_HEADERS = ("content-type", "content-length", "etag", "cache-control", "www-authenticate",
                    "retry-after", "allow", "content-encoding")


def call(base_url: str, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    """(status, {compared headers}, body) of one real HTTP request."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        kept = {k.lower(): v for k, v in response.getheaders() if k.lower() in COMPARED_HEADERS}
        return response.status, kept, data
    finally:
        connection.close()


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def targeting(enabled=True, rules=()):
    return {"enabled": enabled, "off_variation": "off", "rules": list(rules), "fallthrough": {"variation": "on"}}


def put_targeting(admin, key, body):
    response = admin.put(f"/api/v1/flags/{key}/environments/production", json=body)
    assert response.status_code == 200, response.get_json()


def create_flags(admin):
    assert admin.post("/api/v1/segments", json={"key": "beta", "name": "Beta", "included": ["u-beta"]}
                      ).status_code == 201
    for key in ("checkout", "banner"):
        assert admin.post("/api/v1/flags", json={"key": key, "name": key, "kind": "boolean",
                                                 "variations": ONOFF}).status_code == 201
    put_targeting(admin, "checkout", targeting(rules=[
        {"id": "de", "conditions": [{"attribute": "country", "op": "in", "values": ["DE"]}],
         "serve": {"variation": "off"}},
        {"id": "beta", "conditions": [{"op": "in_segment", "values": ["beta"]}],
         "serve": {"rollout": {"weights": [["on", 5000], ["off", 5000]]}}}]))


def same_version(service_url: str, edge_url: str, key: str) -> bool:
    auth = {"Authorization": f"Bearer {key}"}
    return call(service_url, "GET", "/sdk/v1/config", auth)[1].get("etag") == \
        call(edge_url, "GET", "/sdk/v1/config", auth)[1].get("etag")


@pytest.fixture
def edge(live_server):
    server = EdgeServer(live_server.url)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def servers(database_url):
    """Start services and edges of our own; all stopped at the end."""
    started = []

    def service(**env):
        server = LiveServer(database_url, {k: str(v) for k, v in env.items()})
        server.start()
        started.append(server)
        return server

    def edge(upstream, **env):
        server = EdgeServer(upstream.url, {k: str(v) for k, v in env.items()})
        server.start()
        started.append(server)
        return server

    yield service, edge
    for server in reversed(started):
        server.stop()


def test_the_edge_answers_byte_for_byte_as_the_service(live_server, edge, admin):
    create_flags(admin)
    key = make_sdk_key("production")
    revoked = make_sdk_key("production")
    key_id = admin.get("/api/v1/environments/production").json["sdk_keys"][-1]["id"]
    assert admin.delete(f"/api/v1/environments/production/sdk-keys/{key_id}").status_code == 204
    admin_token = make_token("admin")
    auth = {"Authorization": f"Bearer {key}"}
    assert wait_until(lambda: same_version(live_server.url, edge.url, key), 5)
    etag = call(live_server.url, "GET", "/sdk/v1/config", auth)[1]["etag"]
    as_json = {**auth, "Content-Type": "application/json"}

    cases = [
        ("GET", "/sdk/v1/config", auth, None),
        ("GET", "/sdk/v1/config", {**auth, "If-None-Match": etag}, None),
        ("GET", "/sdk/v1/config", {**auth, "If-None-Match": f'W/{etag}, "1"'}, None),
        ("GET", "/sdk/v1/config", {**auth, "If-None-Match": '"1"'}, None),
        ("GET", "/sdk/v1/config", {}, None),
        ("GET", "/sdk/v1/config", {"Authorization": "Basic abc"}, None),
        ("GET", "/sdk/v1/config", {"Authorization": "Bearer pc_sdk_not-a-key"}, None),
        ("GET", "/sdk/v1/config", {"Authorization": f"Bearer {revoked}"}, None),
        ("GET", "/sdk/v1/config", {"Authorization": f"Bearer {admin_token}"}, None),
        ("GET", "/sdk/v1/stream", {"Authorization": f"Bearer {revoked}"}, None),
        ("POST", "/sdk/v1/config", auth, None),
        ("GET", "/sdk/v1/nothing-here", auth, None),
        ("POST", "/sdk/v1/evaluate", as_json, json.dumps({"context": {"id": "u1"}}).encode()),
        ("POST", "/sdk/v1/evaluate", as_json, json.dumps({"context": {"id": "u2", "country": "DE"}}).encode()),
        ("POST", "/sdk/v1/evaluate", as_json, json.dumps({"context": {"id": "u-beta"}}).encode()),
        ("POST", "/sdk/v1/evaluate", as_json,
         json.dumps({"context": {"id": "u3", "name": "Zoë ☃"}, "flags": ["checkout", "ghost"]}).encode()),
        ("POST", "/sdk/v1/evaluate", as_json, json.dumps({"context": {}, "flags": None}).encode()),
        ("POST", "/sdk/v1/evaluate", as_json, json.dumps({"context": "nope"}).encode()),
        ("POST", "/sdk/v1/evaluate", as_json, json.dumps({"context": {}, "extra": 1}).encode()),
        ("POST", "/sdk/v1/evaluate", as_json, json.dumps({"flags": ["checkout"]}).encode()),
        ("POST", "/sdk/v1/evaluate", as_json, json.dumps({"context": {}, "flags": [1]}).encode()),
        ("POST", "/sdk/v1/evaluate", as_json, b"{not json"),
        ("POST", "/sdk/v1/evaluate", as_json, b"[]"),
        ("POST", "/sdk/v1/evaluate", {**auth, "Content-Type": "text/plain"}, b'{"context": {}}'),
        ("POST", "/sdk/v1/evaluate", {"Content-Type": "application/json"}, b'{"context": {}}'),
        ("POST", "/sdk/v1/events", {**as_json, "Content-Encoding": "br"}, b"{}"),
        ("POST", "/sdk/v1/events", as_json, b"{not json"),
        ("POST", "/sdk/v1/events", as_json, json.dumps({"events": [{}] * 1001}).encode()),
    ]
    for method, path, headers, body in cases:
        expected = call(live_server.url, method, path, headers, body)
        got = call(edge.url, method, path, headers, body)
        assert got == expected, (method, path, headers, body)

    # Events: the same batch shape (fresh ids on each side) gets the same answer.
    def batch():
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return json.dumps({"events": [
            {"id": str(uuid.uuid4()), "type": "track", "ts": now, "unit": "u1", "event": "buy", "value": 3},
            {"id": "not-a-uuid", "type": "track", "ts": now, "unit": "u1", "event": "buy"},
            {"id": str(uuid.uuid4()), "type": "exposure", "ts": now, "unit": "u1"},
        ]}).encode()

    expected = call(live_server.url, "POST", "/sdk/v1/events", as_json, batch())
    got = call(edge.url, "POST", "/sdk/v1/events", as_json, batch())
    assert got == expected and got[0] == 202
    assert json.loads(got[2])["accepted"] == 1


def test_edge_streams_follow_changes_and_end_on_revocation(live_server, edge, admin):
    assert admin.post("/api/v1/flags", json={"key": "k", "name": "k", "kind": "boolean",
                                             "variations": ONOFF}).status_code == 201
    key = make_sdk_key("production")
    reader = SseReader(edge.url, key)
    assert reader.status == 200 and reader.wait(reader.versions, 5)
    changed = time.monotonic()
    put_targeting(admin, "k", targeting(enabled=False))
    assert reader.wait(lambda: len(reader.versions()) >= 2, 2)
    assert reader.events[-1][0] - changed < 1.0
    auth = {"Authorization": f"Bearer {key}"}
    _status, _, body = call(edge.url, "GET", "/sdk/v1/config", auth)
    assert json.loads(body)["version"] == reader.versions()[-1]

    key_id = admin.get("/api/v1/environments/production").json["sdk_keys"][-1]["id"]
    revoked_at = time.monotonic()
    assert admin.delete(f"/api/v1/environments/production/sdk-keys/{key_id}").status_code == 204
    assert reader.wait(lambda: reader.closed_at is not None, 5)
    assert reader.closed_at - revoked_at < 2.0
    assert call(edge.url, "GET", "/sdk/v1/config", auth)[0] == 401


def processes() -> list[tuple[int, str, int, int, str]]:
    """(pid, state, ppid, process group, command line) of every process, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        state, ppid, pgrp = stat.rpartition(")")[2].split()[:3]
        found.append((int(entry), state, int(ppid), int(pgrp), cmdline))
    return found


def test_edge_workers_serve_one_port_follow_changes_and_stop_together(live_server, admin):
    """EDGE_WORKERS=2: two worker processes, each a whole edge, on the edge's port."""
    assert admin.post("/api/v1/flags", json={"key": "w", "name": "w", "kind": "boolean",
                                             "variations": ONOFF}).status_code == 201
    edge = EdgeServer(live_server.url, {"EDGE_WORKERS": "2"})
    edge.start()
    try:
        pid = edge.process.pid

        def workers():  # uvicorn's spawned workers (not multiprocessing's resource tracker)
            return [p for p, state, ppid, _, cmd in processes() if ppid == pid and state != "Z"
                    and "spawn_main" in cmd]

        assert wait_until(lambda: len(workers()) == 2, 10), processes()

        key = make_sdk_key("production")
        auth = {"Authorization": f"Bearer {key}"}
        assert wait_until(lambda: same_version(live_server.url, edge.url, key), 5)
        etag = call(live_server.url, "GET", "/sdk/v1/config", auth)[1]["etag"]
        for _ in range(50):  # a fresh connection each: the kernel hands them to either worker
            status, headers, body = call(edge.url, "GET", "/sdk/v1/config", auth)
            assert (status, headers.get("etag")) == (200, etag) and body
            status, headers, body = call(edge.url, "GET", "/sdk/v1/config", {**auth, "If-None-Match": etag})
            assert (status, headers.get("etag"), body) == (304, etag, b"")

        with Client(edge.url, key, stream=True, events=False, poll_interval=30) as client:
            assert client.wait_until_ready(5)
            assert wait_until(lambda: client.status()["stream_connected"], 5)
            for enabled in (False, True):
                put_targeting(admin, "w", targeting(enabled=enabled))
                assert wait_until(lambda e=enabled: client.variation("w", {"id": "u"}, None) is e, 2)

        group = {p for p, _state, _ppid, pgrp, _cmd in processes() if pgrp == pid}
        assert {pid, *workers()} <= group  # what the SIGTERM below must end
        edge.process.terminate()  # SIGTERM, as a supervisor stops it
        edge.process.wait(5)
        assert wait_until(lambda: not any(pgrp == pid for _, _, _, pgrp, _ in processes()), 5), \
            [p for p in processes() if p[3] == pid]
    finally:
        edge.stop()


def test_an_upstream_outage_keeps_the_edge_serving(servers, admin):
    start_service, start_edge = servers
    service = start_service()
    edge = start_edge(service)
    assert admin.post("/api/v1/flags", json={"key": "k", "name": "k", "kind": "boolean",
                                             "variations": ONOFF}).status_code == 201
    put_targeting(admin, "k", targeting())
    key = make_sdk_key("production")
    auth = {"Authorization": f"Bearer {key}"}
    with Client(edge.url, key, stream=True, events=False, poll_interval=1) as client:
        assert client.wait_until_ready(5)
        assert client.variation("k", {"id": "u"}, None) is True
        status, headers, body = call(edge.url, "GET", "/sdk/v1/config", auth)
        assert status == 200

        service.stop()
        for _ in range(3):
            assert call(edge.url, "GET", "/sdk/v1/config", auth) == (status, headers, body)
            assert call(edge.url, "GET", "/sdk/v1/config", {**auth, "If-None-Match": headers["etag"]})[0] == 304
            evaluated = call(edge.url, "POST", "/sdk/v1/evaluate", {**auth, "Content-Type": "application/json"},
                             b'{"context": {"id": "u"}}')
            assert evaluated[0] == 200 and json.loads(evaluated[2])["flags"]["k"]["value"] is True
            time.sleep(0.3)
        assert call(edge.url, "GET", "/readyz")[0] == 200
        events = call(edge.url, "POST", "/sdk/v1/events", {**auth, "Content-Type": "application/json"},
                      b'{"events": []}')
        assert events[0] == 503 and events[1]["retry-after"]
        assert client.variation("k", {"id": "u"}, None) is True

        put_targeting(admin, "k", targeting(enabled=False))  # written while the service is down
        service.start()  # same port: the edge reconnects with backoff
        assert wait_until(lambda: client.variation("k", {"id": "u"}, None) is False, 15)


def count_events(name: str) -> tuple[int, int]:
    row = db.session.execute(sa.text("SELECT count(*), count(DISTINCT client_id) FROM events WHERE event = :e"),
                             {"e": name}).one()
    db.session.commit()
    return row[0], row[1]


def test_events_through_the_edge_arrive_exactly_once_across_an_edge_crash(live_server, admin):
    edge = EdgeServer(live_server.url)
    edge.start()
    key = make_sdk_key("production")
    total = 600
    try:
        with Client(edge.url, key, flush_interval=0.05, poll_interval=1) as client:
            assert client.wait_until_ready(5)
            for i in range(total):
                client.track("edge-crash", {"id": f"u{i}"}, i)
                if i == total // 3:
                    edge.kill()  # SIGKILL while batches are in flight
                if i == total // 2:
                    edge.start()
                time.sleep(0.002)
            client.flush()
    finally:
        edge.stop()
    assert count_events("edge-crash") == (total, total)


def test_two_services_and_two_edges_on_one_database(servers, database_url):
    """A change written through service A reaches SDKs on the edge that follows service B."""
    start_service, start_edge = servers
    a, b = start_service(), start_service()
    edge_a, edge_b = start_edge(a), start_edge(b)
    token = make_token("editor")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps({"key": "scale", "name": "scale", "kind": "boolean", "variations": ONOFF}).encode()
    assert call(a.url, "POST", "/api/v1/flags", headers, body)[0] == 201
    key = make_sdk_key("production")
    clients = [Client(edge.url, key, stream=True, events=False, poll_interval=30) for edge in (edge_a, edge_b)]
    try:
        for client in clients:
            assert client.wait_until_ready(5)
            assert wait_until(lambda c=client: c.status()["stream_connected"], 5)
        for enabled in (False, True, False):
            body = json.dumps(targeting(enabled=enabled)).encode()
            changed = time.monotonic()
            assert call(a.url, "PUT", "/api/v1/flags/scale/environments/production", headers, body)[0] == 200
            for client in clients:
                assert wait_until(lambda c=client, e=enabled: c.variation("scale", {"id": "u"}, None) is e, 2)
            assert time.monotonic() - changed < 2.0
    finally:
        for client in clients:
            client.close()
