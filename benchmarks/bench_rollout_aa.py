"""Guarded rollouts: false-rollback rate over simulated A/A rollouts, and how
early real harm is caught.

Run: .venv/bin/python benchmarks/bench_rollout_aa.py   (part of `make bench`)

Each simulated rollout goes through the steps 10, 25, 50 % (then 100 %),
checked every "5 minutes" of a 1-hour hold (12 looks per step, 36 in all).
Units arrive at ROLLOUT_UNITS_PER_STEP per step; the share that enters the
rollout's experiment is its traffic (2p up to 50 %), split evenly between
the arms, as service/domain/rollouts.py serves them. Outcomes are drawn per
unit and accumulated as sufficient statistics per arm (n, sum, sum of
squares), then handed at each look to ``service.analysis.guardrails.evaluate``
-- the function the worker calls on the SQL aggregates -- with real Metric
definitions. Two guardrails: a conversion (base 10 %, higher is better) and
a mean "latency" (log-normal, lower is better).

A/A: the arms are identical, so every rollback is a false one; the
guarantee is a rate <= alpha (0.05). Harm: the new variation worsens the
conversion by 20 % (10 % -> 8 %); the table says how often and at which
step it was caught (the rest reached 100 %: too few units to see it).
"""

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.analysis import guardrails  # noqa: E402
from service.analysis.sums import MetricSums  # noqa: E402
from service.models import Metric  # noqa: E402

ROLLOUTS = int(os.environ.get("ROLLOUT_SIMULATIONS", "200"))
UNITS_PER_STEP = int(os.environ.get("ROLLOUT_UNITS_PER_STEP", "4000"))
ALPHA = 0.05
STEPS = (10, 25, 50)
LOOKS_PER_STEP = 12
BASE_RATE = 0.10
METRICS = [Metric(key="conversion", type="conversion", direction="increase", event="buy"),
           Metric(key="latency", type="mean", direction="decrease", event="latency")]


def simulate(rng: np.random.Generator, harm: float, units_per_step: int) -> tuple[bool, int | None]:
    """One rollout; (rolled back, index of the step it was caught at)."""
    sums = {m.key: {"off": MetricSums(), "on": MetricSums()} for m in METRICS}
    for step, percent in enumerate(STEPS):
        traffic = min(1.0, 2 * percent / 100)
        for _ in range(LOOKS_PER_STEP):
            arrivals = rng.poisson(units_per_step / LOOKS_PER_STEP * traffic)
            n_on = rng.binomial(arrivals, 0.5)
            for arm, n in (("off", arrivals - n_on), ("on", n_on)):
                if n == 0:
                    continue
                rate = BASE_RATE * (1 - harm) if arm == "on" else BASE_RATE
                conversions = float(rng.binomial(n, rate))
                latency = rng.lognormal(mean=5.0, sigma=0.6, size=n)
                for key, y_sum, y2_sum in (("conversion", conversions, conversions),
                                           ("latency", float(latency.sum()), float((latency ** 2).sum()))):
                    cell = sums[key][arm]
                    cell.n += n
                    cell.sum_y += y_sum
                    cell.sum_y2 += y2_sum
            verdict = guardrails.evaluate(sums, METRICS, "off", "on", alpha=ALPHA)
            if verdict.harm:
                return True, step
    return False, None


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main() -> None:
    rng = np.random.default_rng(20261127)
    rows = []
    for name, harm, units in (("A/A (no effect)", 0.0, UNITS_PER_STEP),
                              ("conversion 20 % worse", 0.20, UNITS_PER_STEP),
                              ("conversion 20 % worse, 5x the units", 0.20, 5 * UNITS_PER_STEP)):
        outcomes = [simulate(rng, harm, units) for _ in range(ROLLOUTS)]
        k = sum(rolled for rolled, _ in outcomes)
        lo, hi = wilson(k, ROLLOUTS)
        by_step = [sum(1 for rolled, s in outcomes if rolled and s == i) for i in range(len(STEPS))]
        rows.append((name, k, lo, hi, by_step))
    print(f"\n### Guarded rollouts: {ROLLOUTS} simulated rollouts per row, alpha {ALPHA}, "
          f"{UNITS_PER_STEP} units/step unless said, {LOOKS_PER_STEP} looks/step, 2 guardrails\n")
    print("| scenario | rolled back | rate | 95% CI | caught at 10% / 25% / 50% |")
    print("|---|---:|---:|---|---|")
    for name, k, lo, hi, by_step in rows:
        print(f"| {name} | {k} / {ROLLOUTS} | {k / ROLLOUTS:.3f} | [{lo:.3f}, {hi:.3f}] | "
              f"{' / '.join(map(str, by_step))} |")
    aa_rate = rows[0][1] / ROLLOUTS
    print(f"\nA/A false-rollback rate {aa_rate:.3f} {'<=' if aa_rate <= ALPHA else '>'} alpha {ALPHA}")
    if aa_rate > ALPHA:
        sys.exit(1)


if __name__ == "__main__":
    main()
