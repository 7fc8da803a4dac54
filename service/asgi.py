"""The service's asynchronous front: what gunicorn runs (docs/delivery.md).

gunicorn runs :class:`Worker` (uvicorn's worker: an asyncio event loop per
process) around the ASGI app :func:`wrap` builds from the Flask app:

* ``GET /sdk/v1/config`` and ``GET /sdk/v1/stream`` for an SDK key this
  process knows are answered on the event loop from memory
  (service/delivery.py) by the handlers the edge uses too
  (:mod:`pitcrew_edge.sdk_asgi`): no thread, no database round trip, and a
  stream costs a socket and a few kilobytes, not a thread;
* everything else, including every error those two paths can answer, goes
  to the Flask app, run in a pool of ``GUNICORN_THREADS`` threads
  (:class:`FlaskBridge`).

Because requests are read by the event loop, a client that sends its
headers slowly holds no thread either: a thread is taken only once the
headers and a body of up to PREREAD_LIMIT bytes have arrived (larger
bodies are read by the thread as Flask asks for them).
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from a2wsgi.wsgi import Body, build_environ
from flask import Flask
from uvicorn_worker import UvicornWorker

from pitcrew_edge import protocol, sdk_asgi

from .delivery import Delivery
from .domain.tokens import SDK_PREFIX
from .observability import REQUESTS

log = logging.getLogger("pitcrew.asgi")

NATIVE_PATHS = frozenset({protocol.CONFIG_PATH, protocol.STREAM_PATH})
# Bytes of an unread request body read and discarded before an early answer.
DRAIN_LIMIT = 16 * 1024 * 1024
# Request bodies up to this size (declared by Content-Length) are read on the
# event loop before a thread is taken; larger ones are read by the thread as
# Flask asks. uvicorn buffers as much per connection anyway.
PREREAD_LIMIT = 64 * 1024
# Response bytes a Flask thread may produce ahead of a slow client before it waits.
SEND_HIGH_WATER = 256 * 1024


class _Gone(Exception):
    """The request's coroutine has ended (cancelled): the thread stops producing."""


class _Exchange:
    """One request's hand-over from its Flask thread to the event loop.

    The thread appends ASGI messages without waiting for the loop and wakes
    it only when no wake-up is pending, so a small response (start, body,
    end) costs one wake-up rather than a round trip per message; it waits
    only when more than SEND_HIGH_WATER bytes are not yet sent (a slow
    client), so memory stays bounded. Streamed responses (the exposures CSV)
    still reach the client chunk by chunk.
    """

    __slots__ = ("loop", "lock", "messages", "wake", "scheduled", "unsent", "room", "closed")

    def __init__(self, loop):
        self.loop = loop
        self.lock = threading.Lock()
        self.messages = []
        self.wake = asyncio.Event()
        self.scheduled = False
        self.unsent = 0
        self.room = threading.Event()
        self.room.set()
        self.closed = False

    def post(self, messages, size: int = 0) -> None:
        """From the thread: queue messages for the loop; wait while the client is far behind."""
        with self.lock:
            if self.closed:
                raise _Gone
            self.messages.extend(messages)
            self.unsent += size
            if self.unsent > SEND_HIGH_WATER:
                self.room.clear()
            schedule = not self.scheduled
            self.scheduled = True
        if schedule:
            self.loop.call_soon_threadsafe(self.wake.set)
        if not self.room.is_set():
            self.room.wait()
            if self.closed:
                raise _Gone

    async def take(self) -> list:
        """On the loop: the messages posted since the last take (waits for at least one)."""
        await self.wake.wait()
        with self.lock:
            self.wake.clear()
            self.scheduled = False
            batch, self.messages = self.messages, []
        return batch

    def sent(self, size: int) -> None:
        with self.lock:
            self.unsent -= size
            if self.unsent <= SEND_HIGH_WATER:
                self.room.set()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.room.set()


class _Failed:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


class FlaskBridge:
    """ASGI to WSGI: the Flask app in a pool of threads, with one wake-up of
    the event loop per small response (a2wsgi's WSGIMiddleware, which this
    replaces, made the thread wait for the loop three times per response;
    docs/delivery.md has the figures). The WSGI environ is a2wsgi's."""

    def __init__(self, wsgi_app, threads: int = 16):
        self.app = wsgi_app
        self.executor = ThreadPoolExecutor(max_workers=max(int(threads), 1), thread_name_prefix="flask")

    async def __call__(self, scope, receive, send) -> None:
        loop = asyncio.get_running_loop()
        body = await self._preread(scope, receive)
        environ = build_environ(scope, body if body is not None else Body(loop, receive))
        if body is not None:
            environ["wsgi.input"] = io.BytesIO(body)
        exchange = _Exchange(loop)
        self.executor.submit(contextvars.copy_context().run, self._run, environ, exchange)
        try:
            while True:
                size = 0
                for message in await exchange.take():
                    if isinstance(message, _Failed):
                        raise message.exc
                    await send(message)
                    if message["type"] == "http.response.body":
                        size += len(message["body"])
                        if not message["more_body"]:
                            return
                exchange.sent(size)
        finally:
            exchange.close()

    @staticmethod
    async def _preread(scope, receive) -> bytes | None:
        """The whole body when it is small and declared (or absent), read on the loop; else None."""
        declared = sdk_asgi.header(scope, b"content-length")
        if declared is None:
            if sdk_asgi.header(scope, b"transfer-encoding") is not None:
                return None
        elif not declared.isdigit() or int(declared) > PREREAD_LIMIT:
            return None
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client left; Flask answers to nobody
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _run(self, environ, exchange: _Exchange) -> None:
        """In a thread: run the app and hand its response to the loop."""
        state = {"start": None, "posted": False, "ended": False}

        def start_response(status, headers, exc_info=None):
            if exc_info is not None and state["posted"]:
                raise exc_info[1].with_traceback(exc_info[2])
            state["start"] = {"type": "http.response.start", "status": int(status.split(" ", 1)[0]),
                              "headers": [(name.strip().lower().encode("latin1"), value.strip().encode("latin1"))
                                          for name, value in headers]}
            return write

        def write(chunk: bytes, more: bool = True) -> None:
            if not chunk and more:
                return
            messages = [{"type": "http.response.body", "body": chunk, "more_body": more}]
            if not state["posted"]:
                if state["start"] is None:
                    raise RuntimeError("WSGI application returned a body before calling start_response")
                messages.insert(0, state["start"])
                state["posted"] = True
            state["ended"] = not more
            exchange.post(messages, len(chunk))

        try:
            iterable = self.app(environ, start_response)
            try:
                for chunk in iterable:
                    write(chunk)
                write(b"", more=False)
            finally:
                close = getattr(iterable, "close", None)
                if close is not None:
                    close()
        except _Gone:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised on the loop (uvicorn answers 500 / closes)
            try:
                if state["ended"]:
                    raise _Gone  # the loop has the whole answer and reads no further
                exchange.post([_Failed(exc)])
            except _Gone:
                # Nobody on the loop will see it: log what the server would have.
                log.exception("error in the Flask app after its response was handed over")


def wrap(flask_app: Flask, threads: int = 16):
    """The ASGI application: native SDK delivery in front of the Flask app."""
    delivery = Delivery(flask_app)
    wsgi = FlaskBridge(flask_app, threads=threads)
    counters = {}

    def count(route: str, status: int) -> None:
        counter = counters.get((route, status))
        if counter is None:
            counter = counters[(route, status)] = REQUESTS.labels("GET", route, str(status))
        counter.inc()

    async def native(scope, receive, send) -> bool:
        """Answer from memory when this process knows the key; False hands the request to Flask."""
        secret = protocol.bearer(sdk_asgi.header(scope, b"authorization"))
        if secret is None or not secret.startswith(SDK_PREFIX):
            return False
        path = scope["path"]
        found = delivery.lookup(secret)
        if found is None and path == protocol.STREAM_PATH:
            # A key created a moment ago: let the watcher catch up once.
            await delivery.next_sync(timeout=2.0)
            found = delivery.lookup(secret)
        if found is None:
            return False
        digest, entry = found
        environment_id = entry.environment_id
        rid = sdk_asgi.request_id(scope)
        delivery.touch(entry.id)
        if path == protocol.CONFIG_PATH:
            # Conditional requests only (the polling SDK's steady state). An
            # unconditional one (an SDK starting) reads the database, so a
            # client started right after a write sees that write; a client
            # ahead of this process's memory does too.
            if_none_match = sdk_asgi.header(scope, b"if-none-match")
            current = delivery.rulesets.get(environment_id)
            if if_none_match is None or current is None:
                return False
            newest = protocol.newest_version(if_none_match)
            if newest is not None and newest > current.version:
                return False
            if delivery.behind(environment_id):
                # A sibling worker has announced a newer version: catch up first.
                await delivery.next_sync(timeout=2.0)
                current = delivery.rulesets.get(environment_id)
                if current is None or delivery.behind(environment_id):
                    return False
            status = await sdk_asgi.serve_config(send, current, if_none_match, rid)
        else:
            if environment_id not in delivery.versions:
                return False
            status = await sdk_asgi.serve_stream(
                receive, send, hub=delivery.hub, environment=environment_id, rid=rid,
                state=lambda: delivery.stream_state(digest, environment_id))
        count(path, status)
        return True

    async def to_flask(scope, receive, send):
        """Run the Flask app; if it answers before reading the whole request
        body (413, 401, 415...), read and discard the rest first (up to
        DRAIN_LIMIT), so the client, still sending, receives the answer
        instead of a reset connection."""
        body_done = False

        async def tracked_receive():
            nonlocal body_done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def draining_send(message):
            if message["type"] == "http.response.start" and not body_done:
                await drain()
            await send(message)

        async def drain():
            nonlocal body_done
            declared = sdk_asgi.header(scope, b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > DRAIN_LIMIT):
                return  # not worth reading: the connection closes after the answer
            seen = 0
            while not body_done and seen <= DRAIN_LIMIT:
                message = await tracked_receive()
                seen += len(message.get("body", b""))

        await wsgi(scope, tracked_receive, draining_send)

    async def app(scope, receive, send):
        kind = scope["type"]
        if kind == "http":
            if scope["method"] == "GET" and scope["path"] in NATIVE_PATHS:
                delivery.start(asyncio.get_running_loop())  # no-op once started
                if await native(scope, receive, send):
                    return
            await to_flask(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    delivery.start(asyncio.get_running_loop())
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    delivery.stop()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    app.delivery = delivery
    app.flask_app = flask_app
    return app


class Worker(UvicornWorker):
    """uvicorn's gunicorn worker, serving the Flask app gunicorn loaded through :func:`wrap`.

    ``gunicorn -c python:service.gunicorn_conf 'service:create_app()'`` keeps
    working as before; the worker adds the asynchronous front.
    """

    CONFIG_KWARGS = {"loop": "auto", "http": "auto", "lifespan": "on",
                     # Open streams never finish by themselves: end them soon on shutdown.
                     "timeout_graceful_shutdown": 2}

    def load_wsgi(self):
        super().load_wsgi()
        if isinstance(self.wsgi, Flask):
            self.wsgi = wrap(self.wsgi, threads=self.cfg.threads)
