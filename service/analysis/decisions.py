"""What a results document means for a decision: verdicts and power (pure functions).

Verdict of one treatment on one metric (docs/results.md):

* ``not_enough_data``: either side has fewer than ``min_units`` units, or
  the comparison is not computable (no variance, zero control mean...);
* frequentist engine: the test is significant when the p-value
  (``p_value_adjusted``: the corrected one when a correction is set; the
  always-valid one when sequential) is below ``alpha``; a significant change
  in the metric's good direction is a ``winner``, in the bad direction a
  ``loser``; otherwise ``inconclusive``;
* Bayesian engine: ``winner`` when the chance to beat control (already in
  the metric's good direction) is at least ``chance_to_win``, ``loser`` when
  it is at most ``1 - chance_to_win``, otherwise ``inconclusive``.

A metric's verdict summarises its treatments: ``winner`` when any treatment
wins, ``loser`` when every treatment loses, ``not_enough_data`` when any
treatment lacks data (and none wins), otherwise ``inconclusive``.

Power (of the primary metric, fixed-horizon two-sided z-test, the model of
``power.py``): a control/treatment pair with ``n_c`` and ``n_t`` units has
the precision of ``n_eff = 2 / (1/n_c + 1/n_t)`` units per arm under equal
allocation, so unequal splits are handled exactly (same as statsmodels'
``NormalIndPower`` with ``ratio = n_t / n_c``).
"""

from __future__ import annotations

import math

from . import power as power_calc

VERDICTS = ("winner", "loser", "inconclusive", "not_enough_data")
TARGET_POWER = 0.8
DEFAULT_TARGET_MDE = 0.05
DEFAULT_CHANCE_TO_WIN = 0.95


def variation_verdict(control: dict, treatment: dict, *, engine: str, alpha: float, chance_to_win: float,
                      direction: str, min_units: int) -> str:
    """Verdict of ``treatment`` against ``control`` (variation entries of a results document)."""
    if min(control["units"], treatment["units"]) < min_units or treatment["absolute"] is None:
        return "not_enough_data"
    good = 1.0 if direction != "decrease" else -1.0
    if engine == "bayesian":
        ctw = treatment["chance_to_beat_control"]
        if ctw is None:
            return "not_enough_data"
        if ctw >= chance_to_win:
            return "winner"
        if ctw <= 1.0 - chance_to_win:
            return "loser"
        return "inconclusive"
    p = treatment["p_value_adjusted"]
    if p is None:
        p = treatment["absolute"]["p_value"]
    if p is None:
        return "not_enough_data"
    if p < alpha:
        return "winner" if treatment["absolute"]["estimate"] * good > 0 else "loser"
    return "inconclusive"


def metric_verdict(verdicts: list[str]) -> str:
    """One metric's verdict from its treatments' verdicts."""
    if not verdicts:
        return "not_enough_data"
    if "winner" in verdicts:
        return "winner"
    if all(v == "loser" for v in verdicts):
        return "loser"
    if "not_enough_data" in verdicts:
        return "not_enough_data"
    return "inconclusive"


def effective_units(n_control: float, n_treatment: float) -> float:
    """Units per arm of an equal split with the same precision (harmonic mean)."""
    if n_control <= 0 or n_treatment <= 0:
        return 0.0
    return 2.0 / (1.0 / n_control + 1.0 / n_treatment)


def power_block(*, metric: str, metric_type: str, control: str, baseline: float | None, stddev: float | None,
                units: dict, weights: dict, alpha: float, correction: str | None,
                target_mde: float = DEFAULT_TARGET_MDE, target_power: float = TARGET_POWER) -> dict:
    """The ``power`` block of the results document for the primary metric.

    ``baseline``/``stddev``: the control's value and per-unit standard
    deviation (for conversions the rate; the stddev is then implied).
    ``units``: analysed units per variation now; ``weights``: the design's
    weights, used to turn a per-arm requirement into total units. With a
    correction, alpha is split (Bonferroni) over the treatments.
    """
    treatments = [v for v in units if v != control]
    alpha_used = alpha / max(1, len(treatments)) if correction else alpha
    block = {"metric": metric, "target_mde": target_mde, "relative": True, "target_power": target_power,
             "alpha": alpha_used, "power": None, "mde_now": None, "units_per_variation_needed": None,
             "units_needed": None, "units_still_needed": None}
    if not treatments or baseline is None:
        return block
    binary = metric_type == "conversion"
    sd = None if binary else stddev
    if binary and not 0.0 < baseline < 1.0:
        return block
    if not binary and (sd is None or not sd > 0 or baseline == 0):
        return block
    common = {"stddev": sd, "relative": True, "alpha": alpha_used, "variations": 2}

    n_now = [effective_units(units.get(control, 0), units.get(t, 0)) for t in treatments]
    if min(n_now) > 0:
        powers = [power_calc.achieved_power(n, baseline, target_mde, **common) for n in n_now]
        mdes = [power_calc.minimum_detectable_effect(n, baseline, power=target_power, **common) for n in n_now]
        block["power"] = None if any(p is None for p in powers) else min(powers)
        block["mde_now"] = None if any(m is None for m in mdes) else max(mdes)

    size = power_calc.sample_size(baseline, target_mde, power=target_power, **common)
    total_weight = float(sum(weights.values()))
    if size is not None and total_weight > 0:
        shares = [effective_units(weights.get(control, 0) / total_weight, weights.get(t, 0) / total_weight)
                  for t in treatments]
        if min(shares) > 0:
            needed = math.ceil(size.per_variation / min(shares) - 1e-9)
            block["units_per_variation_needed"] = size.per_variation
            block["units_needed"] = needed
            block["units_still_needed"] = max(0, needed - int(sum(units.values())))
    return block
