"""Reference implementations for the tests: per-unit arrays -> the sufficient statistics
the SQL produces, winsorization as ``percentile_cont`` does it, and CUPED for one
control/treatment pair as gbstats computes it. Test code only: the service
aggregates in SQL (service/analysis/queries.py) and pools CUPED's theta over every
variation of a slice (service/analysis/report.py)."""

from __future__ import annotations

import numpy as np

from service.analysis import stats


def winsorize_cap(values, quantile: float, ignore_zeros: bool = False) -> float | None:
    """Upper cap = ``quantile`` of the per-unit values, linearly interpolated (percentile_cont)."""
    if not 0.0 <= quantile <= 1.0:
        raise ValueError("quantile must be in [0, 1]")
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if ignore_zeros:
        v = v[v != 0]
    if v.size == 0:
        return None
    return float(np.quantile(v, quantile))


def winsorize(values, cap: float | None = None, *, quantile: float | None = None) -> np.ndarray:
    """min(value, cap); the cap is computed from ``quantile`` if not given."""
    v = np.asarray(values, dtype=float)
    if cap is None and quantile is not None:
        cap = winsorize_cap(v, quantile)
    if cap is None:
        return v.copy()
    return np.minimum(v, cap)


def sample_stats_from_values(values, cap: float | None = None) -> stats.SampleStats:
    """SampleStats of per-unit values (optionally capped at ``cap``)."""
    v = winsorize(values, cap)
    return stats.SampleStats(int(v.size), float(v.sum()), float(np.dot(v, v)))


def ratio_stats_from_values(num, den) -> stats.RatioStats:
    m = np.asarray(num, dtype=float)
    d = np.asarray(den, dtype=float)
    return stats.RatioStats(int(m.size), float(m.sum()), float(m @ m), float(d.sum()), float(d @ d),
                            float(m @ d))


def cuped_stats_from_values(y, x) -> stats.CupedStats:
    yy = np.asarray(y, dtype=float)
    xx = np.asarray(x, dtype=float)
    return stats.CupedStats(int(yy.size), float(yy.sum()), float(yy @ yy), float(xx.sum()),
                            float(xx @ xx), float(yy @ xx))


def cuped_pair_moments(control: stats.CupedStats, treatment: stats.CupedStats,
                       binary: bool = False) -> tuple[stats.Moments, stats.Moments]:
    """Moments for one control/treatment comparison, theta pooled over the pair (as gbstats)."""
    theta = stats.cuped_theta([control, treatment], binary)
    return (stats.cuped_moments(control, theta, binary),
            stats.cuped_moments(treatment, theta, binary))
