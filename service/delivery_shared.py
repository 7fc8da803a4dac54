"""The newest ruleset version any worker of this gunicorn has seen, per environment.

A stream on worker A may announce version 7 while the SDK's refetch lands
on worker B, whose watcher has not seen 7 yet: B must not answer 304 from
its older memory, or the SDK would stay on 6 until the next change. Each
watcher records what it has seen in a small memory map shared by the
workers of one gunicorn master (a file named after the master's pid);
before answering from memory, a worker checks that no sibling has seen a
newer version, and otherwise waits for its own next sync. Slots are
``environment id % SLOTS``; a collision only makes a worker more cautious.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tempfile
from pathlib import Path

SLOTS = 1024
_SLOT = struct.Struct("<qq")  # environment id, version


def path_for(master_pid: int) -> Path:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return base / f"pitcrew-delivery-{master_pid}.map"


class SharedVersions:
    def __init__(self, master_pid: int | None = None):
        self.path = path_for(master_pid or os.getppid())
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            size = SLOTS * _SLOT.size
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)

    def newest(self, environment_id: int) -> int | None:
        env, version = _SLOT.unpack_from(self._map, (environment_id % SLOTS) * _SLOT.size)
        return version if env == environment_id else None

    def record(self, versions: dict[int, int]) -> None:
        for environment_id, version in versions.items():
            offset = (environment_id % SLOTS) * _SLOT.size
            env, held = _SLOT.unpack_from(self._map, offset)
            if env != environment_id or version > held:
                _SLOT.pack_into(self._map, offset, environment_id, version)


def remove(master_pid: int) -> None:
    with contextlib.suppress(OSError):
        path_for(master_pid).unlink()
