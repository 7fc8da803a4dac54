"""Holdouts (docs/holdouts.md): a share of an environment's units kept on every
flag's off variation, to measure the cumulative effect of what those flags ship."""

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import VERSIONED, UTCDateTime, utcnow


class Holdout(db.Model):
    __tablename__ = "holdouts"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Unique over all environments: /api/v1/holdouts/{key} names one holdout.
    key: Mapped[str] = mapped_column(sa.String(100), unique=True)
    environment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    # The size, in basis points of the units (the API's percent * 100: 50..1000).
    basis_points: Mapped[int] = mapped_column()
    unit: Mapped[str] = mapped_column(sa.String(100), default="id")  # the context attribute bucketed
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __mapper_args__ = VERSIONED(version)

    @property
    def percent(self) -> float:
        return self.basis_points / 100
