"""Power, sample-size and MDE calculator (docs/analysis.md), pure functions.

Two-sided z-approximation for the difference of two independent means with
equal allocation, i.e. the model of statsmodels' ``NormalIndPower`` (both
rejection tails included, so results agree with its solver):

    se(n)    = sqrt(var_sum / n)
    power(n) = Phi(|delta|/se - z) + Phi(-|delta|/se - z),  z = Phi^-1(1 - alpha'/2)

* ``baseline``: the control conversion rate (``stddev=None``, must be in
  (0, 1)) or the control mean (then ``stddev`` = per-unit standard deviation).
* ``mde``: *relative* by default (0.05 = +5 % of the baseline, delta =
  mde * |baseline|); ``relative=False`` takes an absolute difference.
* variances: mean metrics ``var_sum = 2 stddev^2``; conversion metrics the
  unpooled ``p1(1-p1) + p2(1-p2)`` with p2 = p1 + delta (the treatment rate
  the MDE implies).  The equivalent statsmodels effect size is
  ``d = delta / sqrt(var_sum / 2)``.
* ``variations`` (control included, default 2): every treatment is compared
  with control, so alpha is Bonferroni-split over the ``variations - 1``
  comparisons (alpha' = alpha / (variations - 1)); the total is
  ``per_variation * variations`` (equal weights).

Functions
---------
``achieved_power(n_per_variation, baseline, mde, *, stddev=None, relative=True, alpha=0.05,
variations=2) -> float | None``
``sample_size(baseline, mde, *, stddev=None, relative=True, alpha=0.05, power=0.8,
variations=2) -> SampleSize | None``
    smallest integer n per variation with power >= ``power``.
``minimum_detectable_effect(n_per_variation, baseline, *, stddev=None, relative=True,
alpha=0.05, power=0.8, variations=2) -> float | None``
    smallest positive effect (same scale as ``relative``) detected with
    ``power``; None when not reachable (e.g. a conversion rate would exceed 1).

Invalid or degenerate inputs return None rather than raising.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import optimize as _opt
from scipy import stats as _st


@dataclass(frozen=True)
class SampleSize:
    per_variation: int
    total: int
    alpha_per_comparison: float


def _alpha_per_comparison(alpha: float, variations: int) -> float:
    return alpha / max(1, variations - 1)


def _delta(baseline: float, mde: float, relative: bool) -> float:
    return mde * abs(baseline) if relative else mde


def _var_sum(baseline: float, delta: float, stddev: float | None) -> float | None:
    if stddev is None:
        p1, p2 = baseline, baseline + delta
        if not (0.0 < p1 < 1.0) or not (0.0 < p2 < 1.0):
            return None
        return p1 * (1.0 - p1) + p2 * (1.0 - p2)
    if not stddev > 0:
        return None
    return 2.0 * stddev**2


def _power(n: float, delta: float, var_sum: float, alpha: float) -> float:
    if not n > 0:  # no units: the test rejects at its size, alpha (a solver may probe n -> 0)
        return alpha
    z = _st.norm.isf(alpha / 2.0)
    se = math.sqrt(var_sum / n)
    if se == 0.0:  # n so large (or infinite) that any effect is certain to be found
        return 1.0
    shift = abs(delta) / se
    return float(_st.norm.cdf(shift - z) + _st.norm.cdf(-shift - z))


def _valid(alpha: float, variations: int, power: float | None = None) -> bool:
    if not (0.0 < alpha < 1.0) or variations < 2:
        return False
    return power is None or (0.0 < power < 1.0)


def achieved_power(
    n_per_variation: float,
    baseline: float,
    mde: float,
    *,
    stddev: float | None = None,
    relative: bool = True,
    alpha: float = 0.05,
    variations: int = 2,
) -> float | None:
    """Power of the two-sided test with ``n_per_variation`` units per arm."""
    if not _valid(alpha, variations) or not n_per_variation > 0:
        return None
    delta = _delta(baseline, mde, relative)
    vs = _var_sum(baseline, delta, stddev)
    if vs is None:
        return None
    return _power(n_per_variation, delta, vs, _alpha_per_comparison(alpha, variations))


def sample_size(
    baseline: float,
    mde: float,
    *,
    stddev: float | None = None,
    relative: bool = True,
    alpha: float = 0.05,
    power: float = 0.8,
    variations: int = 2,
) -> SampleSize | None:
    """Units per variation needed to detect ``mde`` with ``power``."""
    if not _valid(alpha, variations, power):
        return None
    a = _alpha_per_comparison(alpha, variations)
    delta = _delta(baseline, mde, relative)
    vs = _var_sum(baseline, delta, stddev)
    if vs is None or delta == 0 or power <= a:
        return None
    z_a = _st.norm.isf(a / 2.0)
    z_b = _st.norm.ppf(power)
    # closed form ignoring the far tail: power(n0) >= target, power(0+) = a < target
    n0 = (z_a + z_b) ** 2 * vs / delta**2
    if not math.isfinite(n0):
        return None
    # (the upper bound leaves room for rounding when the far tail is nil)
    n = _opt.brentq(lambda x: _power(x, delta, vs, a) - power, n0 * 1e-9, n0 * 1.001 + 1, xtol=1e-10)
    per = max(2, math.ceil(n - 1e-6))
    return SampleSize(per, per * variations, a)


def minimum_detectable_effect(
    n_per_variation: float,
    baseline: float,
    *,
    stddev: float | None = None,
    relative: bool = True,
    alpha: float = 0.05,
    power: float = 0.8,
    variations: int = 2,
) -> float | None:
    """Smallest positive lift detectable with ``power`` at ``n_per_variation``."""
    if not _valid(alpha, variations, power) or not n_per_variation > 0:
        return None
    a = _alpha_per_comparison(alpha, variations)
    if power <= a:
        return None

    def gap(delta: float) -> float:
        vs = _var_sum(baseline, delta, stddev)
        return _power(n_per_variation, delta, vs, a) - power  # type: ignore[arg-type]

    if stddev is None:
        if not 0.0 < baseline < 1.0:
            return None
        hi = (1.0 - baseline) * (1.0 - 1e-12)
    else:
        if not stddev > 0:
            return None
        z = _st.norm.isf(a / 2.0) + _st.norm.ppf(power)
        hi = 2.0 * (abs(z) + 1.0) * math.sqrt(2.0 * stddev**2 / n_per_variation)
    lo = hi * 1e-12
    if gap(hi) < 0:
        return None
    delta = _opt.brentq(gap, lo, hi, xtol=1e-14, rtol=1e-12)
    if relative:
        if baseline == 0:
            return None
        return float(delta / abs(baseline))
    return float(delta)
