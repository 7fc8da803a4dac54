"""Holdouts (docs/holdouts.md): per environment, a share of the units that the flags
naming the holdout keep on their off variation, and the results comparing them with
an equal measured slice.

A flag joins a holdout through its targeting in the holdout's environment
(``"holdout": key``; checked by :func:`reference_errors` when the targeting is
written); an experiment joins it through its flag: held-out units get the off
variation before any rule runs, so they never enter the flag's experiments.

Size and unit are the population's identity. They may change only while no flag
names the holdout and before it recorded any unit; after that a new population is
a new holdout (another key), so results never mix two populations. Deleting is
refused while a flag names it and deletes its recorded exposures, so a holdout
created later under the same key starts empty.
"""

import sqlalchemy as sa

from pitcrew.wire import EXPOSURE, HOLDOUT_PREFIX

from ..analysis import holdouts as analysis
from ..analysis.settings import DEFAULT_ANALYSIS
from ..extensions import db
from ..models import Environment, Event, Experiment, Flag, FlagTargeting, Holdout
from . import Actor, audit, limits, ruleset_versions, unit_of_work
from . import metrics as metric_domain
from .errors import Conflict, NotFound, ValidationFailed
from .locking import get_by_key, share
from .pagination import Page, paginate
from .versioning import check_version

FIELDS = ("name", "description", "percent", "unit")
POPULATION = ("percent", "unit")  # fields that decide who is held out


# ---------------------------------------------------------------- reading

def get(key: str, *, lock: bool = False) -> Holdout:
    """The holdout; with ``lock``, locked for writing until the unit of work ends (service/domain/locking.py)."""
    return get_by_key(Holdout, key, lock=lock, name="Holdout")


def _environment_keys(ids) -> dict[int, str]:
    ids = set(ids)
    if not ids:
        return {}
    return dict(db.session.execute(sa.select(Environment.id, Environment.key).where(Environment.id.in_(ids))).all())


def snapshot(holdout: Holdout, environment: str | None = None) -> dict:
    if environment is None:
        environment = _environment_keys([holdout.environment_id]).get(holdout.environment_id)
    return {"key": holdout.key, "name": holdout.name, "description": holdout.description,
            "environment": environment, "percent": holdout.percent, "unit": holdout.unit}


def usage(holdouts: list[Holdout]) -> dict[int, dict]:
    """``{holdout id: {"flags": [...], "experiments": [...]}}``: the live flags whose targeting in
    the holdout's environment names it, and the experiments on those flags there (two queries)."""
    out = {h.id: {"flags": [], "experiments": []} for h in holdouts}
    if not holdouts:
        return out
    by_env_key = {(h.environment_id, h.key): h.id for h in holdouts}
    rows = db.session.execute(
        sa.select(Flag.id, Flag.key, FlagTargeting.environment_id, FlagTargeting.targeting)
        .join(FlagTargeting, FlagTargeting.flag_id == Flag.id)
        .where(Flag.archived.is_(False), FlagTargeting.environment_id.in_({h.environment_id for h in holdouts}))
        .order_by(Flag.key)
    ).all()
    joined: dict[tuple[int, int], int] = {}  # (flag id, environment id) -> holdout id
    for flag_id, flag_key, env_id, targeting in rows:
        holdout_id = by_env_key.get((env_id, (targeting or {}).get("holdout")))
        if holdout_id is not None:
            out[holdout_id]["flags"].append(flag_key)
            joined[(flag_id, env_id)] = holdout_id
    if joined:
        experiments = db.session.execute(
            sa.select(Experiment.key, Experiment.flag_id, Experiment.environment_id)
            .where(Experiment.flag_id.in_({f for f, _ in joined})).order_by(Experiment.key)
        ).all()
        for key, flag_id, env_id in experiments:
            holdout_id = joined.get((flag_id, env_id))
            if holdout_id is not None:
                out[holdout_id]["experiments"].append(key)
    return out


def to_dicts(holdouts: list[Holdout]) -> list[dict]:
    envs = _environment_keys(h.environment_id for h in holdouts)
    used = usage(holdouts)
    return [{**snapshot(h, envs.get(h.environment_id)), **used[h.id], "version": h.version,
             "created_at": h.created_at, "updated_at": h.updated_at} for h in holdouts]


def to_dict(holdout: Holdout) -> dict:
    return to_dicts([holdout])[0]


def list_holdouts(*, environment: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
    stmt = sa.select(Holdout)
    if environment:
        env_id = db.session.scalar(sa.select(Environment.id).where(Environment.key == environment))
        if env_id is None:
            raise NotFound(f"Environment '{environment}' does not exist.")
        stmt = stmt.where(Holdout.environment_id == env_id)
    return paginate(stmt, Holdout.id, limit=limit, cursor=cursor)


def ruleset_entries(environment_id: int) -> dict:
    """The environment's holdouts as its SDK ruleset carries them: ``{key: {key, percent, unit}}``."""
    return {h.key: {"key": h.key, "percent": h.percent, "unit": h.unit}
            for h in db.session.scalars(sa.select(Holdout).where(Holdout.environment_id == environment_id)
                                        .order_by(Holdout.id))}


def has_exposures(holdout: Holdout) -> bool:
    """Whether any unit was recorded in the holdout (held out or measured)."""
    return db.session.scalar(sa.select(Event.client_id).where(
        Event.environment_id == holdout.environment_id, Event.type == EXPOSURE,
        Event.experiment == HOLDOUT_PREFIX + holdout.key).limit(1)) is not None


# ---------------------------------------------------------------- references from flags

def reference_errors(environment: Environment, targeting: dict) -> list[tuple[str, str]]:
    """Problems with the ``holdout`` a flag's targeting in ``environment`` names (none when it names none).

    The holdout row is read FOR SHARE: it cannot be deleted or resized while
    this write is in flight (service/domain/locking.py)."""
    key = targeting.get("holdout")
    if key is None:
        return []
    found = db.session.execute(share(sa.select(Holdout.environment_id).where(Holdout.key == key))).first()
    if found is None:
        return [("holdout", f"unknown holdout {key!r}; create it first (POST /api/v1/holdouts)")]
    if found.environment_id != environment.id:
        other = _environment_keys([found.environment_id]).get(found.environment_id)
        return [("holdout", f"holdout {key!r} belongs to environment {other!r}, not {environment.key!r}")]
    return []


# ---------------------------------------------------------------- writing

def _basis_points(percent) -> int:
    """``percent`` (0.5 to 10, at most two decimals) in basis points; ValidationFailed otherwise."""
    bps = round(percent * 100)
    if not limits.HOLDOUT_MIN_PERCENT <= percent <= limits.HOLDOUT_MAX_PERCENT or abs(percent * 100 - bps) > 1e-6:
        raise ValidationFailed("The holdout is invalid.", {"percent": [
            f"Must be a percentage from {limits.HOLDOUT_MIN_PERCENT} to {limits.HOLDOUT_MAX_PERCENT} with at most "
            f"two decimals (basis points), not {percent!r}."]})
    return bps


def create(actor: Actor, data: dict) -> Holdout:
    key = data["key"]
    bps = _basis_points(data["percent"])
    environment = db.session.scalars(sa.select(Environment).where(Environment.key == data["environment"])).first()
    if environment is None:
        raise ValidationFailed("The holdout is invalid.", {"environment": [
            f"Unknown environment {data['environment']!r}."]})
    if db.session.scalars(sa.select(Holdout.id).where(Holdout.key == key)).first() is not None:
        raise Conflict(f"Holdout '{key}' already exists.", {"key": ["Already exists."]})
    holdout = Holdout(key=key, environment_id=environment.id, name=data.get("name") or key,
                      description=data.get("description") or "", basis_points=bps, unit=data.get("unit") or "id",
                      version=1)
    db.session.add(holdout)
    db.session.flush()
    audit.record(actor, "create", "holdout", key, environment=environment.key,
                 after=snapshot(holdout, environment.key))
    ruleset_versions.bump([environment.id])
    unit_of_work.commit()
    return holdout


def update(actor: Actor, key: str, changes: dict, if_match: int | None = None) -> Holdout:
    holdout = get(key, lock=True)
    check_version(holdout.version, if_match)
    before = snapshot(holdout)
    new_bps = _basis_points(changes["percent"]) if "percent" in changes else holdout.basis_points
    new_unit = changes.get("unit") or holdout.unit
    population_changed = new_bps != holdout.basis_points or new_unit != holdout.unit
    if population_changed:
        fields = [f for f in POPULATION if f in changes]
        users = usage([holdout])[holdout.id]["flags"]
        if users:
            raise Conflict(
                f"Holdout '{key}' is named by flags ({', '.join(users)}): its size and unit decide who is held "
                "out, so they cannot change while flags use it. Create a new holdout instead.",
                {**{f: ["Cannot change while flags use the holdout."] for f in fields}, "flags": users})
        if has_exposures(holdout):
            raise Conflict(
                f"Holdout '{key}' has recorded units: a new size or unit would mix two populations in its "
                "results. Create a new holdout (another key) instead.",
                {f: ["Cannot change once the holdout has recorded units."] for f in fields})
    holdout.basis_points = new_bps
    holdout.unit = new_unit
    for field in ("name", "description"):
        if field in changes:
            setattr(holdout, field, changes[field] if changes[field] is not None else "")
    if not holdout.name:
        holdout.name = holdout.key
    holdout.version += 1
    after = snapshot(holdout, before["environment"])
    audit.record(actor, "update", "holdout", key, environment=before["environment"], before=before, after=after)
    if population_changed:
        ruleset_versions.bump([holdout.environment_id])
    unit_of_work.commit()
    return holdout


def delete(actor: Actor, key: str, if_match: int | None = None) -> None:
    holdout = get(key, lock=True)
    check_version(holdout.version, if_match)
    users = usage([holdout])[holdout.id]["flags"]
    if users:
        raise Conflict(f"Holdout '{key}' is named by flags: {', '.join(users)}. Remove it from their targeting "
                       "first.", {"flags": users})
    before = snapshot(holdout)
    # A holdout created later under this key must not inherit these units.
    db.session.execute(sa.delete(Event).where(
        Event.environment_id == holdout.environment_id, Event.type == EXPOSURE,
        Event.experiment == HOLDOUT_PREFIX + holdout.key))
    audit.record(actor, "delete", "holdout", key, environment=before["environment"], before=before)
    ruleset_versions.bump([holdout.environment_id])
    db.session.delete(holdout)
    unit_of_work.commit()


# ---------------------------------------------------------------- results

def results(key: str, *, metrics: list[str], **overrides) -> dict:
    """The results document (service/analysis/holdouts.py) of holdout ``key`` on ``metrics``.

    ``overrides``: ``engine``, ``alpha``, ``sequential``, ``cuped``, ``correction``
    ("none" clears it), over the experiments' default analysis settings."""
    holdout = get(key)
    keys = list(dict.fromkeys(metrics))
    if not keys:
        raise ValidationFailed("Name the metrics to compare.", {"metric": [
            "Required: one or more metric keys (metric=a&metric=b, or metric=a,b)."]})
    if len(keys) > limits.HOLDOUT_RESULT_METRICS:
        raise ValidationFailed("Too many metrics.", {"metric": [
            f"At most {limits.HOLDOUT_RESULT_METRICS} metrics per request, not {len(keys)}."]})
    found = metric_domain.get_many(keys)
    missing = [k for k in keys if k not in found]
    if missing:
        raise ValidationFailed(f"Unknown metrics: {', '.join(missing)}.",
                               {"metric": [f"Metric {k!r} does not exist." for k in missing]})
    settings = dict(DEFAULT_ANALYSIS)
    for name, value in overrides.items():
        if value is not None:
            settings[name] = value
    if settings.get("correction") == "none":
        settings["correction"] = None
    environment = _environment_keys([holdout.environment_id]).get(holdout.environment_id)
    return analysis.compute(db.session.connection(), holdout, environment, [found[k] for k in keys], settings)
