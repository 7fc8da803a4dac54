"""Settings, read once from the environment when the app is created.

Every setting is documented in README.md ("Configuration"). Tests pass a dict
to ``create_app`` that overrides these.
"""

import os
from pathlib import Path

INSTANCE_DIR = Path(os.environ.get("PITCREW_INSTANCE_DIR", Path(__file__).resolve().parent.parent / "instance"))


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


def normalise_database_url(url: str) -> str:
    """Make plain PostgreSQL URLs use psycopg 3, the only driver we install."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def from_environment() -> dict:
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{INSTANCE_DIR / 'pitcrew.db'}"
    return {
        "SQLALCHEMY_DATABASE_URI": normalise_database_url(database_url),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO").upper(),
        # Request bodies above this many bytes get 413 (events batches are
        # limited separately to 1 MiB after decompression).
        "MAX_CONTENT_LENGTH": _int("MAX_CONTENT_LENGTH", 2 * 1024 * 1024),
        # Seconds between database checks of the ruleset version by each
        # open /sdk/v1/stream connection.
        "STREAM_POLL_INTERVAL": float(os.environ.get("STREAM_POLL_INTERVAL", "0.5")),
        # Seconds after which an idle stream sends a comment line, so
        # proxies keep the connection open.
        "STREAM_HEARTBEAT": float(os.environ.get("STREAM_HEARTBEAT", "15")),
        # Seconds between writes of a token's last_used_at (one write per
        # request would turn every read into a write).
        "TOKEN_TOUCH_INTERVAL": _int("TOKEN_TOUCH_INTERVAL", 60),
        # Seconds the worker sleeps between passes over due work (scheduled
        # changes are applied within about this long of their time).
        "WORKER_POLL_INTERVAL": float(os.environ.get("WORKER_POLL_INTERVAL", "1")),
        # Seconds between guardrail checks of a running guarded rollout
        # within a step (a step's end is always checked).
        "ROLLOUT_CHECK_INTERVAL": float(os.environ.get("ROLLOUT_CHECK_INTERVAL", "300")),
    }
