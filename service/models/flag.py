import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .types import VERSIONED, JSONType, UTCDateTime, utcnow


class Flag(db.Model):
    __tablename__ = "flags"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(100), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    kind: Mapped[str] = mapped_column(sa.String(20))
    variations: Mapped[list] = mapped_column(JSONType)
    tags: Mapped[list] = mapped_column(JSONType, default=list)
    owner: Mapped[str | None] = mapped_column(sa.String(200))
    temporary: Mapped[bool] = mapped_column(default=True)
    # Expected lifetime (docs/lifecycle.md): release | experiment | operational | kill-switch | permission.
    type: Mapped[str] = mapped_column(sa.String(20), default="release", server_default="release")
    archived: Mapped[bool] = mapped_column(default=False, index=True)
    # One version sequence for the flag and all its targeting: every write bumps it.
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __mapper_args__ = VERSIONED(version)

    targeting: Mapped[list["FlagTargeting"]] = relationship(
        back_populates="flag", cascade="all, delete-orphan", passive_deletes=True
    )


class FlagTargeting(db.Model):
    """A flag's targeting in one environment (the shape of docs/evaluation.md, stored as JSON)."""

    __tablename__ = "flag_targeting"
    __table_args__ = (sa.UniqueConstraint("flag_id", "environment_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    flag_id: Mapped[int] = mapped_column(sa.ForeignKey("flags.id", ondelete="CASCADE"))
    environment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    targeting: Mapped[dict] = mapped_column(JSONType)

    flag: Mapped[Flag] = relationship(back_populates="targeting")


class FlagVersion(db.Model):
    """A snapshot of a flag (fields and every environment's targeting) after one write."""

    __tablename__ = "flag_versions"
    __table_args__ = (sa.UniqueConstraint("flag_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    flag_id: Mapped[int] = mapped_column(sa.ForeignKey("flags.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column()
    action: Mapped[str] = mapped_column(sa.String(50))
    actor: Mapped[str] = mapped_column(sa.String(200))
    comment: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    snapshot: Mapped[dict] = mapped_column(JSONType)


class TargetingChange(db.Model):
    """One change of a flag's targeting in one environment, and what the targeting serves after it.

    Written with the flag version that changed it (service/domain/flags.py),
    so lifecycle ("launched") and insights (release velocity, time to full
    rollout, rollbacks) read plain rows instead of replaying snapshots.
    ``serves`` is the one variation the targeting serves to everyone, or
    NULL when it can serve several; ``full_rollout`` is true when it is on
    and serves everyone one variation other than its off variation."""

    __tablename__ = "targeting_changes"
    __table_args__ = (sa.Index("ix_targeting_changes_env_time", "environment_id", "changed_at"),
                      sa.Index("ix_targeting_changes_flag_env", "flag_id", "environment_id", "changed_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    flag_id: Mapped[int] = mapped_column(sa.ForeignKey("flags.id", ondelete="CASCADE"))
    environment_id: Mapped[int] = mapped_column(sa.ForeignKey("environments.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column()
    action: Mapped[str] = mapped_column(sa.String(50))
    changed_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    enabled: Mapped[bool] = mapped_column()
    serves: Mapped[str | None] = mapped_column(sa.String(100))
    full_rollout: Mapped[bool] = mapped_column()


class FlagStaleNotice(db.Model):
    """A flag announced as ``flag.stale`` (once per entry into potentially_stale)."""

    __tablename__ = "flag_stale_notices"

    flag_id: Mapped[int] = mapped_column(sa.ForeignKey("flags.id", ondelete="CASCADE"), primary_key=True)
    announced_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
