"""Simulations with a known truth for service.analysis.stats / power.

Data are generated with numpy (fixed seeds, deterministic) and reduced to the
per-variation sufficient statistics the SQL layer would produce; for normal
data we sometimes draw the sufficient statistics from their exact sampling
distribution (sum ~ N(n mu, n s^2), centred sum of squares ~ s^2 chi2_{n-1})
which is equivalent to simulating every unit and much faster.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.analysis import power as pw
from service.analysis import stats as S

from . import reference as R

N_SIMS = 1000


def _stats_from_units(units: np.ndarray) -> list[S.SampleStats]:
    """units: (sims, n) array -> one SampleStats per simulation."""
    sums = units.sum(axis=1)
    sqs = np.einsum("ij,ij->i", units, units)
    n = units.shape[1]
    return [S.SampleStats(n, float(s), float(q)) for s, q in zip(sums, sqs, strict=True)]


def _normal_sufficient(rng, sims, n, mu, sd) -> list[S.SampleStats]:
    total = rng.normal(n * mu, sd * math.sqrt(n), sims)
    centred = sd**2 * rng.chisquare(n - 1, sims)
    sq = centred + total**2 / n
    return [S.SampleStats(n, float(t), float(q)) for t, q in zip(total, sq, strict=True)]


# ---------------------------------------------------------------------------
# fixed horizon: A/A false-positive rate
# ---------------------------------------------------------------------------


def test_aa_false_positive_rate_mean_metric():
    rng = np.random.default_rng(20240601)
    # skewed per-unit revenue-like values, 500 units per arm
    a = _stats_from_units(rng.gamma(0.5, 20.0, (N_SIMS, 500)))
    b = _stats_from_units(rng.gamma(0.5, 20.0, (N_SIMS, 500)))
    p_abs = np.array([S.frequentist_test(S.mean_moments(x), S.mean_moments(y)).p_value
                      for x, y in zip(a, b, strict=True)])
    p_rel = np.array([S.frequentist_test(S.mean_moments(x), S.mean_moments(y), relative=True).p_value
                      for x, y in zip(a, b, strict=True)])
    assert 0.035 <= np.mean(p_abs < 0.05) <= 0.065
    assert 0.035 <= np.mean(p_rel < 0.05) <= 0.065


def test_aa_false_positive_rate_conversion_metric():
    rng = np.random.default_rng(7)
    n = 2000
    conv_a = rng.binomial(n, 0.08, N_SIMS)
    conv_b = rng.binomial(n, 0.08, N_SIMS)
    rejected = []
    for ca, cb in zip(conv_a, conv_b, strict=True):
        r = S.frequentist_test(
            S.proportion_moments(S.SampleStats(n, int(ca), int(ca))),
            S.proportion_moments(S.SampleStats(n, int(cb), int(cb))),
        )
        rejected.append(r.p_value < 0.05)
    assert 0.035 <= np.mean(rejected) <= 0.065


def test_aa_bayesian_chance_to_win_is_uniform():
    # flat prior: under H0, chance to beat control ~ U(0, 1)
    rng = np.random.default_rng(17)
    a = _normal_sufficient(rng, N_SIMS, 1000, 5.0, 2.0)
    b = _normal_sufficient(rng, N_SIMS, 1000, 5.0, 2.0)
    ctw = np.array([S.bayesian_test(S.mean_moments(x), S.mean_moments(y)).chance_to_beat_control
                    for x, y in zip(a, b, strict=True)])
    assert 0.035 <= np.mean(ctw > 0.95) <= 0.065
    assert 0.035 <= np.mean(ctw < 0.05) <= 0.065


def test_confidence_interval_coverage_with_true_lift():
    rng = np.random.default_rng(99)
    mu_a, mu_b, sims = 10.0, 10.4, 2000
    a = _normal_sufficient(rng, sims, 800, mu_a, 3.0)
    b = _normal_sufficient(rng, sims, 800, mu_b, 3.5)
    cover_abs = cover_rel = 0
    for x, y in zip(a, b, strict=True):
        ra = S.frequentist_test(S.mean_moments(x), S.mean_moments(y))
        rr = S.frequentist_test(S.mean_moments(x), S.mean_moments(y), relative=True)
        cover_abs += ra.ci_low <= mu_b - mu_a <= ra.ci_high
        cover_rel += rr.ci_low <= (mu_b - mu_a) / mu_a <= rr.ci_high
    assert 0.935 <= cover_abs / sims <= 0.965
    assert 0.935 <= cover_rel / sims <= 0.965


# ---------------------------------------------------------------------------
# sequential: peeking 10 times keeps the error rate
# ---------------------------------------------------------------------------


def test_sequential_peeking_keeps_false_positive_rate():
    rng = np.random.default_rng(12345)
    looks, per_look = 10, 250  # 2 x 2,500 units at the last look (N* = 5000)
    units = rng.normal(3.0, 2.0, (N_SIMS, 2, looks, per_look))
    cum_n = per_look * np.arange(1, looks + 1)
    cum_sum = np.cumsum(units.sum(axis=3), axis=2)
    cum_sq = np.cumsum((units**2).sum(axis=3), axis=2)

    seq_reject = np.zeros(N_SIMS, dtype=bool)
    naive_reject = np.zeros(N_SIMS, dtype=bool)
    for i in range(N_SIMS):
        for k in range(looks):
            a = S.mean_moments(S.SampleStats(int(cum_n[k]), cum_sum[i, 0, k], cum_sq[i, 0, k]))
            b = S.mean_moments(S.SampleStats(int(cum_n[k]), cum_sum[i, 1, k], cum_sq[i, 1, k]))
            seq = S.sequential_test(a, b, relative=True)
            if seq.p_value < 0.05:
                assert seq.ci_low > 0 or seq.ci_high < 0
                seq_reject[i] = True
            if not naive_reject[i]:
                naive_reject[i] = S.frequentist_test(a, b, relative=True).p_value < 0.05
    # sanity: naive peeking at the fixed-horizon test inflates the error rate
    assert np.mean(naive_reject) > 0.1
    assert np.mean(seq_reject) < 0.05


def test_sequential_detects_real_effect():
    rng = np.random.default_rng(5)
    a = _normal_sufficient(rng, 300, 2500, 10.0, 2.0)
    b = _normal_sufficient(rng, 300, 2500, 10.3, 2.0)  # 15 % of a stddev
    detected = [S.sequential_test(S.mean_moments(x), S.mean_moments(y)).p_value < 0.05
                for x, y in zip(a, b, strict=True)]
    assert np.mean(detected) > 0.9


# ---------------------------------------------------------------------------
# CUPED: pre-period correlation 0.7 shrinks the CI by ~28.6 %
# ---------------------------------------------------------------------------


def test_cuped_shrinks_ci_width_and_stays_unbiased():
    rng = np.random.default_rng(2024)
    sims, n, rho, effect = 200, 2000, 0.7, 0.1
    x = rng.normal(0.0, 1.0, (sims, 2, n))
    y = 5.0 + rho * x + math.sqrt(1 - rho**2) * rng.normal(0.0, 1.0, (sims, 2, n))
    y[:, 1, :] += effect
    sy, sy2 = y.sum(axis=2), (y * y).sum(axis=2)
    sx, sx2 = x.sum(axis=2), (x * x).sum(axis=2)
    sxy = (x * y).sum(axis=2)

    shrink, est_cuped, cover = [], [], 0
    for i in range(sims):
        c = [S.CupedStats(n, sy[i, v], sy2[i, v], sx[i, v], sx2[i, v], sxy[i, v]) for v in (0, 1)]
        plain = S.frequentist_test(
            S.mean_moments(S.SampleStats(n, sy[i, 0], sy2[i, 0])),
            S.mean_moments(S.SampleStats(n, sy[i, 1], sy2[i, 1])),
        )
        ma, mb = R.cuped_pair_moments(c[0], c[1])
        cup = S.frequentist_test(ma, mb)
        shrink.append(1 - (cup.ci_high - cup.ci_low) / (plain.ci_high - plain.ci_low))
        est_cuped.append(cup.estimate)
        cover += cup.ci_low <= effect <= cup.ci_high
    theory = 1 - math.sqrt(1 - rho**2)  # 0.2859
    assert 0.25 <= np.mean(shrink) <= 0.35
    assert np.mean(shrink) == pytest.approx(theory, abs=0.01)
    # unbiased: mean estimate within 3 Monte-Carlo standard errors of the truth
    se_mc = np.std(est_cuped, ddof=1) / math.sqrt(sims)
    assert abs(np.mean(est_cuped) - effect) < 3 * se_mc
    assert cover / sims >= 0.9


# ---------------------------------------------------------------------------
# SRM
# ---------------------------------------------------------------------------


def test_injected_srm_is_flagged_and_balanced_is_not():
    rng = np.random.default_rng(31)
    total = 100_000
    # 1 percentage point mismatch: 51 % / 49 % instead of 50/50 (E[chi2] ~ 41)
    skewed = rng.binomial(total, 0.51, 200)
    flagged = [S.srm_test([int(t), total - int(t)], [5000, 5000]).flagged for t in skewed]
    assert np.mean(flagged) >= 0.99
    balanced = rng.binomial(total, 0.5, N_SIMS)
    flagged = [S.srm_test([int(t), total - int(t)], [5000, 5000]).flagged for t in balanced]
    assert np.mean(flagged) <= 0.005
    # three arms with unequal weights (basis points), one arm short by 1 pp
    probs = np.array([0.2, 0.3, 0.5]) + np.array([-0.01, 0.005, 0.005])
    counts = rng.multinomial(total, probs, 200)
    flagged = [S.srm_test(list(map(int, c)), [2000, 3000, 5000]).flagged for c in counts]
    assert np.mean(flagged) >= 0.99


# ---------------------------------------------------------------------------
# power calculator predicts the detection rate
# ---------------------------------------------------------------------------


def test_power_calculator_conversion():
    baseline, mde, sims = 0.10, 0.10, 4000
    n = pw.sample_size(baseline, mde, power=0.8).per_variation
    rng = np.random.default_rng(77)
    ca = rng.binomial(n, baseline, sims)
    cb = rng.binomial(n, baseline * (1 + mde), sims)
    detected = [
        S.frequentist_test(
            S.proportion_moments(S.SampleStats(n, int(x), int(x))),
            S.proportion_moments(S.SampleStats(n, int(y), int(y))),
        ).p_value
        < 0.05
        for x, y in zip(ca, cb, strict=True)
    ]
    assert np.mean(detected) == pytest.approx(0.8, abs=0.025)


def test_power_calculator_mean_metric_mde():
    # MDE for a fixed sample size, then check the detection rate at that MDE
    n, baseline, sd, sims = 1500, 20.0, 8.0, 4000
    mde = pw.minimum_detectable_effect(n, baseline, stddev=sd, power=0.9)
    rng = np.random.default_rng(78)
    a = _normal_sufficient(rng, sims, n, baseline, sd)
    b = _normal_sufficient(rng, sims, n, baseline * (1 + mde), sd)
    detected = [S.frequentist_test(S.mean_moments(x), S.mean_moments(y)).p_value < 0.05
                for x, y in zip(a, b, strict=True)]
    assert np.mean(detected) == pytest.approx(0.9, abs=0.02)
