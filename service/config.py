"""Settings, read once from the environment when the app is created.

Every setting is documented in README.md ("Configuration"); the secret key
and the limits in docs/operations.md. Tests pass a dict to ``create_app``
that overrides these.
"""

import logging
import os
import secrets
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


SECRET_KEY_FILE = "secret-key"
MIN_SECRET_KEY_CHARS = 32


def secret_key() -> str:
    """``PITCREW_SECRET_KEY``; when unset, a random key generated once and kept in the instance directory.

    The one server secret. It serves as Flask's ``SECRET_KEY`` (signed
    sessions of the web console) and keys the HMAC that derives server-side
    event ids (service/ingest.py ``server_event_id``); each use mixes in its
    own purpose, so neither can stand in for the other. Every process of a
    deployment must share it: set it in production (see docs/operations.md).
    """
    configured = os.environ.get("PITCREW_SECRET_KEY", "")
    if configured:
        if len(configured) < MIN_SECRET_KEY_CHARS:
            raise RuntimeError(f"PITCREW_SECRET_KEY must be at least {MIN_SECRET_KEY_CHARS} characters "
                               "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))').")
        return configured
    return _instance_secret(INSTANCE_DIR / SECRET_KEY_FILE)


def _instance_secret(path: Path) -> str:
    """Read the key file, or create it atomically (gunicorn workers start at the same time)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    candidate = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise RuntimeError(f"PITCREW_SECRET_KEY is not set and no key can be kept in {path.parent} ({exc}); "
                           "set PITCREW_SECRET_KEY (docs/operations.md).") from exc
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")
    try:
        os.link(candidate, path)  # fails if another process created it first: then use theirs
        logging.getLogger("pitcrew.config").warning(
            "PITCREW_SECRET_KEY is not set: generated one in the instance directory; "
            "set PITCREW_SECRET_KEY in production (docs/operations.md)", extra={"fields": {"path": str(path)}})
    except FileExistsError:
        pass
    finally:
        os.unlink(candidate)
    return path.read_text().strip()


def from_environment() -> dict:
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{INSTANCE_DIR / 'pitcrew.db'}"
    return {
        # Flask's SECRET_KEY is PITCREW_SECRET_KEY (see secret_key()).
        "SECRET_KEY": secret_key(),
        "SQLALCHEMY_DATABASE_URI": normalise_database_url(database_url),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO").upper(),
        # Request bodies above this many bytes get 413 (events batches are
        # limited separately to 1 MiB after decompression).
        "MAX_CONTENT_LENGTH": _int("MAX_CONTENT_LENGTH", 2 * 1024 * 1024),
        # Delivery (docs/delivery.md). Seconds between the per-process
        # watcher's checks for ruleset and SDK key changes on SQLite (on
        # PostgreSQL, LISTEN/NOTIFY tells it at once).
        "DELIVERY_POLL_INTERVAL": float(os.environ.get("DELIVERY_POLL_INTERVAL", "0.05")),
        # Seconds between full resyncs on PostgreSQL, a safety net behind NOTIFY.
        "DELIVERY_RESYNC_INTERVAL": float(os.environ.get("DELIVERY_RESYNC_INTERVAL", "5")),
        # Seconds after which an idle stream sends a comment line, so
        # proxies keep the connection open.
        "STREAM_HEARTBEAT": float(os.environ.get("STREAM_HEARTBEAT", "15")),
        # Open streams per process beyond which /sdk/v1/stream answers 503
        # with Retry-After (the SDK polls meanwhile).
        "STREAM_MAX_PER_PROCESS": _int("STREAM_MAX_PER_PROCESS", 10000),
        # Seconds between writes of a token's last_used_at (one write per
        # request would turn every read into a write).
        "TOKEN_TOUCH_INTERVAL": _int("TOKEN_TOUCH_INTERVAL", 60),
        # Console (service/console, docs/console.md).
        # Hours a console login lasts (the token is re-checked on every request anyway).
        "CONSOLE_SESSION_HOURS": _int("PITCREW_CONSOLE_SESSION_HOURS", 12),
        # Reverse proxies in front of the service whose X-Forwarded-Proto/-For/-Host
        # are trusted (0: none; the session cookie is Secure on HTTPS requests).
        "TRUSTED_PROXIES": _int("PITCREW_TRUSTED_PROXIES", 0),
        # Seconds the worker sleeps between passes over due work (scheduled
        # changes are applied within about this long of their time).
        "WORKER_POLL_INTERVAL": float(os.environ.get("WORKER_POLL_INTERVAL", "1")),
        # Seconds between guardrail checks of a running guarded rollout
        # within a step (a step's end is always checked).
        "ROLLOUT_CHECK_INTERVAL": float(os.environ.get("ROLLOUT_CHECK_INTERVAL", "300")),
        # Seconds between the worker's housekeeping passes (flag.stale, pruning).
        "WORKER_HOUSEKEEPING_INTERVAL": float(os.environ.get("WORKER_HOUSEKEEPING_INTERVAL", "3600")),
        # Webhooks (docs/webhooks.md). 1 allows loopback and private destinations
        # (development and tests only: it lets webhooks reach internal services).
        "WEBHOOK_ALLOW_PRIVATE": os.environ.get("WEBHOOK_ALLOW_PRIVATE", "") in ("1", "true", "yes"),
        # Seconds one delivery attempt may take in all (connect, send, answer).
        "WEBHOOK_TIMEOUT": float(os.environ.get("WEBHOOK_TIMEOUT", "10")),
        # Sender threads per worker process.
        "WEBHOOK_CONCURRENCY": _int("WEBHOOK_CONCURRENCY", 4),
        # Days finished deliveries stay in the delivery log.
        "WEBHOOK_RETENTION_DAYS": _int("WEBHOOK_RETENTION_DAYS", 30),
        # Hours the previous secret keeps signing after a rotation.
        "WEBHOOK_ROTATION_OVERLAP_HOURS": float(os.environ.get("WEBHOOK_ROTATION_OVERLAP_HOURS", "24")),
        # Hours an SDK batch id is remembered (a retried batch within it counts once).
        "EVALUATION_BATCH_RETENTION_HOURS": float(os.environ.get("EVALUATION_BATCH_RETENTION_HOURS", "48")),
    }
