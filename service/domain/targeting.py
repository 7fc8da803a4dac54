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
    """Fill the optional lists so stored targeting always has every field (``holdout`` only when set)."""
    holdout = {"holdout": targeting["holdout"]} if targeting.get("holdout") is not None else {}
    return {"enabled": targeting.get("enabled"), "off_variation": targeting.get("off_variation"), **holdout,
            "prerequisites": targeting.get("prerequisites") or [],
            "targets": targeting.get("targets") or [], "rules": targeting.get("rules") or [],
            "fallthrough": targeting.get("fallthrough")}


# ---------------------------------------------------------------- an experiment's audience

FALLTHROUGH = "fallthrough"
POSITIONS = ("first", "last")
DEFAULT_AUDIENCE = {"position": "last"}


def experiment_audience(targeting: dict, experiment_key: str) -> dict | None:
    """Where ``targeting`` serves the experiment: the first rule serving it (or the fallthrough) as
    ``{rule_id, position, preceded_by}``, or None when nothing serves it.

    ``position`` is the number of rules evaluated before it; ``preceded_by`` their ids: units those
    rules match (and individual targets) never reach the experiment."""
    rules = targeting.get("rules") or []
    ids = [r.get("id") for r in rules]
    for i, rule in enumerate(rules):
        if (rule.get("serve") or {}).get("experiment") == experiment_key:
            return {"rule_id": ids[i], "position": i, "preceded_by": ids[:i]}
    if (targeting.get("fallthrough") or {}).get("experiment") == experiment_key:
        return {"rule_id": FALLTHROUGH, "position": len(rules), "preceded_by": ids}
    return None


def experiment_rule(targeting: dict, experiment_key: str, audience: dict, *, max_id_chars: int,
                    environment: str) -> tuple[int, dict] | str:
    """(index, rule) of the rule that gives the experiment ``audience`` in ``targeting``, or the
    reason it cannot (a rule id the targeting does not have).

    * ``{"position": "first" | "last"}``: a rule without conditions before / after the rules;
    * ``{"rule_id": X}``: a rule with X's conditions right before X: the experiment takes X's
      audience, and the units it does not take (while it is a draft or stopped, or outside its
      traffic) still get X's serve;
    * ``{"rule_id": "fallthrough"}``: the fallthrough's audience, i.e. ``last``.
    """
    rules = targeting.get("rules") or []
    rule = {"id": _free_rule_id(f"experiment-{experiment_key}", rules, max_id_chars),
            "description": f"Experiment {experiment_key}", "conditions": [],
            "serve": {"experiment": experiment_key}}
    wanted = audience.get("rule_id")
    if wanted is None or wanted == FALLTHROUGH:
        return (0 if audience.get("position") == "first" else len(rules)), rule
    index = next((i for i, r in enumerate(rules) if r.get("id") == wanted), None)
    if index is None:
        known = ", ".join(repr(r.get("id")) for r in rules) or "none"
        return (f"The flag's targeting in {environment} has no rule {wanted!r} (its rules: "
                f"{known}); name one of them, or 'fallthrough', or give position 'first' or "
                "'last' instead.")
    rule["conditions"] = [dict(c) for c in rules[index].get("conditions") or []]
    rule["description"] = f"Experiment {experiment_key}, on the audience of rule {wanted}"
    return index, rule


def _free_rule_id(wanted: str, rules: list[dict], max_chars: int) -> str:
    """``wanted`` (shortened to ``max_chars``), with a numeric suffix if a rule has that id."""
    taken = {r.get("id") for r in rules}
    for n in range(1, len(rules) + 2):
        suffix = "" if n == 1 else f"-{n}"
        candidate = wanted[: max_chars - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
    raise AssertionError("unreachable: len(rules) + 1 candidates cannot all be taken")
