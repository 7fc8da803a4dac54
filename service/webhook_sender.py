"""One webhook attempt over HTTP (docs/webhooks.md): the worker's side of the wire.

* The URL's host is resolved here, just before the attempt, and every
  address it resolves to must be public (unless ``WEBHOOK_ALLOW_PRIVATE``):
  the connection then goes to one of exactly those addresses (the name is
  not resolved again by the HTTP client), so a name that changes its answer
  between the check and the request (DNS rebinding) cannot lead inside.
  TLS still verifies the certificate against the host name.
* Redirects are not followed: a 3xx is a failed attempt like any non-2xx.
* A hard deadline (``WEBHOOK_TIMEOUT``, 10 s) covers the whole attempt:
  connect, send, and reading the answer; a watchdog shuts the socket at the
  deadline, so a server that trickles bytes cannot hold the sender longer.
* Only the first :data:`~service.domain.webhooks.EXCERPT_BYTES` bytes of
  the answer are read (kept in the delivery log); the rest is never read.

Headers (Standard Webhooks): ``webhook-id`` (the message id, the same on
every attempt), ``webhook-timestamp`` (Unix seconds of this attempt, from
the wall clock) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256>`` per
secret, space-separated while a rotated secret still overlaps).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time

from .domain import webhooks
from .domain.webhooks import Claim, Outcome

USER_AGENT = "Pitcrew-Webhooks/1"


class _Pinned(http.client.HTTPConnection):
    """HTTP to one given address, with the URL's host in the Host header."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self):
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    """HTTPS to one given address; the certificate is checked against the URL's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeout, context=context)
        self.address = address
        self.tls = context

    def connect(self):
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)


def _shut(connection: http.client.HTTPConnection) -> None:
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _text(data: bytes) -> str:
    # Text columns cannot hold NUL (PostgreSQL); the excerpt is for people to read.
    return data.decode("utf-8", "replace").replace("\x00", "\ufffd")


def headers_for(claim: Claim, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": claim.message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhooks.signatures(claim.secrets, claim.message_id, timestamp, body),
    }


def send(claim: Claim, *, timeout: float | None = None, allow_private: bool | None = None) -> Outcome:
    """Make one attempt; never raises for what the network or the endpoint does."""
    timeout = webhooks.settings.timeout if timeout is None else timeout
    started = time.monotonic()
    deadline = started + timeout

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        destination = webhooks.resolve(webhooks.parse_url(claim.url), allow_private=allow_private)
    except ValueError as exc:
        return Outcome(None, elapsed_ms(), error=f"Refused: the URL {exc}.")
    body = claim.body.encode("utf-8")
    headers = headers_for(claim, int(time.time()), body)
    error = "no address to connect to"
    for address in destination.addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            error = f"timed out after {timeout:g} s"
            break
        if destination.scheme == "https":
            connection = _PinnedTLS(destination.host, destination.port, address, remaining,
                                    ssl.create_default_context())
        else:
            connection = _Pinned(destination.host, destination.port, address, remaining)
        watchdog = threading.Timer(remaining, _shut, args=(connection,))
        watchdog.daemon = True
        watchdog.start()
        try:
            try:
                connection.connect()
            except OSError as exc:  # try the next address of the name
                error = _describe(exc, deadline, timeout)
                continue
            connection.request("POST", destination.target, body=body, headers=headers)
            response = connection.getresponse()
            excerpt = response.read(webhooks.EXCERPT_BYTES)
            return Outcome(response.status, elapsed_ms(), _text(excerpt))
        except (OSError, http.client.HTTPException) as exc:
            return Outcome(None, elapsed_ms(), error=_describe(exc, deadline, timeout))
        finally:
            watchdog.cancel()
            connection.close()
    return Outcome(None, elapsed_ms(), error=error)


def _describe(exc: BaseException, deadline: float, timeout: float) -> str:
    if isinstance(exc, TimeoutError | socket.timeout) or time.monotonic() >= deadline - 0.01:
        return f"timed out after {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]
