"""Verdicts and the power block, checked against statsmodels and against
simulations with a known truth."""

import numpy as np
import pytest
from statsmodels.stats.power import NormalIndPower

from service.analysis import decisions, stats

from .reference import sample_stats_from_values


def block(**kw):
    args = {"metric": "m", "metric_type": "mean", "control": "a", "baseline": 10.0, "stddev": 4.0,
            "units": {"a": 1000, "b": 1000}, "weights": {"a": 5000, "b": 5000}, "alpha": 0.05,
            "correction": None, "target_mde": 0.05}
    args.update(kw)
    return decisions.power_block(**args)


def test_power_equal_arms_matches_statsmodels():
    out = block()
    effect = 0.05 * 10.0 / 4.0
    assert out["power"] == pytest.approx(NormalIndPower().power(effect, nobs1=1000, alpha=0.05), rel=1e-9)
    # the MDE now is the effect with 80 % power at this size
    mde_effect = NormalIndPower().solve_power(nobs1=1000, alpha=0.05, power=0.8)
    assert out["mde_now"] == pytest.approx(mde_effect * 4.0 / 10.0, rel=1e-4)  # statsmodels solver tolerance
    n = NormalIndPower().solve_power(effect, alpha=0.05, power=0.8)
    assert out["units_per_variation_needed"] == int(np.ceil(n))
    assert out["units_needed"] == 2 * out["units_per_variation_needed"]
    assert out["units_still_needed"] == out["units_needed"] - 2000


@pytest.mark.parametrize("n_a,n_b", [(300, 1200), (2000, 500), (777, 778)])
def test_power_unequal_arms_matches_statsmodels_ratio(n_a, n_b):
    out = block(units={"a": n_a, "b": n_b})
    effect = 0.05 * 10.0 / 4.0
    expected = NormalIndPower().power(effect, nobs1=n_a, alpha=0.05, ratio=n_b / n_a)
    assert out["power"] == pytest.approx(expected, rel=1e-9)


def test_units_needed_follow_the_weights():
    """20/80 split: the total that gives the equal-split precision is n_req / harmonic share."""
    out = block(weights={"a": 2000, "b": 8000}, units={"a": 0, "b": 0})
    assert out["power"] is None and out["mde_now"] is None
    total = out["units_needed"]
    # at that total, with a 20/80 split, the power reaches the target (and one unit less per arm would not)
    effect = 0.05 * 10.0 / 4.0
    assert NormalIndPower().power(effect, nobs1=0.2 * total, alpha=0.05, ratio=4.0) >= 0.8 - 1e-9
    assert NormalIndPower().power(effect, nobs1=0.2 * (total - 10), alpha=0.05, ratio=4.0) < 0.8


def test_correction_splits_alpha_over_treatments():
    out = block(units={"a": 1000, "b": 1000, "c": 1000}, weights={"a": 1, "b": 1, "c": 1}, correction="holm")
    assert out["alpha"] == pytest.approx(0.025)
    effect = 0.05 * 10.0 / 4.0
    assert out["power"] == pytest.approx(NormalIndPower().power(effect, nobs1=1000, alpha=0.025), rel=1e-9)


def test_power_not_computable_cases():
    assert block(baseline=None)["power"] is None
    assert block(metric_type="conversion", baseline=0.0, stddev=0.0)["power"] is None
    assert block(stddev=0.0)["power"] is None
    assert block(units={"a": 10})["units_needed"] is None  # no treatment
    conv = block(metric_type="conversion", baseline=0.2, stddev=0.4)
    assert 0 < conv["power"] < 1 and conv["mde_now"] > 0


def test_simulated_power_matches_the_block():
    """Conversion metric at the size the block asks for: the simulated detection rate is about 80 %."""
    rng = np.random.default_rng(7)
    p, mde = 0.2, 0.1
    sized = block(metric_type="conversion", baseline=p, stddev=None, units={"a": 1, "b": 1}, target_mde=mde)
    n = sized["units_per_variation_needed"]
    at_n = block(metric_type="conversion", baseline=p, stddev=None, units={"a": n, "b": n}, target_mde=mde)
    assert at_n["power"] == pytest.approx(0.8, abs=0.002)
    reps = 3000
    conv_a = rng.binomial(n, p, reps)
    conv_b = rng.binomial(n, p * (1 + mde), reps)
    wins = 0
    for ca, cb in zip(conv_a, conv_b, strict=True):
        a = stats.proportion_moments(stats.SampleStats(n, float(ca), float(ca)))
        b = stats.proportion_moments(stats.SampleStats(n, float(cb), float(cb)))
        t = stats.frequentist_test(a, b, alpha=0.05)
        control = {"units": n}
        treatment = {"units": n, "absolute": t.to_dict(), "p_value_adjusted": t.p_value,
                     "chance_to_beat_control": None}
        wins += decisions.variation_verdict(control, treatment, engine="frequentist", alpha=0.05,
                                            chance_to_win=0.95, direction="increase", min_units=100) == "winner"
    rate = wins / reps
    # binomial standard error at 0.8 with 3000 reps is 0.0073: 4 SE
    assert abs(rate - 0.8) < 0.03, rate


def test_simulated_aa_false_verdict_rate_is_alpha():
    """A/A: winner or loser verdicts happen at about alpha (frequentist) and 2 (1 - threshold) (Bayesian)."""
    rng = np.random.default_rng(8)
    n, reps = 2000, 4000
    false_freq = false_bayes = 0
    for _ in range(reps):
        ya = rng.normal(5.0, 2.0, n)
        yb = rng.normal(5.0, 2.0, n)
        a = stats.mean_moments(sample_stats_from_values(ya))
        b = stats.mean_moments(sample_stats_from_values(yb))
        t = stats.frequentist_test(a, b, alpha=0.05)
        control = {"units": n}
        v = decisions.variation_verdict(control, {"units": n, "absolute": t.to_dict(), "p_value_adjusted": t.p_value,
                                                  "chance_to_beat_control": None},
                                        engine="frequentist", alpha=0.05, chance_to_win=0.95,
                                        direction="increase", min_units=100)
        false_freq += v in ("winner", "loser")
        c = stats.compare(a, b, engine="bayesian")
        v = decisions.variation_verdict(control, {"units": n, "absolute": c.absolute.to_dict(),
                                                  "p_value_adjusted": None,
                                                  "chance_to_beat_control": c.chance_to_beat_control},
                                        engine="bayesian", alpha=0.05, chance_to_win=0.95,
                                        direction="increase", min_units=100)
        false_bayes += v in ("winner", "loser")
    se = np.sqrt(0.05 * 0.95 / reps)
    assert abs(false_freq / reps - 0.05) < 4 * se
    assert abs(false_bayes / reps - 0.10) < 4 * np.sqrt(0.1 * 0.9 / reps)


def test_verdict_rules():
    control = {"units": 500}

    def treatment(estimate, p, ctw=None, units=500):
        return {"units": units, "absolute": {"estimate": estimate, "ci": [0, 0], "p_value": p},
                "p_value_adjusted": p, "chance_to_beat_control": ctw}

    def verdict(t, engine="frequentist", direction="increase"):
        return decisions.variation_verdict(control, t, engine=engine, alpha=0.05, chance_to_win=0.95,
                                           direction=direction, min_units=100)

    assert verdict(treatment(0.1, 0.01)) == "winner"
    assert verdict(treatment(-0.1, 0.01)) == "loser"
    assert verdict(treatment(-0.1, 0.01), direction="decrease") == "winner"
    assert verdict(treatment(0.1, 0.01), direction="decrease") == "loser"
    assert verdict(treatment(0.1, 0.2)) == "inconclusive"
    assert verdict(treatment(0.1, 0.01, units=99)) == "not_enough_data"
    assert verdict({"units": 500, "absolute": None, "p_value_adjusted": None,
                    "chance_to_beat_control": None}) == "not_enough_data"
    assert verdict(treatment(0.1, None, ctw=0.96), engine="bayesian") == "winner"
    assert verdict(treatment(0.1, None, ctw=0.04), engine="bayesian") == "loser"
    assert verdict(treatment(0.1, None, ctw=0.5), engine="bayesian") == "inconclusive"
    assert decisions.metric_verdict(["loser", "winner"]) == "winner"
    assert decisions.metric_verdict(["loser", "loser"]) == "loser"
    assert decisions.metric_verdict(["loser", "not_enough_data"]) == "not_enough_data"
    assert decisions.metric_verdict(["loser", "inconclusive"]) == "inconclusive"
    assert decisions.metric_verdict([]) == "not_enough_data"
