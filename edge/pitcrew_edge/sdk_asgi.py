"""ASGI handlers for the hot /sdk/v1 paths, shared by the service and the edge.

``serve_config`` answers ``GET /sdk/v1/config`` (200 or 304) from a ruleset
held in memory; ``serve_stream`` holds a Server-Sent Events stream on the
event loop (no thread) and wakes through a :class:`~pitcrew_edge.hub.Hub`.
Both take already-authenticated input: the caller (service/asgi.py, or the
edge's app) decides which requests it can answer from memory and hands
every other one to the code that owns its errors.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from . import protocol
from .hub import Hub

STREAM_FULL_RETRY_AFTER = 5
STREAM_FULL_MESSAGE = ("This server holds its maximum of open streams; poll /sdk/v1/config "
                       "and retry the stream later.")


def header(scope, name: bytes) -> str | None:
    """The first value of request header ``name`` (lower-case bytes), decoded as Latin-1."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def request_id(scope) -> str:
    """The caller's X-Request-Id when it looks like one (no log injection), else a new one."""
    incoming = header(scope, b"x-request-id") or ""
    if 0 < len(incoming) <= 64 and incoming.replace("-", "").isalnum():
        return incoming
    return uuid.uuid4().hex


async def send_response(send, status: int, headers: list, body: bytes = b"") -> None:
    if status != 304:
        headers = headers + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send, status: int, code: str, message: str, rid: str, extra: list | None = None) -> None:
    await send_response(send, status, [(b"content-type", b"application/json"), *(extra or []),
                                       (b"x-request-id", rid.encode())],
                        protocol.error_body(code, message))


async def serve_config(send, ruleset, if_none_match: str | None, rid: str) -> int:
    """200 with the ruleset body, or 304 when ``If-None-Match`` names its ETag; returns the status."""
    tag = ruleset.etag
    if protocol.etag_matches(if_none_match, tag):
        await send_response(send, 304, [(b"etag", tag.encode()), (b"cache-control", b"no-cache"),
                                        (b"x-request-id", rid.encode())])
        return 304
    await send_response(send, 200, [(b"etag", tag.encode()), (b"cache-control", b"no-cache"),
                                    (b"content-type", b"application/json"), (b"x-request-id", rid.encode())],
                        ruleset.body)
    return 200


async def _until_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def serve_stream(receive, send, *, hub: Hub, environment, state: Callable[[], int | str], rid: str) -> int:
    """Hold an SSE stream: a ``config`` event with the version on connect and
    on every change, a keep-alive comment every heartbeat, and an ``error``
    event before closing when ``state()`` names a reason to end (revoked
    key, deleted environment). ``state()`` reads memory only."""
    if hub.open_streams >= hub.max_streams:
        await send_error(send, 503, "unavailable", STREAM_FULL_MESSAGE, rid,
                         [(b"retry-after", str(STREAM_FULL_RETRY_AFTER).encode())])
        return 503
    hub.open_streams += 1
    disconnect = asyncio.ensure_future(_until_disconnect(receive))
    waiting: asyncio.Future | None = None

    def on_disconnect(_task) -> None:
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    disconnect.add_done_callback(on_disconnect)
    try:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*protocol.STREAM_HEADERS, (b"x-request-id", rid.encode())]})
        last = None
        last_sent = time.monotonic()
        heartbeat = hub.heartbeat
        while not disconnect.done():
            current = state()
            if isinstance(current, str):
                await send({"type": "http.response.body", "body": protocol.end_event(current)})
                return 200
            now = time.monotonic()
            if current != last:
                last = current
                last_sent = now
                await send({"type": "http.response.body", "body": protocol.config_event(current),
                            "more_body": True})
            elif now - last_sent >= heartbeat * 0.9:
                last_sent = now
                await send({"type": "http.response.body", "body": protocol.KEEPALIVE, "more_body": True})
            waiting = hub.subscribe(environment)
            try:
                await waiting
            finally:
                hub.unsubscribe(environment, waiting)
        return 200
    except OSError:  # the client went away mid-write
        return 200
    finally:
        hub.open_streams -= 1
        disconnect.cancel()
