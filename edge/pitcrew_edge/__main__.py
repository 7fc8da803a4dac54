"""``python -m pitcrew_edge`` (what ``make edge`` runs): one edge process on uvicorn.

Settings come from the environment (EDGE_PORT, PITCREW_UPSTREAM, ...; see
docs/delivery.md). Run as many edges as you like behind a load balancer.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
from datetime import UTC, datetime

import uvicorn

from .app import create_app
from .settings import Settings


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def raise_fd_limit() -> int:
    """Each open stream is a file descriptor: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            pass
    return soft


def main() -> None:
    settings = Settings.from_environment()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream request is noise
    limit = raise_fd_limit()
    logging.getLogger("pitcrew.edge").info("edge on %s:%s, upstream %s, fd limit %s",
                                           settings.host, settings.port, settings.upstream, limit)
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, loop=loop, http="httptools",
                lifespan="on", access_log=False, log_level="warning", backlog=4096,
                timeout_graceful_shutdown=2, timeout_keep_alive=30)


if __name__ == "__main__":
    main()
