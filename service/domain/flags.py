"""Flags and their per-environment targeting: validation, versions, history, rollback.

A flag has one version sequence covering its own fields and every
environment's targeting; each write stores a full snapshot in
``flag_versions`` (history and rollback read those) and bumps the SDK
ruleset version of the environments whose rulesets it changes.
"""

import graphlib
import json
import math

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from pitcrew.evaluation import validate_targeting
from pitcrew.evaluation.validation import variations_errors

from ..extensions import db
from ..models import (
    Environment,
    Experiment,
    Flag,
    FlagTargeting,
    FlagVersion,
    Segment,
    TargetingChange,
)
from ..models.types import utcnow
from . import Actor, audit, holdouts, limits, protection, ruleset_versions, unit_of_work
from . import lifecycle as lifecycle_domain
from .announce import announce
from .diff import json_diff
from .environments import get as get_environment
from .errors import Conflict, ValidationFailed
from .locking import get_by_key, share
from .pagination import LIKE_ESCAPE, Page, contains_pattern, paginate, paginate_tagged
from .serving import DEFAULT_TYPE, FLAG_TYPES, is_full_rollout, single_variation
from .targeting import DEFAULT_AUDIENCE, default_targeting, experiment_audience, experiment_rule
from .targeting import normalise as normalise_targeting
from .versioning import check_version

KINDS = ("boolean", "string", "number", "json")
TYPES = FLAG_TYPES  # release, experiment, operational, kill-switch, permission (docs/lifecycle.md)
INVALID_AUDIENCE = "The experiment's audience is invalid."
FLAG_FIELDS = ("name", "description", "type", "variations", "tags", "owner", "temporary", "archived")


# ---------------------------------------------------------------- reading

def get(key: str, *, lock: bool = False) -> Flag:
    """The flag; with ``lock``, locked for writing until the unit of work ends (service/domain/locking.py)."""
    return get_by_key(Flag, key, lock=lock, name="Flag")


def list_flags(*, tag: str | None = None, owner: str | None = None, archived: bool | None = None,
               q: str | None = None, type: str | None = None, lifecycle: str | None = None,
               limit: int = 50, cursor: str | None = None) -> Page:
    stmt = (sa.select(Flag).options(selectinload(Flag.targeting))
            .where(Flag.archived.is_(bool(archived))))
    if owner:
        stmt = stmt.where(Flag.owner == owner)
    if type:
        stmt = stmt.where(Flag.type == type)
    if q:
        needle = contains_pattern(q.lower())
        stmt = stmt.where(sa.or_(*(sa.func.lower(column).like(needle, escape=LIKE_ESCAPE)
                                   for column in (Flag.key, Flag.name, Flag.description))))
    if lifecycle:
        if tag:  # narrowed in SQL like paginate_tagged does; exact membership below
            stmt = stmt.where(sa.cast(Flag.tags, sa.Text).like(contains_pattern(tag), escape=LIKE_ESCAPE))
        page = lifecycle_domain.filter_page(stmt, lifecycle, limit=limit, cursor=cursor)
        if tag:
            page.items = [flag for flag in page.items if tag in (flag.tags or [])]
        return page
    return paginate_tagged(stmt, Flag.id, Flag.tags, tag, limit=limit, cursor=cursor)


def _environments() -> list[Environment]:
    return list(db.session.scalars(sa.select(Environment).order_by(Environment.id)))


def _rows(flag: Flag) -> dict[int, FlagTargeting]:
    return {row.environment_id: row for row in flag.targeting}


def targeting_for(flag: Flag, environment: Environment) -> dict:
    row = _rows(flag).get(environment.id)
    return row.targeting if row is not None else default_targeting(flag.variations)


def snapshot(flag: Flag, environments: list[Environment] | None = None) -> dict:
    """The flag with its targeting in every environment (``environments``: all of them, when
    already loaded)."""
    rows = _rows(flag)
    return {
        "key": flag.key, "name": flag.name, "description": flag.description, "kind": flag.kind,
        "type": flag.type, "variations": flag.variations, "tags": flag.tags, "owner": flag.owner,
        "temporary": flag.temporary, "archived": flag.archived,
        "environments": {
            env.key: rows[env.id].targeting if env.id in rows else default_targeting(flag.variations)
            for env in (_environments() if environments is None else environments)
        },
    }


def to_dicts(flags: list[Flag]) -> list[dict]:
    """The flags as the API shows them: snapshot, version, times and lifecycle stage
    (docs/lifecycle.md). The environments are read once and the lifecycles computed
    together for all of them (list_flags loads each flag's targeting with the page)."""
    environments = _environments()
    stages = lifecycle_domain.compute(flags)
    return [{**snapshot(flag, environments), "version": flag.version, "created_at": flag.created_at,
             "updated_at": flag.updated_at, "lifecycle": stages[flag.id].stage,
             "lifecycle_reason": stages[flag.id].reason, "last_evaluated_at": stages[flag.id].last_evaluated_at}
            for flag in flags]


def to_dict(flag: Flag) -> dict:
    return to_dicts([flag])[0]


def evaluations(key: str, *, days: int = 30) -> dict:
    """The flag's evaluation counts per environment (docs/lifecycle.md)."""
    return lifecycle_domain.evaluations(get(key), days=days)


def history(key: str, *, limit: int = 50, cursor: str | None = None) -> Page:
    """Versions newest first, each with its diff against the version before it."""
    flag = get(key)
    stmt = sa.select(FlagVersion).where(FlagVersion.flag_id == flag.id)
    page = paginate(stmt, FlagVersion.id, limit=limit, cursor=cursor, descending=True)
    if page.items:
        oldest = page.items[-1].version
        previous = db.session.scalars(sa.select(FlagVersion).where(
            FlagVersion.flag_id == flag.id, FlagVersion.version == oldest - 1)).first()
        chain = page.items + ([previous] if previous else [])
        page.items = [
            {"version": v.version, "action": v.action, "actor": v.actor, "comment": v.comment,
             "created_at": v.created_at, "snapshot": v.snapshot,
             "diff": json_diff(chain[i + 1].snapshot if i + 1 < len(chain) else {}, v.snapshot)}
            for i, v in enumerate(page.items)
        ]
    return page


# ---------------------------------------------------------------- validation

def _details(errors, prefix: str = "") -> dict[str, list[str]]:
    details: dict[str, list[str]] = {}
    for path, message in errors:
        full = f"{prefix}.{path}" if prefix and path else (prefix or path or "_body")
        details.setdefault(full, []).append(message)
    return details


def _value_matches_kind(kind: str, value) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return True  # json: any JSON value


def variation_errors(kind: str, variations) -> list[tuple[str, str]]:
    errors = variations_errors(variations)
    if errors:
        return errors
    for i, variation in enumerate(variations):
        if not _value_matches_kind(kind, variation["value"]):
            errors.append((f"variations.{i}.value", f"must be a {kind} value for a {kind} flag"))
    if kind == "boolean" and len(variations) != 2:
        errors.append(("variations", "a boolean flag has exactly two variations"))
    return errors


def _reference_errors(flag: Flag, environment: Environment, targeting: dict) -> list[tuple[str, str]]:
    """References that need the database: segments, prerequisite flags, experiments, cycles, the holdout.

    Runs after the engine's structural checks, so the shapes are known good."""
    errors = holdouts.reference_errors(environment, targeting)
    segment_refs = [(f"rules.{i}.conditions.{j}.values", key)
                    for i, rule in enumerate(targeting.get("rules") or [])
                    for j, cond in enumerate(rule.get("conditions") or []) if cond.get("op") == "in_segment"
                    for key in cond["values"]]
    if segment_refs:
        wanted = {key for _, key in segment_refs}
        # FOR SHARE: a segment cannot be deleted while this write references it.
        known = set(db.session.scalars(share(sa.select(Segment.key).where(Segment.key.in_(wanted)))))
        errors += [(path, f"unknown segment {key!r}") for path, key in segment_refs if key not in known]

    for i, prereq in enumerate(targeting.get("prerequisites") or []):
        other_key = prereq.get("flag")
        if other_key == flag.key:
            errors.append((f"prerequisites.{i}.flag", "a flag cannot be its own prerequisite"))
            continue
        other = db.session.scalars(sa.select(Flag).where(Flag.key == other_key)).first()
        if other is None or other.archived:
            errors.append((f"prerequisites.{i}.flag", f"unknown flag {other_key!r}"))
        elif prereq.get("variation") not in {v["key"] for v in other.variations}:
            errors.append((f"prerequisites.{i}.variation",
                           f"flag {other_key!r} has no variation {prereq.get('variation')!r}"))
    if targeting.get("prerequisites") and not errors:
        cycle = _prerequisite_cycle(flag, environment, targeting)
        if cycle:
            errors.append(("prerequisites", "prerequisite cycle: " + " -> ".join(cycle)))

    serves = [(f"rules.{i}.serve", r.get("serve")) for i, r in enumerate(targeting.get("rules") or [])]
    serves.append(("fallthrough", targeting.get("fallthrough")))
    for path, serve in serves:
        if isinstance(serve, dict) and isinstance(serve.get("experiment"), str):
            key = serve["experiment"]
            experiment = db.session.scalars(sa.select(Experiment).where(Experiment.key == key)).first()
            if experiment is None:
                errors.append((f"{path}.experiment", f"unknown experiment {key!r}"))
            elif experiment.flag_id != flag.id or experiment.environment_id != environment.id:
                errors.append((f"{path}.experiment",
                               f"experiment {key!r} is not on this flag in {environment.key}"))
    return errors


def _prerequisite_cycle(flag: Flag, environment: Environment, targeting: dict) -> list[str] | None:
    """A prerequisite cycle reachable from ``flag`` once ``targeting`` is stored, as
    ``[a, b, ..., a]`` (each flag needs the next), or None."""
    rows = db.session.execute(
        sa.select(Flag.key, FlagTargeting.targeting)
        .join(FlagTargeting, FlagTargeting.flag_id == Flag.id)
        .where(FlagTargeting.environment_id == environment.id)
    ).all()
    needs = {key: [p.get("flag") for p in (t.get("prerequisites") or [])] for key, t in rows}
    needs[flag.key] = [p.get("flag") for p in targeting.get("prerequisites") or []]
    reachable, stack = set(), [flag.key]
    while stack:
        key = stack.pop()
        if key not in reachable:
            reachable.add(key)
            stack.extend(needs.get(key, []))
    try:
        graphlib.TopologicalSorter({key: needs.get(key, []) for key in reachable}).prepare()
    except graphlib.CycleError as exc:
        # graphlib reports the cycle backwards, its first node repeated at the end.
        cycle = list(reversed(exc.args[1]))[:-1]
        start = cycle.index(flag.key) if flag.key in cycle else 0
        cycle = cycle[start:] + cycle[:start]
        return [*cycle, cycle[0]]
    return None


def _limit_errors(targeting: dict) -> list[tuple[str, str]]:
    """Limits over the whole targeting (per-list limits are checked by the schemas)."""
    errors = []
    units = sum(len(t.get("values") or []) for t in targeting.get("targets") or [] if isinstance(t, dict))
    if units > limits.TARGETS_PER_FLAG:
        errors.append(("targets", f"at most {limits.TARGETS_PER_FLAG} unit ids in all target lists together, "
                                  f"not {units}; use a segment for larger audiences"))
    size = len(json.dumps(targeting, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > limits.TARGETING_BYTES:
        errors.append(("_body", f"the targeting is {size} bytes as JSON; at most {limits.TARGETING_BYTES} "
                                f"(every SDK downloads it)"))
    return errors


def check_targeting(flag: Flag, environment: Environment, targeting: dict, variations: list[dict],
                    prefix: str = "") -> None:
    """ValidationFailed (details under ``prefix``) unless ``targeting`` may be stored for the flag
    there: limits, the engine's structural checks, then the references only the database knows."""
    keys = {v["key"] for v in variations}
    errors = _limit_errors(targeting) or validate_targeting(targeting, variations=keys)
    if not errors:
        errors = _reference_errors(flag, environment, targeting)
    if errors:
        raise ValidationFailed("The targeting is invalid.", _details(errors, prefix))


# ---------------------------------------------------------------- writing

def _record(actor: Actor, flag: Flag, action: str, *, before: dict | None, environment: str | None = None,
            audit_before=None, audit_after=None, comment: str | None = None) -> None:
    """Bump the version, store the snapshot and the audit entry (the caller commits).

    ``audit_before``/``audit_after`` narrow the audit entry to what changed
    (one environment's targeting); by default it holds whole snapshots."""
    flag.version = flag.version + 1 if before is not None else 1
    db.session.flush()
    after = snapshot(flag)
    comment = comment or actor.comment
    db.session.add(FlagVersion(flag_id=flag.id, version=flag.version, action=action, actor=actor.name,
                               comment=comment, snapshot=after))
    if comment != actor.comment:
        actor = Actor(actor.name, actor.request_id, comment)
    audit.record(actor, action, "flag", flag.key, environment=environment,
                 before=audit_before if audit_before is not None else before,
                 after=audit_after if audit_after is not None else after)
    _record_targeting_changes(actor, flag, action, before, after)


def _summary(flag: Flag) -> dict:
    return {"key": flag.key, "name": flag.name, "kind": flag.kind, "type": flag.type, "tags": flag.tags,
            "owner": flag.owner, "temporary": flag.temporary, "archived": flag.archived, "version": flag.version}


def _record_targeting_changes(actor: Actor, flag: Flag, action: str, before: dict | None, after: dict) -> None:
    """Per environment whose targeting changed, a ``targeting_changes`` row; and the announcements
    (docs/webhooks.md): ``flag.created``, ``flag.archived`` or ``flag.updated`` for the flag's own
    fields, ``targeting.updated`` per environment whose targeting changed."""
    who = {"actor": actor.name, "comment": actor.comment, "action": action}
    if before is None:
        announce("flag.created", {"flag": _summary(flag), **who})
        return
    own_before = {k: v for k, v in before.items() if k != "environments"}
    own_after = {k: v for k, v in after.items() if k != "environments"}
    if own_before != own_after:
        archived = own_after.get("archived") and not own_before.get("archived")
        announce("flag.archived" if archived else "flag.updated",
                 {"flag": _summary(flag), "changes": json_diff(own_before, own_after), **who})
    ids = None
    now = utcnow()
    for env_key, targeting in after["environments"].items():
        old = before.get("environments", {}).get(env_key)
        if old is None or old == targeting:
            continue
        if ids is None:
            ids = {env.key: env.id for env in _environments()}
        db.session.add(TargetingChange(
            flag_id=flag.id, environment_id=ids[env_key], version=flag.version, action=action, changed_at=now,
            enabled=bool(targeting.get("enabled")), serves=single_variation(targeting),
            full_rollout=is_full_rollout(targeting)))
        announce("targeting.updated", {"flag": flag.key, "environment": env_key, "version": flag.version,
                                       "targeting": targeting, "changes": json_diff(old, targeting), **who},
                 environment=env_key)


def create(actor: Actor, data: dict) -> Flag:
    kind = data["kind"]
    variations = [{"key": v["key"], "value": v["value"], "description": v.get("description", "")}
                  for v in data["variations"]]
    errors = variation_errors(kind, variations)
    if errors:
        raise ValidationFailed("The flag is invalid.", _details(errors))
    if db.session.scalars(sa.select(Flag.id).where(Flag.key == data["key"])).first() is not None:
        raise Conflict(f"Flag '{data['key']}' already exists.", {"key": ["Already exists."]})
    flag = Flag(key=data["key"], name=data.get("name") or data["key"], description=data.get("description", ""),
                kind=kind, type=data.get("type") or DEFAULT_TYPE, variations=variations, tags=data.get("tags", []),
                owner=data.get("owner"), temporary=data.get("temporary", True), archived=False, version=1)
    db.session.add(flag)
    _record(actor, flag, "create", before=None, audit_before=None)
    ruleset_versions.bump()
    unit_of_work.commit()
    return flag


def update(actor: Actor, key: str, changes: dict, if_match: int | None = None) -> Flag:
    flag = get(key, lock=True)
    check_version(flag.version, if_match)
    before = snapshot(flag)
    if "variations" in changes:
        variations = [{"key": v["key"], "value": v["value"], "description": v.get("description", "")}
                      for v in changes["variations"]]
        errors = variation_errors(flag.kind, variations)
        if not errors:
            errors = _variation_use_errors(flag, variations)
        if errors:
            raise ValidationFailed("The flag is invalid.", _details(errors))
        changes = {**changes, "variations": variations}
    if changes.get("archived") is True and not flag.archived:
        _check_not_required(flag)
    for field in FLAG_FIELDS:
        if field in changes:
            setattr(flag, field, changes[field])
    _record(actor, flag, "update", before=before)
    ruleset_versions.bump()
    unit_of_work.commit()
    return flag


def _variation_use_errors(flag: Flag, variations: list[dict]) -> list[tuple[str, str]]:
    """New variations must still satisfy every environment's targeting and every use elsewhere."""
    keys = {v["key"] for v in variations}
    errors = []
    for env in _environments():
        problems = validate_targeting(targeting_for(flag, env), variations=keys)
        errors.extend((f"environments.{env.key}.{path}", message) for path, message in problems)
    for other, env_key, targeting in _flags_with_prerequisite(flag.key):
        needed = [p.get("variation") for p in targeting.get("prerequisites") or []
                  if p.get("flag") == flag.key]
        errors.extend(("variations", f"flag {other!r} in {env_key} needs variation {key!r}")
                      for key in needed if key not in keys)
    for experiment in db.session.scalars(sa.select(Experiment).where(Experiment.flag_id == flag.id)):
        used = [arm.get("variation") for arm in experiment.variations or []]
        errors.extend(("variations", f"experiment {experiment.key!r} uses variation {key!r}")
                      for key in used if key not in keys)
    return errors


def _flags_with_prerequisite(key: str) -> list[tuple[str, str, dict]]:
    rows = db.session.execute(
        sa.select(Flag.key, Environment.key, FlagTargeting.targeting)
        .join(FlagTargeting, FlagTargeting.flag_id == Flag.id)
        .join(Environment, Environment.id == FlagTargeting.environment_id)
        .where(Flag.archived.is_(False), Flag.key != key)
    ).all()
    return [(f, e, t) for f, e, t in rows if any(p.get("flag") == key for p in t.get("prerequisites") or [])]


def _check_not_required(flag: Flag) -> None:
    users = sorted({other for other, _, _ in _flags_with_prerequisite(flag.key)})
    if users:
        raise Conflict(f"Flag '{flag.key}' is a prerequisite of other flags.", {"flags": users})


def archive(actor: Actor, key: str, if_match: int | None = None) -> Flag:
    flag = get(key, lock=True)
    check_version(flag.version, if_match)
    if flag.archived:
        return flag
    _check_not_required(flag)
    before = snapshot(flag)
    flag.archived = True
    _record(actor, flag, "archive", before=before)
    ruleset_versions.bump()
    unit_of_work.commit()
    return flag


def get_targeting(key: str, environment_key: str) -> tuple[Flag, dict]:
    flag = get(key)
    return flag, targeting_for(flag, get_environment(environment_key))


def _store_targeting(flag: Flag, environment: Environment, targeting: dict) -> None:
    row = _rows(flag).get(environment.id)
    if row is None:
        flag.targeting.append(FlagTargeting(environment_id=environment.id, targeting=targeting))
    else:
        row.targeting = targeting


def put_targeting(actor: Actor, key: str, environment_key: str, targeting: dict,
                  if_match: int | None = None, action: str = "update_targeting") -> tuple[Flag, dict]:
    flag = get(key, lock=True)
    environment = get_environment(environment_key)
    protection.guard_targeting(environment)
    check_version(flag.version, if_match)
    return _replace_targeting(actor, flag, environment, targeting, action)


def patch_targeting(actor: Actor, key: str, environment_key: str, changes: dict,
                    if_match: int | None = None) -> tuple[Flag, dict]:
    """Replace the given top-level fields of the targeting, keep the rest."""
    flag = get(key, lock=True)  # locked before reading: the rest comes from the latest version
    environment = get_environment(environment_key)
    protection.guard_targeting(environment)
    check_version(flag.version, if_match)
    return _replace_targeting(actor, flag, environment, {**targeting_for(flag, environment), **changes})


def _replace_targeting(actor: Actor, flag: Flag, environment: Environment, targeting: dict,
                       action: str = "update_targeting") -> tuple[Flag, dict]:
    targeting = normalise_targeting(targeting)
    check_targeting(flag, environment, targeting, flag.variations)
    before = snapshot(flag)
    old = targeting_for(flag, environment)
    _store_targeting(flag, environment, targeting)
    _record(actor, flag, action, before=before, environment=environment.key,
            audit_before=old, audit_after=targeting)
    ruleset_versions.bump([environment.id])
    unit_of_work.commit()
    return flag, targeting


def rollback(actor: Actor, key: str, version: int, if_match: int | None = None) -> Flag:
    """Write a new version whose content equals ``version``'s (environments created since keep theirs)."""
    flag = get(key, lock=True)
    protection.guard_rollback(flag, version)
    check_version(flag.version, if_match)
    target = db.session.scalars(sa.select(FlagVersion).where(
        FlagVersion.flag_id == flag.id, FlagVersion.version == version)).first()
    if target is None:
        raise ValidationFailed("Unknown version.", {"version": [f"Flag '{key}' has no version {version}."]})
    content = target.snapshot
    errors = variation_errors(flag.kind, content["variations"])
    environments = {env.key: env for env in _environments()}
    keys = {v["key"] for v in content["variations"]}
    for env_key, targeting in content["environments"].items():
        if env_key in environments:
            problems = _limit_errors(targeting) or validate_targeting(targeting, variations=keys) \
                or _reference_errors(flag, environments[env_key], targeting)
            errors += [(f"environments.{env_key}.{p}", m) for p, m in problems]
    if errors:
        raise ValidationFailed(f"Version {version} can no longer be restored.", _details(errors))
    before = snapshot(flag)
    if content["archived"] and not flag.archived:
        _check_not_required(flag)
    for field in FLAG_FIELDS:
        setattr(flag, field, content.get(field, getattr(flag, field)))  # versions before types had none
    for env_key, targeting in content["environments"].items():
        if env_key in environments:
            _store_targeting(flag, environments[env_key], targeting)
    _record(actor, flag, "rollback", before=before, comment=actor.comment or f"Rollback to version {version}")
    ruleset_versions.bump()
    unit_of_work.commit()
    return flag


def ensure_experiment_rule(actor: Actor, flag: Flag, environment: Environment, experiment_key: str,
                           audience: dict | None = None) -> dict:
    """Make the flag's targeting in ``environment`` serve the experiment; return its audience
    (``targeting.experiment_audience``). The caller locked ``flag`` and commits.

    ``audience`` (default ``{"position": "last"}``) says where the experiment's rule goes and
    whose audience it takes (``targeting.experiment_rule``). Nothing changes when a rule or the
    fallthrough already serves the experiment. A draft's rule is skipped by SDKs, so adding it
    changes no one's variation until the experiment starts.
    """
    targeting = targeting_for(flag, environment)
    found = experiment_audience(targeting, experiment_key)
    if found is not None:
        return found
    rules = list(targeting.get("rules") or [])
    placed = experiment_rule(targeting, experiment_key, audience or DEFAULT_AUDIENCE,
                             max_id_chars=limits.RULE_ID_CHARS, environment=environment.key)
    if isinstance(placed, str):
        raise ValidationFailed(INVALID_AUDIENCE, {"audience.rule_id": [placed]})
    if len(rules) >= limits.RULES_PER_FLAG:
        raise ValidationFailed(INVALID_AUDIENCE, {"audience": [
            f"The flag's targeting in {environment.key} already has {len(rules)} rules, the most "
            "allowed; remove a rule first."]})
    index, rule = placed
    new = {**normalise_targeting(targeting), "rules": [*rules[:index], rule, *rules[index:]]}
    check_targeting(flag, environment, new, flag.variations, "audience")
    before = snapshot(flag)
    _store_targeting(flag, environment, new)
    _record(actor, flag, "add_experiment_rule", before=before, environment=environment.key,
            audit_before=targeting, audit_after=new)
    ruleset_versions.bump([environment.id])
    return experiment_audience(new, experiment_key)


def remove_experiment_rule(actor: Actor, flag: Flag, environment: Environment, experiment_key: str) -> None:
    """Stop the flag's targeting in ``environment`` from serving the experiment (the caller locked and commits).

    Rules serving it are removed; a fallthrough serving it falls back to the
    off variation, which is what an experiment that does not apply serves.
    """
    targeting = targeting_for(flag, environment)
    rules = [r for r in targeting.get("rules") or [] if (r.get("serve") or {}).get("experiment") != experiment_key]
    fallthrough = targeting.get("fallthrough") or {}
    if fallthrough.get("experiment") == experiment_key:
        fallthrough = {"variation": targeting["off_variation"]}
    if rules == (targeting.get("rules") or []) and fallthrough == targeting.get("fallthrough"):
        return
    before = snapshot(flag)
    new = {**normalise_targeting(targeting), "rules": rules, "fallthrough": fallthrough}
    _store_targeting(flag, environment, new)
    _record(actor, flag, "remove_experiment_rule", before=before, environment=environment.key,
            audit_before=targeting, audit_after=new)
    ruleset_versions.bump([environment.id])
