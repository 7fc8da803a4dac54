"""``python -m pitcrew_edge`` (what ``make edge`` runs): the edge on uvicorn.

Settings come from the environment (EDGE_PORT, PITCREW_UPSTREAM, ...; see
docs/delivery.md). With EDGE_WORKERS=1 (the default) one process serves the
port; with N > 1 uvicorn's supervisor spawns N worker processes on the same
port, each a whole edge of its own (:func:`app_from_environment`): its own
upstream stream per environment, key cache and evaluation counts. Run as many
edges as you like behind a load balancer.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
from datetime import UTC, datetime

import uvicorn

from .app import Edge, create_app
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


def configure_logging(settings: Settings) -> None:
    """JSON lines on stderr at ``settings.log_level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream request is noise


def app_from_environment() -> Edge:
    """The app of one worker process (EDGE_WORKERS > 1): spawned workers inherit neither the
    parent's settings object nor its logging set-up, so both are made here again."""
    settings = Settings.from_environment()
    configure_logging(settings)
    return create_app(settings)


def main() -> None:
    settings = Settings.from_environment()
    configure_logging(settings)
    limit = raise_fd_limit()  # before spawning: workers inherit the limit
    logging.getLogger("pitcrew.edge").info("edge on %s:%s, upstream %s, fd limit %s, %s worker process(es)",
                                           settings.host, settings.port, settings.upstream, limit,
                                           settings.workers)
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    options = dict(host=settings.host, port=settings.port, loop=loop, http="httptools", lifespan="on",
                   access_log=False, log_level="warning", backlog=4096, timeout_graceful_shutdown=2,
                   timeout_keep_alive=30)
    if settings.workers > 1:
        uvicorn.run("pitcrew_edge.__main__:app_from_environment", factory=True, workers=settings.workers,
                    **options)
    else:
        uvicorn.run(create_app(settings), **options)


if __name__ == "__main__":
    main()
