"""Helpers for the service's tests: an API client over Flask's test client,
tokens and SDK keys made through the domain, and a real gunicorn server on a
free loopback port."""

import http.client
import json as jsonlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from service.domain import Actor
from service.domain import environments as environment_domain
from service.domain import tokens as token_domain
from service.extensions import db
from service.models import AuditEntry

ROOT = Path(__file__).resolve().parents[2]


class ApiClient:
    """The Flask test client with a bearer token and JSON by default."""

    def __init__(self, client, token: str | None):
        self.client = client
        self.token = token

    def request(self, method, path, *, json=None, headers=None, token=..., **kwargs):
        headers = dict(headers or {})
        token = self.token if token is ... else token
        if token:
            headers.setdefault("Authorization", f"Bearer {token}")
        return self.client.open(path, method=method, json=json, headers=headers, **kwargs)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json=None, **kw):
        return self.request("POST", path, json=json, **kw)

    def put(self, path, json=None, **kw):
        return self.request("PUT", path, json=json, **kw)

    def patch(self, path, json=None, **kw):
        return self.request("PATCH", path, json=json, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


def make_token(role: str, name: str | None = None) -> str:
    return token_domain.create_token(Actor("tests"), name or f"{role}-token", role)[1]


def make_sdk_key(environment: str = "production") -> str:
    env = environment_domain.get(environment)
    return token_domain.create_sdk_key(Actor("tests"), env)[1]


def audit_count() -> int:
    """Audit entries in the database (after ending this session's transaction, so that commits
    of other connections show)."""
    db.session.rollback()
    return db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))


def at_once(*calls) -> list:
    """Run the thunks at once (a barrier releases them together); their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveResponse:
    status: int
    headers: dict
    body: bytes

    @property
    def json(self):
        return jsonlib.loads(self.body) if self.body else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class LiveClient:
    """A small HTTP client for a LiveServer: one connection per request, safe to share between threads."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30):
        self.host, self.port = url.removeprefix("http://").split(":")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, *, json=..., data: bytes | None = None, headers=None,
                token=...) -> LiveResponse:
        headers = dict(headers or {})
        token = self.token if token is ... else token
        if token:
            headers.setdefault("Authorization", f"Bearer {token}")
        if json is not ...:
            data = jsonlib.dumps(json).encode()
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        connection = http.client.HTTPConnection(self.host, int(self.port), timeout=self.timeout)
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            return LiveResponse(response.status, {k.lower(): v for k, v in response.getheaders()},
                                response.read())
        finally:
            connection.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json=..., **kw):
        return self.request("POST", path, json=json, **kw)

    def put(self, path, json=..., **kw):
        return self.request("PUT", path, json=json, **kw)

    def patch(self, path, json=..., **kw):
        return self.request("PATCH", path, json=json, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


class LiveServer:
    """The service as production runs it: gunicorn with service/gunicorn_conf.py
    (the asyncio worker, Flask in a thread pool), on a free loopback port."""

    def __init__(self, database_url: str, extra_env: dict | None = None, log_path: str | None = None):
        self.database_url = database_url
        self.extra_env = extra_env or {}
        self.log_path = log_path
        self.process = None
        self.port = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int | None = None, ready_path: str = "/readyz") -> None:
        """Start gunicorn; wait until ``ready_path`` answers 200 (``/healthz`` when the database may be down)."""
        self.port = port or self.port or free_port()
        env = dict(os.environ, DATABASE_URL=self.database_url, PORT=str(self.port),
                   WEB_CONCURRENCY="2", GUNICORN_THREADS="8", LOG_LEVEL="WARNING",
                   DELIVERY_POLL_INTERVAL="0.05", STREAM_HEARTBEAT="1", TOKEN_TOUCH_INTERVAL="0")
        env.update(self.extra_env)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        output = subprocess.DEVNULL
        if self.log_path:
            self._log = output = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:service.gunicorn_conf", "service:create_app()"],
            cwd=ROOT, env=env, stdout=output, stderr=output,
        )
        if not answers_200(f"{self.url}{ready_path}", within=30):
            self.stop()
            raise RuntimeError("live server did not become ready")

    def stop(self) -> None:
        _stop(self.process)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


def answers_200(url: str, *, within: float) -> bool:
    """Whether ``url`` answers 200 within ``within`` seconds (a server starting up)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.05)
    return False


def _stop(process) -> None:
    if process is not None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class EdgeServer:
    """A real edge process (``python -m pitcrew_edge``, what ``make edge`` runs)
    in front of ``upstream``, on a free loopback port."""

    def __init__(self, upstream: str, extra_env: dict | None = None):
        self.upstream = upstream
        self.extra_env = extra_env or {}
        self.process = None
        self.port = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int | None = None) -> None:
        self.port = port or self.port or free_port()
        env = dict(os.environ, EDGE_PORT=str(self.port), PITCREW_UPSTREAM=self.upstream, LOG_LEVEL="WARNING",
                   EDGE_KEY_REVALIDATE="0.5", EDGE_STREAM_HEARTBEAT="1")
        env.update(self.extra_env)
        # A session (process group) of its own: with EDGE_WORKERS > 1 the edge's worker
        # processes are in it too, and stop() and kill() leave none of them behind.
        self.process = subprocess.Popen([sys.executable, "-m", "pitcrew_edge"], cwd=ROOT, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        if not answers_200(f"{self.url}/healthz", within=20):
            self.stop()
            raise RuntimeError("edge did not start")

    def stop(self) -> None:
        """SIGTERM to the edge (as a supervisor would), then SIGKILL to what is left of its group."""
        if self.process is not None:
            _stop(self.process)
            _kill_group(self.process.pid)
        self.process = None

    def kill(self) -> None:
        """SIGKILL to the edge and its workers: a crash, nothing flushed, nothing said goodbye."""
        if self.process is not None:
            _kill_group(self.process.pid)
            self.process.wait()
            self.process = None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
