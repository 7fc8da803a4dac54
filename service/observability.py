"""Request ids, one JSON log line per request, Prometheus metrics.

Log lines carry the route template, never the Authorization header, query
string or body, so no secret reaches the log.
"""

import json
import logging
import os
import sys
import time
import uuid
from datetime import UTC, datetime

from flask import Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("pitcrew_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "pitcrew_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
request_log = logging.getLogger("pitcrew.request")
# Collectors that compute their values when scraped, from the database (the
# worker's queues: service/worker.py), so any process serves the same figures.
SCRAPE_REGISTRY = CollectorRegistry(auto_describe=True)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "pitcrew", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler.pitcrew = True
        root.addHandler(handler)
    root.setLevel(level)


def _route() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def metrics_response() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    body += generate_latest(SCRAPE_REGISTRY)
    return Response(body, content_type=CONTENT_TYPE_LATEST)  # it names its charset already


def init_app(app) -> None:
    configure_logging(app.config["LOG_LEVEL"])

    @app.before_request
    def _start():
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-Id", "")
        # Accept a caller's id only when it looks like one (no log injection).
        g.request_id = incoming if 0 < len(incoming) <= 64 and incoming.replace("-", "").isalnum() else uuid.uuid4().hex

    @app.after_request
    def _finish(response):
        started = g.get("started")
        duration = time.perf_counter() - started if started else 0.0
        route = _route()
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        LATENCY.labels(request.method, route).observe(duration)
        response.headers["X-Request-Id"] = g.get("request_id", "")
        token = g.get("token")
        request_log.info("request", extra={"fields": {
            "request_id": g.get("request_id"), "method": request.method, "route": route,
            "status": response.status_code, "duration_ms": round(duration * 1000, 3),
            "actor": token.name if token is not None else None,
        }})
        return response

    app.add_url_rule("/metrics", "metrics", metrics_response)
