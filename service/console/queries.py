"""Read-only queries the console needs beyond the domain's (no writes here)."""

from datetime import timedelta

import sqlalchemy as sa

from ..domain.pagination import Page, paginate
from ..extensions import db
from ..models import (
    ChangeRequest,
    ChangeRequestReview,
    Environment,
    FlagEvaluation,
    Rollout,
    RolloutCheck,
    ScheduledChange,
)
from ..models.types import utcnow


def environments() -> list[Environment]:
    return list(db.session.scalars(sa.select(Environment).order_by(Environment.id)))


def evaluation_stats(flag_keys: list[str], days: int = 7) -> dict:
    """{(flag, environment_id): (last evaluated at, evaluations in the last ``days`` UTC days)}
    from the per-day counts SDKs report (``flag_evaluations``)."""
    if not flag_keys:
        return {}
    since = (utcnow() - timedelta(days=days - 1)).date()
    recent = sa.func.sum(sa.case((FlagEvaluation.day >= since, FlagEvaluation.count), else_=0))
    rows = db.session.execute(
        sa.select(FlagEvaluation.flag, FlagEvaluation.environment_id, sa.func.max(FlagEvaluation.last_seen_at),
                  recent)
        .where(FlagEvaluation.flag.in_(flag_keys))
        .group_by(FlagEvaluation.flag, FlagEvaluation.environment_id)).all()
    return {(flag, env_id): (last, int(count or 0)) for flag, env_id, last, count in rows}


# ---------------------------------------------------------------- process (change requests, schedules, rollouts)

ACTIVE_REQUEST_STATES = ("open", "approved", "scheduled")


def active_change_requests(flag_id: int, limit: int = 200) -> list[ChangeRequest]:
    """A flag's change requests still in play (open, approved, scheduled), newest first."""
    return list(db.session.scalars(
        sa.select(ChangeRequest).where(ChangeRequest.flag_id == flag_id,
                                       ChangeRequest.state.in_(ACTIVE_REQUEST_STATES))
        .order_by(ChangeRequest.id.desc()).limit(limit)))


def awaiting_review(reviewer: str, limit: int = 20) -> tuple[list[ChangeRequest], int]:
    """Open change requests ``reviewer`` may review and has not approved in their current
    revision (newest first, at most ``limit``), and how many there are in all."""
    approved = sa.exists().where(ChangeRequestReview.change_request_id == ChangeRequest.id,
                                 ChangeRequestReview.revision == ChangeRequest.revision,
                                 ChangeRequestReview.reviewer == reviewer)
    where = (ChangeRequest.state == "open", ChangeRequest.author != reviewer, ~approved)
    items = list(db.session.scalars(sa.select(ChangeRequest).where(*where)
                                    .order_by(ChangeRequest.id.desc()).limit(limit)))
    total = db.session.scalar(sa.select(sa.func.count()).select_from(ChangeRequest).where(*where))
    return items, int(total or 0)


def pending_schedule_of(change_request_id: int) -> ScheduledChange | None:
    """The pending scheduled change of a scheduled change request."""
    return db.session.scalars(sa.select(ScheduledChange).where(
        ScheduledChange.change_request_id == change_request_id, ScheduledChange.state == "pending")).first()


def all_schedules(*, state: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
    """Scheduled changes of every flag, newest first (the domain lists them per flag)."""
    stmt = sa.select(ScheduledChange)
    if state:
        stmt = stmt.where(ScheduledChange.state == state)
    return paginate(stmt, ScheduledChange.id, limit=limit, cursor=cursor, descending=True)


def all_rollouts(*, state: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
    """Guarded rollouts of every flag, newest first (the domain lists them per flag)."""
    stmt = sa.select(Rollout)
    if state:
        stmt = stmt.where(Rollout.state == state)
    return paginate(stmt, Rollout.id, limit=limit, cursor=cursor, descending=True)


def rollout_checks(rollout_id: int, limit: int = 2000) -> list[RolloutCheck]:
    """The latest ``limit`` checks of a rollout, oldest first (the series a guardrail plot draws)."""
    rows = list(db.session.scalars(sa.select(RolloutCheck).where(RolloutCheck.rollout_id == rollout_id)
                                   .order_by(RolloutCheck.id.desc()).limit(limit)))
    return rows[::-1]
