"""Checks on request bodies that apply to every JSON endpoint."""

import json

from flask import current_app, request

from .errors import ApiError

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON_ONLY = frozenset({"application/json"})


def accepts(*media_types: str):
    """Mark a view method as taking request bodies of these media types (default: JSON only)."""

    def decorate(func):
        func.accepted_media_types = frozenset(media_types)
        return func

    return decorate


def _accepted_media_types() -> frozenset:
    view = current_app.view_functions.get(request.endpoint)
    view_class = getattr(view, "view_class", None)
    method = getattr(view_class, request.method.lower(), None) if view_class else view
    return getattr(method, "accepted_media_types", JSON_ONLY)


def init_app(app) -> None:
    @app.before_request
    def _require_json():
        if request.method not in BODY_METHODS or not request.path.startswith(("/api/", "/sdk/")):
            return
        has_body = (request.content_length or 0) > 0 or request.headers.get("Transfer-Encoding") == "chunked"
        accepted = _accepted_media_types() if request.endpoint else JSON_ONLY
        if has_body and request.mimetype not in accepted:
            raise ApiError(415, "unsupported_media_type",
                           f"Request bodies must be {' or '.join(sorted(accepted))}, "
                           f"not '{request.mimetype or 'none'}'.")

    @app.before_request
    def _require_valid_unicode():
        # JSON may escape lone UTF-16 surrogates ("\\ud800"), which Python
        # decodes but no database can store as text: refuse them up front.
        # /sdk/v1/events checks each event itself (partial acceptance).
        if request.method not in BODY_METHODS or not request.path.startswith("/api/"):
            return
        if b"\\u" not in request.get_data(cache=True):
            return
        try:
            body = json.loads(request.get_data(cache=True))
        except ValueError:
            return  # malformed JSON is reported by the schema layer
        path = _lone_surrogate(body, "")
        if path is not None:
            raise ApiError(400, "validation_error", "Text must be valid Unicode.",
                           {path or "_body": ["Contains an unpaired UTF-16 surrogate."]})


def _lone_surrogate(value, path: str) -> str | None:
    """The JSON path of the first string (or key) that is not encodable as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, inner in items:
        inner_path = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and _lone_surrogate(key, inner_path) is not None:
            return inner_path
        found = _lone_surrogate(inner, inner_path)
        if found is not None:
            return found
    return None
