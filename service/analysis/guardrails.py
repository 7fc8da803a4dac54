"""Guardrail decisions of a guarded rollout (docs/process.md).

A rollout compares the units served its new variation (treatment) with the
units kept on the old one (control) inside its system-owned experiment. On
every check, each guardrail metric gets the sequential test of the analysis
(asymptotic confidence sequences, ``stats.sequential_test``): its interval
is valid however often it is looked at, so the worker may check as often
as it likes. Harm is an interval for the absolute lift that lies entirely
on the metric's bad side (below 0 for ``increase`` metrics, above 0 for
``decrease`` metrics).

Error rate: each of k guardrails is tested at ``alpha / k`` (Bonferroni),
so a rollout whose new variation changes nothing is rolled back with
probability at most ``alpha`` (about alpha / 2 in practice: only the harmful
side of the two-sided interval triggers).

:func:`judge` and :func:`evaluate` are pure (sufficient statistics in,
verdicts out); :func:`measure` is the SQL that feeds them. The worker runs
measure -> evaluate; benchmarks/bench_rollout_aa.py runs evaluate on
simulated sufficient statistics, so both exercise the same decision code.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models import Experiment, Metric
from . import queries, stats
from .report import moments
from .results import metric_spec, scope_of
from .sums import MetricSums

# Below this many units in either arm no decision is taken on a metric:
# the asymptotic interval needs a sample of some size to be trusted.
MIN_UNITS = 100
NO_CUPED = {"cuped": False, "cuped_days": 0}


@dataclass
class Verdict:
    harm: bool
    metrics: list[dict]  # one judge() entry per guardrail, in order
    harmful: list[str]  # keys of the metrics showing significant harm


def judge(metric: Metric, sums: dict, control: str, treatment: str, *, alpha: float,
          tuning_n: float = stats.DEFAULT_SEQUENTIAL_N, min_units: int = MIN_UNITS) -> dict:
    """One guardrail: ``sums`` maps variation -> ``sums.MetricSums``."""
    found = moments(metric.type, sums, [control, treatment], False)
    a, b = found[control], found[treatment]
    test = stats.sequential_test(a, b, alpha=alpha, tuning_n=tuning_n)
    enough = a.n >= min_units and b.n >= min_units
    harm = False
    if test is not None and enough:
        harm = test.ci_high < 0 if metric.direction == "increase" else test.ci_low > 0
    return {
        "metric": metric.key, "type": metric.type, "direction": metric.direction, "alpha": alpha,
        "units": {control: int(a.n), treatment: int(b.n)},
        "values": {control: float(a.unadjusted_mean) if a.n else None,
                   treatment: float(b.unadjusted_mean) if b.n else None},
        "estimate": test.estimate if test else None,
        "ci": [test.ci_low, test.ci_high] if test else None,
        "p_value": test.p_value if test else None,
        "enough_data": enough,
        "harm": harm,
    }


def evaluate(sums: dict, metrics: list[Metric], control: str, treatment: str, *, alpha: float,
             tuning_n: float = stats.DEFAULT_SEQUENTIAL_N, min_units: int = MIN_UNITS) -> Verdict:
    """All guardrails; ``sums`` maps metric key -> {variation: MetricSums}."""
    per_metric_alpha = alpha / max(1, len(metrics))
    entries = [judge(m, sums.get(m.key, {}), control, treatment, alpha=per_metric_alpha, tuning_n=tuning_n,
                     min_units=min_units) for m in metrics]
    harmful = [e["metric"] for e in entries if e["harm"]]
    return Verdict(bool(harmful), entries, harmful)


def measure(connection, experiment: Experiment, metrics: list[Metric]) -> tuple[dict, dict]:
    """(units per variation, {metric key: {variation: MetricSums}}) of the experiment, from SQL."""
    scope = scope_of(experiment)
    counts = queries.unit_counts(connection, scope)
    units = {a["variation"]: 0 for a in experiment.variations}
    for (variation, _), n in counts.units.items():
        units[variation] = units.get(variation, 0) + n
    specs = [metric_spec(m, NO_CUPED) for m in metrics]
    cells = queries.metric_sums(connection, scope, specs, n_units=sum(units.values()),
                                first_us=counts.first_us)
    sums: dict = {}
    for (variation, _), by_metric in cells.items():
        for key, cell in by_metric.items():
            sums.setdefault(key, {}).setdefault(variation, MetricSums()).add(cell)
    return units, sums


def describe(entry: dict, control: str, treatment: str) -> str:
    """A sentence with the numbers behind a guardrail verdict, for the rollout's reason."""
    values = entry["values"]
    lo, hi = entry["ci"] or (None, None)
    better = "higher" if entry["direction"] == "increase" else "lower"

    def num(x):
        return "n/a" if x is None else f"{x:.4g}"

    return (f"guardrail '{entry['metric']}' ({better} is better): {treatment} {num(values[treatment])} vs "
            f"{control} {num(values[control])}, absolute lift {num(entry['estimate'])} with "
            f"{1 - entry['alpha']:.4g} confidence sequence [{num(lo)}, {num(hi)}], "
            f"units {entry['units'][treatment]} / {entry['units'][control]}")
