"""Small helpers shared by the admin handlers."""

import re

from flask import request

from ..errors import ApiError

_ETAG = re.compile(r'\s*(?:W/)?"?(\d+)"?\s*')


def if_match() -> int | None:
    """The version named by ``If-Match``, or None when absent or ``*``."""
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    match = _ETAG.fullmatch(raw)
    if not match:
        raise ApiError(400, "validation_error", "If-Match must be an ETag returned by this API, like \"3\".",
                       {"If-Match": ["Not a version ETag."]})
    return int(match.group(1))


def etag(version: int) -> dict:
    return {"ETag": f'"{version}"'}


def page(result) -> dict:
    return {"items": result.items, "next_cursor": result.next_cursor}
