"""Row locks and claims, so concurrent API writers and any number of workers
change each process row once.

PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` claims one due row; the
claim and the work happen in one transaction, so a worker that dies mid-way
releases the row (its transaction rolls back) and another takes it. API
writes to one change request, schedule or flag take plain ``FOR UPDATE``
locks, so two of them run one after the other.

SQLite has no row locks: :func:`begin_exclusive` opens the transaction with
``BEGIN IMMEDIATE``, which takes the database's write lock, so one worker
at a time claims and applies an item (the others wait on the busy timeout
and then see the item done). A crashed worker's lock dies with its
connection. API writes on SQLite are serialised by the same write lock; the
models' version columns (``version_id_col``) turn a lost race into a 409.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.orm.exc import StaleDataError

from ..extensions import db
from .errors import Conflict


def dialect() -> str:
    return db.session.get_bind().dialect.name


def begin_exclusive() -> None:
    """End whatever the session holds and start a fresh transaction for claiming work."""
    db.session.rollback()
    if dialect() == "sqlite":
        db.session.execute(sa.text("BEGIN IMMEDIATE"))


def locked(stmt, *, skip_locked: bool = False, of=None):
    """``stmt`` with this database's row-lock clause (none on SQLite: see above),
    re-reading rows already in the session so they show the locked state."""
    stmt = stmt.execution_options(populate_existing=True)
    if dialect() == "sqlite":
        return stmt
    return stmt.with_for_update(skip_locked=skip_locked, of=of)


@contextmanager
def race_is_conflict() -> Iterator[None]:
    """Losing a race to a concurrent writer inside this block becomes a 409 (nothing is
    written): a versioned row changed meanwhile, or a unique row (a flag version, one
    review per reviewer) was written first."""
    try:
        yield
    except (StaleDataError, sa.exc.IntegrityError):
        raise Conflict("The resource was changed concurrently; reload it and try again.",
                       {"version": ["Changed by another request."]}) from None


def save() -> None:
    """Flush, a lost race becoming a 409 (:func:`race_is_conflict`)."""
    with race_is_conflict():
        db.session.flush()
