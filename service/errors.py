"""One JSON error shape for every error the service returns.

``{"error": {"code", "message", "details"}}``: domain errors, webargs
validation errors, Flask's own 404/405/413 and unexpected exceptions alike.
"""

import logging

import marshmallow as ma
import sqlalchemy as sa
from flask import jsonify
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


def _flatten_messages(messages) -> dict:
    """webargs nests messages by location and marshmallow by field; report
    them as ``{"rules.0.serve.variation": [...]}``, like the domain's checks."""
    if isinstance(messages, dict) and len(messages) == 1:
        (location, inner), = messages.items()
        if location in ("json", "query", "headers", "view_args"):
            messages = inner
    flat: dict[str, list] = {}

    def walk(value, path):
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            flat.setdefault(path or "_body", []).extend(value)
        else:
            flat.setdefault(path or "_body", []).append(value if isinstance(value, str) else str(value))

    walk(messages, "")
    return flat


def handle_http_exception(error: HTTPException):
    if isinstance(error, ApiError):
        return error_response(error.code, error.error_code, error.message, error.details, error.extra_headers)
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    messages = data.get("messages")
    if messages is not None:
        details = _flatten_messages(messages)
        if details == {"_body": ["Invalid JSON body."]} or "Invalid JSON body." in str(messages):
            return error_response(400, "malformed_json", "The request body is not valid JSON.")
        # webargs uses 422 by default; SPEC says 400 with per-field details.
        return error_response(400, "validation_error", "The request is invalid.", details)
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
    from .extensions import db

    db.session.rollback()
    return error_response(400, "validation_error", "A value is out of range.",
                          {"_body": ["A number in the request is too large to store."]})


def handle_operational(error: sa.exc.OperationalError):
    """SQLite refusing a write because a concurrent one committed first ("database is
    locked": a stale read snapshot cannot be upgraded to a writer) is transient: 503, retry."""
    from .extensions import db

    message = str(getattr(error, "orig", error)).lower()
    if "database is locked" not in message and "database is busy" not in message:
        return handle_unexpected(error)
    db.session.rollback()
    return error_response(503, "unavailable", "The database is busy with a concurrent change; retry.",
                          headers={"Retry-After": "1"})


def handle_unexpected(error: Exception):
    log.exception("unhandled error")
    return error_response(500, "internal_error", "An unexpected error occurred.")


def register(app) -> None:
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(sa.exc.DataError, handle_out_of_range)
    app.register_error_handler(OverflowError, handle_out_of_range)
    app.register_error_handler(sa.exc.OperationalError, handle_operational)
    app.register_error_handler(Exception, handle_unexpected)
