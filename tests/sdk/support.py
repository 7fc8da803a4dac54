"""Helpers for the SDK tests: ruleset builders, a scriptable stub of the /sdk/v1 endpoints
on a loopback port (for unit-level transport, retry and stream tests), and helpers for the
integration tests against the real service."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ONOFF = [{"key": "on", "value": True}, {"key": "off", "value": False}]


def wait_for(predicate, timeout=5.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# --------------------------------------------------------------------------- rulesets


def targeting(fallthrough=None, *, enabled=True, off="off", rules=(), targets=(), prerequisites=()):
    return {
        "enabled": enabled, "off_variation": off, "prerequisites": list(prerequisites),
        "targets": list(targets), "rules": list(rules),
        "fallthrough": fallthrough or {"variation": "on"},
    }


def bool_flag(key, fallthrough=None, version=1, **kw):
    return {"key": key, "kind": "boolean", "version": version, "variations": ONOFF,
            "targeting": targeting(fallthrough, **kw)}


def flag(key, kind, values, serve=None, version=1, **kw):
    variations = [{"key": k, "value": v} for k, v in values.items()]
    first = next(iter(values))
    return {"key": key, "kind": kind, "version": version, "variations": variations,
            "targeting": targeting(serve or {"variation": first}, off=first, **kw)}


def experiment(key, flag_key, *, unit="id", dimensions=(), traffic=10000, status="running",
               variations=(("off", 5000), ("on", 5000)), released=None):
    return {
        "key": key, "flag": flag_key, "status": status, "unit": unit, "traffic": traffic,
        "salt": key, "dimensions": list(dimensions), "control": variations[0][0],
        "variations": [{"variation": v, "weight": w} for v, w in variations],
        "released_variation": released,
    }


def ruleset(flags=(), experiments=(), segments=None, version=1, environment="production"):
    return {
        "version": version, "environment": environment,
        "flags": {f["key"]: f for f in flags},
        "segments": segments or {},
        "experiments": {e["key"]: e for e in experiments},
        "layers": {},
    }


def three_rule_flag(key="checkout-v2"):
    """The benchmark flag: three rules and a 50/50 rollout fallthrough."""
    return bool_flag(key, {"rollout": {"weights": [["on", 5000], ["off", 5000]]}}, rules=[
        {"id": "r1", "conditions": [{"attribute": "country", "op": "in", "values": ["DE", "FR", "IT"]}], "serve": {"variation": "on"}},
        {"id": "r2", "conditions": [{"attribute": "app_version", "op": "semver_gte", "values": ["5.0.0"]}], "serve": {"variation": "on"}},
        {"id": "r3", "conditions": [{"attribute": "email", "op": "matches", "values": [r"@pitcrew\.dev$"]}], "serve": {"variation": "on"}},
    ])  # fmt: skip


def experiment_ruleset(version=1, **exp_kw):
    """Flag ``exp-flag`` whose fallthrough is the running experiment ``exp``."""
    return ruleset(
        [bool_flag("exp-flag", {"experiment": "exp"})],
        [experiment("exp", "exp-flag", **exp_kw)],
        version=version,
    )


# --------------------------------------------------------------------------- stub service


class StubService:
    """A tiny threaded HTTP/1.1 server speaking the SDK wire contract.

    ``config_script`` / ``events_script``: deques of ``(status, headers, body)`` or
    ``("sleep", seconds)`` consumed one per request before normal behaviour.
    ``events`` collects every event received (one entry per arrival, so
    duplicates are visible); ``stored`` maps event id -> event (what a database
    would keep).
    """

    def __init__(self, rules=None, sdk_key="pc_sdk_test"):
        self.sdk_key = sdk_key
        self.ruleset = rules if rules is not None else ruleset()
        self.config_script: deque = deque()
        self.events_script: deque = deque()
        self.stream_enabled = True
        self.events: list = []
        self.batches: list = []
        self.evaluations: list = []
        self.stored: dict = {}
        self.requests: list = []  # (method, path, status)
        self.request_times: list = []  # (path, status, time.monotonic())
        self.connections = 0
        self.active: set = set()
        self.content_types: set = set()
        self.config_requests = 0
        self.events_delay = 0.0  # seconds each POST /sdk/v1/events takes
        self.posts_active = 0
        self.posts_max_active = 0  # most events requests handled at the same time
        self.lock = threading.Condition()
        self.server = None
        self.thread = None
        self.port = None
        self.stopping = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_ruleset(self, rules) -> None:
        with self.lock:
            self.ruleset = rules
            self.lock.notify_all()

    def bump(self, **changes) -> int:
        """New version of the ruleset (same content plus ``changes``)."""
        with self.lock:
            rs = json.loads(json.dumps(self.ruleset))
            rs["version"] = rs.get("version", 0) + 1
            rs.update(changes)
            self.ruleset = rs
            self.lock.notify_all()
            return rs["version"]

    def start(self, port=None):
        stub = self

        class Handler(StubHandler):
            service = stub

        self.stopping = False
        self.server = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.stopping = True
        with self.lock:
            self.lock.notify_all()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        with self.lock:  # like a process exit: open keep-alive connections go too
            for conn in list(self.active):
                try:
                    conn.shutdown(2)
                except OSError:
                    pass
            self.active.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    service: StubService

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with self.service.lock:
            self.service.connections += 1
            self.service.active.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.service.lock:
                self.service.active.discard(self.connection)

    def _send(self, status, body=b"", headers=None):
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        # Recorded before the reply leaves, so a test that saw the client act
        # on the reply always finds the request here.
        self.service.requests.append((self.command, self.path, status))
        self.service.request_times.append((self.path, status, time.monotonic()))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _scripted(self, script) -> bool:
        try:
            step = script.popleft()
        except IndexError:
            return False
        if step[0] == "sleep":
            time.sleep(step[1])
            return False
        if step[0] == "close":
            self.close_connection = True
            self.connection.shutdown(2)
            return True
        status, headers, body = step
        self._send(status, body, headers)
        return True

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.service.sdk_key}":
            self._send(401, {"error": {"code": "unauthorized", "message": "bad key", "details": {}}})
            return False
        return True

    def do_GET(self):
        svc = self.service
        if not self._authorised():
            return
        if self.path == "/sdk/v1/config":
            svc.config_requests += 1
            if self._scripted(svc.config_script):
                return
            with svc.lock:
                rs = svc.ruleset
            etag = f'"{rs.get("version")}"'
            if self.headers.get("If-None-Match") == etag:
                self._send(304, b"", {"ETag": etag})
                return
            self._send(200, json.dumps(rs).encode(), {"ETag": etag, "Content-Type": "application/json"})
        elif self.path == "/sdk/v1/stream":
            if not svc.stream_enabled:
                self._send(404, {"error": {"code": "not_found"}})
                return
            self._stream()
        else:
            self._send(404, {"error": {"code": "not_found"}})

    def _stream(self):
        svc = self.service
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        sent = None
        last_write = time.monotonic()
        try:
            while not svc.stopping:
                with svc.lock:
                    version = svc.ruleset.get("version")
                    if version == sent:
                        svc.lock.wait(0.05)
                        version = svc.ruleset.get("version")
                if version != sent:
                    self.wfile.write(f"event: config\ndata: {json.dumps({'version': version})}\n\n".encode())
                    self.wfile.flush()
                    sent = version
                    last_write = time.monotonic()
                elif time.monotonic() - last_write > 1.0:
                    self.wfile.write(b": keepalive\n\n")
                    self.wfile.flush()
                    last_write = time.monotonic()
        except OSError:
            pass

    def do_POST(self):
        svc = self.service
        if not self._authorised():
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/sdk/v1/events":
            self._send(404, {"error": {"code": "not_found"}})
            return
        with svc.lock:
            svc.posts_active += 1
            svc.posts_max_active = max(svc.posts_max_active, svc.posts_active)
        try:
            self._post_events(raw)
        finally:
            with svc.lock:
                svc.posts_active -= 1

    def _post_events(self, raw):
        svc = self.service
        if svc.events_delay:
            time.sleep(svc.events_delay)
        step = svc.events_script[0] if svc.events_script else None
        if step is not None and step[0] != "store_and_close" and self._scripted(svc.events_script):
            return
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        svc.content_types.add((self.headers.get("Content-Type"), self.headers.get("Content-Encoding")))
        doc = json.loads(raw)
        events = doc.get("events") or []
        accepted = duplicates = 0
        with svc.lock:
            svc.batches.append(doc)
            svc.evaluations.extend(doc.get("evaluations") or [])
            for e in events:
                svc.events.append(e)
                if e["id"] in svc.stored:
                    duplicates += 1
                else:
                    svc.stored[e["id"]] = e
                    accepted += 1
        if step is not None and step[0] == "store_and_close":
            svc.events_script.popleft()  # stored, but the response is lost
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self._send(202, {"accepted": accepted, "duplicates": duplicates, "rejected": []})


def stub_client(stub, **kw):
    from pitcrew import Client

    kw.setdefault("flush_interval", 0.2)
    kw.setdefault("poll_interval", 0.2)
    kw.setdefault("timeout", 2)
    return Client(stub.url, stub.sdk_key, **kw)


# --------------------------------------------------------------------------- fault proxy


class FaultProxy:
    """A loopback reverse proxy in front of a real service that injects faults.

    ``faults`` is a deque of ``(path, action)``; the first entry whose path
    matches a request is consumed. ``action`` is ``(status, headers)`` to answer
    without forwarding, ``("delay", seconds)`` to forward after a pause, or
    ``"forward_and_drop"`` to forward (the service stores the batch) and then
    cut the connection before the client sees the response.
    ``log`` records ``(path, status, time.monotonic())`` as the client saw it.
    """

    def __init__(self, upstream: str):
        import urllib.parse

        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host, self.upstream_port = parsed.hostname, parsed.port
        self.faults: deque = deque()
        self.log: list = []
        self.lock = threading.Lock()
        self.server = None
        self.port = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _take_fault(self, path):
        with self.lock:
            for i, (p, action) in enumerate(self.faults):
                if path.startswith(p):
                    del self.faults[i]
                    return action
        return None

    def start(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                import http.client

                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                action = proxy._take_fault(self.path)
                if isinstance(action, tuple) and action[0] == "delay":
                    time.sleep(action[1])
                    action = None
                if action is not None and action != "forward_and_drop":
                    status, headers = action
                    payload = b'{"error": {"code": "injected", "message": "fault", "details": {}}}'
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    proxy.log.append((self.path, status, time.monotonic()))
                    return
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=10)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("host", "connection", "content-length")}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                if action == "forward_and_drop":
                    proxy.log.append((self.path, "dropped", time.monotonic()))
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)
                proxy.log.append((self.path, resp.status, time.monotonic()))

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
