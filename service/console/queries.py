"""Read-only queries the console needs beyond the domain's (no writes here)."""

from datetime import timedelta

import sqlalchemy as sa

from ..extensions import db
from ..models import Environment, FlagEvaluation
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
