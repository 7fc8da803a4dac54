"""Experiments: definition, lifecycle (draft -> running -> stopped -> concluded), layers.

Rules (beyond the schemas):

* variations are keys of the flag's variations, at least two, unique, with
  integer weights in basis points summing to 10000; ``control`` is one of
  them. Variations, weights, control, unit, salt and layer change only in
  ``draft``: once units are assigned, changing them would reshuffle them;
* ``traffic`` may change while running, but only upwards (a ramp-up keeps
  every admitted unit in its variation; lowering it would drop exposed units
  from the experiment, so stop it instead);
* ``start`` needs a primary metric and a valid mapping onto the flag's
  current variations; two running experiments of one environment in the same
  layer must not have overlapping ranges;
* ``stop`` keeps the results (events after ``stopped_at`` are not counted);
  ``conclude`` records the decision and may set ``released_variation``, which
  a ``PATCH`` may also set on a stopped or concluded experiment;
* only non-running experiments can be deleted; their exposures go with them.

Defaults that do what a PM means: the variations are all the flag's, equal
weights; the control is the flag's ``off_variation`` in the experiment's
environment when it is one of them (what users get today), else the first.

Creating an experiment adds its rule to the flag's targeting in its
environment (unless a rule or the fallthrough already serves it), where the
request's ``audience`` says (``domain/targeting.experiment_rule``): after the
existing rules by default, so targeting that exists keeps precedence, as in
LaunchDarkly and GrowthBook; the experiment's ``audience`` (read from the
targeting) shows which rules come first. Every change writes an audit
entry; changes to what SDKs see (anything while the experiment is running
or released) bump the environment's ruleset version.
"""

import sqlalchemy as sa

from ..analysis import power, queries
from ..analysis import results as analysis
from ..analysis.settings import DEFAULT_ANALYSIS, resolve
from ..extensions import db
from ..models import Environment, Event, Experiment, Flag, FlagTargeting
from ..models.event import EXPOSURE
from ..models.types import utcnow
from . import Actor, audit, protection, ruleset_versions, unit_of_work
from . import flags as flag_domain
from . import metrics as metric_domain
from .announce import announce
from .environments import get as get_environment
from .errors import Conflict, NotFound, ValidationFailed
from .locking import for_update, get_by_key
from .pagination import Page, paginate
from .targeting import experiment_audience
from .versioning import check_version

TOTAL_WEIGHT = 10000
OUTCOMES = ("ship", "rollback", "iterate")

# Lifecycle actions announced to webhooks (docs/webhooks.md).
ANNOUNCED = {"start": "experiment.started", "stop": "experiment.stopped", "conclude": "experiment.concluded"}

# Fields a PATCH may change, by status.
DRAFT_ONLY = ("variations", "control", "unit", "salt", "layer")
ANYTIME = ("name", "hypothesis", "owner", "tags", "primary_metric", "secondary_metrics", "guardrail_metrics",
           "dimensions", "analysis")

# ---------------------------------------------------------------- reading

def get(key: str, *, lock: bool = False) -> Experiment:
    """The experiment; with ``lock``, locked for writing until the unit of work ends (service/domain/locking.py).

    Lock order: an experiment before its flag (creating and deleting one change the flag's targeting)."""
    return get_by_key(Experiment, key, lock=lock, name="Experiment")


def _keys_by_id(model, ids) -> dict[int, str]:
    wanted = set(ids)
    if not wanted:
        return {}
    rows = db.session.execute(sa.select(model.id, model.key).where(model.id.in_(wanted)))
    return dict(rows.all())


def _environment_key(experiment: Experiment) -> str:
    return _keys_by_id(Environment, [experiment.environment_id])[experiment.environment_id]


def _audiences(experiments: list[Experiment]) -> dict[int, dict | None]:
    """{experiment id: its audience in its flag's targeting} (one query for all of them)."""
    pairs = {(e.flag_id, e.environment_id) for e in experiments}
    if not pairs:
        return {}
    rows = db.session.execute(
        sa.select(FlagTargeting.flag_id, FlagTargeting.environment_id, FlagTargeting.targeting)
        .where(FlagTargeting.flag_id.in_({f for f, _ in pairs}))).all()
    stored = {(f, e): t for f, e, t in rows if (f, e) in pairs}
    return {e.id: experiment_audience(stored.get((e.flag_id, e.environment_id)) or {}, e.key)
            for e in experiments}


def to_dicts(experiments: list[Experiment]) -> list[dict]:
    """The experiments as the API shows them; their flags' and environments' keys and the targeting
    that gives each its audience are read once for all of them."""
    flag_keys = _keys_by_id(Flag, (e.flag_id for e in experiments))
    env_keys = _keys_by_id(Environment, (e.environment_id for e in experiments))
    audiences = _audiences(experiments)
    return [_to_dict(e, flag_keys[e.flag_id], env_keys[e.environment_id], audiences[e.id])
            for e in experiments]


def to_dict(experiment: Experiment) -> dict:
    return to_dicts([experiment])[0]


def _to_dict(experiment: Experiment, flag_key: str, env_key: str, audience: dict | None) -> dict:
    return {
        "key": experiment.key, "name": experiment.name, "hypothesis": experiment.hypothesis,
        "owner": experiment.owner, "tags": experiment.tags or [], "flag": flag_key, "environment": env_key,
        "variations": experiment.variations, "control": experiment.control, "traffic": experiment.traffic,
        "unit": experiment.unit, "layer": experiment.layer, "salt": experiment.salt,
        "audience": audience,
        "primary_metric": experiment.primary_metric, "secondary_metrics": experiment.secondary_metrics or [],
        "guardrail_metrics": experiment.guardrail_metrics or [], "dimensions": experiment.dimensions or [],
        "analysis": resolve(experiment.analysis), "status": experiment.status,
        "started_at": experiment.started_at, "stopped_at": experiment.stopped_at,
        "concluded_at": experiment.concluded_at, "released_variation": experiment.released_variation,
        "decision": experiment.decision, "version": experiment.version,
        "created_at": experiment.created_at, "updated_at": experiment.updated_at,
    }


def snapshot(experiment: Experiment) -> dict:
    """JSON-ready copy for the audit log."""
    return audit.json_ready(to_dict(experiment))


def list_experiments(*, status: str | None = None, flag: str | None = None, environment: str | None = None,
                     limit: int = 50, cursor: str | None = None) -> Page:
    stmt = sa.select(Experiment)
    if status:
        stmt = stmt.where(Experiment.status == status)
    if flag:
        stmt = stmt.where(Experiment.flag_id == sa.select(Flag.id).where(Flag.key == flag).scalar_subquery())
    if environment:
        stmt = stmt.where(Experiment.environment_id == get_environment(environment).id)
    return paginate(stmt, Experiment.id, limit=limit, cursor=cursor)


# ---------------------------------------------------------------- validation

def _variation_errors(arms: list[dict], flag: Flag, errors: dict) -> None:
    flag_keys = [v["key"] for v in flag.variations]
    if len(arms) < 2:
        errors.setdefault("variations", []).append("An experiment needs at least two variations.")
    seen: set[str] = set()
    total = 0
    for i, arm in enumerate(arms):
        key = arm["variation"]
        if key not in flag_keys:
            errors.setdefault(f"variations.{i}.variation", []).append(
                f"'{key}' is not a variation of flag '{flag.key}' ({', '.join(flag_keys)}).")
        if key in seen:
            errors.setdefault(f"variations.{i}.variation", []).append(f"'{key}' is listed twice.")
        seen.add(key)
        total += arm["weight"]
    if arms and total != TOTAL_WEIGHT:
        errors.setdefault("variations", []).append(f"Weights must sum to {TOTAL_WEIGHT} basis points, not {total}.")


def _metric_errors(values: dict, errors: dict) -> None:
    named: list[tuple[str, str]] = []
    if values.get("primary_metric"):
        named.append(("primary_metric", values["primary_metric"]))
    for field in ("secondary_metrics", "guardrail_metrics"):
        named += [(f"{field}.{i}", key) for i, key in enumerate(values.get(field) or [])]
    existing = metric_domain.get_many(key for _, key in named)
    seen: set[str] = set()
    for path, key in named:
        if key not in existing:
            errors.setdefault(path, []).append(f"Metric '{key}' does not exist.")
        elif key in seen:
            errors.setdefault(path, []).append(f"Metric '{key}' is listed more than once.")
        seen.add(key)


def _validate(values: dict, flag: Flag) -> None:
    errors: dict[str, list[str]] = {}
    arms = values["variations"]
    _variation_errors(arms, flag, errors)
    if values["control"] not in [a["variation"] for a in arms]:
        errors.setdefault("control", []).append("Must be one of the experiment's variations.")
    layer = values.get("layer")
    if layer is not None:
        start, end = layer["range"]
        if not 0 <= start < end <= TOTAL_WEIGHT:
            errors.setdefault("layer.range", []).append(
                f"Must be [start, end) with 0 <= start < end <= {TOTAL_WEIGHT}.")
    if ":" in values["salt"]:
        errors.setdefault("salt", []).append("Must not contain ':' (reserved for derived salts).")
    released = values.get("released_variation")
    if released is not None and released not in [a["variation"] for a in arms]:
        errors.setdefault("released_variation", []).append("Must be one of the experiment's variations.")
    _metric_errors(values, errors)
    if len(set(values.get("dimensions") or [])) != len(values.get("dimensions") or []):
        errors.setdefault("dimensions", []).append("Dimensions must be unique.")
    if errors:
        raise ValidationFailed("The experiment is invalid.", errors)


def _default_arms(flag: Flag) -> list[dict]:
    keys = [v["key"] for v in flag.variations]
    share, extra = divmod(TOTAL_WEIGHT, len(keys))
    return [{"variation": k, "weight": share + (1 if i < extra else 0)} for i, k in enumerate(keys)]


def _visible(experiment: Experiment) -> bool:
    """Whether the experiment is part of its environment's SDK ruleset."""
    return experiment.status == "running" or (
        experiment.status in ("stopped", "concluded") and experiment.released_variation is not None)


def _flag_of(experiment: Experiment) -> Flag:
    return db.session.get(Flag, experiment.flag_id)


def _finish(actor: Actor, experiment: Experiment, action: str, before: dict | None,
            was_visible: bool) -> Experiment:
    """Bump the version, write the audit entry and the ruleset version, commit."""
    if before is not None:
        experiment.version += 1
    db.session.flush()
    env_key = _environment_key(experiment)
    after = snapshot(experiment)
    audit.record(actor, action, "experiment", experiment.key, environment=env_key, before=before, after=after)
    if action in ANNOUNCED:
        announce(ANNOUNCED[action], {"experiment": after, "actor": actor.name, "comment": actor.comment},
                 environment=env_key)
    if was_visible or _visible(experiment):
        ruleset_versions.bump([experiment.environment_id])
    unit_of_work.commit()
    return experiment


# ---------------------------------------------------------------- writing

def _for_change(key: str, action: str, if_match: int | None, changes: dict | None = None) -> Experiment:
    """The experiment, locked for ``action``: refused in a protected environment or while a
    guarded rollout runs it (service/domain/protection.py), or when ``if_match`` is stale."""
    experiment = get(key, lock=True)
    protection.guard_experiment(experiment, action, changes)
    check_version(experiment.version, if_match)
    return experiment


def _require_status(experiment: Experiment, allowed: tuple[str, ...], doing: str) -> None:
    if experiment.status not in allowed:
        raise Conflict(f"Only a {' or '.join(allowed)} experiment can {doing}; "
                       f"'{experiment.key}' is {experiment.status}.",
                       {"status": [f"Is {experiment.status}."]})

def create(actor: Actor, data: dict) -> Experiment:
    key = data["key"]
    # Locked first (its targeting gets the experiment's rule): concurrent creates of one key queue here,
    # and the one that waited sees the other's experiment below.
    flag = for_update(Flag, Flag.key == data["flag"])
    if db.session.scalars(sa.select(Experiment.id).where(Experiment.key == key)).first() is not None:
        raise Conflict(f"Experiment '{key}' already exists.", {"key": ["Already exists."]})
    if flag is None or flag.archived:
        raise ValidationFailed("The experiment is invalid.",
                               {"flag": [f"Flag '{data['flag']}' does not exist or is archived."]})
    try:
        environment = get_environment(data["environment"])
    except NotFound:
        raise ValidationFailed("The experiment is invalid.",
                               {"environment": [f"Environment '{data['environment']}' does not exist."]}) from None
    given = data.get("variations")
    arms = _default_arms(flag) if given is None else [{"variation": a["variation"], "weight": a["weight"]}
                                                      for a in given]
    off = flag_domain.targeting_for(flag, environment).get("off_variation")
    arm_keys = [a["variation"] for a in arms]
    default_control = off if off in arm_keys else (arm_keys[0] if arm_keys else "")
    values = {
        "name": data.get("name") or key, "hypothesis": data.get("hypothesis") or "",
        "owner": data.get("owner"), "tags": data.get("tags") or [],
        "variations": arms, "control": data.get("control") or default_control,
        "traffic": data.get("traffic", TOTAL_WEIGHT), "unit": data.get("unit") or "id",
        "layer": data.get("layer"), "salt": data.get("salt") or key,
        "primary_metric": data.get("primary_metric"),
        "secondary_metrics": data.get("secondary_metrics") or [],
        "guardrail_metrics": data.get("guardrail_metrics") or [],
        "dimensions": data.get("dimensions") or [],
        "analysis": {**DEFAULT_ANALYSIS, **(data.get("analysis") or {})},
    }
    _validate(values, flag)
    experiment = Experiment(key=key, flag_id=flag.id, environment_id=environment.id, status="draft", version=1,
                            **values)
    db.session.add(experiment)
    db.session.flush()
    flag_domain.ensure_experiment_rule(actor, flag, environment, key, data.get("audience"))
    return _finish(actor, experiment, "create", None, False)


def update(actor: Actor, key: str, changes: dict, if_match: int | None = None) -> Experiment:
    experiment = _for_change(key, "update", if_match, changes)
    status = experiment.status
    errors: dict[str, list[str]] = {}
    if status != "draft":
        for field in DRAFT_ONLY:
            if field in changes and changes[field] != getattr(experiment, field):
                errors.setdefault(field, []).append(
                    f"Can only change while the experiment is a draft (it is {status}).")
    if "traffic" in changes and changes["traffic"] != experiment.traffic:
        if status == "running" and changes["traffic"] < experiment.traffic:
            errors.setdefault("traffic", []).append(
                "Traffic can only increase while running (a ramp-up keeps admitted units in their variation); "
                "stop the experiment instead.")
        elif status in ("stopped", "concluded"):
            errors.setdefault("traffic", []).append(f"Cannot change traffic of a {status} experiment.")
    if "released_variation" in changes and status not in ("stopped", "concluded") \
            and changes["released_variation"] is not None:
        errors.setdefault("released_variation", []).append(
            "Only a stopped or concluded experiment can release a variation.")
    if errors:
        raise Conflict("The experiment's status does not allow this change.", errors)

    before = snapshot(experiment)
    was_visible = _visible(experiment)
    values = {f: getattr(experiment, f) for f in DRAFT_ONLY + ANYTIME + ("traffic", "released_variation")}
    for field in values:
        if field in changes:
            values[field] = changes[field]
    if "variations" in changes:
        values["variations"] = [{"variation": a["variation"], "weight": a["weight"]} for a in changes["variations"]]
    if "analysis" in changes:
        values["analysis"] = {**resolve(experiment.analysis), **changes["analysis"]}
    values["salt"] = values["salt"] or experiment.key
    values["unit"] = values["unit"] or "id"
    _validate(values, _flag_of(experiment))
    for field, value in values.items():
        setattr(experiment, field, value)
    return _finish(actor, experiment, "update", before, was_visible)


def _layer_conflicts(experiment: Experiment) -> list[str]:
    layer = experiment.layer
    if not layer:
        return []
    start, end = layer["range"]
    clashes = []
    for other in db.session.scalars(sa.select(Experiment).where(
            Experiment.environment_id == experiment.environment_id, Experiment.status == "running",
            Experiment.id != experiment.id)):
        if other.layer and other.layer.get("key") == layer["key"]:
            o_start, o_end = other.layer["range"]
            if start < o_end and o_start < end:
                clashes.append(f"{other.key} [{o_start}, {o_end})")
    return clashes


def check_start(experiment: Experiment) -> None:
    """Raise unless ``experiment`` can start now (also checked by a change request that proposes it)."""
    _require_status(experiment, ("draft",), "start")
    flag = _flag_of(experiment)
    errors: dict[str, list[str]] = {}
    if flag.archived:
        errors["flag"] = [f"Flag '{flag.key}' is archived."]
    if not experiment.primary_metric:
        errors["primary_metric"] = ["An experiment needs a primary metric to start."]
    values = {f: getattr(experiment, f) for f in DRAFT_ONLY + ANYTIME + ("traffic", "released_variation")}
    try:
        _validate(values, flag)
    except ValidationFailed as exc:
        for path, reasons in exc.details.items():
            errors.setdefault(path, []).extend(reasons)
    if errors:
        raise ValidationFailed("The experiment cannot start.", errors)
    clashes = _layer_conflicts(experiment)
    if clashes:
        raise Conflict(f"Layer '{experiment.layer['key']}' range overlaps running experiments: {', '.join(clashes)}.",
                       {"layer.range": [f"Overlaps {c}." for c in clashes]})


def start(actor: Actor, key: str, if_match: int | None = None) -> Experiment:
    experiment = _for_change(key, "start", if_match)
    check_start(experiment)
    before = snapshot(experiment)
    experiment.status = "running"
    experiment.started_at = utcnow()
    return _finish(actor, experiment, "start", before, False)


def check_stop(experiment: Experiment) -> None:
    _require_status(experiment, ("running",), "stop")


def stop(actor: Actor, key: str, if_match: int | None = None) -> Experiment:
    experiment = _for_change(key, "stop", if_match)
    check_stop(experiment)
    before = snapshot(experiment)
    experiment.status = "stopped"
    experiment.stopped_at = utcnow()
    return _finish(actor, experiment, "stop", before, True)


def check_conclude(experiment: Experiment, data: dict) -> None:
    """Raise unless ``experiment`` can be concluded with ``data`` ({decision, released_variation})."""
    _require_status(experiment, ("running", "stopped"), "be concluded")
    arms = [a["variation"] for a in experiment.variations]
    decision = dict(data["decision"])
    errors: dict[str, list[str]] = {}
    if decision.get("variation") is not None and decision["variation"] not in arms:
        errors["decision.variation"] = ["Must be one of the experiment's variations."]
    if decision["outcome"] == "ship" and decision.get("variation") is None:
        errors["decision.variation"] = ["A 'ship' decision names the variation shipped."]
    released = data.get("released_variation")
    if released is not None and released not in arms:
        errors["released_variation"] = ["Must be one of the experiment's variations."]
    if errors:
        raise ValidationFailed("The decision is invalid.", errors)


def conclude(actor: Actor, key: str, data: dict, if_match: int | None = None) -> Experiment:
    experiment = _for_change(key, "conclude", if_match)
    check_conclude(experiment, data)
    decision = dict(data["decision"])
    released = data.get("released_variation")
    before = snapshot(experiment)
    was_visible = _visible(experiment)
    now = utcnow()
    if experiment.status == "running":
        experiment.stopped_at = now
    experiment.status = "concluded"
    experiment.concluded_at = now
    experiment.decision = {"outcome": decision["outcome"], "variation": decision.get("variation"),
                           "summary": decision.get("summary") or ""}
    if "released_variation" in data:
        experiment.released_variation = released
    return _finish(actor, experiment, "conclude", before, was_visible)


def delete(actor: Actor, key: str, if_match: int | None = None) -> None:
    experiment = _for_change(key, "delete", if_match)
    if experiment.status == "running":
        raise Conflict(f"Experiment '{key}' is running; stop it before deleting it.",
                       {"status": ["Is running."]})
    before = snapshot(experiment)
    env_key = _environment_key(experiment)
    was_visible = _visible(experiment)
    flag = for_update(Flag, Flag.id == experiment.flag_id)
    flag_domain.remove_experiment_rule(actor, flag, db.session.get(Environment, experiment.environment_id),
                                       experiment.key)
    # A new experiment may reuse the key: it must not inherit these exposures.
    db.session.execute(sa.delete(Event).where(
        Event.environment_id == experiment.environment_id, Event.type == EXPOSURE,
        Event.experiment == experiment.key))
    audit.record(actor, "delete", "experiment", experiment.key, environment=env_key, before=before)
    if was_visible:
        ruleset_versions.bump([experiment.environment_id])
    db.session.delete(experiment)
    unit_of_work.commit()


# ---------------------------------------------------------------- results

def _unknown_metric(key: str) -> ValidationFailed:
    return ValidationFailed(f"Metric '{key}' does not exist.", {"metric": ["Unknown metric."]})


def results(key: str, *, dimension: str | None = None, metric: str | None = None, **overrides) -> dict:
    """The results document (service/analysis/results.py) of experiment ``key``."""
    experiment = get(key)
    try:
        return analysis.compute(db.session.connection(), experiment, dimension=dimension,
                                metric=metric, **overrides)
    except analysis.UnknownMetric as exc:
        raise _unknown_metric(exc.key) from None


def timeseries(key: str, *, metric: str | None = None, **overrides) -> dict:
    """Daily cumulative results of the primary metric (or ``metric``) of experiment ``key``."""
    experiment = get(key)
    wanted = metric or experiment.primary_metric
    if not wanted:
        raise ValidationFailed("The experiment has no primary metric; name one with metric=.",
                               {"metric": ["Required: the experiment has no primary metric."]})
    try:
        return analysis.timeseries(db.session.connection(), experiment, wanted, **overrides)
    except analysis.UnknownMetric as exc:
        raise _unknown_metric(exc.key) from None


def first_exposures(key: str) -> tuple[list[str], object]:
    """(dimension names, iterator of first-exposure rows) for the exposures CSV, streamed from the database."""
    experiment = get(key)
    dimensions = list(experiment.dimensions or [])
    scope = analysis.scope_of(experiment)
    engine = db.engine

    def rows():
        # The response streams after the request's session is gone: the
        # rows come through a connection of their own, held while streaming.
        with engine.connect() as connection:
            yield from queries.first_exposures(connection, scope, dimensions)

    return dimensions, rows()


# ---------------------------------------------------------------- planning

def sample_size(data: dict) -> dict:
    """The power calculator of POST /tools/sample-size (service/analysis/power.py)."""
    if data.get("mde") is None and data.get("units_per_variation") is None:
        raise ValidationFailed("Give mde (for a sample size) or units_per_variation (for an MDE).",
                               {"mde": ["Give mde or units_per_variation."]})
    try:
        return _sample_size(data)
    except (ArithmeticError, ValueError):  # extreme inputs the solvers cannot handle (e.g. alpha 1e-38)
        raise ValidationFailed("Not computable for these inputs.", _planning_errors(data)) from None


def _sample_size(data: dict) -> dict:
    common = {"stddev": data["stddev"], "relative": data["relative"], "alpha": data["alpha"],
              "variations": data["variations"]}
    out = dict(data)
    if data.get("mde") is not None:
        size = power.sample_size(data["baseline"], data["mde"], power=data["power"], **common)
        if size is None:
            raise ValidationFailed("No sample size reaches that power for these inputs.", _planning_errors(data))
        out.update(per_variation=size.per_variation, total=size.total,
                   alpha_per_comparison=size.alpha_per_comparison)
    if data.get("units_per_variation") is not None:
        n = data["units_per_variation"]
        mde = power.minimum_detectable_effect(n, data["baseline"], power=data["power"], **common)
        if mde is None:
            raise ValidationFailed("No effect is detectable with that power for these inputs.",
                                   _planning_errors(data))
        out["minimum_detectable_effect"] = mde
        if data.get("mde") is not None:
            out["achieved_power"] = power.achieved_power(n, data["baseline"], data["mde"], **common)
    return out


def _planning_errors(data: dict) -> dict:
    baseline = data["baseline"]
    if data["stddev"] is None:
        if not 0 < baseline < 1:
            return {"baseline": ["A conversion rate must be in (0, 1); give stddev for a mean metric."]}
        if data.get("mde") is not None:
            treated = baseline + (data["mde"] * baseline if data["relative"] else data["mde"])
            if not 0 < treated < 1:
                return {"mde": [f"The treatment's conversion rate ({treated:.4g}) must stay in (0, 1)."]}
    return {"_body": ["Not computable for these inputs (check alpha, power and the effect size)."]}
