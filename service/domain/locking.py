"""Write locks: how concurrent writes to one resource are serialised.

Every mutation of an existing resource first reads it with :func:`for_update`,
which holds the resource's write lock until the unit of work ends:

* PostgreSQL: ``SELECT ... FOR UPDATE`` locks the row;
* SQLite has no row locks: a no-op ``UPDATE`` of the row takes the
  database's write lock first (other writers wait for it, up to the busy
  timeout), so the ``SELECT`` after it reads the latest commit.

Writes to one resource therefore run one after another, each on the state
the previous one committed. With ``If-Match`` the version check then sees
the true current version: of N concurrent writes naming the same version,
exactly one succeeds and the others get 412. Without ``If-Match`` the writes
are applied in turn and none is lost (each PATCH changes only its fields of
the latest state; each write has its own audit entry and version).

The models also declare their ``version`` column as SQLAlchemy's
``version_id_col``: every UPDATE or DELETE is conditional
(``... WHERE id = :id AND version = :read``), so a write that was not
serialised (a code path that forgot the lock) fails with ``StaleDataError``
(412) instead of overwriting a newer version.
"""

import sqlalchemy as sa

from ..extensions import db
from .errors import NotFound


def for_update(model, *criteria):
    """The ``model`` row matching ``criteria``, read fresh and locked until the transaction ends; or None."""
    session = db.session
    table = model.__table__
    if session.get_bind().dialect.name == "sqlite":
        column = table.c.version if "version" in table.c else table.c.id
        session.execute(sa.update(table).where(*criteria).values({column.name: column}))
        stmt = sa.select(model).where(*criteria)
    else:
        stmt = sa.select(model).where(*criteria).with_for_update(of=table)
    return session.scalars(stmt.execution_options(populate_existing=True)).first()


def get_by_key(model, key: str, *, lock: bool = False, name: str):
    """The ``model`` row whose ``key`` is ``key``; with ``lock``, read with :func:`for_update`.
    ``NotFound`` ("<name> '<key>' does not exist.") when there is none."""
    if lock:
        row = for_update(model, model.key == key)
    else:
        row = db.session.scalars(sa.select(model).where(model.key == key)).first()
    if row is None:
        raise NotFound(f"{name} '{key}' does not exist.")
    return row


def share(stmt):
    """``stmt`` (a SELECT) also locking the rows it reads against deletion until the transaction ends.

    For references: a flag's targeting naming segments keeps them from
    being deleted concurrently (PostgreSQL ``FOR SHARE``; SQLite writers are
    serialised already)."""
    if db.session.get_bind().dialect.name == "sqlite":
        return stmt
    return stmt.with_for_update(read=True)
