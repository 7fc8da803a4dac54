"""Small helpers shared by the admin handlers."""

from flask import request

from ..errors import ApiError


def if_match() -> int | None:
    """The version named by ``If-Match`` (parsed by werkzeug), or None when absent or ``*``.

    Our ETags are versions (``"3"``); a weak tag (``W/"3"``) names the same
    version. A write names the one version it was based on."""
    if "If-Match" not in request.headers:
        return None
    etags = request.if_match
    if etags.star_tag:
        return None
    tags = list(etags.as_set(include_weak=True))
    if len(tags) != 1 or not (tags[0] or "").isascii() or not (tags[0] or "").isdigit():
        raise ApiError(400, "validation_error", "If-Match must be one ETag returned by this API, like \"3\".",
                       {"If-Match": ["Not a version ETag."]})
    return int(tags[0])


def etag(version: int) -> dict:
    return {"ETag": f'"{version}"'}


def page(result) -> dict:
    return {"items": result.items, "next_cursor": result.next_cursor}
