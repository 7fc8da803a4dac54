"""Experiment results (SPEC section 6): SQL sufficient statistics -> statistics -> JSON.

``compute(experiment, ...)`` runs two aggregate queries (``queries.py``)
and the pure statistics of ``stats.py``; it returns the results document
whose field names SPEC section 6 fixes, plus ``correction`` and ``health``.

Choices where SPEC is silent (documented in the README too):

* metrics are the experiment's primary, secondary and guardrail metrics in
  that order (``metric=`` keeps one);
* ``value`` is the unadjusted conversion rate / mean / ratio; ``stddev`` the
  per-unit standard deviation the test used (CUPED-adjusted when CUPED is
  on; for conversions sqrt(p(1-p)));
* CUPED uses one theta pooled over all variations of the slice (SPEC;
  identical to gbstats' per-comparison theta for two variations) and applies
  to conversion, count and mean metrics, not to ratio metrics;
* ``p_value_adjusted`` corrects the absolute-lift p-values of every
  (metric, treatment) pair of one slice (overall, or one dimension value)
  with the ``correction`` method, and equals ``absolute.p_value`` without
  one; the Bayesian engine has no p-values (null);
* Bayesian ``risk`` of a treatment is the expected loss (relative lift) of
  shipping it instead of control; the control's ``risk`` is the expected loss
  of keeping control, the largest over treatments; ``chance_to_beat_control``
  is null for control and for the frequentist engine;
* with ``dimension=``, the overall entries come first, then one entry per
  (metric, dimension value); a unit's dimension value is that of its first
  exposure (null when it did not record one);
* ``control`` and ``primary_metric`` name the experiment's; every metric
  entry has a ``verdict`` and every treatment a ``verdict``
  (``decisions.py``, docs/results.md); ``power`` is the primary metric's power
  block (null without a primary metric), and a ``power`` health check warns
  when the test cannot yet detect the target MDE with 80 % power.

``timeseries(...)`` is the daily cumulative series of the primary metric
(``GET /experiments/{key}/results/timeseries``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from ..domain.experiments import analysis_settings, metric_keys
from ..ingest import to_micros
from ..models import Experiment, Metric
from . import decisions, queries, stats

MIN_UNITS_PER_VARIATION = 100
MULTIPLE_EXPOSURE_WARNING = 0.01
_UNSET = object()  # correction not overridden (None clears it)


def settings_for(experiment: Experiment, *, engine=None, sequential=None, cuped=None, alpha=None,
                 correction=_UNSET) -> dict:
    """The experiment's analysis settings with this request's overrides."""
    settings = analysis_settings(experiment)
    for name, value in (("engine", engine), ("sequential", sequential), ("cuped", cuped), ("alpha", alpha)):
        if value is not None:
            settings[name] = value
    if correction is not _UNSET:
        settings["correction"] = None if correction in (None, "none") else correction
    return settings


def scope_of(experiment: Experiment) -> queries.Scope:
    return queries.Scope(
        environment_id=experiment.environment_id, experiment=experiment.key,
        variations=tuple(a["variation"] for a in experiment.variations), unit_type=experiment.unit or "id",
        end_us=to_micros(experiment.stopped_at) if experiment.stopped_at else None)


def metric_spec(metric: Metric, settings: dict) -> queries.MetricSpec:
    cuped = settings["cuped"] and metric.type != "ratio"
    return queries.MetricSpec(
        key=metric.key, type=metric.type, event=metric.event, denominator=metric.denominator,
        window_us=int(metric.window_hours * queries.US_PER_HOUR) if metric.window_hours else None,
        winsorize=metric.winsorize,
        cuped_us=int(settings["cuped_days"]) * queries.US_PER_DAY if cuped else None)


def _moments(metric_type: str, sums: dict, arms: list[str], cuped: bool) -> dict:
    """{variation: Moments} for one metric in one slice."""
    empty = queries.MetricSums()
    cells = {v: sums.get(v, empty) for v in arms}
    binary = metric_type == "conversion"
    if metric_type == "ratio":
        return {v: stats.ratio_moments(stats.RatioStats(c.n, c.sum_y, c.sum_y2, c.sum_d, c.sum_d2, c.sum_yd))
                for v, c in cells.items()}
    if cuped:
        cuped_stats = {v: stats.CupedStats(c.n, c.sum_y, c.sum_y2, c.sum_x, c.sum_x2, c.sum_xy)
                       for v, c in cells.items()}
        theta = stats.cuped_theta(list(cuped_stats.values()), binary)
        return {v: stats.cuped_moments(s, theta, binary) for v, s in cuped_stats.items()}
    moments = stats.proportion_moments if binary else stats.mean_moments
    return {v: moments(stats.SampleStats(c.n, c.sum_y, c.sum_y2)) for v, c in cells.items()}


def _metric_entry(metric: Metric, dimension, sums: dict, experiment: Experiment, settings: dict) -> dict:
    arms = [a["variation"] for a in experiment.variations]
    control = experiment.control
    cuped = bool(settings["cuped"]) and metric.type != "ratio"
    moments = _moments(metric.type, sums, arms, cuped)
    bayesian = settings["engine"] == "bayesian"
    entries, control_risks = [], []
    for v in arms:
        m = moments[v]
        entry = {"variation": v, "units": int(m.n),
                 "value": float(m.unadjusted_mean) if m.n > 0 else None,
                 "stddev": float(m.stddev) if m.n > 1 else None,
                 "absolute": None, "relative": None, "p_value_adjusted": None,
                 "chance_to_beat_control": None, "risk": None}
        if v != control:
            comparison = stats.compare(
                moments[control], m, engine=settings["engine"], alpha=settings["alpha"],
                sequential=bool(settings["sequential"]), sequential_n=settings["sequential_n"],
                direction=metric.direction, prior_mean=settings.get("prior_mean"),
                prior_variance=settings.get("prior_variance"))
            entry["absolute"] = comparison.absolute.to_dict() if comparison.absolute else None
            entry["relative"] = comparison.relative.to_dict() if comparison.relative else None
            if bayesian:
                entry["chance_to_beat_control"] = comparison.chance_to_beat_control
                entry["risk"] = comparison.risk_treatment
                if comparison.risk_control is not None:
                    control_risks.append(comparison.risk_control)
        entries.append(entry)
    if bayesian and control_risks:
        next(e for e in entries if e["variation"] == control)["risk"] = max(control_risks)
    return {"metric": metric.key, "type": metric.type, "dimension": dimension, "verdict": None,
            "variations": entries}


def _verdicts(entry: dict, metric: Metric, experiment: Experiment, settings: dict) -> None:
    """Fill the treatments' and the metric's ``verdict`` (after the p-values were adjusted)."""
    control = next(v for v in entry["variations"] if v["variation"] == experiment.control)
    found = []
    for v in entry["variations"]:
        if v is control:
            v["verdict"] = None
            continue
        v["verdict"] = decisions.variation_verdict(
            control, v, engine=settings["engine"], alpha=settings["alpha"],
            chance_to_win=settings.get("chance_to_win") or decisions.DEFAULT_CHANCE_TO_WIN,
            direction=metric.direction, min_units=MIN_UNITS_PER_VARIATION)
        found.append(v["verdict"])
    entry["verdict"] = decisions.metric_verdict(found)


def _adjust(entries: list[dict], method: str | None) -> None:
    """Fill p_value_adjusted over every treatment of every metric entry given (one family)."""
    targets = [v for e in entries for v in e["variations"]
               if v["absolute"] is not None and v["absolute"]["p_value"] is not None]
    adjusted = stats.adjust_p_values([v["absolute"]["p_value"] for v in targets], method)
    for v, p in zip(targets, adjusted, strict=True):
        v["p_value_adjusted"] = p


def _percent(value) -> str:
    return "unknown" if value is None else f"{value:.1%}"


def _health(experiment: Experiment, units: dict, multiple: int, srm: stats.SrmResult, missing: list[str],
            settings: dict, metrics: list[Metric], power: dict | None = None) -> list[dict]:
    checks = []
    total = sum(units.values())
    if srm.flagged:
        checks.append({"check": "srm", "status": "failed", "message": (
            f"Sample ratio mismatch: units per variation do not match the weights (p = {srm.p_value:.2g} < 0.001); "
            "the assignment or the exposure logging is biased, so results are not trustworthy.")})
    else:
        checks.append({"check": "srm", "status": "ok", "message": f"Units match the weights (p = {srm.p_value:.3g})."})
    if total == 0:
        checks.append({"check": "exposures", "status": "warning", "message": (
            "No exposures yet: is the flag enabled in this environment and serving the experiment's rule?")})
    else:
        checks.append({"check": "exposures", "status": "ok", "message": f"{total} units in the analysis."})
    exposed = total + multiple
    if exposed and multiple / exposed > MULTIPLE_EXPOSURE_WARNING:
        checks.append({"check": "multiple_exposures", "status": "warning", "message": (
            f"{multiple} of {exposed} units ({multiple / exposed:.1%}) saw more than one variation and are "
            "excluded; check that the unit attribute is stable.")})
    else:
        checks.append({"check": "multiple_exposures", "status": "ok",
                       "message": f"{multiple} units saw more than one variation (excluded)."})
    smallest = min(units.values()) if units else 0
    if total and smallest < MIN_UNITS_PER_VARIATION:
        checks.append({"check": "sample_size", "status": "warning", "message": (
            f"A variation has only {smallest} units; estimates are unstable below "
            f"{MIN_UNITS_PER_VARIATION}.")})
    if missing:
        checks.append({"check": "metrics", "status": "warning",
                       "message": f"Metrics that do not exist (skipped): {', '.join(missing)}."})
    if not experiment.primary_metric:
        checks.append({"check": "primary_metric", "status": "warning", "message": "No primary metric is set."})
    if power is not None and total:
        if power["power"] is not None and power["power"] < decisions.TARGET_POWER:
            still = power["units_still_needed"]
            checks.append({"check": "power", "status": "warning", "message": (
                f"Low power: with {total} units the test has {power['power']:.0%} power to detect a "
                f"{power['target_mde']:.1%} relative change in {power['metric']}; the smallest change it can "
                f"detect now (80 % power) is {_percent(power['mde_now'])}"
                + (f"; about {still} more units are needed." if still else "."))})
        elif power["power"] is not None:
            checks.append({"check": "power", "status": "ok", "message": (
                f"{power['power']:.0%} power to detect a {power['target_mde']:.1%} relative change in "
                f"{power['metric']}.")})
    if settings["cuped"] and any(m.type == "ratio" for m in metrics):
        checks.append({"check": "cuped", "status": "ok",
                       "message": "CUPED does not apply to ratio metrics; they are analysed unadjusted."})
    return checks


def compute(connection, experiment: Experiment, metrics: dict[str, Metric], *, dimension: str | None = None,
            metric: str | None = None, now: datetime | None = None, **overrides) -> dict:
    """The results document of ``experiment``.

    ``metrics`` maps metric keys to Metric rows (those of the experiment,
    or at least ``metric``); ``overrides`` are ``engine``, ``sequential``,
    ``cuped``, ``alpha`` and ``correction`` ("none" or None clears it).
    """
    settings = settings_for(experiment, **overrides)
    arms = [a["variation"] for a in experiment.variations]
    weights = [a["weight"] for a in experiment.variations]
    keys = [metric] if metric else metric_keys(experiment)
    missing = [k for k in keys if k not in metrics]
    chosen = [metrics[k] for k in keys if k in metrics]

    scope = scope_of(experiment)
    counts = queries.unit_counts(connection, scope, dimension)
    units = {v: 0 for v in arms}
    for (v, _), n in counts.units.items():
        units[v] += n
    srm = stats.srm_test([units[v] for v in arms], weights)
    specs = [metric_spec(m, settings) for m in chosen]
    sums = queries.metric_sums(connection, scope, specs, n_units=sum(units.values()), first_us=counts.first_us,
                               dimension=dimension)

    # Cells are additive: the overall statistics are the sums over dimension values.
    overall: dict = {}
    slices: dict = {}
    for (v, dim), by_metric in sums.cells.items():
        for key, s in by_metric.items():
            overall.setdefault(key, {}).setdefault(v, queries.MetricSums()).add(s)
            if dimension:
                slices.setdefault(dim, {}).setdefault(key, {})[v] = s

    results = []
    family = [_metric_entry(m, None, overall.get(m.key, {}), experiment, settings) for m in chosen]
    _adjust(family, settings["correction"])
    results += family
    if dimension:
        for dim in sorted(slices, key=lambda d: (d is None, d)):
            family = [_metric_entry(m, {"name": dimension, "value": dim}, slices[dim].get(m.key, {}), experiment,
                                    settings) for m in chosen]
            _adjust(family, settings["correction"])
            results += family
    by_key = {m.key: m for m in chosen}
    for entry in results:
        _verdicts(entry, by_key[entry["metric"]], experiment, settings)
    power = _power(experiment, results, units, settings)

    return {
        "experiment": experiment.key,
        "status": experiment.status,
        "computed_at": _iso(now),
        "control": experiment.control,
        "primary_metric": experiment.primary_metric,
        "engine": settings["engine"],
        "sequential": bool(settings["sequential"]),
        "cuped": bool(settings["cuped"]),
        "alpha": settings["alpha"],
        "correction": settings["correction"],
        "units": units,
        "multiple_exposures": counts.multiple_exposures,
        "srm": {"p_value": srm.p_value, "flagged": srm.flagged},
        "power": power,
        "health": _health(experiment, units, counts.multiple_exposures, srm, missing, settings, chosen, power),
        "metrics": results,
    }


def _iso(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")


def _power(experiment: Experiment, results: list[dict], units: dict, settings: dict) -> dict | None:
    """The primary metric's power block (``decisions.power_block``), or None without one."""
    entry = next((e for e in results if e["metric"] == experiment.primary_metric and e["dimension"] is None), None)
    if entry is None:
        return None
    control = next(v for v in entry["variations"] if v["variation"] == experiment.control)
    return decisions.power_block(
        metric=entry["metric"], metric_type=entry["type"], control=experiment.control,
        baseline=control["value"], stddev=control["stddev"], units=units,
        weights={a["variation"]: a["weight"] for a in experiment.variations}, alpha=settings["alpha"],
        correction=settings["correction"], target_mde=settings.get("target_mde") or decisions.DEFAULT_TARGET_MDE)


def timeseries(connection, experiment: Experiment, metric: Metric, *, now: datetime | None = None,
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
    settings = settings_for(experiment, **overrides)
    settings["cuped"] = False
    arms = [a["variation"] for a in experiment.variations]
    scope = scope_of(experiment)
    spec = metric_spec(metric, settings)
    counts = queries.unit_counts(connection, scope)
    deltas = queries.daily_deltas(connection, scope, spec, first_us=counts.first_us)
    days = sorted({day for _, day in deltas})
    if days:
        days = list(range(days[0], days[-1] + 1))  # no gaps: a quiet day is a point too
    running = {v: queries.MetricSums() for v in arms}
    points = []
    for day in days:
        for v in arms:
            d = deltas.get((v, day))
            if d is not None:
                running[v].add(queries.MetricSums(n=d.n, sum_y=d.sum_y, sum_y2=d.sum_y2, sum_d=d.sum_d,
                                                  sum_d2=d.sum_d2, sum_yd=d.sum_yd))
        cumulative = {v: queries.MetricSums(**vars(s)) for v, s in running.items()}
        entry = _metric_entry(metric, None, cumulative, experiment, settings)
        _adjust([entry], None)
        points.append({"date": date.fromordinal(date(1970, 1, 1).toordinal() + day).isoformat(),
                       "units": {v["variation"]: v["units"] for v in entry["variations"]},
                       "variations": [{k: v[k] for k in ("variation", "units", "value", "absolute", "relative",
                                                         "chance_to_beat_control")}
                                      for v in entry["variations"]]})
    return {"experiment": experiment.key, "metric": metric.key, "type": metric.type, "computed_at": _iso(now),
            "engine": settings["engine"], "sequential": bool(settings["sequential"]), "alpha": settings["alpha"],
            "control": experiment.control, "days": points}
