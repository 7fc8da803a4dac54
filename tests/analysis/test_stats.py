"""Reference tests for service.analysis.stats / power.

Every expected number comes from an independent source: scipy / statsmodels
on the same per-unit data, a delta-method or Monte-Carlo computation written
here with numpy, or gbstats' own published test fixtures
(growthbook/growthbook packages/stats/tests/{frequentist,bayesian}/test_tests.py).
Sufficient statistics are formed in this file with plain numpy (``_suff``),
never with the reference helpers of ``reference.py`` (those are checked here
too: other tests use them as references).
"""

from __future__ import annotations

import json
import math
from dataclasses import astuple

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower, TTestIndPower

from service.analysis import power as power_mod
from service.analysis import power as pw
from service.analysis import stats as S

from . import reference as R

# ---------------------------------------------------------------------------
# helpers (independent of the module)
# ---------------------------------------------------------------------------


def _suff(x) -> S.SampleStats:
    x = np.asarray(x, dtype=float)
    return S.SampleStats(len(x), float(np.sum(x)), float(np.sum(x * x)))


def _ratio_suff(m, d) -> S.RatioStats:
    m = np.asarray(m, dtype=float)
    d = np.asarray(d, dtype=float)
    return S.RatioStats(
        len(m), m.sum(), (m * m).sum(), d.sum(), (d * d).sum(), (m * d).sum()
    )


def _cuped_suff(y, x) -> S.CupedStats:
    return S.CupedStats(len(y), y.sum(), (y * y).sum(), x.sum(), (x * x).sum(), (x * y).sum())


def _moments(x) -> S.Moments:
    return S.mean_moments(_suff(x))


DATASETS = [
    # (seed, n_a, n_b, mean_a, mean_b, sd_a, sd_b, distribution)
    (1, 50, 60, 10.0, 11.0, 3.0, 5.0, "normal"),
    (2, 1000, 900, 0.41, 0.7, 3.9, 6.2, "normal"),
    (3, 12, 7, 5.0, 4.0, 1.0, 4.0, "normal"),
    (4, 3000, 3400, 2.0, 2.1, 0.0, 0.0, "lognormal"),
    (5, 400, 400, 1.0, 1.0, 1.0, 1.0, "normal"),
    (6, 200, 250, -3.0, -2.5, 2.0, 2.0, "normal"),  # negative control mean
]


def _draw(seed, n_a, n_b, mu_a, mu_b, sd_a, sd_b, dist):
    rng = np.random.default_rng(seed)
    if dist == "lognormal":
        a = rng.lognormal(mu_a - 1.5, 1.0, n_a)
        b = rng.lognormal(mu_b - 1.5, 1.0, n_b)
    else:
        a = rng.normal(mu_a, sd_a, n_a)
        b = rng.normal(mu_b, sd_b, n_b)
    return a, b


# ---------------------------------------------------------------------------
# per-variation moments
# ---------------------------------------------------------------------------


def test_mean_variance_matches_numpy():
    x = np.random.default_rng(0).gamma(2.0, 3.0, 777)
    m = _moments(x)
    assert m.mean == pytest.approx(np.mean(x), rel=1e-12)
    assert m.variance == pytest.approx(np.var(x, ddof=1), rel=1e-9)
    assert m.stddev == pytest.approx(np.std(x, ddof=1), rel=1e-9)
    assert m.unadjusted_mean == m.mean


def test_proportion_variance_is_p_one_minus_p():
    m = S.proportion_moments(S.SampleStats(200, 30, 30))
    assert m.mean == pytest.approx(0.15)
    assert m.variance == pytest.approx(0.15 * 0.85)


def test_sample_variance_small_n():
    assert S.sample_variance(1, 3.0, 9.0) == 0.0
    assert S.sample_variance(0, 0.0, 0.0) == 0.0


# ---------------------------------------------------------------------------
# Welch t-test == scipy.stats.ttest_ind(equal_var=False)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.01])
@pytest.mark.parametrize("data", DATASETS)
def test_welch_matches_scipy(data, alpha):
    a, b = _draw(*data)
    ref = sps.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(confidence_level=1 - alpha)
    res = S.frequentist_test(_moments(a), _moments(b), alpha=alpha)
    assert res is not None
    assert res.estimate == pytest.approx(np.mean(b) - np.mean(a), rel=1e-9, abs=1e-12)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)
    assert res.ci_low == pytest.approx(ci.low, rel=1e-6, abs=1e-9)
    assert res.ci_high == pytest.approx(ci.high, rel=1e-6, abs=1e-9)
    assert res.df == pytest.approx(ref.df, rel=1e-6)
    assert S.welch_df(_moments(a), _moments(b)) == pytest.approx(ref.df, rel=1e-6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a=st.lists(st.floats(-100, 100, allow_nan=False), min_size=2, max_size=40),
    b=st.lists(st.floats(-100, 100, allow_nan=False), min_size=2, max_size=40),
)
def test_welch_matches_scipy_property(a, b):
    a, b = np.array(a), np.array(b)
    assume(np.var(a, ddof=1) > 1e-2 and np.var(b, ddof=1) > 1e-2)
    ref = sps.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(0.95)
    res = S.frequentist_test(_moments(a), _moments(b))
    assert res is not None
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-10)
    assert res.ci_low == pytest.approx(ci.low, rel=1e-6, abs=1e-6)
    assert res.ci_high == pytest.approx(ci.high, rel=1e-6, abs=1e-6)


def test_conversion_welch_matches_scipy_from_stats():
    # conversion variance p(1-p) fed to scipy's independent Welch implementation
    ca, cb, na, nb = 412, 468, 4000, 3900
    pa, pb = ca / na, cb / nb
    ref = sps.ttest_ind_from_stats(
        pb, math.sqrt(pb * (1 - pb)), nb, pa, math.sqrt(pa * (1 - pa)), na, equal_var=False
    )
    res = S.frequentist_test(
        S.proportion_moments(S.SampleStats(na, ca, ca)),
        S.proportion_moments(S.SampleStats(nb, cb, cb)),
    )
    assert res is not None
    assert res.estimate == pytest.approx(pb - pa)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)


# ---------------------------------------------------------------------------
# relative lift: direct delta method on per-unit arrays
# ---------------------------------------------------------------------------


def _delta_relative(a, b, alpha):
    """Relative lift (b - a)/|a| via an explicit gradient and covariance."""
    mu_a, mu_b = np.mean(a), np.mean(b)
    f = lambda ma, mb: (mb - ma) / abs(ma)  # noqa: E731
    h = 1e-6 * max(1.0, abs(mu_a), abs(mu_b))
    grad = np.array(
        [
            (f(mu_a + h, mu_b) - f(mu_a - h, mu_b)) / (2 * h),
            (f(mu_a, mu_b + h) - f(mu_a, mu_b - h)) / (2 * h),
        ]
    )
    cov = np.diag([np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)])
    se = math.sqrt(grad @ cov @ grad)
    df = sps.ttest_ind(b, a, equal_var=False).df
    est = f(mu_a, mu_b)
    q = sps.t.ppf(1 - alpha / 2, df)
    return est, se, (est - q * se, est + q * se), 2 * sps.t.sf(abs(est / se), df)


@pytest.mark.parametrize("data", DATASETS)
def test_relative_lift_matches_direct_delta_method(data):
    a, b = _draw(*data)
    est, se, (lo, hi), p = _delta_relative(a, b, 0.05)
    res = S.frequentist_test(_moments(a), _moments(b), relative=True)
    assert res is not None
    assert res.estimate == pytest.approx(est, rel=1e-9)
    assert res.stderr == pytest.approx(se, rel=1e-6)
    assert res.ci_low == pytest.approx(lo, rel=1e-6, abs=1e-9)
    assert res.ci_high == pytest.approx(hi, rel=1e-6, abs=1e-9)
    assert res.p_value == pytest.approx(p, rel=1e-5, abs=1e-12)
    # sign of the relative lift follows the absolute lift, even for mu_a < 0
    assert np.sign(res.estimate) == np.sign(np.mean(b) - np.mean(a))


# ---------------------------------------------------------------------------
# gbstats fixtures (same sufficient statistics -> same numbers, 5 decimals)
# ---------------------------------------------------------------------------

GB_A = S.SampleStats(3407, 1396.87, 52377.9767)
GB_B = S.SampleStats(3461, 2422.7, 134698.29)
GB_A3000 = S.SampleStats(3000, 1396.87, 52377.9767)


def _r5(x):
    return round(x, 5)


def test_gbstats_fixture_two_sided_relative():
    r = S.frequentist_test(S.mean_moments(GB_A), S.mean_moments(GB_B), relative=True)
    assert (_r5(r.estimate), _r5(r.ci_low), _r5(r.ci_high)) == (0.70732, -0.03526, 1.44989)
    assert (_r5(r.stderr), _r5(r.p_value)) == (0.37879, 0.06191)


def test_gbstats_fixture_two_sided_absolute():
    r = S.frequentist_test(S.mean_moments(GB_A), S.mean_moments(GB_B))
    assert (_r5(r.estimate), _r5(r.ci_low), _r5(r.ci_high)) == (0.29, 0.04538, 0.53462)
    assert (_r5(r.stderr), _r5(r.p_value)) == (0.12478, 0.02016)


def test_gbstats_fixture_binomial_relative():
    r = S.frequentist_test(
        S.proportion_moments(S.SampleStats(28, 14, 14)),
        S.proportion_moments(S.SampleStats(30, 16, 16)),
        relative=True,
    )
    assert (_r5(r.ci_low), _r5(r.ci_high), _r5(r.stderr), _r5(r.p_value)) == (
        -0.47767,
        0.61101,
        0.2717,
        0.80707,
    )


def test_gbstats_fixture_sequential_mean():
    r = S.sequential_test(
        S.mean_moments(GB_A3000), S.mean_moments(GB_B), relative=True, tuning_n=1000
    )
    assert (_r5(r.estimate), _r5(r.ci_low), _r5(r.ci_high), _r5(r.stderr)) == (
        0.50336,
        -0.55844,
        1.56516,
        0.33341,
    )
    assert r.p_value == 1.0


def test_gbstats_fixture_sequential_proportion_default_n():
    r = S.sequential_test(
        S.proportion_moments(S.SampleStats(3000, 1396, 1396)),
        S.proportion_moments(S.SampleStats(3461, 2422, 2422)),
        relative=True,
    )
    assert (_r5(r.estimate), _r5(r.ci_low), _r5(r.ci_high), _r5(r.stderr)) == (
        0.50386,
        0.40098,
        0.60675,
        0.03386,
    )
    assert _r5(r.p_value) == 0.0


def test_gbstats_fixture_sequential_cuped():
    a = S.CupedStats(3000, 1396.87, 52377.9767, 16.87, 527.9767, 1)
    b = S.CupedStats(3461, 2422.7, 134698.29, 22.7, 1348.29, 1)
    ma, mb = R.cuped_pair_moments(a, b)
    r = S.sequential_test(ma, mb, relative=True)
    assert (_r5(r.estimate), _r5(r.ci_low), _r5(r.ci_high), _r5(r.stderr)) == (
        0.50338,
        -0.50969,
        1.51646,
        0.33341,
    )
    assert r.p_value == 1.0


def test_gbstats_fixture_bayesian_binomial():
    r = S.bayesian_test(
        S.proportion_moments(S.SampleStats(100, 49, 49)),
        S.proportion_moments(S.SampleStats(100, 51, 51)),
    )
    assert (_r5(r.estimate), _r5(r.ci_low), _r5(r.ci_high), _r5(r.stderr)) == (
        0.04082,
        -0.24779,
        0.32943,
        0.14725,
    )
    assert _r5(r.chance_to_beat_control) == 0.60918
    assert (_r5(r.risk_control), _r5(r.risk_treatment)) == (0.0814, 0.04058)


def test_gbstats_fixture_bayesian_gaussian_flat_and_informative():
    a = S.mean_moments(S.SampleStats(10, 100, 1002.25))
    b = S.mean_moments(S.SampleStats(10, 105, 1111.5))
    r = S.bayesian_test(a, b)
    assert (_r5(r.estimate), _r5(r.ci_low), _r5(r.ci_high), _r5(r.stderr)) == (
        0.05,
        -0.02,
        0.12,
        0.03572,
    )
    assert _r5(r.chance_to_beat_control) == 0.91923
    assert (_r5(r.risk_control), _r5(r.risk_treatment)) == (0.05131, 0.00131)
    r = S.bayesian_test(a, b, prior_mean=0.1, prior_variance=0.1)
    assert (_r5(r.estimate), _r5(r.ci_low), _r5(r.ci_high), _r5(r.stderr)) == (
        0.05063,
        -0.01893,
        0.12019,
        0.03549,
    )
    assert _r5(r.chance_to_beat_control) == 0.92315
    assert (_r5(r.risk_control), _r5(r.risk_treatment)) == (0.05186, 0.00123)


# ---------------------------------------------------------------------------
# sequential: properties of the confidence sequence
# ---------------------------------------------------------------------------


def test_sequential_wider_than_fixed_and_p_value_consistent_with_ci():
    rng = np.random.default_rng(7)
    for shift in [0.0, 0.05, 0.1, 0.2, 0.4]:
        a = rng.normal(0, 1, 2000)
        b = rng.normal(shift, 1, 2000)
        fixed = S.frequentist_test(_moments(a), _moments(b))
        seq = S.sequential_test(_moments(a), _moments(b))
        assert seq.ci_high - seq.ci_low > fixed.ci_high - fixed.ci_low
        excludes_zero = seq.ci_low > 0 or seq.ci_high < 0
        assert (seq.p_value < 0.05) == excludes_zero
        assert 0.0 <= seq.p_value <= 1.0


def test_sequential_rho_formula():
    # eq. 161, evaluated independently
    alpha, n_star = 0.05, 5000
    expected = math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / n_star)
    assert S.sequential_rho(alpha, n_star) == pytest.approx(expected)


# ---------------------------------------------------------------------------
# ratio metric: delta method on per-unit arrays
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ratio_variance_matches_direct_delta_method(seed):
    rng = np.random.default_rng(seed)
    n = 1500
    den = rng.poisson(3.0, n) + 1.0  # e.g. sessions
    num = rng.binomial(den.astype(int), 0.3) * rng.gamma(2.0, 5.0, n)  # e.g. revenue
    mu_m, mu_d = num.mean(), den.mean()
    sigma = np.cov(np.vstack([num, den]), ddof=1)
    grad = np.array([1 / mu_d, -mu_m / mu_d**2])
    m = S.ratio_moments(_ratio_suff(num, den))
    assert m.mean == pytest.approx(num.sum() / den.sum(), rel=1e-12)
    assert m.variance == pytest.approx(grad @ sigma @ grad, rel=1e-8)


def test_ratio_test_uses_delta_variance():
    rng = np.random.default_rng(11)
    arms = []
    for lift_ in (0.0, 0.05):
        den = rng.poisson(4.0, 3000) + 1.0
        num = den * rng.gamma(2.0, 1.0 + lift_, 3000) / 2
        arms.append((num, den))
    (ma, da), (mb, db) = arms
    res = S.frequentist_test(
        S.ratio_moments(_ratio_suff(ma, da)), S.ratio_moments(_ratio_suff(mb, db))
    )

    def var_of_ratio(m, d):
        g = np.array([1 / d.mean(), -m.mean() / d.mean() ** 2])
        return g @ np.cov(np.vstack([m, d]), ddof=1) @ g / len(m)

    se = math.sqrt(var_of_ratio(ma, da) + var_of_ratio(mb, db))
    assert res.estimate == pytest.approx(mb.sum() / db.sum() - ma.sum() / da.sum())
    assert res.stderr == pytest.approx(se, rel=1e-8)


def test_ratio_zero_denominator_not_computable():
    m = S.ratio_moments(S.RatioStats(10, 0, 0, 0, 0, 0))
    assert m.mean == 0.0 and m.variance == 0.0
    assert S.frequentist_test(m, m) is None


# ---------------------------------------------------------------------------
# CUPED
# ---------------------------------------------------------------------------


def _cuped_data(seed=3, n_a=2500, n_b=2600, rho=0.7, effect=0.1):
    rng = np.random.default_rng(seed)
    xa, xb = rng.normal(10, 2, n_a), rng.normal(10, 2, n_b)
    ya = 5 + rho * (xa - 10) + math.sqrt(1 - rho**2) * 2 * rng.normal(size=n_a)
    yb = 5 + effect + rho * (xb - 10) + math.sqrt(1 - rho**2) * 2 * rng.normal(size=n_b)
    return ya, xa, yb, xb


def test_cuped_theta_and_adjusted_moments_match_numpy():
    ya, xa, yb, xb = _cuped_data()
    y_all, x_all = np.concatenate([ya, yb]), np.concatenate([xa, xb])
    theta_ref = np.cov(y_all, x_all, ddof=1)[0, 1] / np.var(x_all, ddof=1)
    theta = S.cuped_theta([_cuped_suff(ya, xa), _cuped_suff(yb, xb)])
    assert theta == pytest.approx(theta_ref, rel=1e-9)
    ma = S.cuped_moments(_cuped_suff(ya, xa), theta)
    assert ma.mean == pytest.approx(np.mean(ya - theta_ref * xa), rel=1e-9)
    assert ma.variance == pytest.approx(np.var(ya - theta_ref * xa, ddof=1), rel=1e-8)
    assert ma.unadjusted_mean == pytest.approx(ya.mean())


def test_cuped_absolute_test_is_welch_on_adjusted_values():
    ya, xa, yb, xb = _cuped_data()
    ma, mb = R.cuped_pair_moments(_cuped_suff(ya, xa), _cuped_suff(yb, xb))
    theta = ma.cuped.theta
    ref = sps.ttest_ind(yb - theta * xb, ya - theta * xa, equal_var=False)
    ci = ref.confidence_interval(0.95)
    res = S.frequentist_test(ma, mb)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    assert res.ci_low == pytest.approx(ci.low, rel=1e-6)
    assert res.ci_high == pytest.approx(ci.high, rel=1e-6)


def test_cuped_relative_variance_close_to_exact_delta_method():
    """gbstats' relative CUPED variance vs a full numerical delta method.

    gbstats evaluates the control gradient at Yb instead of Yb - theta (Xb - Xa)
    (equal in expectation under randomisation), so agreement is approximate.
    """
    ya, xa, yb, xb = _cuped_data()
    ma, mb = R.cuped_pair_moments(_cuped_suff(ya, xa), _cuped_suff(yb, xb))
    theta = ma.cuped.theta

    def f(v):  # v = (Ya, Xa, Yb, Xb) means, theta fixed
        return ((v[2] - theta * v[3]) - (v[0] - theta * v[1])) / abs(v[0])

    v0 = np.array([ya.mean(), xa.mean(), yb.mean(), xb.mean()])
    grad = np.array([(f(v0 + e) - f(v0 - e)) / 2e-6 for e in np.eye(4) * 1e-6])
    cov = np.zeros((4, 4))
    cov[:2, :2] = np.cov(ya, xa, ddof=1) / len(ya)
    cov[2:, 2:] = np.cov(yb, xb, ddof=1) / len(yb)
    se_ref = math.sqrt(grad @ cov @ grad)
    res = S.frequentist_test(ma, mb, relative=True)
    assert res.estimate == pytest.approx(f(v0), rel=1e-9)
    assert res.stderr == pytest.approx(se_ref, rel=1e-2)


def test_cuped_binary_theta_uses_proportion_variance():
    rng = np.random.default_rng(5)
    x = rng.binomial(1, 0.3, 4000).astype(float)
    y = np.where(rng.random(4000) < 0.6, x, rng.binomial(1, 0.3, 4000)).astype(float)
    a, b = _cuped_suff(y[:2000], x[:2000]), _cuped_suff(y[2000:], x[2000:])
    px = x.mean()
    theta_ref = np.cov(y, x, ddof=1)[0, 1] / (px * (1 - px))
    assert S.cuped_theta([a, b], binary=True) == pytest.approx(theta_ref, rel=1e-9)


def test_cuped_without_pre_variance_reverts_to_plain():
    rng = np.random.default_rng(8)
    ya, yb = rng.normal(0, 1, 100), rng.normal(0.2, 1, 100)
    zero = np.zeros(100)
    ma, mb = R.cuped_pair_moments(_cuped_suff(ya, zero), _cuped_suff(yb, zero))
    assert ma.cuped.theta == 0.0
    plain = S.frequentist_test(_moments(ya), _moments(yb), relative=True)
    cuped = S.frequentist_test(ma, mb, relative=True)
    assert cuped.p_value == pytest.approx(plain.p_value)
    assert cuped.ci == pytest.approx(plain.ci)


# ---------------------------------------------------------------------------
# Bayesian: closed-form normal CDF and Monte Carlo references
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("direction", ["increase", "decrease"])
def test_bayesian_matches_closed_form_and_monte_carlo(relative, direction):
    rng = np.random.default_rng(21)
    a, b = rng.normal(10.0, 4.0, 800), rng.normal(10.3, 4.0, 820)
    mu_a, mu_b = a.mean(), b.mean()
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    if relative:
        d = (mu_b - mu_a) / mu_a
        sd = math.sqrt(vb / mu_a**2 + va * mu_b**2 / mu_a**4)
    else:
        d, sd = mu_b - mu_a, math.sqrt(va + vb)
    res = S.bayesian_test(_moments(a), _moments(b), relative=relative, direction=direction)
    p_up = sps.norm.cdf(d / sd)
    expected_ctw = p_up if direction == "increase" else 1 - p_up
    assert res.chance_to_beat_control == pytest.approx(expected_ctw, rel=1e-9)

    draws = np.random.default_rng(99).normal(d, sd, 2_000_000)
    mc_ctw = np.mean(draws > 0) if direction == "increase" else np.mean(draws < 0)
    gain, loss = np.mean(np.maximum(draws, 0)), np.mean(np.maximum(-draws, 0))
    risk_c, risk_t = (gain, loss) if direction == "increase" else (loss, gain)
    assert res.chance_to_beat_control == pytest.approx(mc_ctw, abs=2e-3)
    assert res.risk_control == pytest.approx(risk_c, rel=1e-2, abs=1e-3 * sd)
    assert res.risk_treatment == pytest.approx(risk_t, rel=1e-2, abs=1e-3 * sd)
    lo, hi = np.quantile(draws, [0.025, 0.975])
    assert res.ci_low == pytest.approx(lo, abs=0.01 * sd)
    assert res.ci_high == pytest.approx(hi, abs=0.01 * sd)


def test_bayesian_normal_prior_matches_monte_carlo_posterior():
    # posterior of the lift under prior N(m0, v0) and likelihood N(d, se^2),
    # by importance-weighting prior draws with the likelihood
    a = S.mean_moments(S.SampleStats(400, 4000, 4000 * 10 + 399 * 9))
    b = S.mean_moments(S.SampleStats(400, 4100, 4100**2 / 400 + 399 * 9.5))
    d = (b.mean - a.mean) / a.mean
    res_flat = S.bayesian_test(a, b)
    var = res_flat.stderr**2
    assert res_flat.estimate == pytest.approx(d)
    m0, v0 = -0.02, 0.0004
    draws = np.random.default_rng(3).normal(m0, math.sqrt(v0), 2_000_000)
    w = np.exp(-0.5 * (draws - d) ** 2 / var)
    post_mean = np.sum(w * draws) / np.sum(w)
    post_p_up = np.sum(w * (draws > 0)) / np.sum(w)
    res = S.bayesian_test(a, b, prior_mean=m0, prior_variance=v0)
    assert res.estimate == pytest.approx(post_mean, abs=3e-4)
    assert res.chance_to_beat_control == pytest.approx(post_p_up, abs=3e-3)


# ---------------------------------------------------------------------------
# SRM == scipy.stats.chisquare
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "observed,weights",
    [
        ([50_500, 49_500], [5000, 5000]),
        ([51_000, 49_000], [5000, 5000]),
        ([3_310, 3_290, 3_400], [3333, 3333, 3334]),
        ([1_000, 2_100, 6_900], [1000, 2000, 7000]),
        ([12, 7], [5000, 5000]),
    ],
)
def test_srm_matches_scipy_chisquare(observed, weights):
    obs = np.array(observed, dtype=float)
    w = np.array(weights, dtype=float)
    ref = sps.chisquare(obs, f_exp=w / w.sum() * obs.sum())
    res = S.srm_test(observed, weights)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert res.flagged == (ref.pvalue < 0.001)


def test_srm_one_percentage_point_mismatch_flagged():
    # 51/49 on 100,000 units: chi2 = 40, p ~ 2.5e-10 -> flagged
    res = S.srm_test([51_000, 49_000], [5000, 5000])
    assert res.statistic == pytest.approx(40.0)
    assert res.p_value < 1e-9 and res.flagged
    # 50.5/49.5 is chi2 = 10, p ~ 0.0016: NOT flagged at 0.001
    res = S.srm_test([50_500, 49_500], [5000, 5000])
    assert res.statistic == pytest.approx(10.0)
    assert 0.001 < res.p_value < 0.002 and not res.flagged


def test_srm_empty():
    assert S.srm_test([0, 0], [5000, 5000]) == S.SrmResult(1.0, 0.0, False)


# ---------------------------------------------------------------------------
# Holm / Benjamini-Hochberg == statsmodels multipletests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_corrections_match_statsmodels(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 0.06, 6), rng.uniform(0, 1, 6), [0.01, 0.01]])
    rng.shuffle(p)
    for method, sm in [("holm", "holm"), ("bh", "fdr_bh")]:
        ours = S.adjust_p_values(list(p), method)
        ref = multipletests(p, method=sm)[1]
        np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_corrections_pass_none_through():
    p = [0.01, None, 0.04, 0.03, None]
    present = [0.01, 0.04, 0.03]
    for method, sm in [("holm", "holm"), ("bh", "fdr_bh")]:
        ours = S.adjust_p_values(p, method)
        ref = multipletests(present, method=sm)[1]
        assert ours[1] is None and ours[4] is None
        np.testing.assert_allclose([ours[0], ours[2], ours[3]], ref, rtol=1e-12)
    assert S.adjust_p_values(p, None) == p
    assert S.holm([None]) == [None]
    with pytest.raises(ValueError):
        S.adjust_p_values(p, "bonferroni")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# winsorization
# ---------------------------------------------------------------------------


def _percentile_cont(values, q):
    v = np.sort(np.asarray(values, dtype=float))
    h = (len(v) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (h - lo) * (v[hi] - v[lo])


def test_winsorize_cap_is_sql_percentile_cont():
    v = np.random.default_rng(4).lognormal(0, 2, 1001)
    for q in [0.5, 0.9, 0.99, 0.999, 1.0]:
        assert R.winsorize_cap(v, q) == pytest.approx(_percentile_cont(v, q), rel=1e-12)
    with_zeros = np.concatenate([np.zeros(500), v])
    assert R.winsorize_cap(with_zeros, 0.9, ignore_zeros=True) == pytest.approx(
        _percentile_cont(v, 0.9)
    )
    assert R.winsorize_cap([], 0.9) is None
    with pytest.raises(ValueError):
        R.winsorize_cap(v, 1.5)


def test_winsorized_sample_stats():
    v = np.random.default_rng(5).pareto(1.5, 5000)
    cap = _percentile_cont(v, 0.99)
    capped = np.where(v > cap, cap, v)
    np.testing.assert_array_equal(R.winsorize(v, quantile=0.99), capped)
    np.testing.assert_array_equal(R.winsorize(v), v)
    for ours, ref in [
        (R.sample_stats_from_values(v, cap), _suff(capped)),
        (R.ratio_stats_from_values(v, v + 1), _ratio_suff(v, v + 1)),
        (R.cuped_stats_from_values(v, 2 * v), _cuped_suff(v, 2 * v)),
    ]:
        assert type(ours) is type(ref)
        np.testing.assert_allclose(astuple(ours), astuple(ref), rtol=1e-12)


# ---------------------------------------------------------------------------
# degenerate inputs: None, never NaN, never raise
# ---------------------------------------------------------------------------


def _all_tests(a, b):
    return [
        S.frequentist_test(a, b),
        S.frequentist_test(a, b, relative=True),
        S.sequential_test(a, b),
        S.sequential_test(a, b, relative=True),
        S.bayesian_test(a, b),
        S.bayesian_test(a, b, relative=False),
    ]


@pytest.mark.parametrize(
    "a,b",
    [
        (S.SampleStats(0, 0, 0), S.SampleStats(0, 0, 0)),
        (S.SampleStats(1, 3, 9), S.SampleStats(100, 50, 60)),
        (S.SampleStats(100, 500, 2500), S.SampleStats(100, 50, 60)),  # zero variance
        (S.SampleStats(100, 0, 0), S.SampleStats(100, 10, 10)),  # zero control conversions
    ],
)
def test_degenerate_inputs_not_computable(a, b):
    for ma, mb in [(S.mean_moments(a), S.mean_moments(b))]:
        assert all(r is None for r in _all_tests(ma, mb))
    assert S.lift(S.mean_moments(a), S.mean_moments(b)) is None
    assert S.welch_df(S.mean_moments(a), S.mean_moments(b)) is None


def test_zero_control_mean_relative_none_absolute_ok():
    a = np.array([-1.0, 1.0] * 50)
    b = np.array([-1.0, 2.0] * 50)
    assert S.frequentist_test(_moments(a), _moments(b), relative=True) is None
    assert S.bayesian_test(_moments(a), _moments(b), relative=True) is None
    res = S.frequentist_test(_moments(a), _moments(b))
    ref = sps.ttest_ind(b, a, equal_var=False)
    assert res.p_value == pytest.approx(ref.pvalue)


def test_results_are_json_safe():
    rng = np.random.default_rng(1)
    a, b = _moments(rng.normal(1, 1, 100)), _moments(rng.normal(1.2, 1, 100))
    for engine in ["frequentist", "bayesian"]:
        for sequential in [False, True]:
            c = S.compare(a, b, engine=engine, sequential=sequential)
            json.dumps(c.absolute.to_dict(), allow_nan=False)
            json.dumps(c.relative.to_dict(), allow_nan=False)
    # extreme separation: p-values underflow to 0, never NaN
    big = _moments(rng.normal(100, 1, 10_000))
    for r in _all_tests(a, big):
        assert r is not None
        json.dumps(r.to_dict(), allow_nan=False)


def test_compare_shapes():
    rng = np.random.default_rng(2)
    a, b = _moments(rng.normal(10, 2, 500)), _moments(rng.normal(10.5, 2, 500))
    f = S.compare(a, b)
    assert f.absolute.p_value is not None and f.chance_to_beat_control is None
    assert f.absolute == S.frequentist_test(a, b)
    s = S.compare(a, b, sequential=True, sequential_n=2000)
    assert s.relative == S.sequential_test(a, b, relative=True, tuning_n=2000)
    bay = S.compare(a, b, engine="bayesian", direction="decrease")
    rel = S.bayesian_test(a, b, direction="decrease")
    assert bay.relative.p_value is None
    assert bay.chance_to_beat_control == rel.chance_to_beat_control < 0.5
    assert bay.risk_treatment == rel.risk_treatment > bay.risk_control


# ---------------------------------------------------------------------------
# power / sample size / MDE == statsmodels
# ---------------------------------------------------------------------------

POWER_CASES = [
    # baseline, stddev, mde (relative), alpha, power, variations
    (0.10, None, 0.05, 0.05, 0.8, 2),
    (0.50, None, 0.02, 0.05, 0.9, 2),
    (0.02, None, 0.20, 0.10, 0.8, 2),
    (0.30, None, -0.10, 0.05, 0.8, 2),
    (10.0, 3.0, 0.01, 0.05, 0.8, 2),
    (10.0, 3.0, 0.20, 0.05, 0.8, 2),
    (2.5, 7.0, 0.05, 0.01, 0.95, 2),
    (0.10, None, 0.05, 0.05, 0.8, 4),
    (10.0, 3.0, 0.03, 0.05, 0.8, 3),
]


def _effect_size(baseline, stddev, mde):
    delta = mde * abs(baseline)
    if stddev is None:
        p2 = baseline + delta
        var_sum = baseline * (1 - baseline) + p2 * (1 - p2)
    else:
        var_sum = 2 * stddev**2
    return delta / math.sqrt(var_sum / 2)


@pytest.mark.parametrize("case", POWER_CASES)
def test_sample_size_matches_statsmodels(case):
    baseline, sd, mde, alpha, power, k = case
    es = abs(_effect_size(baseline, sd, mde))
    a = alpha / (k - 1)
    n_norm = NormalIndPower().solve_power(es, alpha=a, power=power, ratio=1.0)
    n_t = TTestIndPower().solve_power(es, alpha=a, power=power, ratio=1.0)
    res = pw.sample_size(baseline, mde, stddev=sd, alpha=alpha, power=power, variations=k)
    assert abs(res.per_variation - math.ceil(n_norm)) <= 1
    # the t-based solver needs ~z^2/4 more units than the z-approximation:
    # within 1 unit for alpha' >= 0.0125 (z^2/4 < 1.6), within 2 below that
    assert abs(res.per_variation - math.ceil(n_t)) <= (1 if a >= 0.0125 else 2)
    assert res.total == res.per_variation * k
    assert res.alpha_per_comparison == pytest.approx(a)
    # achieved power at that n is >= target, and equals statsmodels' power
    got = pw.achieved_power(res.per_variation, baseline, mde, stddev=sd, alpha=alpha, variations=k)
    assert got >= power
    assert got == pytest.approx(
        NormalIndPower().power(es, res.per_variation, a, ratio=1.0), rel=1e-9
    )


def test_sample_size_absolute_mde():
    res = pw.sample_size(10.0, 0.3, stddev=3.0, relative=False)
    n_ref = NormalIndPower().solve_power(0.3 / 3.0, alpha=0.05, power=0.8)
    assert abs(res.per_variation - math.ceil(n_ref)) <= 1


@pytest.mark.parametrize("n", [100, 1_000, 12_345, 57_760])
@pytest.mark.parametrize("baseline,sd", [(0.1, None), (0.5, None), (10.0, 3.0)])
def test_mde_is_inverse_of_sample_size(n, baseline, sd):
    mde = pw.minimum_detectable_effect(n, baseline, stddev=sd)
    assert mde > 0
    assert pw.sample_size(baseline, mde, stddev=sd).per_variation == n
    assert pw.achieved_power(n, baseline, mde, stddev=sd) == pytest.approx(0.8, abs=1e-9)
    # statsmodels solves the same effect size for this n
    es = NormalIndPower().solve_power(None, nobs1=n, alpha=0.05, power=0.8)
    assert _effect_size(baseline, sd, mde) == pytest.approx(es, rel=1e-4)
    abs_mde = pw.minimum_detectable_effect(n, baseline, stddev=sd, relative=False)
    assert abs_mde == pytest.approx(mde * baseline, rel=1e-9)


def test_power_invalid_inputs():
    assert pw.sample_size(0.1, 0.0) is None
    assert pw.sample_size(1.5, 0.1) is None
    assert pw.sample_size(0.9, 0.2) is None  # treatment rate above 1
    assert pw.sample_size(10, 0.1, stddev=0.0) is None
    assert pw.sample_size(0.1, 0.1, alpha=0.0) is None
    assert pw.sample_size(0.1, 0.1, variations=1) is None
    assert pw.minimum_detectable_effect(5, 0.99) is None  # would need a rate > 1
    assert pw.minimum_detectable_effect(0, 0.5) is None
    assert pw.achieved_power(100, 0.1, 0.1, alpha=2.0) is None


def test_sample_size_survives_extreme_alpha():
    # 1 - alpha/2 rounds to 1.0 for alpha below ~1e-16; the critical value must not become inf.
    for alpha in (1e-20, 1e-38, 1e-300):
        size = power_mod.sample_size(0.1, 0.05, alpha=alpha)
        assert size is not None and size.per_variation > 57_760
        assert power_mod.achieved_power(size.per_variation, 0.1, 0.05, alpha=alpha) >= 0.8
        assert sps.norm.isf(alpha / 2) < 40
