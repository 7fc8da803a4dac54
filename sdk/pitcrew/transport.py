"""HTTP transport for the SDK: standard library only, keep-alive, a timeout on every call.

One :class:`Transport` belongs to one background thread (the data source's or
the event processor's), so it needs no lock: it keeps one persistent
``http.client`` connection and reopens it when the server closed it. A
streaming response (``/sdk/v1/stream``) uses a connection of its own so that
it never blocks a config fetch.

Nothing here retries on its own, except one transparent resend when a reused
keep-alive connection turns out to be closed by the server (the request never
reached it). Retry *policy* lives with the callers; the helpers
:func:`backoff_delay`, :func:`retry_after_seconds` and :func:`is_retryable`
are shared by them.
"""

from __future__ import annotations

import email.utils
import gzip
import http.client
import logging
import os
import random
import socket
import time
import urllib.parse

log = logging.getLogger("pitcrew")

__all__ = [
    "Response",
    "StreamResponse",
    "Transport",
    "TransportError",
    "backoff_delay",
    "is_retryable",
    "retry_after_seconds",
]

USER_AGENT = "pitcrew-python/0.1.0"
MAX_BODY = 64 * 1024 * 1024  # refuse absurd responses rather than exhaust memory


class TransportError(Exception):
    """The request did not produce an HTTP response (DNS, connect, reset, timeout)."""


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict, body: bytes):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body

    def header(self, name: str, default=None):
        return self.headers.get(name.lower(), default)

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.body)} bytes>"


def is_retryable(status: int) -> bool:
    """408, 429 and 5xx are worth retrying; other 4xx are not (the request itself is wrong)."""
    return status == 408 or status == 429 or status >= 500


def retry_after_seconds(value, now: float | None = None, cap: float = 600.0) -> float | None:
    """Parse a ``Retry-After`` header (delta seconds or an HTTP date); None if absent/invalid."""
    if value is None:
        return None
    value = str(value).strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap)


def backoff_delay(attempt: int, base: float = 1.0, cap: float = 30.0, rng=random.random) -> float:
    """Exponential backoff with jitter for retry ``attempt`` (1, 2, ...).

    ``min(cap, base * 2**(attempt-1))`` scaled by a random factor in [0.5, 1.0):
    never zero, never more than ``cap``, and clients that failed together do
    not retry in lockstep.
    """
    attempt = max(1, int(attempt))
    raw = cap if attempt > 40 else min(cap, base * (2 ** (attempt - 1)))
    return raw * (0.5 + 0.5 * rng())


class Transport:
    """Keep-alive HTTP(S) client for one base URL and SDK key, used by one thread at a time."""

    def __init__(self, base_url: str, sdk_key: str, timeout: float = 5.0):
        parsed = urllib.parse.urlsplit(str(base_url))
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"url must be an http(s) URL, got {base_url!r}")
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port
        self.base_path = parsed.path.rstrip("/")
        self.timeout = float(timeout)
        self._auth = f"Bearer {sdk_key}"
        self._conn: http.client.HTTPConnection | None = None
        self._stream_conn: http.client.HTTPConnection | None = None
        self._stream_sock = None  # http.client lets go of it once the response owns the socket

    def clone(self) -> Transport:
        """A transport to the same service with the same key and timeout and connections
        of its own, for another thread."""
        twin = object.__new__(Transport)
        twin.scheme, twin.host, twin.port = self.scheme, self.host, self.port
        twin.base_path, twin.timeout, twin._auth = self.base_path, self.timeout, self._auth
        twin._conn = twin._stream_conn = twin._stream_sock = None
        return twin

    # ------------------------------------------------------------------ plumbing

    def _new_connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _headers(self, extra) -> dict:
        headers = {
            "Authorization": self._auth,
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "gzip",
        }
        if extra:
            headers.update(extra)
        return headers

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout: float | None = None) -> Response:
        """Send one request; return the response or raise :class:`TransportError`.

        ``timeout`` bounds the connect and every socket read/write of this call.
        """
        timeout = self.timeout if timeout is None else max(float(timeout), 0.001)
        all_headers = self._headers(headers)
        url = self.base_path + path
        for attempt in (1, 2):
            conn = self._conn
            reused = conn is not None
            if conn is None:
                conn = self._conn = self._new_connection(timeout)
            try:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                conn.request(method, url, body=body, headers=all_headers)
                resp = conn.getresponse()
                data = resp.read(MAX_BODY + 1)
                if len(data) > MAX_BODY:
                    raise TransportError("response body too large")
                resp_headers = {k.lower(): v for k, v in resp.getheaders()}
                if resp.will_close:
                    self._drop(conn)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest, http.client.BadStatusLine) as exc:
                self._drop(conn)
                if reused and attempt == 1:
                    continue  # a stale keep-alive connection: resend once on a fresh one
                raise TransportError(f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc
            except TransportError:
                self._drop(conn)
                raise
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self._drop(conn)
                raise TransportError(f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc
            if resp_headers.get("content-encoding", "").lower() == "gzip" and data:
                try:
                    data = gzip.decompress(data)
                except (OSError, EOFError, ValueError) as exc:
                    raise TransportError(f"{method} {path}: bad gzip body: {exc}") from exc
            return Response(resp.status, resp_headers, data)
        raise TransportError(f"{method} {path}: connection failed")  # pragma: no cover

    def _drop(self, conn) -> None:
        if self._conn is conn:
            self._conn = None
        try:
            conn.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ streaming

    def open_stream(self, path: str, headers: dict | None = None,
                    read_timeout: float = 60.0) -> StreamResponse:
        """Open a long-lived GET (Server-Sent Events) on a dedicated connection.

        Connecting is bounded by this transport's timeout; each later read by
        ``read_timeout`` (longer than the server's keep-alive interval).
        """
        self.close_stream()
        conn = self._new_connection(self.timeout)
        self._stream_conn = conn
        all_headers = self._headers(headers)
        all_headers["Accept"] = "text/event-stream"
        all_headers["Cache-Control"] = "no-cache"
        all_headers.pop("Accept-Encoding", None)
        try:
            conn.request("GET", self.base_path + path, headers=all_headers)
            self._stream_sock = conn.sock
            resp = conn.getresponse()
            if self._stream_sock is not None:
                self._stream_sock.settimeout(read_timeout)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self.close_stream()
            raise TransportError(f"GET {path}: {exc.__class__.__name__}: {exc}") from exc
        return StreamResponse(self, conn, resp)

    def close_stream(self) -> None:
        self._stream_sock = None
        conn, self._stream_conn = self._stream_conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def abort(self) -> None:
        """Unblock a thread stuck reading on this transport's sockets (call from another thread).

        Uses ``shutdown()``, which also affects copies of the socket in other
        processes: never call it on a transport inherited through ``fork()``.
        """
        socks = [self._stream_sock]
        for conn in (self._stream_conn, self._conn):
            socks.append(getattr(conn, "sock", None) if conn is not None else None)
        for sock in socks:
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.close_stream()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def forget(self) -> None:
        """In a forked child: drop the connections inherited from the parent without
        touching the peer (no ``shutdown()``, which would cut the parent's connection too).

        The stream's socket is also held by the parent's (now abandoned) reader,
        so closing our reference would not release it, and the service would
        keep the stream open as long as this child lives. Its descriptor is
        pointed at /dev/null instead: the child no longer holds the connection,
        and the number stays valid for whatever still refers to it.
        """
        sock, self._stream_sock = self._stream_sock, None
        self._stream_conn = None
        if sock is not None:
            try:
                fd = sock.fileno()
                if fd >= 0:
                    devnull = os.open(os.devnull, os.O_RDWR)
                    try:
                        os.dup2(devnull, fd)
                    finally:
                        os.close(devnull)
            except OSError:
                pass
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()  # releases this process's descriptor only
            except Exception:
                pass


class StreamResponse:
    """An open event stream: ``status``, ``headers``, and :meth:`lines`."""

    MAX_LINE = 1024 * 1024

    def __init__(self, transport: Transport, conn, resp):
        self._transport = transport
        self._conn = conn
        self._resp = resp
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}

    def read_body(self, limit: int = 65536) -> bytes:
        try:
            return self._resp.read(limit)
        except (OSError, http.client.HTTPException, ValueError):
            return b""

    def lines(self):
        """Yield decoded lines (without the newline) until the stream ends.

        Raises :class:`TransportError` on a read timeout or a broken connection.
        """
        readline = self._resp.readline
        while True:
            try:
                raw = readline(self.MAX_LINE)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise TransportError(f"stream: {exc.__class__.__name__}: {exc}") from exc
            if not raw:
                return
            yield raw.decode("utf-8", "replace").rstrip("\r\n")

    def close(self) -> None:
        try:
            self._resp.close()  # releases the socket the response took over
        except Exception:
            pass
        if self._transport._stream_conn is self._conn:
            self._transport.close_stream()
        else:
            try:
                self._conn.close()
            except Exception:
                pass
