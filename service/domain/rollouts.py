"""Guarded rollouts: move a flag's fallthrough to a new variation step by step,
rolling back at the first significant harm on a guardrail metric.

How traffic moves (no change to the evaluation engine or the SDKs). The
rollout owns an experiment (tag ``guarded-rollout``) on the flag with two
arms of equal weight, the new variation B and the old one A (control), and
adds one rule at the end of the targeting's rules that serves it. A unit the
experiment admits gets its arm and is recorded as an exposure, like any
experiment's; a unit it does not admit skips the rule and gets the
fallthrough. To serve B to p of the units reaching the fallthrough:

* p <= 50 %: traffic 2p, fallthrough A: p get B (half the admitted) and p
  get A as the comparison group; the rest get A unrecorded;
* p > 50 %: traffic 2(1 - p), fallthrough B: (1 - p) get A as the
  comparison group, the same number get B in the experiment, the rest B.

Traffic only grows up to 50 % and only shrinks after, and the assignment
hash never changes, so a unit that got B keeps B at every later step
(admitted B units stay admitted or fall through to B), no unit sees two arms
of the experiment, and both arms stay equal in size, so the comparison stays
a clean randomised one (units moved from A to B after 50 % keep counting
for A: that dilutes a difference, never creates one).

The worker (service/worker.py) checks each running rollout when its step's
hold ends and every ``check_interval`` in between: the guardrails'
sequential test (service/analysis/guardrails.py) decides rollback (harm),
advance (hold over, no harm) or hold. Reaching 100 % completes the rollout:
the fallthrough serves B and the rule and experiment are retired. A rollback
(or a cancel) restores the fallthrough to A. Every step is audited and
announced (``rollout.advanced``, ``rollout.rolled_back``, ``rollout.completed``).
"""

import logging
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa

from ..analysis import guardrails
from ..analysis.settings import DEFAULT_ANALYSIS
from ..extensions import db
from ..models import Environment, Experiment, Flag, Rollout, RolloutCheck
from ..models.types import utcnow
from . import Actor, audit, protection, ruleset_versions, unit_of_work
from . import experiments as experiment_domain
from . import flags as flag_domain
from . import metrics as metric_domain
from .announce import announce
from .concurrency import begin_exclusive, locked, save
from .environments import get as get_environment
from .errors import Conflict, NotFound, ValidationFailed
from .pagination import Page, by_id, paginate
from .versioning import check_version

TOTAL = 10000
TAG = "guarded-rollout"
MAX_STEPS = 20
DEFAULT_CHECK_INTERVAL = timedelta(minutes=5)
WORKER = "worker"
END_ACTIONS = {"completed": "complete", "rolled_back": "rollback", "cancelled": "cancel", "failed": "fail"}
log = logging.getLogger("pitcrew.worker")


def to_bps(percent: float) -> int:
    return round(percent * 100)


def serving(percent_bps: int) -> tuple[int, bool]:
    """(experiment traffic in basis points, whether the fallthrough serves the new variation)."""
    if percent_bps <= TOTAL // 2:
        return 2 * percent_bps, False
    return 2 * (TOTAL - percent_bps), True


def rule_id(rollout: Rollout) -> str:
    return f"rollout-{rollout.id}"


# ---------------------------------------------------------------- reading

def get(flag_key: str, environment_key: str, rollout_id: int, *, lock: bool = False) -> Rollout:
    flag = flag_domain.get(flag_key)
    environment = get_environment(environment_key)
    stmt = sa.select(Rollout).where(Rollout.id == rollout_id, Rollout.flag_id == flag.id,
                                    Rollout.environment_id == environment.id)
    rollout = db.session.scalars(locked(stmt) if lock else stmt).first()
    if rollout is None:
        raise NotFound(f"Flag '{flag_key}' has no rollout {rollout_id} in {environment_key}.")
    return rollout


def list_for_flag(flag_key: str, environment_key: str | None = None, *, state: str | None = None,
                  limit: int = 50, cursor: str | None = None) -> Page:
    flag = flag_domain.get(flag_key)
    stmt = sa.select(Rollout).where(Rollout.flag_id == flag.id)
    if environment_key:
        stmt = stmt.where(Rollout.environment_id == get_environment(environment_key).id)
    if state:
        stmt = stmt.where(Rollout.state == state)
    return paginate(stmt, Rollout.id, limit=limit, cursor=cursor, descending=True)


def list_checks(flag_key: str, environment_key: str, rollout_id: int, *, limit: int = 50,
                cursor: str | None = None) -> Page:
    rollout = get(flag_key, environment_key, rollout_id)
    stmt = sa.select(RolloutCheck).where(RolloutCheck.rollout_id == rollout.id)
    return paginate(stmt, RolloutCheck.id, limit=limit, cursor=cursor, descending=True)


def check_to_dict(check: RolloutCheck) -> dict:
    return {"id": check.id, "checked_at": check.checked_at, "step": check.step_index, "percent": check.percent,
            "decision": check.decision, "units": check.units, "metrics": check.metrics}


def checks_to_dicts(checks: list[RolloutCheck]) -> list[dict]:
    return [check_to_dict(c) for c in checks]


def _step_end(rollout: Rollout) -> datetime:
    return rollout.step_started_at + timedelta(hours=rollout.steps[rollout.step_index]["hold_hours"])


def _latest_checks(rollout_ids) -> dict[int, RolloutCheck]:
    """{rollout id: its latest check}, in one query."""
    wanted = set(rollout_ids)
    if not wanted:
        return {}
    latest = (sa.select(sa.func.max(RolloutCheck.id)).where(RolloutCheck.rollout_id.in_(wanted))
              .group_by(RolloutCheck.rollout_id))
    checks = db.session.scalars(sa.select(RolloutCheck).where(RolloutCheck.id.in_(latest)))
    return {c.rollout_id: c for c in checks}


def to_dicts(rollouts: list[Rollout]) -> list[dict]:
    """The rollouts as the API shows them; what they refer to is read once for all of them."""
    flags = by_id(Flag, (r.flag_id for r in rollouts))
    environments = by_id(Environment, (r.environment_id for r in rollouts))
    experiments = by_id(Experiment, (r.experiment_id for r in rollouts if r.experiment_id))
    checks = _latest_checks(r.id for r in rollouts)
    return [_to_dict(r, flags[r.flag_id], environments[r.environment_id],
                     experiments.get(r.experiment_id), checks.get(r.id)) for r in rollouts]


def to_dict(rollout: Rollout) -> dict:
    return to_dicts([rollout])[0]


def _to_dict(rollout: Rollout, flag: Flag, environment: Environment, experiment: Experiment | None,
             latest: RolloutCheck | None) -> dict:
    running = rollout.state == "running"
    return {
        "id": rollout.id, "flag": flag.key, "environment": environment.key, "state": rollout.state,
        "variation": rollout.variation, "from_variation": rollout.from_variation, "steps": rollout.steps,
        "guardrails": rollout.guardrails, "alpha": rollout.alpha, "step": rollout.step_index,
        "percent": rollout.steps[rollout.step_index]["percent"] if rollout.state != "completed" else 100,
        "step_started_at": rollout.step_started_at, "step_ends_at": _step_end(rollout) if running else None,
        "next_check_at": rollout.next_check_at, "last_checked_at": rollout.last_checked_at,
        "experiment": experiment.key if experiment else None, "rule_id": rule_id(rollout),
        "reason": rollout.reason, "author": rollout.author, "comment": rollout.comment,
        "latest_check": check_to_dict(latest) if latest else None,
        "finished_at": rollout.finished_at, "version": rollout.version,
        "created_at": rollout.created_at, "updated_at": rollout.updated_at,
    }


def _snapshot(rollout: Rollout) -> dict:
    data = to_dict(rollout)
    data.pop("latest_check")
    return audit.json_ready(data)


def _record(actor: Actor, rollout: Rollout, action: str, before: dict | None) -> dict:
    save()
    after = _snapshot(rollout)
    audit.record(actor, action, "rollout", str(rollout.id), environment=after["environment"],
                 before=before, after=after)
    return after


# ---------------------------------------------------------------- starting

def _validate(flag: Flag, data: dict) -> list[dict]:
    errors: dict[str, list[str]] = {}
    keys = [v["key"] for v in flag.variations]
    for field in ("variation", "from_variation"):
        if data[field] not in keys:
            errors.setdefault(field, []).append(f"'{data[field]}' is not a variation of flag '{flag.key}' "
                                                f"({', '.join(keys)}).")
    if data["variation"] == data["from_variation"]:
        errors.setdefault("variation", []).append("Must differ from from_variation.")
    steps = [{"percent": s["percent"], "hold_hours": s["hold_hours"]} for s in data["steps"]]
    if not 2 <= len(steps) <= MAX_STEPS:
        errors.setdefault("steps", []).append(
            f"Give 2 to {MAX_STEPS} steps: at least one below 100 percent, then 100 (the end).")
    previous = 0
    for i, step in enumerate(steps):
        bps = to_bps(step["percent"])
        if abs(step["percent"] * 100 - bps) > 1e-6:
            errors.setdefault(f"steps.{i}.percent", []).append("At most two decimals (basis points).")
        if bps <= previous:
            errors.setdefault(f"steps.{i}.percent", []).append("Percents must strictly increase.")
        previous = bps
    if steps and to_bps(steps[-1]["percent"]) != TOTAL:
        errors.setdefault(f"steps.{len(steps) - 1}.percent", []).append(
            "The last step is 100 percent: reaching it completes the rollout.")
    elif steps and steps[-1]["hold_hours"] != 0:
        errors.setdefault(f"steps.{len(steps) - 1}.hold_hours", []).append(
            "The last step (100 percent) completes the rollout; it has no hold (give 0).")
    guards = data.get("guardrails") or []
    if len(set(guards)) != len(guards):
        errors.setdefault("guardrails", []).append("Metrics must be unique.")
    known = metric_domain.get_many(guards)
    for i, key in enumerate(guards):
        if key not in known:
            errors.setdefault(f"guardrails.{i}", []).append(f"Metric '{key}' does not exist.")
    if errors:
        raise ValidationFailed("The rollout is invalid.", errors)
    return steps


def _experiment_key(flag: Flag, rollout: Rollout) -> str:
    # Experiment keys are at most 100 characters: 70 + "-rollout-" + id + "-" + 6 hex fit.
    key = f"{flag.key[:70]}-rollout-{rollout.id}"
    while db.session.scalars(sa.select(Experiment.id).where(Experiment.key == key)).first() is not None:
        key = f"{flag.key[:70]}-rollout-{rollout.id}-{secrets.token_hex(3)}"
    return key


def check_start(flag: Flag, environment: Environment, data: dict) -> list[dict]:
    """Everything that must hold to start ``data`` now (400/409 otherwise); the steps, normalised.

    Also run when a change request proposing the rollout is opened, edited and applied."""
    if flag.archived:
        raise Conflict(f"Flag '{flag.key}' is archived.", {"flag": ["Archived."]})
    steps = _validate(flag, data)
    targeting = flag_domain.targeting_for(flag, environment)
    old = data["from_variation"]
    problems = {}
    if not targeting.get("enabled"):
        problems["enabled"] = [f"Flag '{flag.key}' is off in {environment.key}; turn it on first."]
    if targeting.get("fallthrough") != {"variation": old}:
        problems["from_variation"] = [
            f"The fallthrough must serve {{\"variation\": \"{old}\"}} (it serves "
            f"{targeting.get('fallthrough')}): a guarded rollout moves the fallthrough from it."]
    if problems:
        raise Conflict("The flag's targeting cannot start this rollout.", problems)
    running = db.session.scalars(sa.select(Rollout.id).where(
        Rollout.flag_id == flag.id, Rollout.environment_id == environment.id, Rollout.state == "running")).first()
    if running is not None:
        raise Conflict(f"Rollout {running} of flag '{flag.key}' is still running in {environment.key}.",
                       {"flag": [f"Rollout {running} is running."]})
    return steps


def create(actor: Actor, flag_key: str, environment_key: str, data: dict, *,
           now: datetime | None = None) -> Rollout:
    """Start a guarded rollout at its first step (the flag's fallthrough must serve ``from_variation``).

    In a protected environment this is a change request's apply (``rollout`` payload)."""
    flag = flag_domain.get(flag_key)
    environment = get_environment(environment_key)
    protection.guard_targeting(environment)
    flag = db.session.scalars(locked(sa.select(Flag).where(Flag.id == flag.id))).one()
    steps = check_start(flag, environment, data)
    targeting = flag_domain.targeting_for(flag, environment)
    old, new = data["from_variation"], data["variation"]

    now = now or utcnow()
    guards = list(data.get("guardrails") or [])
    alpha = data.get("alpha", 0.05)
    rollout = Rollout(flag_id=flag.id, environment_id=environment.id, state="running", variation=new,
                      from_variation=old, steps=steps, guardrails=guards, alpha=alpha, step_index=0,
                      step_started_at=now, next_check_at=now, author=actor.name, comment=data.get("comment") or "")
    db.session.add(rollout)
    db.session.flush()
    traffic, new_fallthrough = serving(to_bps(steps[0]["percent"]))
    key = _experiment_key(flag, rollout)
    experiment = Experiment(
        key=key, name=f"Guarded rollout {rollout.id}: {flag.key} {old} -> {new}",
        hypothesis=f"Serving '{new}' instead of '{old}' harms no guardrail metric.",
        owner=actor.name, tags=[TAG], flag_id=flag.id, environment_id=environment.id,
        variations=[{"variation": new, "weight": TOTAL // 2}, {"variation": old, "weight": TOTAL // 2}],
        control=old, traffic=traffic, unit="id", layer=None, salt=key,
        # The first guardrail as primary metric (an experiment lists a metric once), so the
        # experiment's results show every guardrail.
        primary_metric=guards[0] if guards else None, secondary_metrics=[], guardrail_metrics=guards[1:],
        dimensions=[], status="running", started_at=utcnow(), version=1,
        analysis={**DEFAULT_ANALYSIS, "sequential": True, "alpha": alpha / max(1, len(guards))})
    db.session.add(experiment)
    db.session.flush()
    rollout.experiment_id = experiment.id
    started = experiment_domain.snapshot(experiment)
    audit.record(actor, "create", "experiment", key, environment=environment.key, after=started)
    announce("experiment.started", {"experiment": started, "actor": actor.name, "comment": actor.comment,
                                    "guarded_rollout": True}, environment=environment.key)
    rule = {"id": rule_id(rollout), "description": f"Guarded rollout {rollout.id} ({old} -> {new})",
            "conditions": [], "serve": {"experiment": key}}
    _write_targeting(actor, flag, environment, {
        **targeting, "rules": [*(targeting.get("rules") or []), rule],
        "fallthrough": {"variation": new if new_fallthrough else old}}, "start_rollout")
    _record(actor, rollout, "create", None)
    unit_of_work.commit()
    return rollout


def _write_targeting(actor: Actor, flag: Flag, environment: Environment, targeting: dict, action: str) -> None:
    with protection.sanctioned(), unit_of_work.deferred():
        flag_domain.put_targeting(actor, flag.key, environment.key, targeting, action=action)


# ---------------------------------------------------------------- moving

def _set_step(actor: Actor, rollout: Rollout, experiment: Experiment, flag: Flag, environment: Environment,
              index: int, now: datetime) -> None:
    before_traffic = experiment.traffic
    traffic, new_fallthrough = serving(to_bps(rollout.steps[index]["percent"]))
    was_new = serving(to_bps(rollout.steps[rollout.step_index]["percent"]))[1]
    rollout.step_index = index
    rollout.step_started_at = now
    if traffic != before_traffic:
        before = experiment_domain.snapshot(experiment)
        experiment.traffic = traffic
        experiment.version += 1
        db.session.flush()
        audit.record(actor, "update", "experiment", experiment.key, environment=environment.key,
                     before=before, after=experiment_domain.snapshot(experiment))
        ruleset_versions.bump([environment.id])
    if new_fallthrough != was_new:
        targeting = flag_domain.targeting_for(flag, environment)
        _write_targeting(actor, flag, environment, {**targeting, "fallthrough": {
            "variation": rollout.variation if new_fallthrough else rollout.from_variation}}, "advance_rollout")


def _end(actor: Actor, rollout: Rollout, state: str, reason: str, now: datetime) -> dict:
    """Retire the rule and the experiment; the fallthrough serves the new variation
    (completed) or the old one (rolled back, cancelled). The caller commits."""
    flag = db.session.scalars(locked(sa.select(Flag).where(Flag.id == rollout.flag_id))).one()
    environment = db.session.get(Environment, rollout.environment_id)
    experiment = db.session.get(Experiment, rollout.experiment_id) if rollout.experiment_id else None
    before = _snapshot(rollout)
    serve = rollout.variation if state == "completed" else rollout.from_variation
    targeting = flag_domain.targeting_for(flag, environment)
    rules = [r for r in targeting.get("rules") or [] if r.get("id") != rule_id(rollout)]
    if not flag.archived:
        _write_targeting(actor, flag, environment, {**targeting, "rules": rules,
                                                    "fallthrough": {"variation": serve}}, f"{END_ACTIONS[state]}_rollout")
    if experiment is not None and experiment.status == "running":
        _conclude(actor, experiment, environment, "ship" if state == "completed" else "rollback", serve, reason)
    rollout.state = state
    rollout.reason = reason
    rollout.finished_at = now
    rollout.next_check_at = None
    return _record(actor, rollout, END_ACTIONS[state], before)


def _conclude(actor: Actor, experiment: Experiment, environment: Environment, outcome: str, variation: str,
              summary: str) -> None:
    before = experiment_domain.snapshot(experiment)
    stamp = utcnow()
    experiment.status = "concluded"
    experiment.stopped_at = experiment.stopped_at or stamp
    experiment.concluded_at = stamp
    experiment.decision = {"outcome": outcome, "variation": variation, "summary": summary[:2000]}
    experiment.version += 1
    db.session.flush()
    after = experiment_domain.snapshot(experiment)
    audit.record(actor, "conclude", "experiment", experiment.key, environment=environment.key,
                 before=before, after=after)
    announce("experiment.concluded", {"experiment": after, "actor": actor.name, "comment": actor.comment,
                                      "guarded_rollout": True}, environment=environment.key)
    ruleset_versions.bump([environment.id])


def cancel(actor: Actor, flag_key: str, environment_key: str, rollout_id: int,
           if_match: int | None = None, now: datetime | None = None) -> Rollout:
    """Stop a running rollout and serve ``from_variation`` again (allowed in protected
    environments too: it restores the state the rollout started from)."""
    rollout = get(flag_key, environment_key, rollout_id, lock=True)
    check_version(rollout.version, if_match)
    if rollout.state != "running":
        raise Conflict(f"Rollout {rollout.id} is {rollout.state}; only a running rollout can be cancelled.",
                       {"state": [f"Is {rollout.state}."]})
    after = _end(actor, rollout, "cancelled", f"Cancelled by {actor.name}.", now or utcnow())
    announce("rollout.rolled_back", {**after, "cancelled": True}, environment=after["environment"])
    unit_of_work.commit()
    return rollout


# ---------------------------------------------------------------- the worker

def _integrity_problem(rollout: Rollout, flag: Flag, environment: Environment,
                       experiment: Experiment | None) -> str | None:
    if flag.archived:
        return f"Flag '{flag.key}' was archived."
    if experiment is None or experiment.status != "running":
        return "The rollout's experiment was removed or stopped."
    rules = flag_domain.targeting_for(flag, environment).get("rules") or []
    if not any(r.get("id") == rule_id(rollout) for r in rules):
        return f"The rollout's rule '{rule_id(rollout)}' was removed from the targeting."
    return None


def _check(rollout: Rollout, now: datetime, interval: timedelta) -> RolloutCheck | None:
    actor = Actor(WORKER, comment=f"Guarded rollout {rollout.id}")
    flag = db.session.scalars(locked(sa.select(Flag).where(Flag.id == rollout.flag_id))).one()
    environment = db.session.get(Environment, rollout.environment_id)
    experiment = db.session.get(Experiment, rollout.experiment_id) if rollout.experiment_id else None
    problem = _integrity_problem(rollout, flag, environment, experiment)
    if problem:
        before = _snapshot(rollout)
        if experiment is not None and experiment.status == "running":
            _conclude(actor, experiment, environment, "rollback", rollout.from_variation, problem)
        rollout.state, rollout.reason, rollout.finished_at, rollout.next_check_at = "failed", problem, now, None
        after = _record(actor, rollout, "fail", before)
        announce("rollout.rolled_back", {**after, "failed": True}, environment=environment.key)
        return None

    known = metric_domain.get_many(rollout.guardrails)
    metrics = [known[k] for k in rollout.guardrails if k in known]
    units, sums = guardrails.measure(db.session.connection(), experiment, metrics)
    verdict = guardrails.evaluate(sums, metrics, rollout.from_variation, rollout.variation, alpha=rollout.alpha)
    step_over = now >= _step_end(rollout)
    if verdict.harm:
        decision = "rollback"
    elif step_over:
        decision = "complete" if rollout.step_index + 1 == len(rollout.steps) - 1 else "advance"
    else:
        decision = "hold"
    check = RolloutCheck(rollout_id=rollout.id, checked_at=now, step_index=rollout.step_index,
                         percent=rollout.steps[rollout.step_index]["percent"], decision=decision, units=units,
                         metrics=verdict.metrics)
    db.session.add(check)
    rollout.last_checked_at = now
    before = _snapshot(rollout)
    if decision == "rollback":
        reasons = [guardrails.describe(e, rollout.from_variation, rollout.variation)
                   for e in verdict.metrics if e["harm"]]
        reason = (f"Rolled back at {rollout.steps[rollout.step_index]['percent']}%: significant harm on "
                  + "; ".join(reasons) + ".")
        after = _end(actor, rollout, "rolled_back", reason, now)
        announce("rollout.rolled_back", {**after, "check": verdict.metrics}, environment=environment.key)
    elif decision == "complete":
        after = _end(actor, rollout, "completed", "All steps passed their guardrails.", now)
        announce("rollout.completed", after, environment=environment.key)
    elif decision == "advance":
        _set_step(actor, rollout, experiment, flag, environment, rollout.step_index + 1, now)
        rollout.next_check_at = min(_step_end(rollout), now + interval)
        after = _record(actor, rollout, "advance", before)
        announce("rollout.advanced", {**after, "check": verdict.metrics}, environment=environment.key)
    else:
        rollout.next_check_at = min(_step_end(rollout), now + interval)
        save()
    return check


def check_next_due(now: datetime | None = None, *, interval: timedelta = DEFAULT_CHECK_INTERVAL) -> Rollout | None:
    """Claim the next running rollout whose check is due, check it and commit; None when none is due."""
    now = now or utcnow()
    begin_exclusive()
    stmt = (sa.select(Rollout).where(Rollout.state == "running", Rollout.next_check_at <= now)
            .order_by(Rollout.next_check_at, Rollout.id).limit(1))
    rollout = db.session.scalars(locked(stmt, skip_locked=True, of=Rollout)).first()
    if rollout is None:
        db.session.rollback()
        return None
    rollout_id = rollout.id
    try:
        with unit_of_work.deferred():
            _check(rollout, now, interval)
        db.session.commit()
        return rollout
    except sa.exc.DBAPIError:
        db.session.rollback()
        raise
    except Exception:  # a bug: retry this rollout later, not in a tight loop
        log.exception("rollout %s: unexpected error during its check", rollout_id)
        db.session.rollback()
        begin_exclusive()
        db.session.execute(sa.update(Rollout).where(Rollout.id == rollout_id, Rollout.state == "running")
                           .values(next_check_at=now + interval))
        db.session.commit()
        return None


def queue_stats(now: datetime) -> tuple[int, int, float]:
    """(checks due, running rollouts, lag seconds of the oldest due check) for /metrics."""
    due, running, oldest = db.session.execute(sa.select(
        sa.func.count().filter(Rollout.next_check_at <= now), sa.func.count(),
        sa.func.min(Rollout.next_check_at)).where(Rollout.state == "running")).one()
    lag = max(0.0, (now - oldest).total_seconds()) if due and oldest is not None else 0.0
    return int(due or 0), int(running or 0), lag
