"""Column types shared by the models."""

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(sa.TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime")
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def VERSIONED(version_column) -> dict:
    """``__mapper_args__`` of a model whose ``version`` guards every UPDATE and DELETE.

    SQLAlchemy adds ``AND version = <the version read>`` to each statement and
    raises ``StaleDataError`` (answered 412) when no row matched, so a write
    based on a stale read never overwrites a newer one. The domain sets the
    next version itself (``version_id_generator=False``): it is also the
    ETag and the flag history's version number."""
    return {"version_id_col": version_column, "version_id_generator": False}


def utcnow() -> datetime:
    return datetime.now(UTC)
