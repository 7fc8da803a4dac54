"""Experiment results: look up what it measures, run the SQL, give ``report.py`` plain data.

``compute(connection, experiment, ...)`` resolves the analysis settings
(``settings.py``), looks up the experiment's metrics, runs two aggregate
statements (``queries.py``: SQL -> sufficient statistics) and passes their
sums to :func:`report.document`, which does the statistics and knows
nothing of the database. ``timeseries(...)`` does the same, day by day, for
one metric (``GET /experiments/{key}/results/timeseries``).

A metric the request names (``metric=``) that does not exist raises
:class:`UnknownMetric`; metrics the experiment names that no longer exist are
skipped with a health warning.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import sqlalchemy as sa

from ..ingest import to_micros
from ..models import Experiment, Metric
from . import queries, report
from .settings import metric_keys, resolve
from .sums import MetricSums

metrics_table = Metric.__table__
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()  # days in the SQL are days since the epoch


class UnknownMetric(LookupError):
    """A metric named by the request does not exist."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def metric_definitions(connection, keys: list[str]) -> dict:
    """``{key: row}`` of the metrics among ``keys`` that exist (one query)."""
    if not keys:
        return {}
    rows = connection.execute(sa.select(metrics_table).where(metrics_table.c.key.in_(set(keys))))
    return {row.key: row for row in rows}


def design_of(experiment: Experiment) -> report.Design:
    return report.Design(key=experiment.key, status=experiment.status, control=experiment.control,
                         arms=tuple((a["variation"], a["weight"]) for a in experiment.variations),
                         primary_metric=experiment.primary_metric)


def info_of(metric) -> report.MetricInfo:
    return report.MetricInfo(key=metric.key, type=metric.type, direction=metric.direction)


def settings_of(experiment: Experiment, **overrides) -> dict:
    """The experiment's analysis settings with this request's overrides."""
    return resolve(experiment.analysis, **overrides)


def scope_of(experiment: Experiment) -> queries.Scope:
    return queries.Scope(
        environment_id=experiment.environment_id, experiment=experiment.key,
        variations=tuple(a["variation"] for a in experiment.variations),
        unit_type=experiment.unit or "id",
        end_us=to_micros(experiment.stopped_at) if experiment.stopped_at else None)


def metric_spec(metric, settings: dict) -> queries.MetricSpec:
    cuped = settings["cuped"] and metric.type != "ratio"
    return queries.MetricSpec(
        key=metric.key, type=metric.type, event=metric.event, denominator=metric.denominator,
        window_us=int(metric.window_hours * queries.US_PER_HOUR) if metric.window_hours else None,
        winsorize=metric.winsorize,
        cuped_us=int(settings["cuped_days"]) * queries.US_PER_DAY if cuped else None)


def _iso(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")


def compute(connection, experiment: Experiment, *, dimension: str | None = None,
            metric: str | None = None, now: datetime | None = None, **overrides) -> dict:
    """The results document of ``experiment`` (all its metrics, or ``metric``).

    ``overrides`` are ``engine``, ``sequential``, ``cuped``, ``alpha`` and
    ``correction`` ("none" or None clears it)."""
    settings = settings_of(experiment, **overrides)
    keys = [metric] if metric else metric_keys(
        experiment.primary_metric, experiment.secondary_metrics, experiment.guardrail_metrics)
    found = metric_definitions(connection, keys)
    if metric and metric not in found:
        raise UnknownMetric(metric)
    chosen = [found[k] for k in keys if k in found]

    scope = scope_of(experiment)
    counts = queries.unit_counts(connection, scope, dimension)
    units = dict.fromkeys(scope.variations, 0)
    for (v, _), n in counts.units.items():
        units[v] += n
    specs = [metric_spec(m, settings) for m in chosen]
    cells = queries.metric_sums(connection, scope, specs, n_units=sum(units.values()),
                                first_us=counts.first_us, dimension=dimension)

    # Cells are additive: the overall statistics are the sums over dimension values.
    overall: dict = {}
    slices: dict = {}
    for (v, dim), by_metric in cells.items():
        for key, s in by_metric.items():
            overall.setdefault(key, {}).setdefault(v, MetricSums()).add(s)
            if dimension:
                slices.setdefault(dim, {}).setdefault(key, {})[v] = s
    return report.document(
        design_of(experiment), [info_of(m) for m in chosen], settings, units=units,
        multiple_exposures=counts.multiple_exposures, overall=overall, slices=slices,
        dimension=dimension, missing=[k for k in keys if k not in found], computed_at=_iso(now))


def timeseries(connection, experiment: Experiment, metric: str, *, now: datetime | None = None,
               **overrides) -> dict:
    """Daily cumulative estimates of ``metric`` (the primary one, normally), one point per UTC day.

    Each point is what the results would have said at the end of that day
    (events up to then, units exposed by then), computed by the same tests
    with the experiment's settings, unadjusted and uncapped (CUPED needs the
    pre-period of every unit; caps depend on the final distribution). The
    SQL returns per-(variation, day) changes of the sufficient statistics
    (``queries.daily_deltas``); the running sums over days are added here.
    Frequentist intervals are then fixed-horizon intervals read repeatedly:
    use ``sequential`` for intervals that stay valid when peeked at daily.
    """
    found = metric_definitions(connection, [metric])
    if metric not in found:
        raise UnknownMetric(metric)
    definition = found[metric]
    settings = {**settings_of(experiment, **overrides), "cuped": False}
    design = design_of(experiment)
    scope = scope_of(experiment)
    counts = queries.unit_counts(connection, scope)
    spec = metric_spec(definition, settings)
    deltas = queries.daily_deltas(connection, scope, spec, first_us=counts.first_us)
    days = sorted({day for _, day in deltas})
    if days:
        days = list(range(days[0], days[-1] + 1))  # no gaps: a quiet day is a point too
    running = {v: MetricSums() for v in design.variations}
    points = []
    for day in days:
        for v in design.variations:
            if (v, day) in deltas:
                running[v].add(deltas[(v, day)])
        iso_day = date.fromordinal(EPOCH_ORDINAL + day).isoformat()
        points.append(report.timeseries_point(design, info_of(definition), settings, iso_day,
                                              {v: s.copy() for v, s in running.items()}))
    return {"experiment": experiment.key, "metric": definition.key, "type": definition.type,
            "computed_at": _iso(now), "engine": settings["engine"],
            "sequential": bool(settings["sequential"]), "alpha": settings["alpha"],
            "control": experiment.control, "days": points}
