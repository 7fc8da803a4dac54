"""SDK delivery in the real server (gunicorn with the asyncio worker): streams
hold no thread, end on revocation and deletion, are capped per process; a
slow client holds nothing; /sdk/v1/config 304s come from memory."""

import http.client
import json
import socket
import threading
import time
import urllib.request

import pytest
import sqlalchemy as sa

from service.extensions import db

from .sse import SseReader
from .support import LiveServer, make_sdk_key, make_token

FLAG = {"key": "kill-switch", "name": "Kill switch", "kind": "boolean",
        "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}]}


def get(url: str, headers: dict | None = None, timeout: float = 5):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def flip(admin, enabled: bool):
    body = {"enabled": enabled, "off_variation": "off", "fallthrough": {"variation": "on"}}
    response = admin.put("/api/v1/flags/kill-switch/environments/production", json=body)
    assert response.status_code == 200, response.get_json()


@pytest.fixture
def own_server(database_url):
    servers = []

    def start(**env):
        server = LiveServer(database_url, {k: str(v) for k, v in env.items()})
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_stream_announces_changes_and_ends_when_its_key_is_revoked(live_server, admin):
    assert admin.post("/api/v1/flags", json=FLAG).status_code == 201
    key = make_sdk_key("production")
    reader = SseReader(live_server.url, key)
    assert reader.status == 200 and reader.headers["content-type"] == "text/event-stream"
    assert reader.wait(lambda: len(reader.versions()) == 1, 5)
    flip(admin, False)
    assert reader.wait(lambda: len(reader.versions()) == 2, 2)
    assert reader.versions()[1] > reader.versions()[0]

    key_id = admin.get("/api/v1/environments/production").json["sdk_keys"][-1]["id"]
    revoked_at = time.monotonic()
    assert admin.delete(f"/api/v1/environments/production/sdk-keys/{key_id}").status_code == 204
    assert reader.wait(lambda: reader.closed_at is not None, 5), "the stream outlived its key"
    assert reader.closed_at - revoked_at < 2.0
    assert reader.events[-1][1:] == ("error", {"error": "key revoked"})
    # The same key opens nothing any more, on every worker, within the bound
    # (each process learns of the revocation from its own watcher).
    while True:
        again = SseReader(live_server.url, key)
        if again.status != 200 or time.monotonic() - revoked_at > 2.0:
            break
        again.close()
        time.sleep(0.05)
    assert again.status == 401 and json.loads(again.body)["error"]["code"] == "unauthorized"


def test_deleting_the_environment_ends_its_streams(live_server, admin):
    assert admin.post("/api/v1/environments", json={"key": "doomed", "name": "Doomed"}).status_code == 201
    key = make_sdk_key("doomed")
    reader = SseReader(live_server.url, key)
    assert reader.wait(reader.versions, 5)
    deleted_at = time.monotonic()
    assert admin.delete("/api/v1/environments/doomed").status_code == 204
    assert reader.wait(lambda: reader.closed_at is not None, 5)
    assert reader.closed_at - deleted_at < 2.0
    assert reader.events[-1][1] == "error"


def test_streams_beyond_the_cap_get_503_with_retry_after(own_server, admin):
    server = own_server(WEB_CONCURRENCY=1, STREAM_MAX_PER_PROCESS=3)
    key = make_sdk_key("production")
    held = [SseReader(server.url, key) for _ in range(3)]
    assert [r.status for r in held] == [200, 200, 200]
    refused = SseReader(server.url, key)
    assert refused.status == 503
    assert refused.headers["retry-after"] == "5"
    assert json.loads(refused.body)["error"]["code"] == "unavailable"
    assert get(f"{server.url}/healthz")[0] == 200
    held[0].close()
    # The slot frees once the server notices the client left.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        again = SseReader(server.url, key)
        if again.status == 200:
            again.close()
            break
        time.sleep(0.1)
    else:
        pytest.fail("a closed stream kept its slot")
    for reader in held[1:]:
        reader.close()


def test_64_open_streams_leave_healthz_and_the_admin_api_answering(live_server, admin):
    token = make_token("viewer")
    key = make_sdk_key("production")
    readers = [SseReader(live_server.url, key) for _ in range(64)]
    try:
        assert all(r.status == 200 for r in readers)
        for path, headers in (("/healthz", {}), ("/api/v1/flags", {"Authorization": f"Bearer {token}"})):
            started = time.monotonic()
            status, _, _ = get(live_server.url + path, headers, timeout=5)
            assert status == 200
            assert time.monotonic() - started < 1.0, path
    finally:
        for reader in readers:
            reader.close()


def test_slow_clients_do_not_stop_healthz(live_server):
    """100 connections sending their headers a byte a second (the production
    configuration: gunicorn_conf.py, as `make serve` and the image run it)."""
    stop = threading.Event()
    header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100

    def slowloris(sock):
        for byte in header:
            if stop.wait(1.0):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    sockets = [socket.create_connection(("127.0.0.1", live_server.port)) for _ in range(100)]
    threads = [threading.Thread(target=slowloris, args=(s,), daemon=True) for s in sockets]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)  # every slow client has started its headers
        for _ in range(5):
            started = time.monotonic()
            status, _, body = get(f"{live_server.url}/healthz", timeout=5)
            assert status == 200 and json.loads(body) == {"status": "ok"}
            assert time.monotonic() - started < 1.0
            time.sleep(0.5)
    finally:
        stop.set()
        for s in sockets:
            s.close()


def test_config_304_and_200_come_from_memory(live_server, admin):
    assert admin.post("/api/v1/flags", json=FLAG).status_code == 201
    key = make_sdk_key("production")
    auth = {"Authorization": f"Bearer {key}"}
    status, headers, body = get(f"{live_server.url}/sdk/v1/config", auth)
    assert status == 200
    etag = headers["ETag"]
    assert etag == f'"{json.loads(body)["version"]}"'
    # 304 for the current ETag; 200 with the new body once a change is announced.
    assert get(f"{live_server.url}/sdk/v1/config", {**auth, "If-None-Match": etag})[0] == 304
    flip(admin, False)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        status, headers, body = get(f"{live_server.url}/sdk/v1/config", {**auth, "If-None-Match": etag})
        if status == 200:
            break
        time.sleep(0.02)
    assert status == 200 and headers["ETag"] != etag
    assert json.loads(body)["flags"]["kill-switch"]["targeting"]["enabled"] is False
    # A client that claims a version the process has not seen is not sent back in time.
    ahead = f'"{json.loads(body)["version"] + 1000}"'
    status, headers, body = get(f"{live_server.url}/sdk/v1/config", {**auth, "If-None-Match": ahead})
    assert status == 200 and json.loads(body)["flags"]["kill-switch"]["targeting"]["enabled"] is False


def test_config_304_needs_no_database_round_trip(live_server, admin, database_url):
    """With the tables an SDK request would read locked by another
    transaction, 304s and streams still answer (PostgreSQL: LOCK TABLE)."""
    if not database_url.startswith("postgres"):
        pytest.skip("needs PostgreSQL's LOCK TABLE")
    key = make_sdk_key("production")
    auth = {"Authorization": f"Bearer {key}"}
    status, headers, _ = get(f"{live_server.url}/sdk/v1/config", auth)
    etag = headers["ETag"]
    time.sleep(0.3)  # the key is in every worker's memory
    engine = db.engine
    with engine.connect() as conn:
        transaction = conn.begin()
        conn.execute(sa.text("LOCK TABLE sdk_keys, environments IN ACCESS EXCLUSIVE MODE"))
        try:
            for _ in range(10):
                started = time.monotonic()
                status, _, _ = get(f"{live_server.url}/sdk/v1/config", {**auth, "If-None-Match": etag}, timeout=3)
                assert status == 304
                assert time.monotonic() - started < 0.5
            reader = SseReader(live_server.url, key, timeout=3)
            assert reader.status == 200 and reader.wait(reader.versions, 2)
            reader.close()
        finally:
            transaction.rollback()


def test_stream_keepalive_and_client_departure(live_server):
    """Idle streams get a comment every heartbeat (1 s in tests); a departed
    client's stream is dropped at once (no thread to hold anyway)."""
    key = make_sdk_key("production")
    connection = http.client.HTTPConnection("127.0.0.1", live_server.port, timeout=5)
    connection.request("GET", "/sdk/v1/stream", headers={"Authorization": f"Bearer {key}"})
    response = connection.getresponse()
    lines = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline and ": keepalive" not in lines:
        lines.append(response.readline().decode().rstrip("\r\n"))
    assert lines[0] == "event: config"
    assert ": keepalive" in lines
    connection.close()
