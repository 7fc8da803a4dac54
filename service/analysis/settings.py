"""An experiment's analysis settings: the choices, the defaults, one request's overrides.

Plain data: an experiment stores only the settings it was given
(``experiments.analysis``); every reader completes them with
:data:`DEFAULT_ANALYSIS` through :func:`resolve`. The methods behind each
setting are described in docs/analysis.md.
"""

from __future__ import annotations

ENGINES = ("frequentist", "bayesian")
CORRECTIONS = ("holm", "bh")
DEFAULT_ANALYSIS = {"engine": "frequentist", "alpha": 0.05, "sequential": False,
                    "sequential_n": 5000, "cuped": False, "cuped_days": 14, "correction": None,
                    "prior_mean": None, "prior_variance": None, "target_mde": 0.05,
                    "chance_to_win": 0.95}
_UNSET = object()  # correction not overridden (None clears it)


def resolve(stored: dict | None, *, engine=None, sequential=None, cuped=None, alpha=None,
            correction=_UNSET) -> dict:
    """The stored settings completed with the defaults, then this request's overrides.

    ``correction="none"`` (as a query string says it) or ``None`` clears the correction."""
    overrides = {"engine": engine, "sequential": sequential, "cuped": cuped, "alpha": alpha}
    settings = {**DEFAULT_ANALYSIS, **(stored or {}),
                **{name: value for name, value in overrides.items() if value is not None}}
    if correction is not _UNSET:
        settings["correction"] = None if correction in (None, "none") else correction
    return settings


def metric_keys(primary: str | None, secondary: list[str] | None,
                guardrail: list[str] | None) -> list[str]:
    """Primary, secondary and guardrail metrics, in that order, without repeats."""
    keys = ([primary] if primary else []) + list(secondary or []) + list(guardrail or [])
    return list(dict.fromkeys(keys))
