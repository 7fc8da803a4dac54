"""Errors raised by domain code. ``service.errors`` maps them to HTTP."""


class DomainError(Exception):
    code = "error"

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class ValidationFailed(DomainError):
    """Input is well-formed JSON but breaks a rule; details map field path -> reasons."""

    code = "validation_error"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    """Duplicate key, or an operation the resource's state does not allow."""

    code = "conflict"


class Forbidden(DomainError):
    """The caller's role or identity may not do this (e.g. approve their own change request)."""

    code = "forbidden"


class PreconditionFailed(DomainError):
    """The caller's If-Match names a version that is no longer current."""

    code = "precondition_failed"
