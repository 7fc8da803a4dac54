"""The optional on-disk spool (``Client(spool_path=...)``): crash-safe delivery.

With a spool, every batch is written to disk before its first attempt and
removed once the service acknowledged it (or refused it for good), so events
survive a service outage longer than memory allows and a crash or ``kill -9``
of the host process: the next process using the same ``spool_path`` sends
what was left, oldest first, with the same event ids (exactly once in the
service's database).

Layout: ``spool_path/slot-N/<sequence>-<events>.batch``, each file one
gzipped request body, written to a temporary name and renamed into place
(a reader never sees half a file). Under a burst, when the queue is half
full, events are spilled faster as ``<sequence>-<events>.raw`` files
(``marshal`` of the queued tuples and a random seed) and turned into
``<sequence>.<k>-<events>.batch`` files once the burst is over. The seed
fixes the events' ids, so converting a raw file again after a crash gives
the very same bodies (exactly once still holds). A process locks one slot (``flock``) for
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
RAW = ".raw"


def _parse(name: str):
    """``(sequence, part, events, kind)`` of a spool file name, or None."""
    for kind in (SUFFIX, RAW):
        if name.endswith(kind):
            stem, _, count = name[: -len(kind)].partition("-")
            seq, _, part = stem.partition(".")
            try:
                return int(seq), int(part) if part else -1, int(count), kind
            except ValueError:
                return None
    return None


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
        names = sorted(os.listdir(self.dir))
        raw_seqs = {p[0] for p in map(_parse, names) if p is not None and p[3] == RAW}
        leftovers = []
        for name in names:
            path = os.path.join(self.dir, name)
            parsed = _parse(name)
            if name.startswith(".tmp-") or (parsed is not None and parsed[3] == SUFFIX
                                            and parsed[1] >= 0 and parsed[0] in raw_seqs):
                # an interrupted write, or part of an interrupted conversion (redone, same ids)
                _unlink(path)
                continue
            if parsed is None:
                continue
            seq, _part, count, kind = parsed
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            self._next = max(self._next, seq + 1)
            self._files.append([name, size, count])
            self.bytes += size
            self.events += count
            leftovers.append((path, count, kind == RAW))
        return leftovers

    def write_raw(self, payload: bytes, count: int) -> str:
        """Store spilled events (converted to batches later); returns the path."""
        path, _ = self._store(f"{self._next:020d}-{count}{RAW}", payload, count)
        self._next += 1
        return path

    def write_part(self, raw_path: str, k: int, body: bytes, count: int) -> tuple[str, list]:
        """Store batch ``k`` converted from a raw file, in the raw file's place in the order."""
        seq = _parse(os.path.basename(raw_path))[0]
        return self._store(f"{seq:020d}.{k:04d}-{count}{SUFFIX}", body, count)

    def write(self, body: bytes, count: int) -> tuple[str, list[tuple[str, int]]]:
        """Store one body; returns its path and the files dropped to stay within ``max_bytes``."""
        name = f"{self._next:020d}-{count}{SUFFIX}"
        self._next += 1
        return self._store(name, body, count)

    def _store(self, name: str, body: bytes, count: int) -> tuple[str, list[tuple[str, int]]]:
        path = os.path.join(self.dir, name)
        tmp = os.path.join(self.dir, f".tmp-{name}")
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, path)
        for i, entry in enumerate(self._files):  # a conversion redone: same name, same content
            if entry[0] == name:
                del self._files[i]
                self.bytes -= entry[1]
                self.events -= entry[2]
                break
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
