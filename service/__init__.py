"""Pitcrew service: the Flask application factory."""

from pathlib import Path

import sqlalchemy as sa
from flask import Flask

from . import auth, config, content, errors, observability
from .extensions import db, migrate, openapi
from .web import PitcrewFlask

MIGRATIONS = str(Path(__file__).resolve().parent / "migrations")


def create_app(overrides: dict | None = None) -> Flask:
    app = PitcrewFlask(__name__, instance_path=str(config.INSTANCE_DIR))
    app.config.update(config.from_environment())
    app.config.update(
        API_TITLE="Pitcrew",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        # Swagger UI's assets are served by the service itself (service/api/docs.py): /api/docs works offline.
        OPENAPI_SWAGGER_UI_URL="/api/docs/assets/",
    )
    app.config.update(overrides or {})
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", _engine_options(app.config["SQLALCHEMY_DATABASE_URI"]))
    app.json.sort_keys = False  # keep the schemas' field order
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS)
    _sqlite_pragmas(app)
    _watch_database(app)

    # Order matters: request id first, then who is calling, then what they sent.
    observability.init_app(app)
    auth.init_app(app)
    content.init_app(app)
    errors.register(app)

    openapi.init_app(app)
    openapi.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    openapi.spec.options["security"] = [{"bearer": []}]
    from .api import BLUEPRINTS as ADMIN_BLUEPRINTS
    from .api.docs import blp as docs_assets
    from .health import blp as health
    from .sdk_api import BLUEPRINTS as SDK_BLUEPRINTS

    for blueprint in ADMIN_BLUEPRINTS + SDK_BLUEPRINTS:
        openapi.register_blueprint(blueprint)
    app.register_blueprint(health)
    app.register_blueprint(docs_assets)
    from . import console

    console.init_app(app)  # the web console at / (service/console, docs/console.md)

    _webhooks(app)

    from . import cli

    cli.init_app(app)
    return app


def _webhooks(app: Flask) -> None:
    """Webhook settings, the secret box and the outbox listener (docs/webhooks.md)."""
    from datetime import timedelta

    from . import ingest
    from .domain import secretbox, webhooks

    secretbox.configure(app.config["SECRET_KEY"])
    settings = webhooks.settings
    settings.allow_private = bool(app.config["WEBHOOK_ALLOW_PRIVATE"])
    settings.timeout = float(app.config["WEBHOOK_TIMEOUT"])
    settings.retention = timedelta(days=app.config["WEBHOOK_RETENTION_DAYS"])
    settings.rotation_overlap = timedelta(hours=app.config["WEBHOOK_ROTATION_OVERLAP_HOURS"])
    ingest.BATCH_RETENTION = timedelta(hours=app.config["EVALUATION_BATCH_RETENTION_HOURS"])
    webhooks.init()


def _engine_options(url: str) -> dict:
    options = {"pool_pre_ping": True}  # a connection the database dropped is replaced, not used
    if url.startswith("postgresql"):
        # An unreachable host fails fast (503) instead of holding the request thread.
        options["connect_args"] = {"connect_timeout": 5}
    return options


def _watch_database(app: Flask) -> None:
    """End a logged outage (service/errors.py) when a connection is handed out again."""
    with app.app_context():
        @sa.event.listens_for(db.engine, "checkout")
        def _on_checkout(dbapi_connection, record, proxy):
            errors.outage.up()


def _sqlite_pragmas(app: Flask) -> None:
    """WAL and a busy timeout let several gunicorn workers share one SQLite file."""
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        return
    with app.app_context():
        @sa.event.listens_for(db.engine, "connect")
        def _on_connect(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
