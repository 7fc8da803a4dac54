"""Process models: change requests and their reviews, scheduled changes,
guarded rollouts and their guardrail checks (docs/process.md)."""

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .types import JSONType, UTCDateTime, utcnow

CHANGE_REQUEST_STATES = ("open", "approved", "scheduled", "applied", "rejected", "cancelled", "failed")
SCHEDULE_STATES = ("pending", "applied", "failed", "cancelled")
ROLLOUT_STATES = ("running", "completed", "rolled_back", "cancelled", "failed")


class ChangeRequest(db.Model):
    """A proposed change to a flag's targeting in a protected environment.

    Exactly one of ``targeting`` (a full replacement), ``patch`` (top-level
    fields replacing the live ones when applied), ``rollout`` (a guarded
    rollout to start) and ``experiment`` (an experiment's start, stop or
    conclude: ``{key, action, decision, released_variation}``) is set.
    ``base_version`` is the version the request was written against: the
    flag's, or for an experiment request the experiment's (``experiment_id``);
    ``rollback_version`` names the flag version whose targeting a rollback
    proposal restores. ``revision`` counts edits (approvals count only for
    the current revision)."""

    __tablename__ = "change_requests"
    __table_args__ = (sa.Index("ix_change_requests_flag_env_state", "flag_id", "environment_id", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    flag_id: Mapped[int] = mapped_column(sa.ForeignKey("flags.id", ondelete="CASCADE"))
    environment_id: Mapped[int] = mapped_column(sa.ForeignKey("environments.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(sa.String(20), default="open", index=True)
    author: Mapped[str] = mapped_column(sa.String(200))
    comment: Mapped[str] = mapped_column(sa.Text, default="")
    targeting: Mapped[dict | None] = mapped_column(JSONType)
    patch: Mapped[dict | None] = mapped_column(JSONType)
    rollout: Mapped[dict | None] = mapped_column(JSONType)
    experiment: Mapped[dict | None] = mapped_column(JSONType)
    experiment_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("experiments.id", ondelete="SET NULL"), index=True)
    rollback_version: Mapped[int | None] = mapped_column()
    base_version: Mapped[int] = mapped_column()
    revision: Mapped[int] = mapped_column(default=1)
    bypass: Mapped[bool] = mapped_column(default=False)
    scheduled_at: Mapped[object | None] = mapped_column(UTCDateTime)
    applied_at: Mapped[object | None] = mapped_column(UTCDateTime)
    applied_by: Mapped[str | None] = mapped_column(sa.String(200))
    applied_version: Mapped[int | None] = mapped_column()
    closed_by: Mapped[str | None] = mapped_column(sa.String(200))
    failure_reason: Mapped[str | None] = mapped_column(sa.Text)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    reviews: Mapped[list["ChangeRequestReview"]] = relationship(
        back_populates="change_request", cascade="all, delete-orphan", passive_deletes=True,
        order_by="ChangeRequestReview.id")

    # Concurrent writers of one request (two applies, an apply and an edit)
    # cannot both win: the loser's UPDATE matches no row (StaleDataError).
    __mapper_args__ = {"version_id_col": version}


class ChangeRequestReview(db.Model):
    __tablename__ = "change_request_reviews"
    # A reviewer's decision counts once per revision, even for two racing requests.
    __table_args__ = (sa.UniqueConstraint("change_request_id", "revision", "reviewer", "decision"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    change_request_id: Mapped[int] = mapped_column(sa.ForeignKey("change_requests.id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column()
    reviewer: Mapped[str] = mapped_column(sa.String(200))
    decision: Mapped[str] = mapped_column(sa.String(20))  # approve | reject
    comment: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)

    change_request: Mapped[ChangeRequest] = relationship(back_populates="reviews")


class ScheduledChange(db.Model):
    """A targeting patch, or an approved change request, due at ``at``.

    The worker applies a pending change once ``at`` has passed, in the same
    transaction that marks it applied (or failed, with the reason)."""

    __tablename__ = "scheduled_changes"
    __table_args__ = (sa.Index("ix_scheduled_changes_due", "state", "at"),
                      sa.Index("ix_scheduled_changes_flag", "flag_id", "state"))

    id: Mapped[int] = mapped_column(primary_key=True)
    flag_id: Mapped[int] = mapped_column(sa.ForeignKey("flags.id", ondelete="CASCADE"))
    environment_id: Mapped[int] = mapped_column(sa.ForeignKey("environments.id", ondelete="CASCADE"), index=True)
    at: Mapped[object] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(sa.String(20), default="pending")
    patch: Mapped[dict | None] = mapped_column(JSONType)
    change_request_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("change_requests.id", ondelete="CASCADE"), index=True)
    author: Mapped[str] = mapped_column(sa.String(200))
    comment: Mapped[str] = mapped_column(sa.Text, default="")
    applied_at: Mapped[object | None] = mapped_column(UTCDateTime)
    applied_by: Mapped[str | None] = mapped_column(sa.String(200))  # the worker
    applied_version: Mapped[int | None] = mapped_column()
    failure_reason: Mapped[str | None] = mapped_column(sa.Text)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __mapper_args__ = {"version_id_col": version}


class Rollout(db.Model):
    """A guarded rollout of ``variation`` over ``from_variation`` on a flag's fallthrough.

    Traffic moves through a system-owned experiment (``experiment_id``) whose
    rule the rollout adds at the end of the targeting's rules; see
    service/domain/rollouts.py for how its traffic realises each step."""

    __tablename__ = "rollouts"
    __table_args__ = (sa.Index("ix_rollouts_due", "state", "next_check_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    flag_id: Mapped[int] = mapped_column(sa.ForeignKey("flags.id", ondelete="CASCADE"), index=True)
    environment_id: Mapped[int] = mapped_column(sa.ForeignKey("environments.id", ondelete="CASCADE"), index=True)
    experiment_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("experiments.id", ondelete="SET NULL"), unique=True)
    state: Mapped[str] = mapped_column(sa.String(20), default="running")
    variation: Mapped[str] = mapped_column(sa.String(100))
    from_variation: Mapped[str] = mapped_column(sa.String(100))
    steps: Mapped[list] = mapped_column(JSONType)  # [{"percent", "hold_hours"}]
    guardrails: Mapped[list] = mapped_column(JSONType, default=list)  # metric keys
    alpha: Mapped[float] = mapped_column(sa.Float, default=0.05)
    step_index: Mapped[int] = mapped_column(default=0)
    step_started_at: Mapped[object] = mapped_column(UTCDateTime)
    next_check_at: Mapped[object | None] = mapped_column(UTCDateTime)
    last_checked_at: Mapped[object | None] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(sa.Text)
    author: Mapped[str] = mapped_column(sa.String(200))
    comment: Mapped[str] = mapped_column(sa.Text, default="")
    finished_at: Mapped[object | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __mapper_args__ = {"version_id_col": version}


class RolloutCheck(db.Model):
    """One evaluation of a rollout's guardrails: the numbers behind each decision."""

    __tablename__ = "rollout_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    rollout_id: Mapped[int] = mapped_column(sa.ForeignKey("rollouts.id", ondelete="CASCADE"), index=True)
    checked_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    step_index: Mapped[int] = mapped_column()
    percent: Mapped[float] = mapped_column(sa.Float)
    decision: Mapped[str] = mapped_column(sa.String(20))  # hold | advance | complete | rollback
    units: Mapped[dict] = mapped_column(JSONType, default=dict)  # {variation: n}
    metrics: Mapped[list] = mapped_column(JSONType, default=list)  # one entry per guardrail
