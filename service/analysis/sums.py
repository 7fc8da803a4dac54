"""The sufficient statistics the SQL (``queries.py``) hands to the statistics (``report.py``)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from . import stats


@dataclass
class MetricSums:
    """Sums over the units of one (variation, dimension value) cell for one metric.

    ``y`` is the unit's metric value, ``d`` a ratio's denominator, ``x`` the
    pre-exposure value CUPED adjusts with; fields a metric does not use stay 0.
    Sums are additive: cells (or days) add up to the totals."""

    n: int = 0
    sum_y: float = 0.0
    sum_y2: float = 0.0
    sum_d: float = 0.0
    sum_d2: float = 0.0
    sum_yd: float = 0.0
    sum_x: float = 0.0
    sum_x2: float = 0.0
    sum_xy: float = 0.0

    def add(self, other: MetricSums) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def copy(self) -> MetricSums:
        return MetricSums(**{f.name: getattr(self, f.name) for f in fields(self)})

    def sample(self) -> stats.SampleStats:
        return stats.SampleStats(self.n, self.sum_y, self.sum_y2)

    def ratio(self) -> stats.RatioStats:
        return stats.RatioStats(self.n, self.sum_y, self.sum_y2, self.sum_d, self.sum_d2,
                                self.sum_yd)

    def cuped(self) -> stats.CupedStats:
        return stats.CupedStats(self.n, self.sum_y, self.sum_y2, self.sum_x, self.sum_x2,
                                self.sum_xy)
