"""Small helpers shared by the admin handlers."""

from collections.abc import Callable

from flask import request

from ..domain.pagination import Page
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
        raise ApiError(400, "validation_error",
                       "If-Match must be one ETag returned by this API, like \"3\".",
                       {"If-Match": ["Not a version ETag."]})
    return int(tags[0])


def etag(version: int) -> dict:
    return {"ETag": f'"{version}"'}


def page(result: Page, serialise: Callable[[list], list] | None = None) -> dict:
    """The list envelope ``{items, next_cursor}`` of one page.

    ``serialise`` turns the page's rows into dicts all at once (a domain's
    ``to_dicts``, which loads what the rows refer to in a fixed number of
    queries); without it the response schema dumps the rows themselves."""
    items = serialise(result.items) if serialise else result.items
    return {"items": items, "next_cursor": result.next_cursor}
