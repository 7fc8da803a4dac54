"""gunicorn settings for ``make serve`` and the Docker image.

The gthread worker class is needed by /sdk/v1/stream: each Server-Sent
Events connection holds one thread for its lifetime, so a sync worker would
be blocked by a single SDK. Threads per worker bound the open streams.
"""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
timeout = 60
graceful_timeout = 10
keepalive = 30
accesslog = None  # the app logs one JSON line per request itself


def child_exit(server, worker):
    # Prometheus multiprocess mode: drop a dead worker's live gauges.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
