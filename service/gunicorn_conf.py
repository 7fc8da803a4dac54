"""gunicorn settings for ``make serve``, the Docker image and the tests' LiveServer.

Each worker is an asyncio event loop (service.asgi.Worker, uvicorn's
worker): SDK streams and /sdk/v1/config for known keys are answered on the
loop from memory, everything else by the Flask app in a pool of
``GUNICORN_THREADS`` threads. Streams and slow clients hold no thread
(docs/delivery.md).
"""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = "service.asgi.Worker"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "16"))  # Flask's thread pool per worker
timeout = 60
graceful_timeout = 10
keepalive = 30
# Several servers may run side by side (instances, tests): no shared control socket.
control_socket_disable = True
accesslog = None  # the app logs one JSON line per request itself


def on_exit(server):
    from service.delivery_shared import remove

    remove(os.getpid())  # the workers' shared version map (service/delivery_shared.py)


def child_exit(server, worker):
    # Prometheus multiprocess mode: drop a dead worker's live gauges.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
