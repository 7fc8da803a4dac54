"""Checks on requests that apply to every endpoint, and the one JSON body parser.

Every JSON request body is decoded here, once, by :func:`parse_json`: not
JSON, or nested deeper than ``limits.MAX_JSON_DEPTH`` (a 10,000-deep body
would otherwise overflow the parser's recursion) -> 400 ``malformed_json``.
The schemas read the decoded body through :func:`request_json` (see
``service.extensions.PitcrewParser``); ``/sdk/v1/events`` decodes its
(possibly gzip) body with the same function.

Text that no database can store is refused up front with 400 naming where
it is: NUL characters and unpaired UTF-16 surrogates (both only reachable
through ``\\u`` escapes in JSON), in bodies, query strings, paths and the
audit comment header. ``/sdk/v1/events`` checks each event itself (a bad
event must not cost the others in its batch).
"""

import json
import math

from flask import current_app, request

from .domain import limits
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
EVENTS_PATH = "/sdk/v1/events"
COMMENT_HEADER = "X-Pitcrew-Comment"
_NO_BODY = object()
_BODY_KEY = "pitcrew.json_body"


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


_EXACT_INTEGERS = 2.0 ** 53


def _number(text: str):
    """A JSON number with a fraction or exponent, as stored the same way by every database.

    Beyond 2**53 every double is an integer, and PostgreSQL's jsonb keeps the
    decimal text (2.251799759896167e+16 reads back as 22517997598961670, a
    different number in Python): such values become the exact integer of
    the double, which both databases keep and which compares equal to it.
    Numbers too large for a double (1e400) are not accepted."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:30]} is out of range")
    if abs(value) >= _EXACT_INTEGERS:
        return int(value)
    return value


def parse_json(data: bytes, *, max_depth: int | None = limits.MAX_JSON_DEPTH, allow_nan: bool = False):
    """The decoded JSON document, or ApiError 400 ``malformed_json``.

    ``NaN`` and ``Infinity`` (which Python's parser accepts, but JSON and the
    databases do not) and numbers beyond a double are malformed unless
    ``allow_nan`` (events check their values one by one)."""
    try:
        if allow_nan:
            value = json.loads(data)
        else:
            value = json.loads(data, parse_constant=_no_constants, parse_float=_number)
    except RecursionError:
        raise _too_deep(max_depth or limits.MAX_JSON_DEPTH) from None
    except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
        raise ApiError(400, "malformed_json", "The request body is not valid JSON.",
                       {"_body": [str(exc)[:200]]}) from None
    # Counting brackets is cheap and rules out deep nesting for most bodies.
    if max_depth is not None and data.count(b"[") + data.count(b"{") > max_depth \
            and _deeper_than(value, max_depth):
        raise _too_deep(max_depth)
    return value


def _too_deep(max_depth: int) -> ApiError:
    return ApiError(400, "malformed_json", f"The request body is nested too deeply (at most {max_depth} levels).",
                    {"_body": [f"JSON arrays and objects may nest at most {max_depth} levels."]})


def _deeper_than(value, max_depth: int) -> bool:
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def request_json():
    """The request's decoded JSON body (parsed once per request); ``None`` when there is no body."""
    # Kept with the request itself, not in ``g`` (an app context, which may
    # outlive one request).
    body = request.environ.get(_BODY_KEY, _NO_BODY)
    if body is _NO_BODY:
        data = request.get_data(cache=True)
        body = parse_json(data) if data else None
        request.environ[_BODY_KEY] = body
    return body


def unstorable(value, path: str = "") -> tuple[str, str] | None:
    """(JSON path, reason) of the first string or key that no database can store as text, or None."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            reason = _text_problem(item)
            if reason:
                return where or "_body", reason
            continue
        if isinstance(item, dict):
            entries = item.items()
        elif isinstance(item, list):
            entries = enumerate(item)
        else:
            continue
        for key, inner in entries:
            inner_path = f"{where}.{key}" if where else str(key)
            if isinstance(key, str):
                reason = _text_problem(key)
                if reason:
                    return inner_path, reason
            stack.append((inner, inner_path))
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "Contains a NUL character (\\u0000), which cannot be stored; remove it."
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "Contains an unpaired UTF-16 surrogate."
    return None


def refuse_unstorable(value) -> None:
    """ApiError 400 naming the first string of ``value`` that no database can store."""
    found = unstorable(value)
    if found:
        _refuse(*found)


def _refuse(path: str, reason: str):
    raise ApiError(400, "validation_error", "Text must be valid Unicode without NUL characters.", {path: [reason]})


def init_app(app) -> None:
    @app.before_request
    def _check_request():
        path = request.path
        if not path.startswith(("/api/", "/sdk/")):
            return
        found = _text_problem(path)
        if found:
            _refuse("_path", found)
        for name, value in request.args.items(multi=True):
            found = _text_problem(name) or _text_problem(value)
            if found:
                _refuse(name, found)
        comment = request.headers.get(COMMENT_HEADER)
        if comment is not None:
            found = _text_problem(comment)
            if found:
                _refuse(COMMENT_HEADER, found)
            if len(comment) > limits.COMMENT_CHARS:
                raise ApiError(400, "validation_error", f"{COMMENT_HEADER} is too long.",
                               {COMMENT_HEADER: [f"At most {limits.COMMENT_CHARS} characters."]})
        if request.method not in BODY_METHODS:
            return
        has_body = (request.content_length or 0) > 0 or request.headers.get("Transfer-Encoding") == "chunked"
        if not has_body:
            return
        accepted = _accepted_media_types() if request.endpoint else JSON_ONLY
        if request.mimetype not in accepted:
            raise ApiError(415, "unsupported_media_type",
                           f"Request bodies must be {' or '.join(sorted(accepted))}, "
                           f"not '{request.mimetype or 'none'}'.")
        if path == EVENTS_PATH or accepted is not JSON_ONLY:
            # /sdk/v1/events may be gzip: decoded by its handler, checked per
            # event by service/ingest.py. A view that accepts other media
            # types (YAML) parses its body itself and calls refuse_unstorable.
            return
        body = request_json()
        if b"\\u" in request.get_data(cache=True):
            refuse_unstorable(body)
