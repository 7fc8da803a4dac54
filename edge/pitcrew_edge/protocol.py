"""The /sdk/v1 wire format shared by the service and the edge (docs/delivery.md).

Everything here is bytes in, bytes out, with no framework: the service's
Flask routes, its asynchronous front (service/asgi.py) and the edge all
build their ETags, SSE frames and remote-evaluation bodies with these
functions, so the three answer byte for byte alike.
"""

from __future__ import annotations

import json

CONFIG_PATH = "/sdk/v1/config"
STREAM_PATH = "/sdk/v1/stream"
EVALUATE_PATH = "/sdk/v1/evaluate"
EVENTS_PATH = "/sdk/v1/events"

# Fields of one remote-evaluation result, in the order they are written.
RESULT_FIELDS = ("value", "variation", "reason", "rule_id", "experiment", "in_experiment")
# Nesting deeper than this in a remote-evaluation body is left to the
# service to judge (the edge forwards it rather than evaluate it).
MAX_LOCAL_DEPTH = 32

STREAM_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                  (b"x-accel-buffering", b"no")]
KEEPALIVE = b": keepalive\n\n"

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def json_body(value) -> bytes:
    """JSON as the service writes it (Flask's compact form, ASCII, trailing newline)."""
    return (_dumps(value) + "\n").encode()


def error_body(code: str, message: str, details: dict | None = None) -> bytes:
    return json_body({"error": {"code": code, "message": message, "details": details or {}}})


def etag(version: int) -> str:
    return f'"{version}"'


def etag_matches(header: str | None, tag: str) -> bool:
    """Whether an If-None-Match header names ``tag`` (weak or strong) or is ``*``."""
    if not header:
        return False
    return header.strip() == "*" or tag in [part.strip().removeprefix("W/") for part in header.split(",")]


def newest_version(header: str | None) -> int | None:
    """The highest ruleset version an If-None-Match header names, if any.

    Versions only grow, so a client holding a newer version than this
    process has seen is ahead of it: the process must not answer from its
    (older) memory, or the client would step back to an older ruleset.
    """
    newest = None
    for part in (header or "").split(","):
        tag = part.strip().removeprefix("W/").strip('"')
        if tag.isdigit():
            version = int(tag)
            newest = version if newest is None or version > newest else newest
    return newest


def config_event(version: int) -> bytes:
    return b"event: config\ndata: " + _dumps({"version": version}).encode() + b"\n\n"


def end_event(reason: str) -> bytes:
    """The last event of a stream the server ends (key revoked, environment deleted)."""
    return b"event: error\ndata: " + _dumps({"error": reason}).encode() + b"\n\n"


def bearer(value: str | None) -> str | None:
    """The secret of an ``Authorization: Bearer <secret>`` header, or None."""
    if not value:
        return None
    scheme, _, secret = value.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        return None
    return secret


def evaluate_body(results: dict) -> bytes:
    """The ``POST /sdk/v1/evaluate`` response body for ``{flag key: EvaluationResult}``."""
    flags = {}
    for key, result in results.items():
        data = result.to_dict()
        flags[key] = {name: data.get(name) for name in RESULT_FIELDS}
    return json_body({"flags": flags})


def _depth_ok(value, depth: int) -> bool:
    if depth > MAX_LOCAL_DEPTH:
        return False
    if isinstance(value, dict):
        return all(_depth_ok(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return all(_depth_ok(v, depth + 1) for v in value)
    return True


def parse_evaluate(body: bytes) -> tuple[dict, list | None] | None:
    """``(context, flags)`` of a remote-evaluation body that is certainly
    valid, else None: the caller then lets the service judge (and word) it."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict) or not set(data) <= {"context", "flags"}:
        return None
    context = data.get("context")
    flags = data.get("flags")
    if not isinstance(context, dict):
        return None
    if flags is not None and (not isinstance(flags, list) or not all(isinstance(f, str) for f in flags)):
        return None
    if not _depth_ok(context, 1):
        return None
    return context, flags
