"""A flag's targeting in one environment: the default, and the stored shape.

The evaluation semantics are in docs/evaluation.md; validation is the
engine's (``pitcrew.evaluation.validate_targeting``) plus the references
only the database knows (service/domain/flags.py).
"""


def default_targeting(variations: list[dict]) -> dict:
    """Targeting of a flag in an environment nobody has configured: off.

    Like LaunchDarkly: off serves the last variation (``false`` for a
    boolean), and once enabled the fallthrough serves the first (``true``).
    """
    keys = [v["key"] for v in variations]
    off, on = keys[-1], keys[0]
    by_value = {v["value"]: v["key"] for v in variations if isinstance(v["value"], bool)}
    if len(by_value) == 2:
        off, on = by_value[False], by_value[True]
    return {"enabled": False, "off_variation": off, "prerequisites": [], "targets": [], "rules": [],
            "fallthrough": {"variation": on}}


def normalise(targeting: dict) -> dict:
    """Fill the optional lists so stored targeting always has every field."""
    return {"enabled": targeting.get("enabled"), "off_variation": targeting.get("off_variation"),
            "prerequisites": targeting.get("prerequisites") or [], "targets": targeting.get("targets") or [],
            "rules": targeting.get("rules") or [], "fallthrough": targeting.get("fallthrough")}
