"""Test fixtures: a real database (SQLite file, or PostgreSQL via
TEST_DATABASE_URL), migrated once per run with the real Alembic migrations,
emptied before each test; a Flask test client with tokens of each role; and
a real gunicorn server on a free loopback port for SDK tests."""

import os

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from service import create_app
from service.config import normalise_database_url
from service.domain import environments as environment_domain
from service.extensions import db

from .support import ApiClient, LiveClient, LiveServer, make_sdk_key, make_token


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


@pytest.fixture
def sdk(app):
    return ApiClient(app.test_client(), make_sdk_key("production"))


@pytest.fixture(scope="session")
def live_server(app, database_url):
    """A real gunicorn server sharing the test database (started once per run)."""
    server = LiveServer(database_url)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def live_admin(live_server):
    """An admin LiveClient on the shared live server (its token lives in this test's database)."""
    return LiveClient(live_server.url, make_token("admin", "alice"))


@pytest.fixture
def live_sdk(live_server):
    """An SDK-key LiveClient for the production environment."""
    return LiveClient(live_server.url, make_sdk_key("production"))
