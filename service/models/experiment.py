import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import VERSIONED, JSONType, UTCDateTime, utcnow

STATUSES = ("draft", "running", "stopped", "concluded")


class Experiment(db.Model):
    """An experiment on one flag in one environment (docs/api.md, "Experiments")."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(100), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    hypothesis: Mapped[str] = mapped_column(sa.Text, default="")
    owner: Mapped[str | None] = mapped_column(sa.String(200))
    tags: Mapped[list] = mapped_column(JSONType, default=list)
    flag_id: Mapped[int] = mapped_column(sa.ForeignKey("flags.id", ondelete="CASCADE"), index=True)
    environment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    variations: Mapped[list] = mapped_column(JSONType)  # [{"variation", "weight"}]
    control: Mapped[str] = mapped_column(sa.String(100))
    traffic: Mapped[int] = mapped_column(default=10000)
    unit: Mapped[str] = mapped_column(sa.String(100), default="id")
    layer: Mapped[dict | None] = mapped_column(JSONType)  # {"key", "range": [start, end)}
    salt: Mapped[str] = mapped_column(sa.String(200))
    primary_metric: Mapped[str | None] = mapped_column(sa.String(100))
    secondary_metrics: Mapped[list] = mapped_column(JSONType, default=list)
    guardrail_metrics: Mapped[list] = mapped_column(JSONType, default=list)
    dimensions: Mapped[list] = mapped_column(JSONType, default=list)
    analysis: Mapped[dict] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(sa.String(20), default="draft", index=True)
    started_at: Mapped[object | None] = mapped_column(UTCDateTime)
    stopped_at: Mapped[object | None] = mapped_column(UTCDateTime)
    concluded_at: Mapped[object | None] = mapped_column(UTCDateTime)
    released_variation: Mapped[str | None] = mapped_column(sa.String(100))
    decision: Mapped[dict | None] = mapped_column(JSONType)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __mapper_args__ = VERSIONED(version)


class Metric(db.Model):
    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(100), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    event: Mapped[str] = mapped_column(sa.String(200))
    type: Mapped[str] = mapped_column(sa.String(20))  # conversion | mean | count | ratio
    denominator: Mapped[str | None] = mapped_column(sa.String(200))
    direction: Mapped[str] = mapped_column(sa.String(20), default="increase")
    window_hours: Mapped[float | None] = mapped_column(sa.Float)
    winsorize: Mapped[float | None] = mapped_column(sa.Float)
    tags: Mapped[list] = mapped_column(JSONType, default=list)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __mapper_args__ = VERSIONED(version)
