"""One JSON error shape for every error the service returns.

``{"error": {"code", "message", "details"}}``: domain errors, invalid
arguments (``service.extensions.PitcrewParser`` raises :class:`ApiError`),
Flask's own 404/405/413 and unexpected exceptions alike. The session of a
failed request is rolled back before these handlers run
(``service.web.PitcrewFlask.handle_user_exception``).

Database errors are classified, never a bare 500 (docs/operations.md,
"Errors" and "Database outages"):

* unreachable, restarting, out of connections, locked: 503 ``unavailable``
  with ``Retry-After``, logged once per outage (not once per request);
* a lost race: a conditional update that matched no row
  (``StaleDataError``) is 412 ``precondition_failed``; a unique violation,
  deadlock or serialization failure is 409 ``conflict`` ("retry");
* a value the database cannot store: 400 ``validation_error``.
"""

import logging
import sqlite3
import threading
import time

import marshmallow as ma
import psycopg
import sqlalchemy as sa
from flask import jsonify
from prometheus_client import Counter
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException

from .domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)

log = logging.getLogger("pitcrew.errors")

DOMAIN_STATUS = {ValidationFailed: 400, Forbidden: 403, NotFound: 404, Conflict: 409, PreconditionFailed: 412}

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    428: "precondition_required",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


# Seconds a client should wait before retrying a 503 (SDKs honour it).
RETRY_AFTER_SECONDS = 2

DATABASE_UNAVAILABLE = Counter("pitcrew_database_unavailable_total",
                               "Requests answered 503 because the database was unreachable")


class ErrorBodySchema(ma.Schema):
    code = ma.fields.String(required=True)
    message = ma.fields.String(required=True)
    details = ma.fields.Dict(required=True)


class ErrorSchema(ma.Schema):
    """Documents the error body in the OpenAPI spec."""

    error = ma.fields.Nested(ErrorBodySchema, required=True)


class ApiError(HTTPException):
    """Raised by HTTP-layer code (auth, content checks) with an explicit code."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None, headers=None):
        super().__init__(message)
        self.code = status
        self.error_code = code
        self.message = message
        self.details = details or {}
        self.extra_headers = headers or {}


def error_response(status: int, code: str, message: str, details: dict | None = None, headers=None):
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def handle_http_exception(error: HTTPException):
    if isinstance(error, ApiError):
        return error_response(error.code, error.error_code, error.message, error.details, error.extra_headers)
    status = error.code or 500
    data = getattr(error, "data", None) or {}  # what flask-smorest's abort() attaches
    code = HTTP_CODES.get(status, "error")
    message = data.get("message") or error.description or error.name
    headers = {}
    if status == 405 and hasattr(error, "valid_methods") and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)
    return error_response(status, code, message, None, headers)


def handle_domain_error(error: DomainError):
    status = next((s for cls, s in DOMAIN_STATUS.items() if isinstance(error, cls)), 400)
    return error_response(status, error.code, error.message, error.details)


def handle_out_of_range(error: Exception):
    """A value the database cannot store (an integer beyond 64 bits, say) is bad input, not a crash."""
    if "NUL" in str(getattr(error, "orig", error)) or "0x00" in str(getattr(error, "orig", error)):
        return error_response(400, "validation_error", "Text must not contain NUL characters.",
                              {"_body": ["A string in the request contains a NUL character (\\u0000)."]})
    return error_response(400, "validation_error", "A value is out of range.",
                          {"_body": ["A number in the request is too large to store."]})


# ---------------------------------------------------------------- database errors

# SQLSTATE classes and codes (PostgreSQL): connection trouble, shutdown, too
# many connections -> 503; lost races -> 409; unstorable data -> 400.
_UNAVAILABLE_STATES = ("08", "53", "57P", "58")
_RETRY_STATES = ("40001", "40P01", "55P03")  # serialization failure, deadlock, lock not available


class _Outage:
    """Per-process record of an ongoing database outage, so it is logged once, not per request."""

    def __init__(self):
        self.lock = threading.Lock()
        self.since: float | None = None
        self.refused = 0

    def down(self, error: BaseException) -> None:
        DATABASE_UNAVAILABLE.inc()
        with self.lock:
            first = self.since is None
            if first:
                self.since = time.monotonic()
            self.refused += 1
        if first:
            detail = str(getattr(error, "orig", None) or error).strip().splitlines()[:1]
            log.error("database unavailable: answering 503 with Retry-After until it is reachable again",
                      extra={"fields": {"error": type(getattr(error, "orig", None) or error).__name__,
                                        "detail": (detail[0] if detail else "")[:300]}})

    def up(self) -> None:
        if self.since is None:  # the usual case: no lock, nothing to do
            return
        with self.lock:
            if self.since is None:
                return
            seconds, refused = time.monotonic() - self.since, self.refused
            self.since, self.refused = None, 0
        log.warning("database reachable again", extra={"fields": {
            "outage_seconds": round(seconds, 1), "requests_refused": refused}})


outage = _Outage()


def _sqlstate(error: BaseException) -> str | None:
    orig = getattr(error, "orig", None) or error
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def classify_database_error(error: BaseException) -> str | None:
    """'unavailable', 'retry', 'stale', 'conflict', 'data' or None (an unexpected error)."""
    if isinstance(error, StaleDataError):
        return "stale"
    state = _sqlstate(error)
    if state:
        if state.startswith(_RETRY_STATES):
            return "retry"
        if state.startswith("23"):
            return "conflict"
        if state.startswith("22"):
            return "data"
        if state.startswith(_UNAVAILABLE_STATES):
            return "unavailable"
    orig = getattr(error, "orig", None) or error
    if isinstance(error, sa.exc.IntegrityError) or isinstance(orig, sqlite3.IntegrityError):
        return "conflict"
    if isinstance(error, sa.exc.DataError):
        return "data"
    if isinstance(error, sa.exc.TimeoutError | sa.exc.DisconnectionError):
        return "unavailable"  # pool exhausted, or a connection lost
    if isinstance(orig, sqlite3.Error):
        # SQLite reports bugs ("no such table", syntax errors) as OperationalError too: only
        # a busy, locked, unopenable or failing database file is an outage.
        message = str(orig).lower()
        if isinstance(orig, sqlite3.OperationalError) and any(m in message for m in _SQLITE_UNAVAILABLE):
            return "unavailable"
        return None
    if isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError) or _is_driver_operational(orig):
        return "unavailable"  # refused, reset, shut down, too many connections...
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return "unavailable"
    return None


_SQLITE_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o", "disk is full")


def _is_driver_operational(orig: BaseException) -> bool:
    return isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)


def unavailable_response():
    return error_response(503, "unavailable",
                          f"The database is unreachable; retry after {RETRY_AFTER_SECONDS} s.",
                          {"_database": ["unreachable"]}, {"Retry-After": str(RETRY_AFTER_SECONDS)})


def handle_database_error(error: Exception):
    kind = classify_database_error(error)
    if kind is None:
        return handle_unexpected(error)
    if kind == "unavailable":
        outage.down(error)
        return unavailable_response()
    if kind == "stale":
        return error_response(412, "precondition_failed",
                              "The resource changed while this request was being processed; nothing was "
                              "changed. Read it again and retry.", {"If-Match": ["Stale version."]})
    if kind == "retry":
        return error_response(409, "conflict", "The write collided with a concurrent write; nothing was "
                              "changed. Retry it.", {"_body": ["Concurrent write; retry."]},
                              {"Retry-After": "1"})
    if kind == "conflict":
        return error_response(409, "conflict", "The write conflicts with existing data (a duplicate key or a "
                              "concurrent change); nothing was changed.", {"_body": ["Conflicting write."]})
    return handle_out_of_range(error)


def handle_unexpected(error: Exception):
    log.exception("unhandled error")
    return error_response(500, "internal_error", "An unexpected error occurred.")


def register(app) -> None:
    """Flask's error handlers for everything but ``HTTPException``, which flask-smorest's Api
    registers with its ``handle_http_exception`` hook (``service.extensions.PitcrewApi``)."""
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(sa.exc.SQLAlchemyError, handle_database_error)
    app.register_error_handler(sqlite3.Error, handle_database_error)
    app.register_error_handler(psycopg.Error, handle_database_error)
    app.register_error_handler(OverflowError, handle_out_of_range)
    app.register_error_handler(Exception, handle_unexpected)
