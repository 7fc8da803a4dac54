"""Programme insights: the KPIs of ``GET /api/v1/insights`` (docs/lifecycle.md, "Insights").

Every figure is one SQL aggregate, the same statement on SQLite and
PostgreSQL: two small constructs render the only dialect-specific parts
(:class:`days_between` and :class:`month_of`), and medians use window
functions (``ROW_NUMBER``/``COUNT`` over the group; the middle one or two
rows averaged). Each KPI comes as ``{"value", "series"}``: the value over the
period ``[from, to)`` and one point per calendar month (UTC) the period
touches, computed on the part of the month inside the period.

Definitions (for the environment asked, production by default):

* experiments: those of the environment, excluding the experiments guarded
  rollouts own (a rollout guards against harm, it does not decide);
  ``started`` by ``started_at``, ``concluded`` by ``concluded_at``, outcomes
  from the decision, ``win_rate`` = ship / concluded,
  ``median_days_to_decision`` = concluded_at - started_at of those concluded;
* releases: ``flags_created`` (any environment) by ``created_at``;
  ``changes_per_week``: targeting changes in the environment per 7 days;
  ``median_days_to_full_rollout``: for each flag whose *first* full rollout
  in the environment (the first targeting change after which it is on and
  serves everyone one variation other than its off variation; recorded in
  ``targeting_changes``, derived from the flag's versions) falls in the
  period, the days since the flag was created; ``rollbacks``: flag rollback
  calls that changed the environment's targeting + guarded rollouts rolled
  back + experiments concluded ``rollback``;
* decisions: of the flags whose first full rollout falls in the period,
  the share that had a concluded experiment on the flag in the environment
  at that moment (concluded at or before it): data-driven releases;
* hygiene: live flags now potentially stale / ready to archive (stages are
  not kept over time: the series has one point, the current month).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from ..extensions import db
from ..models import Environment, Experiment, Flag, Rollout, TargetingChange
from ..models.types import utcnow
from . import lifecycle
from .environments import get as get_environment
from .errors import NotFound, ValidationFailed

DEFAULT_DAYS = 90
MAX_DAYS = 3 * 366
OUTCOMES = ("ship", "rollback", "iterate")


# ---------------------------------------------------------------- dialect-specific pieces

class days_between(FunctionElement):
    """Days (fractional) from the second timestamp to the first."""

    type = sa.Float()
    name = "days_between"
    inherit_cache = True


@compiles(days_between)
def _days_sqlite(element, compiler, **kw):
    end, start = list(element.clauses)
    return f"(julianday({compiler.process(end, **kw)}) - julianday({compiler.process(start, **kw)}))"


@compiles(days_between, "postgresql")
def _days_postgresql(element, compiler, **kw):
    end, start = list(element.clauses)
    return f"(EXTRACT(EPOCH FROM ({compiler.process(end, **kw)} - {compiler.process(start, **kw)})) / 86400.0)"


class month_of(FunctionElement):
    """``YYYY-MM`` of a timestamp, in UTC."""

    type = sa.String()
    name = "month_of"
    inherit_cache = True


@compiles(month_of)
def _month_sqlite(element, compiler, **kw):
    return f"strftime('%Y-%m', {compiler.process(list(element.clauses)[0], **kw)})"


@compiles(month_of, "postgresql")
def _month_postgresql(element, compiler, **kw):
    return f"to_char({compiler.process(list(element.clauses)[0], **kw)} AT TIME ZONE 'UTC', 'YYYY-MM')"


# ---------------------------------------------------------------- helpers

def months(start: datetime, end: datetime) -> list[str]:
    out, year, month = [], start.year, start.month
    last = (end - timedelta(microseconds=1))
    while (year, month) <= (last.year, last.month):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _month_bounds(month: str) -> tuple[datetime, datetime]:
    year, number = int(month[:4]), int(month[5:])
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + (number == 12), 1 if number == 12 else number + 1, 1, tzinfo=UTC)
    return start, end


def _counts(stmt, column) -> tuple[int, dict[str, int]]:
    """(total, {month: count}) of the rows of ``stmt`` (a SELECT with its WHERE), by month of ``column``."""
    month = month_of(column).label("month")
    rows = db.session.execute(stmt.with_only_columns(month, sa.func.count(), maintain_column_froms=True)
                              .group_by(month)).all()
    by_month = {m: int(n) for m, n in rows}
    return sum(by_month.values()), by_month


def _median(values, group=None) -> dict:
    """{group: median} of ``values`` (a subquery with columns ``v`` and, with ``group``, ``g``)."""
    partition = [values.c.g] if group else []
    ranked = sa.select(
        *( [values.c.g] if group else []), values.c.v,
        sa.func.row_number().over(partition_by=partition, order_by=values.c.v).label("rn"),
        sa.func.count().over(partition_by=partition).label("n")).subquery()
    middle = sa.and_(2 * ranked.c.rn >= ranked.c.n, 2 * ranked.c.rn <= ranked.c.n + 2)
    if group:
        rows = db.session.execute(sa.select(ranked.c.g, sa.func.avg(ranked.c.v)).where(middle)
                                  .group_by(ranked.c.g)).all()
        return {g: float(v) for g, v in rows}
    value = db.session.scalar(sa.select(sa.func.avg(ranked.c.v)).where(middle))
    return {None: None if value is None else float(value)}


def _medians(values_stmt, when, value) -> tuple[float | None, dict[str, float]]:
    """(median over the period, {month: median}) of ``value`` for the rows of ``values_stmt``."""
    overall = values_stmt.with_only_columns(value.label("v"), maintain_column_froms=True).subquery()
    monthly = values_stmt.with_only_columns(month_of(when).label("g"), value.label("v"),
                                            maintain_column_froms=True).subquery()
    return _median(overall)[None], _median(monthly, group=True)


def _kpi(value, by_month: dict, all_months: list[str], default=0) -> dict:
    return {"value": value, "series": [{"month": m, "value": by_month.get(m, default)} for m in all_months]}


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _in(column, start: datetime, end: datetime):
    return sa.and_(column >= start, column < end)


# ---------------------------------------------------------------- the KPIs

def _owned_by_rollout():
    return sa.exists().where(Rollout.experiment_id == Experiment.id)


def _experiments(env: Environment, start: datetime, end: datetime, all_months: list[str]) -> dict:
    mine = sa.select(Experiment.id).where(Experiment.environment_id == env.id, ~_owned_by_rollout())
    started, started_m = _counts(mine.where(_in(Experiment.started_at, start, end)), Experiment.started_at)
    concluded_stmt = mine.where(Experiment.status == "concluded", _in(Experiment.concluded_at, start, end))
    concluded, concluded_m = _counts(concluded_stmt, Experiment.concluded_at)
    outcome = Experiment.decision["outcome"].as_string()
    by_outcome = {}
    for name in OUTCOMES:
        total, monthly = _counts(concluded_stmt.where(outcome == name), Experiment.concluded_at)
        by_outcome[name] = _kpi(total, monthly, all_months)
    ship, ship_m = by_outcome["ship"]["value"], {p["month"]: p["value"] for p in by_outcome["ship"]["series"]}
    median, median_m = _medians(concluded_stmt, Experiment.concluded_at,
                                days_between(Experiment.concluded_at, Experiment.started_at))
    return {
        "started": _kpi(started, started_m, all_months),
        "concluded": _kpi(concluded, concluded_m, all_months),
        "by_outcome": by_outcome,
        "win_rate": _kpi(_ratio(ship, concluded), {m: _ratio(ship_m.get(m, 0), concluded_m.get(m, 0))
                                                   for m in all_months}, all_months, None),
        "median_days_to_decision": _kpi(median, median_m, all_months, None),
    }


def _first_full_rollouts(env: Environment):
    """Per flag, the first moment the environment's targeting was a full rollout (a subquery)."""
    return (sa.select(TargetingChange.flag_id.label("flag_id"), sa.func.min(TargetingChange.changed_at).label("at"))
            .where(TargetingChange.environment_id == env.id, TargetingChange.full_rollout.is_(True))
            .group_by(TargetingChange.flag_id).subquery())


def _releases(env: Environment, start: datetime, end: datetime, all_months: list[str]) -> dict:
    created, created_m = _counts(sa.select(Flag.id).where(_in(Flag.created_at, start, end)), Flag.created_at)
    in_env = sa.select(TargetingChange.id).where(TargetingChange.environment_id == env.id)
    changes, changes_m = _counts(in_env.where(_in(TargetingChange.changed_at, start, end)), TargetingChange.changed_at)
    weeks = (end - start).total_seconds() / (7 * 86400)
    per_week_m = {}
    for month in all_months:
        m_start, m_end = _month_bounds(month)
        overlap = (min(end, m_end) - max(start, m_start)).total_seconds() / (7 * 86400)
        per_week_m[month] = changes_m.get(month, 0) / overlap if overlap > 0 else None
    first = _first_full_rollouts(env)
    full = sa.select(first.c.flag_id).join(Flag, Flag.id == first.c.flag_id).where(_in(first.c.at, start, end))
    median, median_m = _medians(full, first.c.at, days_between(first.c.at, Flag.created_at))
    calls, calls_m = _counts(in_env.where(TargetingChange.action == "rollback",
                                          _in(TargetingChange.changed_at, start, end)), TargetingChange.changed_at)
    guarded, guarded_m = _counts(sa.select(Rollout.id).where(Rollout.environment_id == env.id,
                                                             Rollout.state == "rolled_back",
                                                             _in(Rollout.finished_at, start, end)), Rollout.finished_at)
    rolled, rolled_m = _counts(sa.select(Experiment.id).where(
        Experiment.environment_id == env.id, ~_owned_by_rollout(), Experiment.status == "concluded",
        Experiment.decision["outcome"].as_string() == "rollback", _in(Experiment.concluded_at, start, end)),
        Experiment.concluded_at)
    rollbacks_m = {m: calls_m.get(m, 0) + guarded_m.get(m, 0) + rolled_m.get(m, 0) for m in all_months}
    return {
        "flags_created": _kpi(created, created_m, all_months),
        "changes_per_week": _kpi(changes / weeks if weeks else None, per_week_m, all_months, None),
        "median_days_to_full_rollout": _kpi(median, median_m, all_months, None),
        "rollbacks": {**_kpi(calls + guarded + rolled, rollbacks_m, all_months),
                      "breakdown": {"calls": calls, "guarded_rollouts": guarded, "experiments": rolled}},
    }


def _decisions(env: Environment, start: datetime, end: datetime, all_months: list[str]) -> dict:
    first = _first_full_rollouts(env)
    decided = sa.exists().where(
        Experiment.flag_id == first.c.flag_id, Experiment.environment_id == env.id, ~_owned_by_rollout(),
        Experiment.status == "concluded", Experiment.concluded_at <= first.c.at)
    releases = sa.select(first.c.flag_id).where(_in(first.c.at, start, end))
    total, total_m = _counts(releases, first.c.at)
    driven, driven_m = _counts(releases.where(decided), first.c.at)
    share = _kpi(_ratio(driven, total), {m: _ratio(driven_m.get(m, 0), total_m.get(m, 0)) for m in all_months},
                 all_months, None)
    return {"data_driven_share": {**share, "releases": total, "data_driven": driven}}


def _hygiene(all_months: list[str], now: datetime) -> dict:
    stages = lifecycle.counts(now)
    current = f"{now.year:04d}-{now.month:02d}"
    return {name: {"value": stages[name], "series": [{"month": current, "value": stages[name]}]}
            for name in ("potentially_stale", "ready_to_archive")}


def insights(*, environment: str = "production", start: datetime | None = None, end: datetime | None = None,
             now: datetime | None = None) -> dict:
    """The KPIs for ``environment`` over ``[start, end)`` (default: the 90 days up to now)."""
    now = now or utcnow()
    end = end or now
    start = start or end - timedelta(days=DEFAULT_DAYS)
    if start >= end:
        raise ValidationFailed("from must be before to.", {"from": [f"{start.isoformat()} is not before "
                                                                     f"{end.isoformat()}."]})
    if end - start > timedelta(days=MAX_DAYS):
        raise ValidationFailed(f"The period is at most {MAX_DAYS} days.", {"from": ["Too long a period."]})
    try:
        env = get_environment(environment)
    except NotFound:
        raise ValidationFailed(f"Unknown environment '{environment}'.",
                               {"environment": [f"Environment '{environment}' does not exist."]}) from None
    all_months = months(start, end)
    return {
        "environment": env.key, "from": start, "to": end, "months": all_months,
        "experiments": _experiments(env, start, end, all_months),
        "releases": _releases(env, start, end, all_months),
        "decisions": _decisions(env, start, end, all_months),
        "hygiene": _hygiene(all_months, now),
    }
