"""The service's asynchronous front: what gunicorn runs (docs/delivery.md).

gunicorn runs :class:`Worker` (uvicorn's worker: an asyncio event loop per
process) around the ASGI app :func:`wrap` builds from the Flask app:

* ``GET /sdk/v1/config`` and ``GET /sdk/v1/stream`` for an SDK key this
  process knows are answered on the event loop from memory
  (service/delivery.py) by the handlers the edge uses too
  (:mod:`pitcrew_edge.sdk_asgi`): no thread, no database round trip, and a
  stream costs a socket and a few kilobytes, not a thread;
* everything else, including every error those two paths can answer, goes
  to the Flask app, run in a pool of ``GUNICORN_THREADS`` threads (a2wsgi).

Because requests are read by the event loop, a client that sends its
headers slowly holds no thread either: a thread is taken only once a
request has fully arrived.
"""

from __future__ import annotations

import asyncio
import logging

from a2wsgi import WSGIMiddleware
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


def wrap(flask_app: Flask, threads: int = 16):
    """The ASGI application: native SDK delivery in front of the Flask app."""
    delivery = Delivery(flask_app)
    wsgi = WSGIMiddleware(flask_app, workers=max(int(threads), 1))
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
