"""Checks on request bodies that apply to every JSON endpoint."""

from flask import request

from .errors import ApiError

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def init_app(app) -> None:
    @app.before_request
    def _require_json():
        if request.method not in BODY_METHODS or not request.path.startswith(("/api/", "/sdk/")):
            return
        has_body = (request.content_length or 0) > 0 or request.headers.get("Transfer-Encoding") == "chunked"
        if has_body and request.mimetype != "application/json":
            raise ApiError(415, "unsupported_media_type",
                           f"Request bodies must be application/json, not '{request.mimetype or 'none'}'.")
