"""Keyset pagination: ``?limit=&cursor=``, the cursor an opaque token."""

import base64
import json
from dataclasses import dataclass

import sqlalchemy as sa

from ..extensions import db
from . import limits
from .errors import ValidationFailed

MAX_LIMIT = limits.PAGE_SIZE
LIKE_ESCAPE = "\\"


def contains_pattern(text: str) -> str:
    """A LIKE pattern matching values that contain ``text`` literally (``%`` and ``_`` escaped).

    Use with ``column.like(pattern, escape=LIKE_ESCAPE)``."""
    escaped = text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%").replace("_", LIKE_ESCAPE + "_")
    return f"%{escaped}%"


@dataclass
class Page:
    items: list
    next_cursor: str | None


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        kind, _, value = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        if kind != "id":
            raise ValueError(cursor)
        return int(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed("Invalid cursor.", {"cursor": ["Not a cursor returned by this API."]}) from exc


def paginate(stmt, id_column, *, limit: int, cursor: str | None, descending: bool = False) -> Page:
    """One page of ``stmt`` ordered by ``id_column``, fetching one row extra to know if more exist."""
    limit = max(1, min(limit, MAX_LIMIT))
    if cursor:
        last = decode_cursor(cursor)
        stmt = stmt.where(id_column < last if descending else id_column > last)
    stmt = stmt.order_by(id_column.desc() if descending else id_column.asc()).limit(limit + 1)
    rows = list(db.session.scalars(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more and rows else None)


def by_id(model, ids, *options) -> dict:
    """``{id: row}`` of ``model`` for ``ids``, in one query (``options``: loader options such as
    ``selectinload``): what the rows of a page refer to, loaded once for the whole page."""
    wanted = set(ids)
    if not wanted:
        return {}
    stmt = sa.select(model).where(model.id.in_(wanted)).options(*options)
    return {row.id: row for row in db.session.scalars(stmt)}


def paginate_tagged(stmt, id_column, tags_column, tag: str | None, *, limit: int, cursor: str | None) -> Page:
    """:func:`paginate`, keeping only rows whose JSON list ``tags_column`` holds ``tag``.

    A LIKE on the JSON text (wildcards escaped) narrows the rows in SQL on
    SQLite and PostgreSQL; the exact membership test is done on the page in
    Python (a tag may also occur inside a longer one), so a page may hold
    fewer than ``limit``.
    """
    if not tag:
        return paginate(stmt, id_column, limit=limit, cursor=cursor)
    # The tag as it appears in the stored JSON text: PostgreSQL's jsonb text keeps non-ASCII
    # characters, SQLite's JSON (written by json.dumps) escapes them.
    text = json.dumps(tag, ensure_ascii=db.session.get_bind().dialect.name != "postgresql")
    stmt = stmt.where(sa.cast(tags_column, sa.Text).like(contains_pattern(text), escape=LIKE_ESCAPE))
    page = paginate(stmt, id_column, limit=limit, cursor=cursor)
    page.items = [row for row in page.items if tag in (getattr(row, tags_column.key) or [])]
    return page
