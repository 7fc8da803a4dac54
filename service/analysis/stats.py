"""Statistics core of Pitcrew's experiment analysis (docs/analysis.md).

Pure functions over per-variation *sufficient statistics*: numbers in,
numbers out.  numpy/scipy only -- no I/O, no Flask, no SQLAlchemy.  The SQL
layer aggregates events to the dataclasses below; everything else is small
numeric work modelled on GrowthBook's ``gbstats`` (formulas checked against
the gbstats 0.8.0 wheel and the current ``packages/stats/gbstats`` sources
and test fixtures of growthbook/growthbook).

Inputs (one per variation, produced by SQL)
-------------------------------------------
``SampleStats(n, sum, sum_squares)``
    mean / count metrics: per-unit value y_i (zeros included),
    ``sum = sum(y_i)``, ``sum_squares = sum(y_i**2)``.
    conversion metrics: ``sum`` = number of converted units and
    ``sum_squares = sum`` (y_i is 0/1).
``RatioStats(n, sum_num, sum_num_sq, sum_den, sum_den_sq, sum_num_den)``
    ratio metrics: per-unit numerator m_i and denominator d_i.
``CupedStats(n, sum_y, sum_y2, sum_x, sum_x2, sum_xy)``
    CUPED: y = metric in the analysis window, x = same metric in the
    pre-exposure window (default 14 days), per unit.

Per-variation summaries -> ``Moments``
--------------------------------------
``sample_variance(n, total, total_squares) -> float``
    (sum y^2 - (sum y)^2 / n) / (n - 1); 0.0 when n < 2.
``mean_moments(s: SampleStats) -> Moments``          mean / count metrics.
``proportion_moments(s: SampleStats) -> Moments``    conversion: variance p(1-p).
``ratio_moments(r: RatioStats) -> Moments``
    value sum_num / sum_den; per-unit delta-method variance
    var_m/mu_d^2 - 2 cov_md mu_m/mu_d^3 + mu_m^2 var_d/mu_d^4.
``cuped_theta(stats: Sequence[CupedStats], binary=False) -> float``
    theta = cov(Y, X) / var(X) over the units of all variations passed
    (sums pooled, as gbstats ``compute_theta``); 0.0 when var(X) or var(Y)
    is 0 (CUPED then reverts to the unadjusted analysis, as gbstats).
``cuped_moments(c: CupedStats, theta, binary=False) -> Moments``
    adjusted mean ybar - theta xbar and variance
    var_y + theta^2 var_x - 2 theta cov_xy (binary=True: conversion metric,
    variances p(1-p)).  ``unadjusted_mean`` keeps ybar.
    For one control/treatment pair, ``cuped_theta([control, treatment])``
    is exactly gbstats' theta (which gbstats computes per comparison); the
    results pool it over all the variations of a slice.

Comparisons (control first, treatment second; both ``Moments``)
----------------------------------------------------------------
``lift(control, treatment, relative=False) -> (estimate, variance) | None``
    absolute ybar_b - ybar_a, variance s_b^2/n_b + s_a^2/n_a;
    relative (ybar_b - ybar_a)/|ybar_a| (ybar_a unadjusted), variance
    s_b^2/(n_b ybar_a^2) + s_a^2 ybar_b^2/(n_a ybar_a^4); for CUPED pairs the
    full delta method of gbstats ``frequentist_variance_relative_cuped``.
``welch_df(control, treatment) -> float | None``     Welch-Satterthwaite df.
``frequentist_test(control, treatment, *, relative=False, alpha=0.05) -> TestResult | None``
    Welch t-test: two-sided p-value and (1 - alpha) CI with the
    Welch-Satterthwaite df.  The relative test uses the same df (computed
    from the per-variation variances) and t critical value as gbstats.
``sequential_rho(alpha, tuning_n=5000) -> float``
``sequential_test(control, treatment, *, relative=False, alpha=0.05, tuning_n=5000) -> TestResult | None``
    asymptotic confidence sequence (Waudby-Smith et al. 2023, eq. 9/161)
    with N = n_a + n_b and s^2 = Var(lift) * N; the p-value is gbstats'
    always-valid p-value min(1, 1/e-value) (eq. 155), which is exactly
    consistent with the interval: p < alpha iff the CI excludes 0.
``bayesian_test(control, treatment, *, relative=True, alpha=0.05, direction="increase",
prior_mean=None, prior_variance=None) -> BayesianResult | None``
    normal approximation on the lift (mean = lift estimate, variance =
    Var(lift)); flat (improper) prior by default, or a normal prior
    N(prior_mean, prior_variance) on the *same scale* as the lift computed
    (relative by default, like gbstats' default ``prior_type``).  Chance to
    beat control = P(lift > 0) (P(lift < 0) for ``direction="decrease"``);
    risk_control = expected loss of keeping control = E[max(L, 0)],
    risk_treatment = expected loss of shipping treatment = E[max(-L, 0)]
    (swapped for ``decrease``), closed form of gbstats' truncated-normal
    computation; credible interval at 1 - alpha.
``compare(control, treatment, *, engine="frequentist", alpha=0.05, sequential=False,
sequential_n=5000, direction="increase", prior_mean=None, prior_variance=None) -> Comparison``
    convenience: absolute and relative results for one treatment as the
    results JSON needs them, plus chance to beat control / risk (Bayesian
    engine only; computed on the relative lift as gbstats does by default).

Experiment-level checks
-----------------------
``srm_test(observed, weights, threshold=0.001) -> SrmResult``
    chi-square goodness of fit of units vs. weights (basis points or any
    positive scale); flagged when p < threshold.  As gbstats ``check_srm``:
    no units -> p = 1; variations with weight <= 0 are skipped, df = k - 1.
``holm(p_values) / benjamini_hochberg(p_values) -> list[float | None]``
``adjust_p_values(p_values, method: None | "holm" | "bh") -> list[float | None]``
    None entries are passed through and do not count in m.  Benjamini-
    Hochberg is scipy's ``false_discovery_control``.

Winsorization (capping)
-----------------------
Capped sufficient statistics are formed in SQL (``queries.py``): the cap
is the ``quantile`` (e.g. 0.99) of the per-unit values of *all* variations
(linear interpolation, as ``percentile_cont``), upper tail only (like
GrowthBook's percentile capping), then ``n = count(*)``,
``sum = sum(least(y, cap))``, ``sum_squares = sum(least(y, cap)^2)``.
Ratio metrics cap numerator and denominator per unit with their own caps;
CUPED caps the pre-period value with a cap computed on the pre-period
values.  Conversion metrics are not capped.  A numpy reference of the
same aggregation is in tests/analysis/reference.py.

Not computable
--------------
Comparisons return ``None`` (never raise, never NaN/inf) when
n < 2 in either arm, either per-unit variance is <= 0 (gbstats returns its
default "zero variance" output there), the relative lift has a zero control
mean, or a non-finite number would result.  ``TestResult.to_dict()`` /
``BayesianResult`` fields are plain finite floats ready for JSON.

Deviations from gbstats (deliberate)
------------------------------------
* relative lift divides by |control mean| (docs/analysis.md); gbstats divides by the
  signed mean.  Identical whenever the control mean is positive; the
  variance is identical always.
* absolute lift is computed when the control mean is 0 (gbstats returns its
  default output whenever the control mean is 0, even for absolute lifts).
* p-values use ``t.sf`` (2 * sf(|t|)) instead of ``2 * (1 - cdf(|t|))``:
  same number, without cancellation for tiny p-values.
* Bayesian risk uses the closed form mu Phi(mu/s) + s phi(mu/s) instead of
  scipy's truncated normal; mathematically identical.
* degenerate inputs give ``None`` instead of gbstats' placeholder results
  (p = 1, CI [0, 0], chance to win 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as _st

SRM_P_THRESHOLD = 0.001
DEFAULT_ALPHA = 0.05
DEFAULT_SEQUENTIAL_N = 5000.0

Direction = Literal["increase", "decrease"]


# ---------------------------------------------------------------------------
# inputs: sufficient statistics per variation
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleStats:
    """n units, sum of per-unit values, sum of squared per-unit values."""

    n: int
    sum: float
    sum_squares: float


@dataclass(frozen=True)
class RatioStats:
    """Per-unit numerator m and denominator d sums for a ratio metric."""

    n: int
    sum_num: float
    sum_num_sq: float
    sum_den: float
    sum_den_sq: float
    sum_num_den: float


@dataclass(frozen=True)
class CupedStats:
    """Post-exposure metric y and pre-exposure covariate x, per unit."""

    n: int
    sum_y: float
    sum_y2: float
    sum_x: float
    sum_x2: float
    sum_xy: float


# ---------------------------------------------------------------------------
# per-variation summaries
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CupedParts:
    """Extra CUPED quantities needed by the relative delta method."""

    theta: float
    post_mean: float
    post_variance: float
    pre_variance: float
    covariance: float


@dataclass(frozen=True)
class Moments:
    """What the tests need per variation.

    ``mean`` is the (CUPED-adjusted) mean used for the lift, ``variance`` the
    per-unit variance (the variance of the mean is ``variance / n``),
    ``unadjusted_mean`` the raw value (denominator of the relative lift and
    the ``value`` of the results JSON).
    """

    n: int
    mean: float
    variance: float
    unadjusted_mean: float
    cuped: CupedParts | None = None

    @property
    def stddev(self) -> float:
        return math.sqrt(self.variance) if self.variance > 0 else 0.0


def _mean(n: float, total: float) -> float:
    return total / n if n > 0 else 0.0


def sample_variance(n: int, total: float, total_squares: float) -> float:
    """Unbiased per-unit variance from sums; 0.0 when n < 2."""
    if n <= 1:
        return 0.0
    return (total_squares - total * total / n) / (n - 1)


def _covariance(n: int, sum_a: float, sum_b: float, sum_ab: float) -> float:
    if n <= 1:
        return 0.0
    return (sum_ab - sum_a * sum_b / n) / (n - 1)


def _variance(n: int, total: float, total_squares: float, binary: bool) -> float:
    if binary:
        p = _mean(n, total)
        return p * (1.0 - p)
    return sample_variance(n, total, total_squares)


def mean_moments(s: SampleStats) -> Moments:
    """Mean / count metric: ybar and s^2 = (sum y^2 - (sum y)^2/n)/(n-1)."""
    m = _mean(s.n, s.sum)
    return Moments(s.n, m, sample_variance(s.n, s.sum, s.sum_squares), m)


def proportion_moments(s: SampleStats) -> Moments:
    """Conversion metric: p = converted / n and variance p(1-p) (as gbstats)."""
    p = _mean(s.n, s.sum)
    return Moments(s.n, p, p * (1.0 - p), p)


def ratio_moments(r: RatioStats) -> Moments:
    """Ratio metric sum_num / sum_den with the delta-method per-unit variance.

    Matches gbstats ``RatioStatistic``: mean 0 when sum_den is 0, variance 0
    when the denominator mean is 0 or n < 2 (the comparison is then not
    computable).
    """
    value = r.sum_num / r.sum_den if r.sum_den != 0 else 0.0
    mu_m = _mean(r.n, r.sum_num)
    mu_d = _mean(r.n, r.sum_den)
    if mu_d == 0 or r.n <= 1:
        return Moments(r.n, value, 0.0, value)
    var_m = sample_variance(r.n, r.sum_num, r.sum_num_sq)
    var_d = sample_variance(r.n, r.sum_den, r.sum_den_sq)
    cov = _covariance(r.n, r.sum_num, r.sum_den, r.sum_num_den)
    variance = var_m / mu_d**2 - 2.0 * cov * mu_m / mu_d**3 + mu_m**2 * var_d / mu_d**4
    return Moments(r.n, value, variance, value)


def cuped_theta(stats: Sequence[CupedStats], binary: bool = False) -> float:
    """Pooled CUPED coefficient cov(Y, X) / var(X) over the given variations.

    The sums of all variations are added and the covariance/variance are
    taken around the grand means (gbstats ``compute_theta``).  Returns 0.0
    when the pooled pre- or post-period variance is 0.
    """
    n = sum(c.n for c in stats)
    sy = sum(c.sum_y for c in stats)
    sx = sum(c.sum_x for c in stats)
    var_y = _variance(n, sy, sum(c.sum_y2 for c in stats), binary)
    var_x = _variance(n, sx, sum(c.sum_x2 for c in stats), binary)
    if var_x == 0 or var_y == 0:
        return 0.0
    cov = _covariance(n, sy, sx, sum(c.sum_xy for c in stats))
    theta = cov / var_x
    return float(theta) if math.isfinite(theta) else 0.0


def cuped_moments(c: CupedStats, theta: float, binary: bool = False) -> Moments:
    """CUPED-adjusted mean ybar - theta xbar and variance var(y - theta x)."""
    post_mean = _mean(c.n, c.sum_y)
    pre_mean = _mean(c.n, c.sum_x)
    if c.n <= 1:
        var_y = var_x = cov = 0.0
    else:
        var_y = _variance(c.n, c.sum_y, c.sum_y2, binary)
        var_x = _variance(c.n, c.sum_x, c.sum_x2, binary)
        cov = _covariance(c.n, c.sum_y, c.sum_x, c.sum_xy)
    variance = var_y + theta**2 * var_x - 2.0 * theta * cov if c.n > 1 else 0.0
    return Moments(
        n=c.n,
        mean=post_mean - theta * pre_mean,
        variance=variance,
        unadjusted_mean=post_mean,
        cuped=CupedParts(theta, post_mean, var_y, var_x, cov),
    )


# ---------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TestResult:
    """Lift estimate with a two-sided interval (and p-value if frequentist)."""

    __test__ = False  # not a pytest test class

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float | None
    stderr: float
    df: float | None = None

    @property
    def ci(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)

    def to_dict(self) -> dict:
        """``{"estimate", "ci": [lo, hi], "p_value"}`` as in the results JSON."""
        return {
            "estimate": self.estimate,
            "ci": [self.ci_low, self.ci_high],
            "p_value": self.p_value,
        }


@dataclass(frozen=True)
class BayesianResult:
    estimate: float  # posterior mean of the lift
    stderr: float  # posterior standard deviation of the lift
    ci_low: float
    ci_high: float
    chance_to_beat_control: float
    risk_control: float  # expected loss if control is kept
    risk_treatment: float  # expected loss if treatment is shipped

    @property
    def ci(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "ci": [self.ci_low, self.ci_high], "p_value": None}


@dataclass(frozen=True)
class Comparison:
    absolute: TestResult | None
    relative: TestResult | None
    chance_to_beat_control: float | None = None
    risk_control: float | None = None
    risk_treatment: float | None = None


def _finite(*xs: float | None) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


# ---------------------------------------------------------------------------
# lift and degrees of freedom
# ---------------------------------------------------------------------------


def _computable(a: Moments, b: Moments) -> bool:
    return (
        a.n >= 2
        and b.n >= 2
        and _finite(a.mean, b.mean, a.variance, b.variance, a.unadjusted_mean)
        and a.variance > 0
        and b.variance > 0
    )


def _relative_cuped_variance(a: Moments, b: Moments) -> float:
    """gbstats ``frequentist_variance_relative_cuped`` (full delta method)."""
    assert a.cuped is not None and b.cuped is not None
    ua = a.unadjusted_mean
    theta = a.cuped.theta
    v_trt = b.variance / (b.n * ua**2)
    const = -b.cuped.post_mean
    num = (
        a.cuped.post_variance * const**2 / ua**2
        + 2.0 * theta * a.cuped.covariance * const / ua
        + theta**2 * a.cuped.pre_variance
    )
    return v_trt + num / (a.n * ua**2)


def lift(control: Moments, treatment: Moments, relative: bool = False) -> tuple[float, float] | None:
    """(estimate, variance of the estimate) of the lift, or None if not computable."""
    a, b = control, treatment
    if not _computable(a, b):
        return None
    if not relative:
        est = b.mean - a.mean
        var = b.variance / b.n + a.variance / a.n
    else:
        ua = a.unadjusted_mean
        if ua == 0:
            return None
        est = (b.mean - a.mean) / abs(ua)
        if a.cuped is not None and b.cuped is not None:
            var = _relative_cuped_variance(a, b)
        else:
            ub = b.unadjusted_mean
            var = b.variance / (b.n * ua**2) + a.variance * ub**2 / (a.n * ua**4)
    if not _finite(est, var) or var <= 0:
        return None
    return float(est), float(var)


def welch_df(control: Moments, treatment: Moments) -> float | None:
    """Welch-Satterthwaite degrees of freedom from the per-variation variances."""
    a, b = control, treatment
    if not _computable(a, b):
        return None
    va, vb = a.variance / a.n, b.variance / b.n
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    return float(df) if math.isfinite(df) and df > 0 else None


# ---------------------------------------------------------------------------
# frequentist
# ---------------------------------------------------------------------------


def frequentist_test(
    control: Moments,
    treatment: Moments,
    *,
    relative: bool = False,
    alpha: float = DEFAULT_ALPHA,
) -> TestResult | None:
    """Two-sided Welch t-test on the absolute or relative lift."""
    lv = lift(control, treatment, relative)
    df = welch_df(control, treatment)
    if lv is None or df is None:
        return None
    est, var = lv
    se = math.sqrt(var)
    t_stat = est / se
    p = float(min(1.0, 2.0 * _st.t.sf(abs(t_stat), df)))
    half = float(_st.t.ppf(1.0 - alpha / 2.0, df)) * se
    if not _finite(p, half):
        return None
    return TestResult(est, est - half, est + half, p, se, df)


# ---------------------------------------------------------------------------
# sequential (asymptotic confidence sequences)
# ---------------------------------------------------------------------------


def sequential_rho(alpha: float = DEFAULT_ALPHA, tuning_n: float = DEFAULT_SEQUENTIAL_N) -> float:
    """Mixing parameter rho for tuning N* (Waudby-Smith et al. 2023, eq. 161)."""
    la = math.log(alpha)
    return math.sqrt((-2.0 * la + math.log(-2.0 * la + 1.0)) / tuning_n)


def sequential_test(
    control: Moments,
    treatment: Moments,
    *,
    relative: bool = False,
    alpha: float = DEFAULT_ALPHA,
    tuning_n: float = DEFAULT_SEQUENTIAL_N,
) -> TestResult | None:
    """Always-valid two-sided interval and p-value (gbstats SequentialTwoSidedTTest)."""
    if not (0 < alpha < 1) or not tuning_n > 0:
        return None
    lv = lift(control, treatment, relative)
    if lv is None:
        return None
    est, var = lv
    n = control.n + treatment.n
    rho = sequential_rho(alpha, tuning_n)
    nr2p1 = n * rho**2 + 1.0
    s2 = var * n
    half = math.sqrt(s2) * math.sqrt(
        2.0 * nr2p1 * math.log(math.sqrt(nr2p1) / alpha) / (n * rho) ** 2
    )
    # eq. 155: p = min(1, 1/E) with E = exp(rho^2 S_t^2 / (2 (N rho^2 + 1))) / sqrt(N rho^2 + 1)
    st2 = est**2 * n / var
    log_e = rho**2 * st2 / (2.0 * nr2p1) - 0.5 * math.log(nr2p1)
    p = 1.0 if log_e <= 0 else math.exp(-log_e)
    if not _finite(half, p):
        return None
    return TestResult(est, est - half, est + half, p, math.sqrt(var), None)


# ---------------------------------------------------------------------------
# Bayesian
# ---------------------------------------------------------------------------


def _positive_part_mean(mu: float, sigma: float) -> float:
    """E[max(L, 0)] for L ~ N(mu, sigma^2)."""
    z = mu / sigma
    return float(mu * _st.norm.cdf(z) + sigma * _st.norm.pdf(z))


def bayesian_test(
    control: Moments,
    treatment: Moments,
    *,
    relative: bool = True,
    alpha: float = DEFAULT_ALPHA,
    direction: Direction = "increase",
    prior_mean: float | None = None,
    prior_variance: float | None = None,
) -> BayesianResult | None:
    """Normal approximation on the lift (gbstats EffectBayesianABTest).

    Flat prior unless ``prior_variance`` (> 0) is given; the prior is on the
    scale of the lift computed (relative when ``relative``).
    """
    lv = lift(control, treatment, relative)
    if lv is None:
        return None
    data_mean, data_var = lv
    if prior_variance is not None and prior_variance > 0:
        m0 = prior_mean or 0.0
        post_prec = 1.0 / data_var + 1.0 / prior_variance
        mu = (data_mean / data_var + m0 / prior_variance) / post_prec
    else:
        post_prec = 1.0 / data_var
        mu = data_mean
    sigma = math.sqrt(1.0 / post_prec)
    p_up = float(_st.norm.sf(0.0, loc=mu, scale=sigma))
    gain = _positive_part_mean(mu, sigma)  # E[max(L, 0)]
    loss = _positive_part_mean(-mu, sigma)  # E[max(-L, 0)]
    if direction == "decrease":
        ctw, risk_control, risk_treatment = 1.0 - p_up, loss, gain
    else:
        ctw, risk_control, risk_treatment = p_up, gain, loss
    lo, hi = (float(v) for v in _st.norm.ppf([alpha / 2.0, 1.0 - alpha / 2.0], mu, sigma))
    if not _finite(mu, sigma, ctw, risk_control, risk_treatment, lo, hi):
        return None
    return BayesianResult(mu, sigma, lo, hi, ctw, risk_control, risk_treatment)


# ---------------------------------------------------------------------------
# one treatment vs control, as the results JSON needs it
# ---------------------------------------------------------------------------


def _as_test_result(r: BayesianResult | None) -> TestResult | None:
    if r is None:
        return None
    return TestResult(r.estimate, r.ci_low, r.ci_high, None, r.stderr, None)


def compare(
    control: Moments,
    treatment: Moments,
    *,
    engine: Literal["frequentist", "bayesian"] = "frequentist",
    alpha: float = DEFAULT_ALPHA,
    sequential: bool = False,
    sequential_n: float = DEFAULT_SEQUENTIAL_N,
    direction: Direction = "increase",
    prior_mean: float | None = None,
    prior_variance: float | None = None,
) -> Comparison:
    """Absolute and relative results for one treatment against control.

    Frequentist: Welch (or sequential when ``sequential``) tests.  Bayesian:
    posterior mean and credible interval (p_value None) for both scales,
    chance to beat control and risks from the relative lift (gbstats'
    default difference type); the prior applies to the relative lift.
    """
    if engine == "bayesian":
        rel = bayesian_test(
            control,
            treatment,
            relative=True,
            alpha=alpha,
            direction=direction,
            prior_mean=prior_mean,
            prior_variance=prior_variance,
        )
        ab = bayesian_test(control, treatment, relative=False, alpha=alpha, direction=direction)
        return Comparison(
            absolute=_as_test_result(ab),
            relative=_as_test_result(rel),
            chance_to_beat_control=rel.chance_to_beat_control if rel else None,
            risk_control=rel.risk_control if rel else None,
            risk_treatment=rel.risk_treatment if rel else None,
        )
    if sequential:
        return Comparison(
            absolute=sequential_test(control, treatment, alpha=alpha, tuning_n=sequential_n),
            relative=sequential_test(
                control, treatment, relative=True, alpha=alpha, tuning_n=sequential_n
            ),
        )
    return Comparison(
        absolute=frequentist_test(control, treatment, alpha=alpha),
        relative=frequentist_test(control, treatment, relative=True, alpha=alpha),
    )


# ---------------------------------------------------------------------------
# sample ratio mismatch
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SrmResult:
    p_value: float
    statistic: float
    flagged: bool


def srm_test(
    observed: Sequence[int], weights: Sequence[float], threshold: float = SRM_P_THRESHOLD
) -> SrmResult:
    """Chi-square goodness of fit of observed units vs expected weights."""
    if len(observed) != len(weights):
        raise ValueError("observed and weights must have the same length")
    total = float(sum(observed))
    total_weight = float(sum(w for w in weights if w > 0))
    if total <= 0 or total_weight <= 0 or len(observed) < 2:
        return SrmResult(1.0, 0.0, False)
    x2 = 0.0
    for o, w in zip(observed, weights, strict=True):
        if w <= 0:
            continue
        e = w / total_weight * total
        x2 += (o - e) ** 2 / e
    p = float(_st.chi2.sf(x2, len(observed) - 1))
    return SrmResult(p, float(x2), p < threshold)


# ---------------------------------------------------------------------------
# multiple comparisons
# ---------------------------------------------------------------------------


def _present(p_values: Sequence[float | None]) -> tuple[list[int], np.ndarray]:
    idx = [i for i, p in enumerate(p_values) if p is not None]
    return idx, np.array([float(p_values[i]) for i in idx], dtype=float)  # type: ignore[arg-type]


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values; None entries passed through."""
    out: list[float | None] = [None] * len(p_values)
    idx, p = _present(p_values)
    m = len(p)
    if m == 0:
        return out
    order = np.argsort(p, kind="mergesort")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    for rank, j in enumerate(order):
        out[idx[j]] = float(adj[rank])
    return out


def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg (FDR) adjusted p-values (scipy's ``false_discovery_control``);
    None entries passed through."""
    out: list[float | None] = [None] * len(p_values)
    idx, p = _present(p_values)
    if len(p) == 0:
        return out
    for i, adjusted in zip(idx, _st.false_discovery_control(p, method="bh"), strict=True):
        out[i] = float(adjusted)
    return out


def adjust_p_values(
    p_values: Sequence[float | None], method: Literal["holm", "bh"] | None
) -> list[float | None]:
    """Apply the experiment's ``correction`` (None -> p-values unchanged)."""
    if method is None:
        return [None if p is None else float(p) for p in p_values]
    if method == "holm":
        return holm(p_values)
    if method == "bh":
        return benjamini_hochberg(p_values)
    raise ValueError(f"unknown correction {method!r}")
