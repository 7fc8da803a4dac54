"""Fan-out of ruleset changes to every open stream of a process.

One :class:`Hub` per process (per event loop). Whatever learns of a change
(the service's database watcher, the edge's upstream follower) calls
:meth:`Hub.wake` for that environment, or :meth:`Hub.wake_all` when keys
or environments went away; every stream of the environment then wakes once,
re-reads the state it serves from memory and writes what changed. No stream
ever polls anything. A single ticker wakes all streams every ``heartbeat``
seconds for their keep-alive comment (one timer per process, not per stream).

Streams cost one socket, one task and a few kilobytes; ``max_streams`` caps
them per process, beyond which :func:`pitcrew_edge.sdk_asgi.serve_stream`
answers 503 with Retry-After (the SDK then polls and retries).
"""

from __future__ import annotations

import asyncio


class Hub:
    def __init__(self, *, heartbeat: float = 15.0, max_streams: int = 10000):
        self.heartbeat = heartbeat
        self.max_streams = max_streams
        self.open_streams = 0
        self._subscribers: dict[object, set[asyncio.Future]] = {}
        self._ticker: asyncio.Task | None = None

    # ------------------------------------------------------------ for streams

    def subscribe(self, environment) -> asyncio.Future:
        """A future resolved at the next change of ``environment`` (or tick)."""
        future = asyncio.get_running_loop().create_future()
        self._subscribers.setdefault(environment, set()).add(future)
        self._ensure_ticker()
        return future

    def unsubscribe(self, environment, future: asyncio.Future) -> None:
        subscribers = self._subscribers.get(environment)
        if subscribers is not None:
            subscribers.discard(future)
            if not subscribers:
                del self._subscribers[environment]

    # ------------------------------------------------------------ for sources (event-loop thread)

    def wake(self, environment) -> int:
        """Wake every stream of ``environment``; returns how many."""
        subscribers = self._subscribers.pop(environment, None)
        if not subscribers:
            return 0
        for future in subscribers:
            if not future.done():
                future.set_result(None)
        return len(subscribers)

    def wake_all(self) -> int:
        return sum(self.wake(environment) for environment in list(self._subscribers))

    def environments(self) -> list:
        return list(self._subscribers)

    # ------------------------------------------------------------ heartbeat

    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            if not self._subscribers:
                self._ticker = None
                return
            self.wake_all()

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self.wake_all()
