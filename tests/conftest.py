"""Test fixtures: a real database (SQLite file, or PostgreSQL via
TEST_DATABASE_URL), migrated once per run with the real Alembic migrations,
emptied before each test; a Flask test client with tokens of each role; and
a real gunicorn server on a free loopback port for SDK tests."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from service import create_app
from service.domain import Actor
from service.domain import environments as environment_domain
from service.domain import tokens as token_domain
from service.extensions import db

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
        engine.dispose()
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


@pytest.fixture(scope="session")
def app(database_url):
    from flask_migrate import upgrade

    from service.config import normalise_database_url

    app = create_app({"SQLALCHEMY_DATABASE_URI": normalise_database_url(database_url), "TESTING": True,
                      "TOKEN_TOUCH_INTERVAL": 0, "STREAM_POLL_INTERVAL": 0.1})
    with app.app_context():
        upgrade()
    return app


def _empty_database() -> None:
    tables = [t.name for t in db.metadata.sorted_tables]
    if db.engine.dialect.name == "postgresql":
        db.session.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    else:
        for name in reversed(tables):
            db.session.execute(sa.text(f"DELETE FROM {name}"))
    db.session.commit()


@pytest.fixture(autouse=True)
def app_context(app):
    with app.app_context():
        _empty_database()
        environment_domain.ensure_defaults()
        yield
        db.session.remove()


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


@pytest.fixture
def admin(app):
    return ApiClient(app.test_client(), make_token("admin", "alice"))


@pytest.fixture
def editor(app):
    return ApiClient(app.test_client(), make_token("editor", "eddie"))


@pytest.fixture
def viewer(app):
    return ApiClient(app.test_client(), make_token("viewer", "vera"))


@pytest.fixture
def anonymous(app):
    return ApiClient(app.test_client(), None)


def make_sdk_key(environment: str = "production") -> str:
    env = environment_domain.get(environment)
    return token_domain.create_sdk_key(Actor("tests"), env)[1]


@pytest.fixture
def sdk(app):
    return ApiClient(app.test_client(), make_sdk_key("production"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    def __init__(self, database_url: str, extra_env: dict | None = None):
        self.database_url = database_url
        self.extra_env = extra_env or {}
        self.process = None
        self.port = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int | None = None) -> None:
        self.port = port or self.port or free_port()
        env = dict(os.environ, DATABASE_URL=self.database_url, PORT=str(self.port),
                   WEB_CONCURRENCY="2", GUNICORN_THREADS="8", LOG_LEVEL="WARNING",
                   STREAM_POLL_INTERVAL="0.1", STREAM_HEARTBEAT="1", TOKEN_TOUCH_INTERVAL="0")
        env.update(self.extra_env)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:service.gunicorn_conf", "service:create_app()"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("live server did not become ready")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


@pytest.fixture(scope="session")
def live_server(app, database_url):
    """A real gunicorn server sharing the test database (started once per run)."""
    server = LiveServer(database_url)
    server.start()
    yield server
    server.stop()
