"""A webhook receiver for the tests: a real HTTP server on a free loopback port.

It records every request (headers and raw body) and answers as told:
``status`` (200 by default; 503 for an outage, 410 to unsubscribe),
``delay`` seconds before answering, or ``hang`` (hold the request until
released). ``down()`` closes the port (connection refused) and ``up()``
opens the same port again. Signatures are checked by the tests with the
``standardwebhooks`` package (:func:`verify`), an implementation independent
of the service's.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook as Verifier

from .support import free_port


@dataclass
class Received:
    headers: dict
    body: bytes
    at: float

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    def __init__(self):
        self.port = free_port()
        self.received: list[Received] = []
        self.status = 200
        self.delay = 0.0
        self.hang = threading.Event()  # while set, requests are held
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0  # concurrent requests, and the most seen at once
        self.server = None
        self.thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/pitcrew?source=tests"

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body,
                                                      time.monotonic()))
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                try:
                    if receiver.hang.is_set():
                        receiver.release.wait(30)
                    if receiver.delay:
                        time.sleep(receiver.delay)
                finally:
                    with receiver.lock:
                        receiver.in_flight -= 1
                payload = b"ok " + b"x" * 2000  # longer than the excerpt the service keeps
                try:
                    self.send_response(receiver.status)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        return Handler

    def up(self) -> Receiver:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def ids(self) -> list[str]:
        with self.lock:
            return [r.id for r in self.received]

    def unique(self) -> dict[str, Received]:
        """What the receiver's application sees after deduplicating by webhook-id."""
        with self.lock:
            out: dict[str, Received] = {}
            for item in self.received:
                out.setdefault(item.id, item)
            return out


def verify(secret: str, received: Received):
    """The payload, verified with the standardwebhooks package (raises if the signature is wrong)."""
    return Verifier(secret).verify(received.body, received.headers)
