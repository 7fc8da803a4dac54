"""The results document from plain data: the statistics' entry point (like gbstats').

Input: an experiment's :class:`Design`, its metrics (:class:`MetricInfo`),
the analysis settings (``settings.resolve``) and, per metric and variation,
the sufficient statistics the SQL produced (``sums.MetricSums``). Output:
the results document of docs/api.md ("Results"). Nothing here reads the
database or knows the models: ``results.py`` does the looking up and the
SQL, then calls :func:`document` / :func:`timeseries_point`.

Choices where the methods leave room (docs/analysis.md, docs/results.md):

* metrics are the experiment's primary, secondary and guardrail metrics in
  that order (``metric=`` keeps one);
* ``value`` is the unadjusted conversion rate / mean / ratio; ``stddev`` the
  per-unit standard deviation the test used (CUPED-adjusted when CUPED is
  on; for conversions sqrt(p(1-p)));
* CUPED uses one theta pooled over all variations of the slice (identical
  to gbstats' per-comparison theta for two variations) and applies to
  conversion, count and mean metrics, not to ratio metrics;
* ``p_value_adjusted`` corrects the absolute-lift p-values of every
  (metric, treatment) pair of one slice (overall, or one dimension value)
  with the ``correction`` method, and equals ``absolute.p_value`` without
  one; the Bayesian engine has no p-values (null);
* Bayesian ``risk`` of a treatment is the expected loss (relative lift) of
  shipping it instead of control; the control's ``risk`` is the expected loss
  of keeping control, the largest over treatments; ``chance_to_beat_control``
  is null for control and for the frequentist engine;
* with a dimension, the overall entries come first, then one entry per
  (metric, dimension value); a unit's dimension value is that of its first
  exposure (null when it did not record one);
* ``control`` and ``primary_metric`` name the experiment's; every metric
  entry has a ``verdict`` and every treatment a ``verdict``
  (``decisions.py``); ``power`` is the primary metric's power block (null
  without a primary metric), and a ``power`` health check warns when the
  test cannot yet detect the target MDE with 80 % power.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import decisions, stats
from .sums import MetricSums

MIN_UNITS_PER_VARIATION = 100
MULTIPLE_EXPOSURE_WARNING = 0.01


@dataclass(frozen=True)
class Design:
    """What the statistics need to know of an experiment."""

    key: str
    status: str
    control: str
    arms: tuple[tuple[str, int], ...]  # (variation key, weight in bps), the experiment's order
    primary_metric: str | None = None

    @property
    def variations(self) -> list[str]:
        return [v for v, _ in self.arms]


@dataclass(frozen=True)
class MetricInfo:
    """What the statistics need to know of a metric."""

    key: str
    type: str  # conversion | mean | count | ratio
    direction: str = "increase"


def moments(metric_type: str, sums: dict[str, MetricSums], arms: list[str], cuped: bool) -> dict:
    """{variation: stats.Moments} for one metric in one slice (absent variations have no units)."""
    cells = {v: sums.get(v) or MetricSums() for v in arms}
    binary = metric_type == "conversion"
    if metric_type == "ratio":
        return {v: stats.ratio_moments(c.ratio()) for v, c in cells.items()}
    if cuped:
        cuped_stats = {v: c.cuped() for v, c in cells.items()}
        theta = stats.cuped_theta(list(cuped_stats.values()), binary)
        return {v: stats.cuped_moments(s, theta, binary) for v, s in cuped_stats.items()}
    summarise = stats.proportion_moments if binary else stats.mean_moments
    return {v: summarise(c.sample()) for v, c in cells.items()}


def metric_entry(design: Design, metric: MetricInfo, dimension: dict | None,
                 sums: dict[str, MetricSums], settings: dict) -> dict:
    """One metric's entry (every variation, treatments against control), before corrections."""
    arms = design.variations
    control = design.control
    found = moments(metric.type, sums, arms, bool(settings["cuped"]) and metric.type != "ratio")
    bayesian = settings["engine"] == "bayesian"
    entries, control_risks = [], []
    for v in arms:
        m = found[v]
        entry = {"variation": v, "units": int(m.n),
                 "value": float(m.unadjusted_mean) if m.n > 0 else None,
                 "stddev": float(m.stddev) if m.n > 1 else None,
                 "absolute": None, "relative": None, "p_value_adjusted": None,
                 "chance_to_beat_control": None, "risk": None}
        if v != control:
            comparison = stats.compare(
                found[control], m, engine=settings["engine"], alpha=settings["alpha"],
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


def adjust(entries: list[dict], method: str | None) -> None:
    """Fill p_value_adjusted over every treatment of every metric entry given (one family)."""
    targets = [v for e in entries for v in e["variations"]
               if v["absolute"] is not None and v["absolute"]["p_value"] is not None]
    adjusted = stats.adjust_p_values([v["absolute"]["p_value"] for v in targets], method)
    for v, p in zip(targets, adjusted, strict=True):
        v["p_value_adjusted"] = p


def verdicts(entry: dict, metric: MetricInfo, control: str, settings: dict) -> None:
    """Fill the treatments' and the metric's ``verdict`` (after the p-values were adjusted)."""
    control_entry = next(v for v in entry["variations"] if v["variation"] == control)
    found = []
    for v in entry["variations"]:
        if v is control_entry:
            v["verdict"] = None
            continue
        v["verdict"] = decisions.variation_verdict(
            control_entry, v, engine=settings["engine"], alpha=settings["alpha"],
            chance_to_win=settings.get("chance_to_win") or decisions.DEFAULT_CHANCE_TO_WIN,
            direction=metric.direction, min_units=MIN_UNITS_PER_VARIATION)
        found.append(v["verdict"])
    entry["verdict"] = decisions.metric_verdict(found)


def _power(design: Design, results: list[dict], units: dict, settings: dict) -> dict | None:
    """The primary metric's power block (``decisions.power_block``), or None without one."""
    entry = next((e for e in results
                  if e["metric"] == design.primary_metric and e["dimension"] is None), None)
    if entry is None:
        return None
    control = next(v for v in entry["variations"] if v["variation"] == design.control)
    return decisions.power_block(
        metric=entry["metric"], metric_type=entry["type"], control=design.control,
        baseline=control["value"], stddev=control["stddev"], units=units, weights=dict(design.arms),
        alpha=settings["alpha"], correction=settings["correction"],
        target_mde=settings.get("target_mde") or decisions.DEFAULT_TARGET_MDE)


def _percent(value) -> str:
    return "unknown" if value is None else f"{value:.1%}"


def _check(check: str, status: str, message: str) -> dict:
    return {"check": check, "status": status, "message": message}


def _health(design: Design, units: dict, multiple: int, srm: stats.SrmResult, missing: list[str],
            settings: dict, metrics: list[MetricInfo], power: dict | None) -> list[dict]:
    checks = []
    total = sum(units.values())
    if srm.flagged:
        checks.append(_check("srm", "failed", (
            "Sample ratio mismatch: units per variation do not match the weights "
            f"(p = {srm.p_value:.2g} < 0.001); the assignment or the exposure logging is biased, "
            "so results are not trustworthy.")))
    else:
        checks.append(_check("srm", "ok", f"Units match the weights (p = {srm.p_value:.3g})."))
    if total == 0:
        checks.append(_check("exposures", "warning", (
            "No exposures yet: is the flag enabled in this environment and serving the "
            "experiment's rule?")))
    else:
        checks.append(_check("exposures", "ok", f"{total} units in the analysis."))
    exposed = total + multiple
    if exposed and multiple / exposed > MULTIPLE_EXPOSURE_WARNING:
        checks.append(_check("multiple_exposures", "warning", (
            f"{multiple} of {exposed} units ({multiple / exposed:.1%}) saw more than one variation "
            "and are excluded; check that the unit attribute is stable.")))
    else:
        checks.append(_check("multiple_exposures", "ok",
                             f"{multiple} units saw more than one variation (excluded)."))
    smallest = min(units.values()) if units else 0
    if total and smallest < MIN_UNITS_PER_VARIATION:
        checks.append(_check("sample_size", "warning", (
            f"A variation has only {smallest} units; estimates are unstable below "
            f"{MIN_UNITS_PER_VARIATION}.")))
    if missing:
        checks.append(_check("metrics", "warning",
                             f"Metrics that do not exist (skipped): {', '.join(missing)}."))
    if not design.primary_metric:
        checks.append(_check("primary_metric", "warning", "No primary metric is set."))
    if power is not None and total:
        checks += _power_check(power, total)
    if settings["cuped"] and any(m.type == "ratio" for m in metrics):
        checks.append(_check("cuped", "ok", "CUPED does not apply to ratio metrics; "
                                            "they are analysed unadjusted."))
    return checks


def _power_check(power: dict, total: int) -> list[dict]:
    if power["power"] is None:
        return []
    change = f"a {power['target_mde']:.1%} relative change in {power['metric']}"
    if power["power"] >= decisions.TARGET_POWER:
        return [_check("power", "ok", f"{power['power']:.0%} power to detect {change}.")]
    still = power["units_still_needed"]
    return [_check("power", "warning", (
        f"Low power: with {total} units the test has {power['power']:.0%} power to detect "
        f"{change}; the smallest change it can detect now (80 % power) is "
        f"{_percent(power['mde_now'])}"
        + (f"; about {still} more units are needed." if still else ".")))]


def settings_fields(settings: dict) -> dict:
    """The analysis settings as a results document states them (experiments and holdouts alike)."""
    return {"engine": settings["engine"], "sequential": bool(settings["sequential"]),
            "cuped": bool(settings["cuped"]), "alpha": settings["alpha"], "correction": settings["correction"]}


def document(design: Design, metrics: list[MetricInfo], settings: dict, *, units: dict,
             multiple_exposures: int, overall: dict, slices: dict | None = None,
             dimension: str | None = None, missing: list[str] | tuple = (),
             computed_at: str) -> dict:
    """The results document.

    ``units``: analysed units per variation; ``overall``: ``{metric key:
    {variation: MetricSums}}``; ``slices`` (with ``dimension``): ``{dimension
    value: {metric key: {variation: MetricSums}}}``; ``missing``: metric keys
    the experiment names that do not exist (a health warning)."""
    srm = stats.srm_test([units.get(v, 0) for v in design.variations], [w for _, w in design.arms])
    results = [metric_entry(design, m, None, overall.get(m.key, {}), settings) for m in metrics]
    adjust(results, settings["correction"])
    if dimension:
        for value in sorted(slices or {}, key=lambda d: (d is None, d)):
            slice_ = {"name": dimension, "value": value}
            family = [metric_entry(design, m, slice_, slices[value].get(m.key, {}), settings)
                      for m in metrics]
            adjust(family, settings["correction"])
            results += family
    by_key = {m.key: m for m in metrics}
    for entry in results:
        verdicts(entry, by_key[entry["metric"]], design.control, settings)
    power = _power(design, results, units, settings)
    return {
        "experiment": design.key,
        "status": design.status,
        "computed_at": computed_at,
        "control": design.control,
        "primary_metric": design.primary_metric,
        **settings_fields(settings),
        "units": units,
        "multiple_exposures": multiple_exposures,
        "srm": {"p_value": srm.p_value, "flagged": srm.flagged},
        "power": power,
        "health": _health(design, units, multiple_exposures, srm, list(missing), settings, metrics,
                          power),
        "metrics": results,
    }


TIMESERIES_FIELDS = ("variation", "units", "value", "absolute", "relative",
                     "chance_to_beat_control")


def timeseries_point(design: Design, metric: MetricInfo, settings: dict, day: str,
                     cumulative: dict[str, MetricSums]) -> dict:
    """One day of the cumulative series: the comparison as it stood at the end of ``day``
    (unadjusted)."""
    entry = metric_entry(design, metric, None, cumulative, {**settings, "cuped": False})
    adjust([entry], None)
    return {"date": day, "units": {v["variation"]: v["units"] for v in entry["variations"]},
            "variations": [{k: v[k] for k in TIMESERIES_FIELDS} for v in entry["variations"]]}
