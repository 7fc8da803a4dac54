import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import VERSIONED, JSONType, UTCDateTime, utcnow


class Segment(db.Model):
    """A reusable audience, shared by all environments."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(100), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    tags: Mapped[list] = mapped_column(JSONType, default=list)
    included: Mapped[list] = mapped_column(JSONType, default=list)
    excluded: Mapped[list] = mapped_column(JSONType, default=list)
    rules: Mapped[list] = mapped_column(JSONType, default=list)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __mapper_args__ = VERSIONED(version)
