"""Flag types and what a targeting serves: pure rules shared by flags, lifecycle and insights.

Nothing here reads the database (the migration that backfills
``targeting_changes`` uses the same rules on stored snapshots).
"""

from datetime import timedelta

# Flag types and their expected lifetimes (docs/lifecycle.md): a temporary
# flag older than its type's lifetime is potentially stale; None: never.
LIFETIMES: dict[str, timedelta | None] = {
    "release": timedelta(days=40),
    "experiment": timedelta(days=40),
    "operational": timedelta(days=7),
    "kill-switch": None,
    "permission": None,
}
FLAG_TYPES = tuple(LIFETIMES)
DEFAULT_TYPE = "release"


def _serve_variations(serve) -> set[str] | None:
    """Variations a serve can give; None when an experiment decides (several, not known here)."""
    if not isinstance(serve, dict):
        return None
    if isinstance(serve.get("variation"), str):
        return {serve["variation"]}
    rollout = serve.get("rollout")
    if isinstance(rollout, dict):
        out = set()
        for pair in rollout.get("weights") or []:
            if isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[1], int | float) and pair[1] > 0:
                out.add(str(pair[0]))
        return out
    return None


def served_variations(targeting: dict) -> set[str] | None:
    """Every variation the targeting can serve, from its configuration alone; None if unknowable."""
    if not targeting.get("enabled"):
        return {targeting.get("off_variation")}
    served: set[str] = set()
    if targeting.get("prerequisites"):
        served.add(targeting.get("off_variation"))  # a failed prerequisite serves the off variation
    for target in targeting.get("targets") or []:
        if isinstance(target, dict) and target.get("values"):
            served.add(target.get("variation"))
    for rule in targeting.get("rules") or []:
        found = _serve_variations((rule or {}).get("serve"))
        if found is None:
            return None
        served |= found
    found = _serve_variations(targeting.get("fallthrough"))
    if found is None:
        return None
    return served | found


def single_variation(targeting: dict) -> str | None:
    """The one variation this targeting serves to everyone, or None when it may serve several."""
    served = served_variations(targeting)
    if served is not None and len(served) == 1:
        return next(iter(served))
    return None


def is_full_rollout(targeting: dict) -> bool:
    """On, and serving everyone one variation other than the off variation (a release at 100 %)."""
    only = single_variation(targeting)
    return bool(targeting.get("enabled")) and only is not None and only != targeting.get("off_variation")
