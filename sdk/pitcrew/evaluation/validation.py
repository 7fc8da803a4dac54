"""Validation of targeting, segments and experiments (no database needed).

Each function returns a list of ``(path, message)``; an empty list means
valid. Paths are dot-separated JSON paths relative to the validated object,
e.g. ``"rules.0.conditions.1.values"``. References to other flags, segments
and experiments (prerequisite flags and variations, ``in_segment`` keys,
``experiment`` serves) are the service's to check: nothing is reported for
them here.

The compiler runs these same checks, so content the service would reject
evaluates to the caller's default with reason ERROR.
"""

from __future__ import annotations

import math

from ..wire import BUCKETS
from .operators import OPS, values_errors

__all__ = ["validate_targeting", "validate_segment_rules"]

Errors = list[tuple[str, str]]

_SERVE_KINDS = ("variation", "rollout", "experiment")
_TOTAL = BUCKETS


def _join(path: str, part) -> str:
    return f"{path}.{part}" if path else str(part)


def _is_key(v) -> bool:
    return isinstance(v, str) and bool(v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_targeting(targeting, *, variations) -> Errors:
    """Problems with one environment's targeting of a flag with ``variations`` (keys)."""
    if not isinstance(targeting, dict):
        return [("", "must be an object")]
    errors: Errors = []
    add = errors.append

    if "enabled" not in targeting:
        add(("enabled", "is required"))
    elif not isinstance(targeting["enabled"], bool):
        add(("enabled", "must be a boolean"))

    if "off_variation" not in targeting or targeting["off_variation"] is None:
        add(("off_variation", "is required"))
    else:
        _variation_ref(targeting["off_variation"], "off_variation", variations, errors)

    prereqs = targeting.get("prerequisites")
    if prereqs is not None:
        if not isinstance(prereqs, list):
            add(("prerequisites", "must be a list"))
        else:
            for i, p in enumerate(prereqs):
                path = f"prerequisites.{i}"
                if not isinstance(p, dict):
                    add((path, "must be an object"))
                    continue
                if not _is_key(p.get("flag")):
                    add((f"{path}.flag", "must be a flag key"))
                if not _is_key(p.get("variation")):
                    add((f"{path}.variation", "must be a variation key"))

    holdout = targeting.get("holdout")
    if holdout is not None and not _is_key(holdout):
        add(("holdout", "must be a holdout key (or null for none)"))

    targets = targeting.get("targets")
    if targets is not None:
        if not isinstance(targets, list):
            add(("targets", "must be a list"))
        else:
            seen: dict[str, str] = {}
            for i, t in enumerate(targets):
                path = f"targets.{i}"
                if not isinstance(t, dict):
                    add((path, "must be an object"))
                    continue
                variation = t.get("variation")
                _variation_ref(variation, f"{path}.variation", variations, errors)
                values = t.get("values")
                if not isinstance(values, list):
                    add((f"{path}.values", "must be a list of unit ids"))
                    continue
                for j, unit in enumerate(values):
                    if not _is_key(unit):
                        add((f"{path}.values.{j}", "must be a non-empty string"))
                        continue
                    other = seen.setdefault(unit, variation)
                    if other != variation:
                        add(
                            (
                                f"{path}.values.{j}",
                                f"unit {unit!r} is already targeted to {other!r}",
                            )
                        )

    rules = targeting.get("rules")
    if rules is not None:
        if not isinstance(rules, list):
            add(("rules", "must be a list"))
        else:
            ids: set = set()
            for i, rule in enumerate(rules):
                path = f"rules.{i}"
                if not isinstance(rule, dict):
                    add((path, "must be an object"))
                    continue
                rule_id = rule.get("id")
                if not _is_key(rule_id):
                    add((f"{path}.id", "must be a non-empty string"))
                elif rule_id in ids:
                    add((f"{path}.id", f"duplicate rule id {rule_id!r}"))
                else:
                    ids.add(rule_id)
                description = rule.get("description")
                if description is not None and not isinstance(description, str):
                    add((f"{path}.description", "must be a string"))
                conditions = rule.get("conditions", [])
                if not isinstance(conditions, list):
                    add((f"{path}.conditions", "must be a list"))
                else:
                    for j, cond in enumerate(conditions):
                        errors += condition_errors(cond, f"{path}.conditions.{j}")
                errors += serve_errors(rule.get("serve"), f"{path}.serve", variations)

    if "fallthrough" not in targeting or targeting["fallthrough"] is None:
        add(("fallthrough", "is required"))
    else:
        errors += serve_errors(targeting["fallthrough"], "fallthrough", variations)
    return errors


def validate_segment_rules(rules) -> Errors:
    """Problems with a segment's ``rules`` (a list of condition lists).

    Paths start with ``rules`` (``"rules.0.1.values"``: rule 0, condition 1).
    Segments cannot use ``in_segment``.
    """
    if not isinstance(rules, list):
        return [("rules", "must be a list of condition lists")]
    errors: Errors = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, list):
            errors.append((f"rules.{i}", "must be a list of conditions"))
            continue
        for j, cond in enumerate(rule):
            errors += condition_errors(cond, f"rules.{i}.{j}", allow_segments=False)
    return errors


def segment_errors(segment) -> Errors:
    """Problems with a whole segment object (``included``, ``excluded``, ``rules``)."""
    if not isinstance(segment, dict):
        return [("", "must be an object")]
    errors: Errors = []
    for field in ("included", "excluded"):
        units = segment.get(field)
        if units is None:
            continue
        if not isinstance(units, list):
            errors.append((field, "must be a list of unit ids"))
            continue
        for i, unit in enumerate(units):
            if not _is_key(unit):
                errors.append((f"{field}.{i}", "must be a non-empty string"))
    rules = segment.get("rules")
    if rules is not None:
        errors += validate_segment_rules(rules)
    return errors


def condition_errors(cond, path: str, *, allow_segments: bool = True) -> Errors:
    """Problems with one condition ``{attribute, op, values, negate?}``."""
    if not isinstance(cond, dict):
        return [(path, "must be an object")]
    errors: Errors = []
    op = cond.get("op")
    if not isinstance(op, str) or op not in OPS:
        errors.append((_join(path, "op"), f"unknown op {op!r}; use one of: {', '.join(sorted(OPS))}"))
    elif op == "in_segment" and not allow_segments:
        errors.append((_join(path, "op"), "segments cannot use in_segment"))
    negate = cond.get("negate")
    if negate is not None and not isinstance(negate, bool):
        errors.append((_join(path, "negate"), "must be a boolean"))
    if op != "in_segment" and not _is_key(cond.get("attribute")):
        errors.append((_join(path, "attribute"), "must be a non-empty string"))
    if isinstance(op, str) and op in OPS:
        errors += values_errors(op, cond.get("values"), path=_join(path, "values"))
    return errors


def serve_errors(serve, path: str, variations) -> Errors:
    """Problems with a serve: exactly one of ``variation``, ``rollout``, ``experiment``."""
    if not isinstance(serve, dict):
        return [(path, "must be an object with one of variation, rollout, experiment")]
    kinds = [k for k in _SERVE_KINDS if serve.get(k) is not None]
    if len(kinds) != 1:
        return [(path, "must have exactly one of variation, rollout, experiment")]
    kind = kinds[0]
    value = serve[kind]
    errors: Errors = []
    if kind == "variation":
        _variation_ref(value, _join(path, "variation"), variations, errors)
    elif kind == "experiment":
        if not _is_key(value):
            errors.append((_join(path, "experiment"), "must be an experiment key"))
    else:
        errors += rollout_errors(value, _join(path, "rollout"), variations)
    return errors


def rollout_errors(rollout, path: str, variations) -> Errors:
    """Problems with ``{weights: [[variation, bps], ...], bucket_by?, salt?}``."""
    if not isinstance(rollout, dict):
        return [(path, "must be an object")]
    errors: Errors = []
    bucket_by = rollout.get("bucket_by")
    if bucket_by is not None and not _is_key(bucket_by):
        errors.append((_join(path, "bucket_by"), "must be a non-empty string"))
    salt = rollout.get("salt")
    if salt is not None and not isinstance(salt, str):
        errors.append((_join(path, "salt"), "must be a string"))
    weights = rollout.get("weights")
    wpath = _join(path, "weights")
    if not isinstance(weights, list) or not weights:
        errors.append((wpath, "must be a non-empty list of [variation, basis_points] pairs summing to 10000, "
                              'shaped [[variation, basis_points], ...], e.g. [["on", 2500], ["off", 7500]]'))
        return errors
    total = 0
    ok = True
    for i, pair in enumerate(weights):
        p = f"{wpath}.{i}"
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            errors.append((p, "must be a [variation, basis_points] pair; weights are shaped "
                              "[[variation, basis_points], ...]"))
            ok = False
            continue
        _variation_ref(pair[0], f"{p}.0", variations, errors)
        weight = pair[1]
        if not _is_int(weight) or weight < 0:
            errors.append((f"{p}.1", "must be a non-negative integer (basis points, out of 10000)"))
            ok = False
        else:
            total += weight
    if ok and total != _TOTAL:
        errors.append((wpath, f"weights must sum to {_TOTAL}, not {total}"))
    return errors


def experiment_errors(experiment, variations) -> Errors:
    """Problems with an experiment as served in a ruleset, for a flag with ``variations``."""
    if not isinstance(experiment, dict):
        return [("", "must be an object")]
    errors: Errors = []
    add = errors.append
    if not isinstance(experiment.get("status"), str):
        add(("status", "must be a string"))
    unit = experiment.get("unit")
    if unit is not None and not _is_key(unit):
        add(("unit", "must be a non-empty string"))
    salt = experiment.get("salt")
    if salt is not None and not isinstance(salt, str):
        add(("salt", "must be a string"))
    traffic = experiment.get("traffic")
    if traffic is not None and (not _is_int(traffic) or not 0 <= traffic <= _TOTAL):
        add(("traffic", f"must be an integer in [0, {_TOTAL}]"))
    layer = experiment.get("layer")
    if layer is not None:
        if not isinstance(layer, dict) or not _is_key(layer.get("key")):
            add(("layer", "must be an object with a key"))
        else:
            rng = layer.get("range")
            if (
                not isinstance(rng, list | tuple)
                or len(rng) != 2
                or not all(_is_int(x) for x in rng)
                or not 0 <= rng[0] <= rng[1] <= _TOTAL
            ):
                add(("layer.range", f"must be [start, end) with 0 <= start <= end <= {_TOTAL}"))
    arms = experiment.get("variations")
    keys: set = set()
    if not isinstance(arms, list) or not arms:
        add(("variations", "must be a non-empty list of {variation, weight}"))
    else:
        total = 0
        for i, arm in enumerate(arms):
            p = f"variations.{i}"
            if not isinstance(arm, dict):
                add((p, "must be an object"))
                continue
            key = arm.get("variation")
            _variation_ref(key, f"{p}.variation", variations, errors)
            if isinstance(key, str):
                if key in keys:
                    add((f"{p}.variation", f"duplicate variation {key!r}"))
                keys.add(key)
            weight = arm.get("weight")
            if not _is_int(weight) or weight < 0:
                add((f"{p}.weight", "must be a non-negative integer (basis points)"))
            else:
                total += weight
        if total != _TOTAL and not any(p.startswith("variations.") for p, _ in errors):
            add(("variations", f"weights must sum to {_TOTAL}, not {total}"))
    released = experiment.get("released_variation")
    if released is not None and (not isinstance(released, str) or released not in keys):
        add(("released_variation", "must be one of the experiment's variations"))
    return errors


# A holdout's percent, as the engine reads it: the measured slice [p, 2p) must fit in 100 %.
HOLDOUT_MAX_PERCENT = 50


def holdout_errors(holdout) -> Errors:
    """Problems with a holdout as served in a ruleset: ``{key, percent, unit}``."""
    if not isinstance(holdout, dict):
        return [("", "must be an object")]
    errors: Errors = []
    percent = holdout.get("percent")
    if (not isinstance(percent, int | float) or isinstance(percent, bool) or not math.isfinite(percent)
            or not 0 <= percent <= HOLDOUT_MAX_PERCENT):
        errors.append(("percent", f"must be a number in [0, {HOLDOUT_MAX_PERCENT}]"))
    unit = holdout.get("unit")
    if unit is not None and not _is_key(unit):
        errors.append(("unit", "must be a non-empty string"))
    return errors


def variations_errors(variations) -> Errors:
    """Problems with a flag's ``variations`` list (``[{key, value}]``, unique keys)."""
    if not isinstance(variations, list) or not variations:
        return [("variations", "must be a non-empty list")]
    errors: Errors = []
    keys: set = set()
    for i, v in enumerate(variations):
        if not isinstance(v, dict) or "value" not in v:
            errors.append((f"variations.{i}", "must be an object with key and value"))
            continue
        key = v.get("key")
        if not _is_key(key):
            errors.append((f"variations.{i}.key", "must be a non-empty string"))
        elif key in keys:
            errors.append((f"variations.{i}.key", f"duplicate variation key {key!r}"))
        else:
            keys.add(key)
    return errors


def _variation_ref(value, path: str, variations, errors: Errors) -> None:
    if not isinstance(value, str):
        errors.append((path, "must be a variation key"))
    elif value not in variations:
        errors.append((path, f"unknown variation {value!r}"))
