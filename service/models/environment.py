import time

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .types import VERSIONED, UTCDateTime, utcnow


def initial_ruleset_version() -> int:
    # Start from the clock (ms), not 1: an environment deleted and created
    # again under the same key must never reuse a version an SDK may still
    # hold as its ETag, or the SDK would get a false 304.
    return int(time.time() * 1000)


class Environment(db.Model):
    __tablename__ = "environments"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(100), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    # Approvals a change request needs before it applies here; > 0 makes the
    # environment protected: direct targeting writes are refused (docs/process.md).
    approvals_required: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column(default=1)
    # Bumped by every change to anything in this environment's SDK ruleset.
    ruleset_version: Mapped[int] = mapped_column(sa.BigInteger, default=initial_ruleset_version)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __mapper_args__ = VERSIONED(version)

    sdk_keys: Mapped[list["SdkKey"]] = relationship(
        back_populates="environment", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def protected(self) -> bool:
        """Whether changes here go through change requests (``approvals_required > 0``)."""
        return (self.approvals_required or 0) > 0

    @protected.setter
    def protected(self, value: bool) -> None:
        # The older boolean, kept as an alias: true means "at least one approval".
        if value and not self.protected:
            self.approvals_required = 1
        elif not value:
            self.approvals_required = 0


class SdkKey(db.Model):
    __tablename__ = "sdk_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    environment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(200), default="")
    prefix: Mapped[str] = mapped_column(sa.String(40))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_by: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[object | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[object | None] = mapped_column(UTCDateTime)

    environment: Mapped[Environment] = relationship(back_populates="sdk_keys")
