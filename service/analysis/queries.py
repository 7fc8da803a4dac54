"""SQL aggregation for experiment analysis (docs/analysis.md), SQLAlchemy Core.

Events are reduced to per-variation (and per-dimension-value) *sufficient
statistics* inside the database; no per-event or per-unit row reaches
Python. The same statements run on SQLite and PostgreSQL (timestamps are
integer microseconds, so windows are integer arithmetic; the only dialect-
specific rendering is the JSON path of a dimension attribute).

Steps, as common table expressions:

``units``
    the experiment's exposures (its environment, variations in the
    experiment, ``ts <= end`` when it has stopped) grouped by unit: first
    exposure time, and min/max variation. A unit whose min and max differ saw
    more than one variation: it is excluded and counted.
``dims`` (only with a dimension)
    the dimension attribute of each unit's *first* exposure.
``per_unit``
    each included unit LEFT JOINed to the track events of the metrics'
    events (same environment, ``unit_type`` = the experiment's unit, same
    unit, ``first_ts - pre <= ts``, ``ts <= end``), aggregated per unit with
    one conditional aggregate per metric quantity:

    * conversion ``y = max(event in window)`` (0/1), count ``y = #events in
      window``, mean ``y = sum(coalesce(value, 1))`` in window;
    * ratio: numerator as mean, denominator = #denominator events in window;
    * CUPED: ``x`` = the same quantity in ``[first_ts - cuped, first_ts)``.

    The window of a metric is ``[first_ts, first_ts + window)`` (no upper
    bound but ``end`` when ``window_hours`` is null). Units without events
    get 0.
``caps`` (winsorized metrics)
    the cap of a quantity is its ``q`` quantile over the per-unit values of
    all included units, linearly interpolated as ``percentile_cont``:
    the two values around rank ``(n - 1) q`` come from ``ORDER BY y DESC
    LIMIT 2 OFFSET k`` (a short top-N for high quantiles; portable, unlike
    percentile_cont).
final
    ``GROUP BY variation[, dimension]``: ``count(*)`` and, per quantity,
    ``sum(y)``, ``sum(y*y)`` (capped values ``CASE WHEN y > cap THEN cap ELSE
    y END``), plus ``sum(num*den)`` for ratios and ``sum(x)``, ``sum(x*x)``,
    ``sum(x*y)`` for CUPED.

Sums are additive, so totals over dimension values are the overall
statistics (caps are computed over all units either way).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from ..models import Event
from ..models.event import EXPOSURE, TRACK
from .sums import MetricSums

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR

events = Event.__table__


@dataclass(frozen=True)
class Scope:
    """Which exposures belong to the experiment."""

    environment_id: int
    experiment: str
    variations: tuple[str, ...]
    unit_type: str = "id"
    end_us: int | None = None  # stop time: later exposures and events are ignored


@dataclass(frozen=True)
class MetricSpec:
    key: str
    type: str  # conversion | mean | count | ratio
    event: str
    denominator: str | None = None
    window_us: int | None = None
    winsorize: float | None = None
    cuped_us: int | None = None  # pre-exposure window length when CUPED applies


@dataclass
class UnitCounts:
    units: dict  # {(variation, dimension_value): n}; dimension_value None without a dimension
    multiple_exposures: int
    first_us: int | None  # earliest first exposure


def _plan_for_aggregation(connection) -> None:
    """PostgreSQL: no nested-loop joins for the rest of this transaction.

    These statements join whole sets (all units of an experiment to their
    events). On tables whose statistics lag behind (freshly loaded, not yet
    auto-analysed) the planner estimates one row per CTE and picks nested
    loops, which turn quadratic (seconds for a few thousand units); hash and
    merge joins are right at every size here. ``SET LOCAL`` ends with the
    transaction.
    """
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL enable_nestloop = off")


def dimension_expr(name: str):
    """The dimension attribute of an exposure as text (JSON path; dialect-specific rendering)."""
    return events.c.attributes[name].as_string()


def _units_cte(scope: Scope):
    e = events.c
    conditions = [e.environment_id == scope.environment_id, e.type == EXPOSURE, e.experiment == scope.experiment,
                  e.variation.in_(scope.variations)]
    if scope.end_us is not None:
        conditions.append(e.ts <= scope.end_us)
    return (
        sa.select(e.unit.label("unit"), sa.func.min(e.ts).label("first_ts"),
                  sa.func.min(e.variation).label("variation"), sa.func.max(e.variation).label("variation_max"))
        .where(*conditions)
        .group_by(e.unit)
        .cte("units")
    )


def _dims_cte(scope: Scope, units, dimension: str):
    """Per unit: the dimension value of its first exposure (smallest value on ties)."""
    e = events.c
    conditions = [e.environment_id == scope.environment_id, e.type == EXPOSURE, e.experiment == scope.experiment,
                  e.variation.in_(scope.variations)]
    return (
        sa.select(e.unit.label("unit"), sa.func.min(dimension_expr(dimension)).label("dim"))
        .select_from(events.join(units, sa.and_(e.unit == units.c.unit, e.ts == units.c.first_ts)))
        .where(*conditions)
        .group_by(e.unit)
        .cte("dims")
    )


def unit_counts(connection, scope: Scope, dimension: str | None = None) -> UnitCounts:
    """Included units per (variation, dimension value), units with several variations, first exposure."""
    _plan_for_aggregation(connection)
    units = _units_cte(scope)
    multiple = units.c.variation != units.c.variation_max
    # Multiple-exposure units all land in one group (variation NULL).
    variation = sa.case((multiple, sa.null()), else_=units.c.variation).label("v")
    if dimension is None:
        stmt = sa.select(variation, sa.null().label("dim"), sa.func.count().label("n"),
                         sa.func.min(units.c.first_ts).label("first_ts")).group_by(variation)
    else:
        dims = _dims_cte(scope, units, dimension)
        dim = dims.c.dim.label("dim")
        stmt = (sa.select(variation, dim, sa.func.count().label("n"), sa.func.min(units.c.first_ts).label("first_ts"))
                .select_from(units.outerjoin(dims, dims.c.unit == units.c.unit))
                .group_by(variation, dim))
    counts: dict = {}
    multiple_n = 0
    first = None
    for v, dim, n, first_ts in connection.execute(stmt):
        if v is None:
            multiple_n += n
        else:
            counts[(v, _dim_value(dim))] = counts.get((v, _dim_value(dim)), 0) + n
        if first_ts is not None:
            first = first_ts if first is None else min(first, first_ts)
    return UnitCounts(counts, multiple_n, first)


def _dim_value(value) -> str | None:
    return None if value is None else str(value)


# --------------------------------------------------------------------------- metrics


def _quantities(metric: MetricSpec, t, first_ts):
    """(y, d, x) per-unit aggregate expressions (d and x None when not needed)."""
    upper = [] if metric.window_us is None else [t.c.ts < first_ts + metric.window_us]
    post = sa.and_(t.c.event == metric.event, t.c.ts >= first_ts, *upper)
    one, zero = sa.literal(1.0), sa.literal(0.0)
    value = sa.func.coalesce(t.c.value, one)

    def amount(condition):
        if metric.type == "conversion":
            return sa.func.max(sa.case((condition, one), else_=zero))
        if metric.type == "count":
            return sa.func.sum(sa.case((condition, one), else_=zero))
        return sa.func.sum(sa.case((condition, value), else_=zero))

    y = amount(post)
    d = x = None
    if metric.type == "ratio":
        den_upper = [] if metric.window_us is None else [t.c.ts < first_ts + metric.window_us]
        d = sa.func.sum(sa.case((sa.and_(t.c.event == metric.denominator, t.c.ts >= first_ts, *den_upper), one),
                                else_=zero))
    elif metric.cuped_us:
        x = amount(sa.and_(t.c.event == metric.event, t.c.ts < first_ts, t.c.ts >= first_ts - metric.cuped_us))
    return y, d, x


def _per_unit_cte(scope: Scope, metrics: Sequence[MetricSpec], units, dims, lower_us: int | None):
    t = events.alias("t")
    included = units.c.variation == units.c.variation_max
    pre = max((m.cuped_us or 0) for m in metrics)
    event_keys = sorted({m.event for m in metrics} | {m.denominator for m in metrics if m.denominator})
    on = [t.c.environment_id == scope.environment_id, t.c.type == TRACK, t.c.unit_type == scope.unit_type,
          t.c.unit == units.c.unit, t.c.event.in_(event_keys), t.c.ts >= units.c.first_ts - pre]
    if lower_us is not None:
        on.append(t.c.ts >= lower_us - pre)  # a constant bound: lets the index range-scan
    if scope.end_us is not None:
        on.append(t.c.ts <= scope.end_us)
    columns = [units.c.unit, units.c.variation]
    group = [units.c.unit, units.c.variation]
    source = units
    if dims is not None:
        source = source.outerjoin(dims, dims.c.unit == units.c.unit)
        columns.append(dims.c.dim.label("dim"))
        group.append(dims.c.dim)
    else:
        columns.append(sa.null().label("dim"))
    for i, metric in enumerate(metrics):
        y, d, x = _quantities(metric, t, units.c.first_ts)
        columns.append(y.label(f"y{i}"))
        if d is not None:
            columns.append(d.label(f"d{i}"))
        if x is not None:
            columns.append(x.label(f"x{i}"))
    source = source.outerjoin(t, sa.and_(*on))
    return sa.select(*columns).select_from(source).where(included).group_by(*group).cte("per_unit")


def _cap_subquery(per_unit, column: str, n: int, quantile: float):
    """Scalar subquery: the ``quantile`` of ``column`` over ``n`` per-unit rows (percentile_cont)."""
    h = (n - 1) * quantile
    i = math.floor(h)
    frac = h - i
    offset = max(n - 2 - i, 0)
    col = per_unit.c[column]
    top = sa.select(col.label("v")).order_by(col.desc()).limit(2 if i + 1 <= n - 1 else 1).offset(offset).subquery()
    lo, hi = sa.func.min(top.c.v), sa.func.max(top.c.v)
    return sa.select(lo + sa.literal(frac) * (hi - lo)).scalar_subquery()


def metric_sums(connection, scope: Scope, metrics: Sequence[MetricSpec], *, n_units: int,
                first_us: int | None, dimension: str | None = None) -> dict:
    """``{(variation, dimension value): {metric key: MetricSums}}``: the sufficient statistics of
    every metric per cell, in one statement (dimension value None without a dimension)."""
    result: dict = {}
    if not metrics or n_units == 0:
        return result
    _plan_for_aggregation(connection)
    units = _units_cte(scope)
    dims = _dims_cte(scope, units, dimension) if dimension else None
    per_unit = _per_unit_cte(scope, metrics, units, dims, first_us)

    cap_exprs = []
    for i, metric in enumerate(metrics):
        if metric.winsorize is None or metric.type == "conversion" or n_units < 2:
            continue
        for part in ("y", "d", "x"):
            name = f"{part}{i}"
            if name in per_unit.c:
                cap_exprs.append(_cap_subquery(per_unit, name, n_units, metric.winsorize).label(f"cap_{name}"))
    # One row of caps, joined once: each cap's top-N runs once.
    caps = sa.select(*cap_exprs).cte("caps") if cap_exprs else None

    def capped(name):
        col = per_unit.c[name]
        if caps is None or f"cap_{name}" not in caps.c:
            return col
        cap = caps.c[f"cap_{name}"]
        return sa.case((col > cap, cap), else_=col)

    columns = [per_unit.c.variation, per_unit.c.dim, sa.func.count().label("n")]
    layout = []
    for i, metric in enumerate(metrics):
        y = capped(f"y{i}")
        parts = [("sum_y", y), ("sum_y2", y * y)]
        if f"d{i}" in per_unit.c:
            d = capped(f"d{i}")
            parts += [("sum_d", d), ("sum_d2", d * d), ("sum_yd", y * d)]
        if f"x{i}" in per_unit.c:
            x = capped(f"x{i}")
            parts += [("sum_x", x), ("sum_x2", x * x), ("sum_xy", x * y)]
        for name, expr in parts:
            label = f"{name}_{i}"
            columns.append(sa.func.sum(expr).label(label))
            layout.append((metric.key, name, label))
    stmt = sa.select(*columns).group_by(per_unit.c.variation, per_unit.c.dim)
    if caps is not None:
        stmt = stmt.select_from(per_unit.join(caps, sa.true()))
    for row in connection.execute(stmt).mappings():
        cell = result.setdefault((row["variation"], _dim_value(row["dim"])), {})
        for metric in metrics:
            cell.setdefault(metric.key, MetricSums(n=int(row["n"])))
        for key, name, label in layout:
            setattr(cell[key], name, float(row[label] or 0.0))
    return result


# --------------------------------------------------------------------------- exposures export


def first_exposures(connection, scope: Scope, dimensions: Sequence[str], *, batch: int = 5000) -> Iterator[tuple]:
    """Rows (unit, variation, first_ts_us, variations_seen, *dimension values), streamed.

    ``variation`` is the variation of the unit's first exposure (ties: the
    smallest key); ``variations_seen`` > 1 marks units excluded from the
    analysis for seeing several variations.
    """
    _plan_for_aggregation(connection)
    units = _units_cte(scope)
    e = events.c
    first = (
        sa.select(e.unit.label("unit"), sa.func.min(e.variation).label("variation"),
                  *[sa.func.min(dimension_expr(d)).label(f"dim{i}") for i, d in enumerate(dimensions)])
        .select_from(events.join(units, sa.and_(e.unit == units.c.unit, e.ts == units.c.first_ts)))
        .where(e.environment_id == scope.environment_id, e.type == EXPOSURE, e.experiment == scope.experiment,
               e.variation.in_(scope.variations))
        .group_by(e.unit)
        .subquery()
    )
    seen = sa.case((units.c.variation == units.c.variation_max, 1), else_=2)
    stmt = (
        sa.select(units.c.unit, first.c.variation, units.c.first_ts, seen,
                  *[first.c[f"dim{i}"] for i in range(len(dimensions))])
        .select_from(units.join(first, first.c.unit == units.c.unit))
        .order_by(units.c.first_ts, units.c.unit)
    )
    result = connection.execution_options(stream_results=True, yield_per=batch).execute(stmt)
    try:
        yield from result
    finally:
        result.close()


# --------------------------------------------------------------------------- daily cumulative series


def daily_deltas(connection, scope: Scope, metric: MetricSpec, *, first_us: int | None) -> dict:
    """``{(variation, utc_day): MetricSums}``: the sufficient statistics of ``metric``
    restricted to what was known at the end of each UTC day, as day-by-day changes.

    The cumulative statistic at day D is the sum of the deltas of days <= D.
    Sums of squares are not additive over days, but their *changes* are: a
    unit whose running total moves from ``r - c`` to ``r`` on a day adds
    ``f(r)^2 - f(r - c)^2`` to sum(y^2) (``f`` caps conversions at 1). So one
    grouped pass over (unit, day) rows that have events, with a running sum
    per unit (window function, SQLite >= 3.25 and PostgreSQL alike), gives the
    whole series; units add to ``n`` on the day of their first exposure.
    Unadjusted (no CUPED) and uncapped (no winsorization): a cap depends on
    the final distribution.
    """
    result: dict = {}
    _plan_for_aggregation(connection)
    units = _units_cte(scope)
    included = units.c.variation == units.c.variation_max
    entered = units.c.first_ts // US_PER_DAY
    for v, day, n in connection.execute(
            sa.select(units.c.variation, entered.label("day"), sa.func.count()).where(included)
            .group_by(units.c.variation, entered)):
        result[(v, int(day))] = MetricSums(n=int(n))

    t = events.alias("t")
    first_ts = units.c.first_ts
    upper = [] if metric.window_us is None else [t.c.ts < first_ts + metric.window_us]
    keys = [metric.event] + ([metric.denominator] if metric.type == "ratio" and metric.denominator else [])
    on = [t.c.environment_id == scope.environment_id, t.c.type == TRACK, t.c.unit_type == scope.unit_type,
          t.c.unit == units.c.unit, t.c.event.in_(keys), t.c.ts >= first_ts, *upper]
    if first_us is not None:
        on.append(t.c.ts >= first_us)  # a constant bound: lets the index range-scan
    if scope.end_us is not None:
        on.append(t.c.ts <= scope.end_us)
    one, zero = sa.literal(1.0), sa.literal(0.0)
    is_num = t.c.event == metric.event
    if metric.type in ("conversion", "count"):
        c = sa.func.sum(sa.case((is_num, one), else_=zero))
    else:
        c = sa.func.sum(sa.case((is_num, sa.func.coalesce(t.c.value, one)), else_=zero))
    day = (t.c.ts // US_PER_DAY).label("day")
    columns = [units.c.unit, units.c.variation, day, c.label("c")]
    if metric.type == "ratio":
        columns.append(sa.func.sum(sa.case((t.c.event == metric.denominator, one), else_=zero)).label("cd"))
    daily = (sa.select(*columns).select_from(units.join(t, sa.and_(*on))).where(included)
             .group_by(units.c.unit, units.c.variation, day).cte("daily"))

    def running(col):
        return sa.func.sum(col).over(partition_by=daily.c.unit, order_by=daily.c.day, rows=(None, 0))

    run_columns = [daily.c.variation, daily.c.day, daily.c.c, running(daily.c.c).label("r")]
    if metric.type == "ratio":
        run_columns += [daily.c.cd, running(daily.c.cd).label("rd")]
    run = sa.select(*run_columns).cte("running")

    def f(expr):
        return sa.case((expr > 0, one), else_=zero) if metric.type == "conversion" else expr

    now_y, before_y = f(run.c.r), f(run.c.r - run.c.c)
    parts = [sa.func.sum(now_y - before_y).label("dy"),
             sa.func.sum(now_y * now_y - before_y * before_y).label("dy2")]
    if metric.type == "ratio":
        now_d, before_d = run.c.rd, run.c.rd - run.c.cd
        parts += [sa.func.sum(now_d - before_d).label("dd"),
                  sa.func.sum(now_d * now_d - before_d * before_d).label("dd2"),
                  sa.func.sum(now_y * now_d - before_y * before_d).label("dyd")]
    stmt = sa.select(run.c.variation, run.c.day, *parts).group_by(run.c.variation, run.c.day)
    for row in connection.execute(stmt).mappings():
        cell = result.setdefault((row["variation"], int(row["day"])), MetricSums())
        cell.sum_y += float(row["dy"] or 0.0)
        cell.sum_y2 += float(row["dy2"] or 0.0)
        if metric.type == "ratio":
            cell.sum_d += float(row["dd"] or 0.0)
            cell.sum_d2 += float(row["dd2"] or 0.0)
            cell.sum_yd += float(row["dyd"] or 0.0)
    return result
