"""Ruleset JSON -> immutable compiled structures (docs/evaluation.md).

Compile once per ruleset version, evaluate many times. Every flag becomes a
``_run(ctx)`` closure over pre-built data: conditions are closures with
frozensets, compiled regexes and parsed versions/instants; targets are a dict
unit -> result; rollouts hold a pre-hashed ``salt + "."`` prefix and compare
digests against byte thresholds (see :mod:`pitcrew.evaluation.bucketing`); results
of constant serves are built once and shared.

Content that the service would reject (see :mod:`pitcrew.evaluation.validation`)
makes only that flag evaluate to the caller's default with reason ERROR:
a flag without ``targeting``, unknown variations or ops, bad values, a
referenced segment, a running/stopped experiment or a holdout that is itself
invalid, or a prerequisite cycle. A missing segment never matches; a missing or
draft experiment does not apply; a missing holdout holds nobody out; a missing
prerequisite flag is unmet.

Holdouts (docs/holdouts.md) add one step between targets and rules, compiled
only into flags whose targeting names one: flags without a holdout run exactly
the closures they ran before.
"""

from __future__ import annotations

from ..wire import HELD_OUT, HOLDOUT_PREFIX, LIVE_EXPERIMENT_STATUSES, MEASURED
from .bucketing import BUCKETS, digest_threshold, percent_buckets, prefix_hasher, unit_of
from .evaluator import EvaluationResult, Reason
from .operators import build_condition
from .validation import (
    experiment_errors,
    holdout_errors,
    segment_errors,
    validate_targeting,
    variations_errors,
)

__all__ = ["CompiledFlag", "CompiledRuleset", "InvalidRuleset", "compile_ruleset"]


class InvalidRuleset(ValueError):
    """The ruleset as a whole is unusable (not an object, ``flags`` not an object, ...)."""


class CompileError(ValueError):
    """One flag's content is invalid; the flag evaluates with reason ERROR."""


class CompiledFlag:
    """One compiled flag. ``error`` is None, or why the flag evaluates with reason ERROR."""

    __slots__ = ("key", "kind", "version", "variations", "enabled", "error", "_run")

    def __init__(self, key, kind, version, variations, enabled, error, run):
        self.key = key
        self.kind = kind
        self.version = version
        self.variations = variations  # tuple of the raw {key, value, ...} dicts
        self.enabled = enabled
        self.error = error
        self._run = run

    def __repr__(self) -> str:
        state = f"error={self.error!r}" if self.error else f"enabled={self.enabled}"
        return f"<CompiledFlag {self.key!r} {self.kind} v{self.version} {state}>"


class CompiledRuleset:
    """An immutable compiled ruleset; pass it to :func:`~pitcrew.evaluation.evaluate`."""

    __slots__ = ("version", "environment", "split_serves", "track_units", "_flags", "_experiments")

    def __init__(self, version, environment, flags, experiments, split_serves=frozenset(),
                 track_units=()):
        self.version = version
        self.environment = environment
        # (flag, rule_id or None for the fallthrough) pairs served by a rollout or an experiment
        self.split_serves = split_serves
        # experiment unit attributes other than "id", in a stable order (track() records them)
        self.track_units = track_units
        self._flags = flags
        self._experiments = experiments

    @property
    def flag_keys(self):
        """Keys of the flags that exist (archived flags excluded)."""
        return self._flags.keys()

    def flag(self, key) -> CompiledFlag | None:
        try:
            return self._flags.get(key)
        except TypeError:
            return None

    def experiment(self, key) -> dict | None:
        """The raw experiment object from the ruleset, or None."""
        try:
            exp = self._experiments.get(key)
        except TypeError:
            return None
        return exp if isinstance(exp, dict) else None

    def __repr__(self) -> str:
        return f"<CompiledRuleset v{self.version} {self.environment!r} {len(self._flags)} flags>"


def _error_run(ctx):
    return None


def _true(ctx):
    return True


def _mapping(ruleset: dict, name: str) -> dict:
    value = ruleset.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRuleset(f"{name} must be an object")
    return value


def compile_ruleset(ruleset: dict) -> CompiledRuleset:
    """Compile a ruleset (the body of ``GET /sdk/v1/config``).

    Raises :class:`InvalidRuleset` only when the ruleset as a whole is
    unusable; bad content in a flag (or in a segment or experiment it uses)
    makes that flag evaluate with reason ERROR.
    """
    return _compile(ruleset)


def _compile(ruleset) -> CompiledRuleset:
    if not isinstance(ruleset, dict):
        raise InvalidRuleset("ruleset must be an object")
    version = ruleset.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidRuleset("version must be an integer")
    environment = ruleset.get("environment")
    flags_raw = _mapping(ruleset, "flags")
    segments_raw = _mapping(ruleset, "segments")
    experiments = _mapping(ruleset, "experiments")
    holdouts = _mapping(ruleset, "holdouts")

    segments: dict = {}
    bad_segments: dict = {}
    for key, seg in segments_raw.items():
        try:
            segments[key] = _compile_segment(seg)
        except Exception as exc:
            bad_segments[key] = str(exc)

    flags: dict = {}
    env = _Env(flags, segments, bad_segments, experiments, holdouts)
    for key, raw in flags_raw.items():
        if not isinstance(key, str):
            continue
        if isinstance(raw, dict) and raw.get("archived") is True:
            continue
        flags[key] = _compile_flag(key, raw, env)

    for key in _in_prerequisite_cycles(flags_raw, flags):
        f = flags[key]
        flags[key] = CompiledFlag(
            f.key, f.kind, f.version, f.variations, False, "prerequisite cycle", _error_run
        )
    return CompiledRuleset(version, environment, flags, experiments,
                           _split_serves(flags_raw), _track_units(experiments, holdouts))


def _split_serves(flags_raw) -> frozenset:
    """(flag, rule_id) pairs (rule_id None for the fallthrough) whose serve is a rollout or
    an experiment (OpenFeature's SPLIT reason)."""
    out = []
    for key, flag in flags_raw.items():
        targeting = flag.get("targeting") if isinstance(flag, dict) else None
        if not isinstance(targeting, dict):
            continue
        rules = targeting.get("rules")
        for rule in rules if isinstance(rules, list) else ():
            serve = rule.get("serve") if isinstance(rule, dict) else None
            if isinstance(serve, dict) and serve.get("variation") is None:
                out.append((key, rule.get("id")))
        ft = targeting.get("fallthrough")
        if isinstance(ft, dict) and ft.get("variation") is None:
            out.append((key, None))
    return frozenset(out)


def _track_units(experiments, holdouts=None) -> tuple:
    """Unit attributes (other than ``id``) of the experiments and holdouts, in a stable order."""
    out: dict = {}
    for item in [*experiments.values(), *(holdouts or {}).values()]:
        unit = item.get("unit") if isinstance(item, dict) else None
        if isinstance(unit, str) and unit and unit != "id":
            out[unit] = None
    return tuple(out)


class _Env:
    __slots__ = ("flags", "segments", "bad_segments", "experiments", "holdouts")

    def __init__(self, flags, segments, bad_segments, experiments, holdouts=None):
        self.flags = flags
        self.segments = segments
        self.bad_segments = bad_segments
        self.experiments = experiments
        self.holdouts = holdouts or {}


def _errors_message(errors) -> str:
    return "; ".join(f"{p or '<root>'}: {m}" for p, m in errors[:5])


# --------------------------------------------------------------------------- segments


def _all_of(conds):
    """One ``fn(ctx) -> bool`` that is true when every condition is."""
    if not conds:
        return _true
    if len(conds) == 1:
        return conds[0]
    if len(conds) == 2:
        a, b = conds
        return lambda ctx: a(ctx) and b(ctx)

    def all_of(ctx):
        for c in conds:
            if not c(ctx):
                return False
        return True

    return all_of


def _compile_segment(seg):
    errors = segment_errors(seg)
    if errors:
        raise CompileError(_errors_message(errors))
    included = frozenset(seg.get("included") or ())
    excluded = frozenset(seg.get("excluded") or ())
    rules = tuple(
        _all_of(tuple(build_condition(c, {}) for c in rule)) for rule in seg.get("rules") or ()
    )

    def member(ctx):
        u = ctx.get("id")
        if u.__class__ is not str:
            u = unit_of(u)
        if u is not None:
            if u in excluded:
                return False
            if u in included:
                return True
        for rule in rules:
            if rule(ctx):
                return True
        return False

    return member


# --------------------------------------------------------------------------- flags


def _error_flag(key, raw, message):
    kind = version = None
    variations = ()
    if isinstance(raw, dict):
        kind = raw.get("kind")
        version = raw.get("version")
        if isinstance(raw.get("variations"), list):
            variations = tuple(raw["variations"])
    return CompiledFlag(key, kind, version, variations, False, message, _error_run)


def _compile_flag(key, raw, env) -> CompiledFlag:
    try:
        return _build_flag(key, raw, env)
    except Exception as exc:
        return _error_flag(key, raw, str(exc) or exc.__class__.__name__)


def _build_flag(key: str, raw, env) -> CompiledFlag:
    if not isinstance(raw, dict):
        raise CompileError("flag must be an object")
    variations_raw = raw.get("variations")
    errors = variations_errors(variations_raw)
    if errors:
        raise CompileError(_errors_message(errors))
    values = {v["key"]: v["value"] for v in variations_raw}
    targeting = raw.get("targeting")
    if targeting is None:
        raise CompileError("flag has no targeting")
    errors = validate_targeting(targeting, variations=values.keys())
    if errors:
        raise CompileError(_errors_message(errors))

    def result(variation, reason, rule_id=None, experiment=None):
        return EvaluationResult(values[variation], variation, reason, rule_id, experiment, False)

    off = targeting["off_variation"]
    off_res = result(off, Reason.OFF)
    enabled = targeting["enabled"]
    flag = CompiledFlag(
        key, raw.get("kind"), raw.get("version"), tuple(variations_raw), enabled, None, None
    )
    if not enabled:
        # Still validate references, so a bad flag fails the same way on or off.
        _build_on_run(key, targeting, values, result, env)
        flag._run = lambda ctx: off_res
    else:
        flag._run = _build_on_run(key, targeting, values, result, env)
    return flag


def _build_on_run(key, targeting, values, result, env):
    off = targeting["off_variation"]
    prereq_res = result(off, Reason.PREREQUISITE_FAILED)
    prereqs = tuple((p["flag"], p["variation"]) for p in targeting.get("prerequisites") or ())

    targets: dict = {}
    for t in targeting.get("targets") or ():
        res = result(t["variation"], Reason.TARGET_MATCH)
        for unit in t["values"]:
            targets.setdefault(unit, res)

    holdout = _holdout(targeting.get("holdout"), values[off], off, env)

    rules = []
    for rule in targeting.get("rules") or ():
        cond = _all_of(tuple(_condition(c, env) for c in rule.get("conditions") or ()))
        const, fn = _serve(rule["serve"], Reason.RULE_MATCH, rule["id"], key, values, result, env)
        if const is None and fn is None:
            continue  # a serve that can never apply: the rule is always skipped
        rules.append((cond, const, fn))
    rules = tuple(rules)

    ft_const, ft_fn = _serve(
        targeting["fallthrough"], Reason.FALLTHROUGH, None, key, values, result, env
    )
    ft_off = result(off, Reason.FALLTHROUGH)
    if ft_const is None and ft_fn is None:
        ft_const = ft_off
    return _make_run(prereqs, prereq_res, targets, rules, ft_const, ft_fn, ft_off, env.flags, holdout)


def _condition(cond, env):
    if cond["op"] == "in_segment":
        for k in cond["values"]:
            if k in env.bad_segments:
                raise CompileError(f"segment {k!r} is invalid: {env.bad_segments[k]}")
    return build_condition(cond, env.segments)


def _make_run(prereqs, prereq_res, targets, rules, ft_const, ft_fn, ft_off, flags, holdout=None):
    flags_get = flags.get

    def rules_and_fallthrough(ctx):
        for cond, const, fn in rules:
            if cond(ctx):
                if const is not None:
                    return const
                r = fn(ctx)
                if r is not None:
                    return r
        if ft_const is not None:
            return ft_const
        r = ft_fn(ctx)
        return ft_off if r is None else r

    rest = rules_and_fallthrough if holdout is None else holdout(rules_and_fallthrough)
    if not prereqs and not targets:
        return rest

    def run(ctx):
        for pkey, want in prereqs:
            p = flags_get(pkey)
            if p is None or not p.enabled:
                return prereq_res
            r = p._run(ctx)
            if r is None or r.variation != want:
                return prereq_res
        if targets:
            u = ctx.get("id")
            if u.__class__ is not str:
                u = unit_of(u)
            if u is not None:
                r = targets.get(u)
                if r is not None:
                    return r
        return rest(ctx)

    return run


# --------------------------------------------------------------------------- holdouts


def _holdout(key, off_value, off, env):
    """None (no holdout step), or ``wrap(next_step) -> step`` for the holdout named ``key``.

    The step (after targets, before rules): a unit with ``bucket("holdout:" + key,
    unit) < percent * 100`` gets ``off_variation`` with reason HOLDOUT and goes no
    further (so never into an experiment); a unit in ``[percent * 100, 2 * percent *
    100)`` is the measured slice: evaluated as usual, its result marked with a
    ``measured`` holdout exposure. A unit without the holdout's unit attribute skips
    the step. A holdout missing from the ruleset holds nobody out.
    """
    if key is None:
        return None
    raw = env.holdouts.get(key)
    if raw is None:
        return None
    errors = holdout_errors(raw)
    if errors:
        raise CompileError(f"holdout {key!r}: {_errors_message(errors)}")
    attr = raw.get("unit") or "id"
    held = percent_buckets(raw["percent"])
    held_limit = digest_threshold(held)
    measured_limit = digest_threshold(2 * held)
    exposure_key = HOLDOUT_PREFIX + key
    copy = prefix_hasher(exposure_key)  # the salt is "holdout:" + key too
    New = EvaluationResult
    reason = Reason.HOLDOUT

    def wrap(next_step):
        def holdout_step(ctx):
            v = ctx.get(attr)
            if v.__class__ is str:
                if not v:
                    return next_step(ctx)
                u = v
            else:
                u = unit_of(v)
                if u is None:
                    return next_step(ctx)
            s = copy()
            s.update(u.encode())
            d = s.digest()
            if d < held_limit:
                return New(off_value, off, reason, None, None, False, None, (exposure_key, HELD_OUT, u, attr))
            r = next_step(ctx)
            if d < measured_limit:
                return New(r.value, r.variation, r.reason, r.rule_id, r.experiment, r.in_experiment, r.unit,
                           (exposure_key, MEASURED, u, attr))
            return r

        return holdout_step

    return wrap


# --------------------------------------------------------------------------- serves


def _serve(serve, reason, rule_id, flag_key, values, result, env):
    """``(constant_result, None)``, ``(None, fn(ctx) -> result | None)``, or ``(None, None)``
    for a serve that never applies."""
    if serve.get("variation") is not None:
        return result(serve["variation"], reason, rule_id), None
    if serve.get("rollout") is not None:
        return None, _rollout(serve["rollout"], reason, rule_id, flag_key, result)
    return _experiment(serve["experiment"], reason, rule_id, values, result, env)


def _unit_bytes_getter(attr):
    """``fn(ctx) -> bytes | None``: the utf-8 unit form of ``ctx[attr]``."""

    def unit_bytes(ctx):
        v = ctx.get(attr)
        if v.__class__ is str:
            return v.encode() if v else None
        u = unit_of(v)
        return None if u is None else u.encode()

    return unit_bytes


def _rollout(rollout, reason, rule_id, flag_key, result):
    attr = rollout.get("bucket_by") or "id"
    salt = rollout.get("salt")
    if salt is None:
        salt = flag_key
    table = []
    cumulative = 0
    for variation, weight in rollout["weights"]:
        if weight:  # zero weights never serve
            cumulative += weight
            table.append((digest_threshold(cumulative), result(variation, reason, rule_id)))
    last = table.pop()[1]  # served when no earlier cumulative weight exceeds the bucket
    table = tuple(table)
    copy = prefix_hasher(salt)

    if not table:  # one variation: applies whenever the unit is present
        unit_bytes = _unit_bytes_getter(attr)
        return lambda ctx: None if unit_bytes(ctx) is None else last

    # Two-way splits (the common 50/50 case, the benchmark) get their
    # own closure without the loop over thresholds; the logic is serve_rollout's.
    if len(table) == 1:
        ((limit, first),) = table

        def serve_two_way(ctx):
            v = ctx.get(attr)
            if v.__class__ is str:
                if not v:
                    return None
                b = v.encode()
            else:
                u = unit_of(v)
                if u is None:
                    return None
                b = u.encode()
            s = copy()
            s.update(b)
            return first if s.digest() < limit else last

        return serve_two_way

    def serve_rollout(ctx):
        v = ctx.get(attr)
        if v.__class__ is str:
            if not v:
                return None
            b = v.encode()
        else:
            u = unit_of(v)
            if u is None:
                return None
            b = u.encode()
        s = copy()
        s.update(b)
        d = s.digest()
        for limit, res in table:
            if d < limit:
                return res
        return last

    return serve_rollout


def _experiment(exp_key, reason, rule_id, values, result, env):
    exp = env.experiments.get(exp_key)
    status = exp.get("status") if isinstance(exp, dict) else None
    if status not in LIVE_EXPERIMENT_STATUSES:
        return None, None  # missing, draft or unknown: does not apply
    errors = experiment_errors(exp, values.keys())
    if errors:
        raise CompileError(f"experiment {exp_key!r}: {_errors_message(errors)}")
    if status != "running":
        released = exp.get("released_variation")
        if released is None:
            return None, None
        return result(released, reason, rule_id, exp_key), None
    return None, _admission(exp_key, exp, reason, rule_id, values)


def _admission(exp_key, exp, reason, rule_id, values):
    """Experiment assignment: unit present, in the layer's range, within traffic."""
    attr = exp.get("unit") or "id"
    salt = exp.get("salt")
    if salt is None:
        salt = exp_key
    traffic = exp.get("traffic")
    if traffic is None:
        traffic = BUCKETS
    layer = exp.get("layer")
    check_layer = layer is not None and tuple(layer["range"]) != (0, BUCKETS)
    if check_layer:
        start, end = layer["range"]
        layer_lo, layer_hi = digest_threshold(start), digest_threshold(end)
        layer_copy = prefix_hasher("layer:" + layer["key"])
    check_traffic = traffic < BUCKETS
    traffic_limit = digest_threshold(traffic)
    traffic_copy = prefix_hasher(salt + ":traffic")
    assign_copy = prefix_hasher(salt)
    table = []
    cumulative = 0
    for arm in exp["variations"]:
        if arm["weight"]:  # zero weights never serve
            cumulative += arm["weight"]
            variation = arm["variation"]
            table.append((digest_threshold(cumulative), variation, values[variation]))
    table = tuple(table)
    New = EvaluationResult

    def serve_experiment(ctx):
        v = ctx.get(attr)
        if v.__class__ is str:
            if not v:
                return None
            u = v
        else:
            u = unit_of(v)
            if u is None:
                return None
        b = u.encode()
        if check_layer:
            s = layer_copy()
            s.update(b)
            d = s.digest()
            if d < layer_lo or not d < layer_hi:
                return None
        if check_traffic:
            s = traffic_copy()
            s.update(b)
            if not s.digest() < traffic_limit:
                return None
        s = assign_copy()
        s.update(b)
        d = s.digest()
        for limit, variation, value in table:
            if d < limit:
                return New(value, variation, reason, rule_id, exp_key, True, u)
        return None  # unreachable: weights sum to 10000

    return serve_experiment


# --------------------------------------------------------------------------- cycles


def _in_prerequisite_cycles(flags_raw, flags) -> set:
    """Keys of compiled flags whose prerequisite chains contain a cycle."""
    edges: dict = {}
    for key, f in flags.items():
        if f.error is not None:
            continue
        targeting = flags_raw[key].get("targeting") or {}
        deps = [p["flag"] for p in targeting.get("prerequisites") or ()]
        deps = [d for d in deps if d in flags and flags[d].error is None]
        if deps:
            edges[key] = deps
    if not edges:
        return set()
    # Peel flags whose prerequisites are all cycle-free; what remains is on or reaches a cycle.
    remaining = {k: len(set(v)) for k, v in edges.items()}
    dependents: dict = {}
    for k, deps in edges.items():
        for d in set(deps):
            dependents.setdefault(d, []).append(k)
    ready = [k for k in dependents if k not in remaining]
    while ready:
        done = ready.pop()
        for k in dependents.get(done, ()):
            remaining[k] -= 1
            if remaining[k] == 0:
                del remaining[k]
                ready.append(k)
    return set(remaining)
