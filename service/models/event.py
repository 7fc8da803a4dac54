"""Raw SDK events and aggregated flag evaluation counts.

``events`` holds exposures and track events exactly as ingested (one row per
event, idempotent by the client's UUID within its environment). Timestamps are integers, micro-
seconds since the Unix epoch (UTC): window arithmetic in the analysis SQL
(``first exposure + window``) is then plain integer addition, the same SQL
text on SQLite and PostgreSQL, and comparisons are as cheap as they get.

Indexes serve the two analysis access paths (partial, so each row pays for
one of them only): exposures by (environment, experiment, ts) and track
events by (environment, event, ts).
"""

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from pitcrew.wire import EXPOSURE, TRACK  # noqa: F401  (the wire contract's event types)

from ..extensions import db
from .environment import Environment
from .types import UTCDateTime, utcnow


class Event(db.Model):
    __tablename__ = "events"
    __table_args__ = (
        # Idempotency is per environment: an id sent to one environment never
        # makes another environment's event a duplicate.
        sa.PrimaryKeyConstraint("environment_id", "client_id", name="events_pkey"),
        # Leading ts after the equality columns: rows arrive roughly in time
        # order, so inserts touch the right edge of each index (cheap), and an
        # experiment's analysis reads one time range per experiment / event.
        sa.Index("ix_events_exposures", "environment_id", "experiment", "ts",
                 postgresql_where=sa.text("type = 'exposure'"), sqlite_where=sa.text("type = 'exposure'")),
        sa.Index("ix_events_tracks", "environment_id", "event", "ts",
                 postgresql_where=sa.text("type = 'track'"), sqlite_where=sa.text("type = 'track'")),
    )

    # The SDK's event id: a replayed event conflicts here and is stored once.
    client_id: Mapped[object] = mapped_column(sa.Uuid)
    # No foreign key: its per-row check cost a fifth of the insert time.
    # Deleting an environment deletes its events (listener below).
    environment_id: Mapped[int] = mapped_column()
    type: Mapped[str] = mapped_column(sa.String(10))  # exposure | track
    ts: Mapped[int] = mapped_column(sa.BigInteger)  # microseconds since the epoch, UTC
    unit: Mapped[str] = mapped_column(sa.String(256))
    # Which context attribute the unit came from (attributes.unit_type, default "id").
    unit_type: Mapped[str] = mapped_column(sa.String(100), default="id")
    experiment: Mapped[str | None] = mapped_column(sa.String(100))
    variation: Mapped[str | None] = mapped_column(sa.String(100))
    event: Mapped[str | None] = mapped_column(sa.String(200))
    value: Mapped[float | None] = mapped_column(sa.Float)
    attributes: Mapped[dict | None] = mapped_column(sa.JSON)


class FlagEvaluation(db.Model):
    """Evaluation counts reported by SDKs, summed per flag, variation and UTC day."""

    __tablename__ = "flag_evaluations"

    environment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    )
    flag: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    variation: Mapped[str] = mapped_column(sa.String(100), primary_key=True)  # "" = none (default served)
    day: Mapped[object] = mapped_column(sa.Date, primary_key=True)
    count: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    last_seen_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)


class FlagUsage(db.Model):
    """When a flag was first and last evaluated in an environment (SDK summaries and remote evaluations)."""

    __tablename__ = "flag_usage"

    environment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    )
    flag: Mapped[str] = mapped_column(sa.String(100), primary_key=True, index=True)
    first_evaluated_at: Mapped[object] = mapped_column(UTCDateTime)
    last_evaluated_at: Mapped[object] = mapped_column(UTCDateTime)


class EvaluationBatch(db.Model):
    """An SDK event batch whose evaluation summaries were counted (its ``batch`` id), so a
    retried batch counts once. Kept for a bounded time (docs/lifecycle.md)."""

    __tablename__ = "evaluation_batches"

    environment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    )
    batch: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    received_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow, index=True)


@sa.event.listens_for(Environment, "after_delete")
def _delete_environment_events(mapper, connection, target) -> None:
    """Events carry no foreign key; remove them with their environment, in the same transaction."""
    connection.execute(sa.delete(Event.__table__).where(Event.__table__.c.environment_id == target.id))
