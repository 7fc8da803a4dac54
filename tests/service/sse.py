"""A Server-Sent Events reader for tests: one real HTTP connection, a thread
that records every event with the time it arrived."""

import contextlib
import http.client
import json
import socket
import threading
import time
from urllib.parse import urlsplit


class SseReader:
    def __init__(self, base_url: str, key: str, path: str = "/sdk/v1/stream", timeout: float = 30):
        parts = urlsplit(base_url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.connection.request("GET", path, headers={"Authorization": f"Bearer {key}"})
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.headers = {k.lower(): v for k, v in self.response.getheaders()}
        self.events: list[tuple[float, str, dict]] = []
        self.closed_at: float | None = None
        self.body = b""
        if self.status == 200:
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        else:
            self.body = self.response.read()
            self.connection.close()

    def _read(self) -> None:
        event = None
        try:
            while True:
                raw = self.response.readline()
                if not raw:
                    break
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    self.events.append((time.monotonic(), event or "message", json.loads(line[5:])))
                    event = None
        except (OSError, ValueError, AttributeError):  # AttributeError: closed under us
            pass
        self.closed_at = time.monotonic()

    def versions(self) -> list[int]:
        return [data["version"] for _, kind, data in self.events if kind == "config"]

    def wait(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    def close(self) -> None:
        sock = self.connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # unblocks the reading thread first
        if self.status == 200:
            self._thread.join(2)
        self.connection.close()
