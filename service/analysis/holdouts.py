"""Holdout results (docs/holdouts.md): held-out units against an equal measured slice.

A holdout keeps ``bucket("holdout:" + key, unit) < percent * 100`` on the off
variation of every flag that names it; the units in ``[percent * 100,
2 * percent * 100)`` are the *measured slice*: an equal-sized random sample of
everyone else, who get what the flags ship. SDKs (and remote evaluation)
record one exposure per unit and group, ``experiment = "holdout:<key>"``,
``variation = "held_out" | "measured"``, the first time a flag's holdout step
sees the unit, so both groups enter the analysis the same way: at their first
evaluation of any flag in the holdout.

The comparison is an experiment's (docs/analysis.md's methods, the same SQL and
the same statistics): ``queries.unit_counts`` / ``queries.metric_sums`` over
those exposures, then ``results``' per-metric entries with ``held_out`` as the
control, so ``measured`` carries the cumulative lift of everything the flags
ship. Expected split 50/50: a sample ratio mismatch means the groups are not
recorded alike (an SDK without holdout support, a holdout resized after it
recorded units).

No window ends the analysis (holdouts have no stop time); metric windows count
from each unit's first exposure as in experiments.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pitcrew.wire import HELD_OUT, HOLDOUT_PREFIX, MEASURED

from ..models import Holdout, Metric
from . import queries, report, stats
from .report import MIN_UNITS_PER_VARIATION, MULTIPLE_EXPOSURE_WARNING
from .results import info_of, metric_spec
from .sums import MetricSums

GROUPS = (HELD_OUT, MEASURED)
CONTROL = HELD_OUT


def design_of(holdout: Holdout) -> report.Design:
    """The holdout seen as a two-arm experiment, held-out units as the control."""
    return report.Design(key=holdout.key, status="running", control=CONTROL,
                         arms=tuple((group, 5000) for group in GROUPS))


def scope_of(holdout: Holdout) -> queries.Scope:
    return queries.Scope(environment_id=holdout.environment_id, experiment=HOLDOUT_PREFIX + holdout.key,
                         variations=GROUPS, unit_type=holdout.unit or "id", end_us=None)


def compute(connection, holdout: Holdout, environment: str, metrics: list[Metric], settings: dict, *,
            now: datetime | None = None) -> dict:
    """The results document of ``holdout`` on ``metrics`` with the analysis ``settings``
    (an experiment's analysis settings: engine, alpha, sequential, cuped, correction, ...)."""
    design = design_of(holdout)
    scope = scope_of(holdout)
    counts = queries.unit_counts(connection, scope)
    units = {g: 0 for g in GROUPS}
    for (g, _), n in counts.units.items():
        units[g] += n
    srm = stats.srm_test([units[g] for g in GROUPS], [1, 1])
    specs = [metric_spec(m, settings) for m in metrics]
    sums = queries.metric_sums(connection, scope, specs, n_units=sum(units.values()), first_us=counts.first_us)
    by_metric: dict = {}
    for (g, _), cell in sums.items():
        for key, s in cell.items():
            by_metric.setdefault(key, {}).setdefault(g, MetricSums()).add(s)
    infos = [info_of(m) for m in metrics]
    entries = [report.metric_entry(design, info, None, by_metric.get(info.key, {}), settings) for info in infos]
    report.adjust(entries, settings["correction"])
    for entry, info in zip(entries, infos, strict=True):
        report.verdicts(entry, info, CONTROL, settings)
    return {
        "holdout": holdout.key,
        "environment": environment,
        "percent": holdout.percent,
        "unit": holdout.unit,
        "computed_at": (now or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "control": CONTROL,
        **report.settings_fields(settings),
        "units": units,
        "multiple_exposures": counts.multiple_exposures,
        "srm": {"p_value": srm.p_value, "flagged": srm.flagged},
        "health": _health(units, counts.multiple_exposures, srm),
        "metrics": entries,
    }


def _health(units: dict, multiple: int, srm: stats.SrmResult) -> list[dict]:
    checks = []
    if srm.flagged:
        checks.append({"check": "srm", "status": "failed", "message": (
            f"Held-out and measured units are not 50/50 (p = {srm.p_value:.2g} < 0.001): the two groups are "
            "not recorded alike (an SDK without holdout support? a holdout resized after it recorded units?), "
            "so the comparison is not trustworthy.")})
    else:
        checks.append({"check": "srm", "status": "ok",
                       "message": f"Held-out and measured units match 50/50 (p = {srm.p_value:.3g})."})
    total = sum(units.values())
    if total == 0:
        checks.append({"check": "exposures", "status": "warning", "message": (
            "No units recorded yet: does an enabled flag in this environment name the holdout, and do "
            "the SDKs evaluating it support holdouts?")})
    else:
        checks.append({"check": "exposures", "status": "ok", "message": f"{total} units in the analysis."})
    exposed = total + multiple
    if exposed and multiple / exposed > MULTIPLE_EXPOSURE_WARNING:
        checks.append({"check": "multiple_exposures", "status": "warning", "message": (
            f"{multiple} of {exposed} units ({multiple / exposed:.1%}) were recorded in both groups and are "
            "excluded; check that the holdout's unit attribute is stable.")})
    else:
        checks.append({"check": "multiple_exposures", "status": "ok",
                       "message": f"{multiple} units were recorded in both groups (excluded)."})
    smallest = min(units.values())
    if total and smallest < MIN_UNITS_PER_VARIATION:
        checks.append({"check": "sample_size", "status": "warning", "message": (
            f"A group has only {smallest} units; estimates are unstable below {MIN_UNITS_PER_VARIATION}.")})
    return checks
