"""The optional on-disk spool (``Client(spool_path=...)``): crash-safe delivery.

With a spool, every batch is written to disk before its first attempt and
removed once the service acknowledged it (or refused it for good), so events
survive a service outage longer than memory allows and a crash or ``kill -9``
of the host process: the next process using the same ``spool_path`` sends
what was left, oldest first, with the same event ids (exactly once in the
service's database).

Layout: ``spool_path/slot-N/<sequence>-<events>.batch``, each file one
gzipped request body, written to a temporary name and renamed into place
(a reader never sees half a file). A process locks one slot (``flock``) for
its lifetime; a forked child takes another slot, so two processes never send
the same files; a slot whose process died is unlocked and is taken (and
replayed) by the next process that starts. Files survive a process crash;
they are not fsynced, so an operating-system crash can lose the last ones.
The spool is bounded (``max_bytes``): beyond it the oldest files are
dropped and counted.
"""

from __future__ import annotations

import logging
import os

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: one unlocked slot
    fcntl = None

log = logging.getLogger("pitcrew")

__all__ = ["Spool"]

MAX_SLOTS = 256
SPOOL_MAX_BYTES = 256 * 1024 * 1024
SUFFIX = ".batch"


class Spool:
    def __init__(self, root: str, max_bytes: int = SPOOL_MAX_BYTES):
        self.root = os.path.abspath(root)
        self.max_bytes = max_bytes
        self.dir = None
        self._lock_fd = None
        self._next = 0
        self._files: list = []  # [name, size, count] in order; ours, not yet removed
        self.bytes = 0
        self.events = 0

    def open(self) -> list[tuple[str, int]]:
        """Lock a slot; return its leftover files ``(path, events)``, oldest first."""
        os.makedirs(self.root, exist_ok=True)
        for n in range(MAX_SLOTS):
            directory = os.path.join(self.root, f"slot-{n}")
            os.makedirs(directory, exist_ok=True)
            fd = os.open(os.path.join(directory, ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
            self.dir, self._lock_fd = directory, fd
            break
        else:
            raise OSError(f"no free spool slot under {self.root}")
        leftovers = []
        for name in sorted(os.listdir(self.dir)):
            path = os.path.join(self.dir, name)
            if name.startswith(".tmp-"):
                _unlink(path)  # a write interrupted by a crash: never renamed, never sent
                continue
            if not name.endswith(SUFFIX):
                continue
            seq, _, count = name[: -len(SUFFIX)].partition("-")
            try:
                seq, count, size = int(seq), int(count), os.path.getsize(path)
            except (ValueError, OSError):
                continue
            self._next = max(self._next, seq + 1)
            self._files.append([name, size, count])
            self.bytes += size
            self.events += count
            leftovers.append((path, count))
        return leftovers

    def write(self, body: bytes, count: int) -> tuple[str, list[tuple[str, int]]]:
        """Store one body; returns its path and the files dropped to stay within ``max_bytes``."""
        name = f"{self._next:020d}-{count}{SUFFIX}"
        self._next += 1
        path = os.path.join(self.dir, name)
        tmp = os.path.join(self.dir, f".tmp-{name}")
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, path)
        self._files.append([name, len(body), count])
        self.bytes += len(body)
        self.events += count
        dropped = []
        while self.bytes > self.max_bytes and len(self._files) > 1:
            old = self._files[0]
            dropped.append((os.path.join(self.dir, old[0]), old[2]))
            self.remove(os.path.join(self.dir, old[0]))
        return path, dropped

    def read(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError:
            return None

    def remove(self, path: str) -> None:
        name = os.path.basename(path)
        for i, entry in enumerate(self._files):
            if entry[0] == name:
                del self._files[i]
                self.bytes -= entry[1]
                self.events -= entry[2]
                break
        _unlink(path)

    def replace(self, path: str, bodies: list[tuple[bytes, int]]) -> list[str]:
        """Swap one file for several (a 413 split), keeping the order; returns the new paths."""
        paths = [self.write(body, count)[0] for body, count in bodies]
        self.remove(path)
        return paths

    def forget(self) -> None:
        """In a forked child: the slot and its lock stay the parent's (no unlock: that would
        release the parent's lock too)."""
        if self._lock_fd is not None:
            try:
                os.close(self._lock_fd)
            except OSError:
                pass
        self.dir = self._lock_fd = None
        self._files, self.bytes, self.events, self._next = [], 0, 0, 0

    def close(self) -> None:
        if self._lock_fd is not None:
            try:
                os.close(self._lock_fd)  # releases the lock
            except OSError:
                pass
            self._lock_fd = None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
