"""The edge's settings, read once from the environment (docs/delivery.md has the table)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8001
    upstream: str = "http://127.0.0.1:8000"
    # SDK keys to validate at start-up: /readyz waits for their rulesets.
    sdk_keys: list[str] = field(default_factory=list)
    # Seconds between re-validations of each key in use (revocation bound).
    key_revalidate: float = 1.0
    # Keys unused (no request, no open stream) this long are forgotten.
    key_idle: float = 600.0
    # Seconds a refusal (401/403) from the upstream is replayed without asking again.
    refusal_ttl: float = 30.0
    heartbeat: float = 15.0
    max_streams: int = 20000
    # Largest request body the edge reads itself (evaluate); as the service's MAX_CONTENT_LENGTH.
    max_body: int = 2 * 1024 * 1024
    upstream_timeout: float = 10.0
    upstream_connections: int = 64
    # Seconds between forwards of the evaluations the edge answered (and at shutdown).
    evaluation_flush: float = 10.0
    # Distinct (environment, flag, variation) keys counted; evaluations beyond are dropped.
    evaluation_entries: int = 20000
    log_level: str = "INFO"
    # Processes serving the port (``python -m pitcrew_edge``); each is a whole edge of its own.
    workers: int = 1

    @classmethod
    def from_environment(cls) -> Settings:
        keys = [k.strip() for k in os.environ.get("EDGE_SDK_KEYS", "").split(",") if k.strip()]
        return cls(
            host=os.environ.get("EDGE_HOST", "127.0.0.1"),
            port=_int("EDGE_PORT", 8001),
            upstream=os.environ.get("PITCREW_UPSTREAM", "http://127.0.0.1:8000").rstrip("/"),
            sdk_keys=keys,
            key_revalidate=_float("EDGE_KEY_REVALIDATE", 1.0),
            key_idle=_float("EDGE_KEY_IDLE", 600.0),
            refusal_ttl=_float("EDGE_REFUSAL_TTL", 30.0),
            heartbeat=_float("EDGE_STREAM_HEARTBEAT", 15.0),
            max_streams=_int("EDGE_MAX_STREAMS", 20000),
            max_body=_int("EDGE_MAX_BODY", 2 * 1024 * 1024),
            upstream_timeout=_float("EDGE_UPSTREAM_TIMEOUT", 10.0),
            upstream_connections=_int("EDGE_UPSTREAM_CONNECTIONS", 64),
            evaluation_flush=_float("EDGE_EVALUATION_FLUSH", 10.0),
            evaluation_entries=_int("EDGE_EVALUATION_ENTRIES", 20000),
            log_level=os.environ.get("LOG_LEVEL", "INFO").upper(),
            workers=max(1, _int("EDGE_WORKERS", 1)),
        )
