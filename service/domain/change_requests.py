"""Change requests: reviewed changes in a protected environment.

Life of a request (docs/process.md):

* ``create`` records the proposal, validated against the live state: a
  ``targeting`` (a full replacement; ``rollback: {version}`` proposes the
  targeting the environment had at that flag version), a ``patch``
  (top-level fields that replace the live ones when applied), a ``rollout``
  (a guarded rollout to start) or an ``experiment`` action (start, stop or
  conclude one of the flag's experiments in that environment). Its
  ``base_version`` is the flag's version now (for an experiment action: the
  experiment's). State ``open`` (``approved`` at once where no approval is
  required).
* ``review``: approve or reject. The author cannot review their own request;
  each reviewer counts once per revision; a review naming the revision the
  reviewer read is refused once the request has moved on. Enough approvals
  -> ``approved``; a rejection -> ``rejected`` (final).
* ``update`` (PATCH): any edit starts a new revision: approvals drop to zero,
  the request is ``open`` again, re-based on the current version, and a
  pending schedule is withdrawn.
* ``apply``: needs the environment's ``approvals_required`` approvals (an
  admin may pass ``bypass``, audited as a bypass) and the base still at
  ``base_version`` (else 409 ``conflict``); it runs the same domain write as
  the direct route (targeting write, rollout start, experiment transition
  with its checks). With ``at`` the request is ``scheduled`` and the worker
  applies it then (service/domain/schedules.py), repeating both checks; a
  check that fails there marks it ``failed``.
* ``cancel`` (author or admin) while open, approved or scheduled.

Flags as code and the console's rollback call :func:`propose_targeting` and
:func:`propose_rollback`, which open (or reuse) requests for them.
"""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from ..extensions import db
from ..models import (
    ChangeRequest,
    ChangeRequestReview,
    Environment,
    Experiment,
    Flag,
    FlagVersion,
    ScheduledChange,
)
from ..models.types import utcnow
from . import Actor, audit, protection, unit_of_work
from . import experiments as experiment_domain
from . import flags as flag_domain
from . import rollouts as rollout_domain
from .announce import announce
from .concurrency import locked, race_is_conflict, save
from .diff import json_diff
from .environments import get as get_environment
from .errors import Conflict, Forbidden, NotFound, ValidationFailed
from .locking import for_update
from .pagination import Page, by_id, paginate
from .targeting import normalise as normalise_targeting
from .versioning import check_version

ACTIVE = ("open", "approved", "scheduled")
DECISIONS = ("approve", "reject")
EXPERIMENT_ACTIONS = ("start", "stop", "conclude")


# ---------------------------------------------------------------- reading

def get(request_id: int, *, lock: bool = False) -> ChangeRequest:
    stmt = sa.select(ChangeRequest).where(ChangeRequest.id == request_id)
    request = db.session.scalars(locked(stmt) if lock else stmt).first()
    if request is None:
        raise NotFound(f"Change request {request_id} does not exist.")
    return request


def list_requests(*, flag: str | None = None, environment: str | None = None, state: str | None = None,
                  experiment: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
    stmt = sa.select(ChangeRequest).options(selectinload(ChangeRequest.reviews))
    if experiment:
        stmt = stmt.where(ChangeRequest.experiment_id == sa.select(Experiment.id).where(
            Experiment.key == experiment).scalar_subquery())
    if flag:
        stmt = stmt.where(ChangeRequest.flag_id == sa.select(Flag.id).where(Flag.key == flag).scalar_subquery())
    if environment:
        stmt = stmt.where(ChangeRequest.environment_id == get_environment(environment).id)
    if state:
        stmt = stmt.where(ChangeRequest.state == state)
    return paginate(stmt, ChangeRequest.id, limit=limit, cursor=cursor, descending=True)


def approvers(request: ChangeRequest) -> list[str]:
    """Distinct reviewers who approved the current revision, in order."""
    return list(dict.fromkeys(r.reviewer for r in request.reviews
                              if r.revision == request.revision and r.decision == "approve"))


def _parts(request: ChangeRequest) -> tuple[Flag, Environment]:
    return db.session.get(Flag, request.flag_id), db.session.get(Environment, request.environment_id)


def _experiment_of(request: ChangeRequest) -> Experiment | None:
    """The experiment an experiment request acts on (None once it was deleted)."""
    return db.session.get(Experiment, request.experiment_id) if request.experiment_id else None


def _current_base(request: ChangeRequest, flag: Flag) -> int | None:
    """The version ``base_version`` is compared with: the experiment's for an experiment
    request (None when it was deleted), else the flag's."""
    if request.experiment is not None:
        experiment = _experiment_of(request)
        return experiment.version if experiment is not None else None
    return flag.version


def proposed_targeting(flag: Flag, environment: Environment, request: ChangeRequest) -> dict:
    """The targeting the request would leave live, if applied now (a rollout's
    request leaves it as it is until the rollout's first step; an experiment
    action does not change it)."""
    if request.rollout is not None or request.experiment is not None:
        return flag_domain.targeting_for(flag, environment)
    if request.targeting is not None:
        return normalise_targeting(request.targeting)
    return normalise_targeting({**flag_domain.targeting_for(flag, environment), **request.patch})


def to_dicts(requests: list[ChangeRequest]) -> list[dict]:
    """The requests as the API shows them; their flags (with targeting) and environments are
    read once for all of them (list_requests loads the reviews with the page)."""
    flags = by_id(Flag, (r.flag_id for r in requests), selectinload(Flag.targeting))
    environments = by_id(Environment, (r.environment_id for r in requests))
    return [_to_dict(r, flags[r.flag_id], environments[r.environment_id]) for r in requests]


def _experiment_state(experiment: Experiment | None) -> dict:
    if experiment is None:
        return {"status": "deleted"}
    return {"status": experiment.status, "decision": experiment.decision,
            "released_variation": experiment.released_variation}


def _experiment_diff(request: ChangeRequest) -> list[dict]:
    """What an experiment action would change: ``experiment.status`` and, for a conclusion,
    ``experiment.decision`` and ``experiment.released_variation``."""
    proposal = request.experiment
    before = _experiment_state(_experiment_of(request))
    after = {**before, "status": {"start": "running", "stop": "stopped", "conclude": "concluded"}[proposal["action"]]}
    if proposal["action"] == "conclude":
        decision = proposal.get("decision") or {}
        after["decision"] = {"outcome": decision.get("outcome"), "variation": decision.get("variation"),
                             "summary": decision.get("summary") or ""}
        if "released_variation" in proposal:
            after["released_variation"] = proposal["released_variation"]
    return json_diff(before, after, "experiment")


def to_dict(request: ChangeRequest) -> dict:
    return _to_dict(request, *_parts(request))


def _to_dict(request: ChangeRequest, flag: Flag, environment: Environment) -> dict:
    live = flag_domain.targeting_for(flag, environment)
    proposed = proposed_targeting(flag, environment, request)
    current = _current_base(request, flag)
    if request.state not in ACTIVE:
        diff = []
    elif request.experiment is not None:
        diff = _experiment_diff(request)
    else:
        diff = json_diff(live, proposed)
    return {
        "id": request.id, "flag": flag.key, "environment": environment.key, "state": request.state,
        "author": request.author, "comment": request.comment,
        "targeting": request.targeting, "patch": request.patch, "rollout": request.rollout,
        "experiment": request.experiment, "rollback_version": request.rollback_version,
        "base_version": request.base_version, "flag_version": flag.version,
        "experiment_version": current if request.experiment is not None else None,
        "conflict": request.state in ACTIVE and current != request.base_version,
        "revision": request.revision,
        "approvals": len(approvers(request)), "approvals_required": environment.approvals_required,
        "approved_by": approvers(request),
        "reviews": [{"reviewer": r.reviewer, "decision": r.decision, "comment": r.comment,
                     "revision": r.revision, "created_at": r.created_at} for r in request.reviews],
        "bypass": request.bypass, "at": request.scheduled_at,
        "applied_at": request.applied_at, "applied_by": request.applied_by,
        "applied_version": request.applied_version, "closed_by": request.closed_by,
        "failure_reason": request.failure_reason,
        "live": live, "proposed": proposed, "diff": diff,
        "version": request.version, "created_at": request.created_at, "updated_at": request.updated_at,
    }


def _snapshot(request: ChangeRequest) -> dict:
    """JSON-ready record for the audit log and announcements."""
    flag, environment = _parts(request)
    return {"id": request.id, "flag": flag.key, "environment": environment.key, "state": request.state,
            "author": request.author, "comment": request.comment, "targeting": request.targeting,
            "patch": request.patch, "rollout": request.rollout, "experiment": request.experiment,
            "rollback_version": request.rollback_version, "base_version": request.base_version,
            "revision": request.revision,
            "approved_by": approvers(request), "bypass": request.bypass,
            "at": request.scheduled_at.isoformat() if request.scheduled_at else None,
            "applied_version": request.applied_version, "failure_reason": request.failure_reason}


def _record(actor: Actor, request: ChangeRequest, action: str, before: dict | None) -> dict:
    save()
    after = _snapshot(request)
    audit.record(actor, action, "change_request", str(request.id), environment=after["environment"],
                 before=before, after=after)
    return after


# ---------------------------------------------------------------- writing

PAYLOADS = ("targeting", "patch", "rollout", "experiment")


def _validate(flag: Flag, environment: Environment, request: ChangeRequest) -> None:
    """The proposal must be valid against the live state (else 400/409, nothing stored)."""
    if request.rollout is not None:
        try:
            rollout_domain.check_start(flag, environment, request.rollout)
        except (ValidationFailed, Conflict) as exc:
            exc.details = {f"rollout.{path}": reasons for path, reasons in exc.details.items()}
            raise
        return
    if request.experiment is not None:
        _check_experiment_action(request)
        return
    if request.targeting is not None:
        prefix = "targeting" if request.rollback_version is None else "rollback.targeting"
    else:
        prefix = "patch"
    try:
        flag_domain.check_targeting(flag, environment, proposed_targeting(flag, environment, request),
                                    flag.variations, prefix)
    except ValidationFailed as exc:
        if request.rollback_version is not None:
            exc.message = (f"The targeting of {environment.key} at version {request.rollback_version} can no "
                           "longer be restored as it is.")
        raise


def _check_experiment_action(request: ChangeRequest) -> None:
    """The experiment's own checks for the action (the ones the direct route runs)."""
    experiment = _experiment_of(request)
    proposal = request.experiment
    if experiment is None:
        raise Conflict(f"Experiment '{proposal['key']}' was deleted.", {"experiment.key": ["Deleted."]})
    try:
        protection.guard_rollout_experiment(experiment)
        if proposal["action"] == "start":
            experiment_domain.check_start(experiment)
        elif proposal["action"] == "stop":
            experiment_domain.check_stop(experiment)
        else:
            experiment_domain.check_conclude(experiment, proposal)
    except (ValidationFailed, Conflict) as exc:
        exc.details = {f"experiment.{path}": reasons for path, reasons in exc.details.items()}
        raise


def _payload(data: dict, *, creating: bool) -> str:
    """The one proposal ``data`` carries (create also takes ``rollback``), else a 400."""
    names = PAYLOADS + (("rollback",) if creating else ())
    given = [name for name in names if data.get(name) is not None]
    if len(given) != 1:
        choice = ", ".join(names[:-1]) + " or " + names[-1]
        raise ValidationFailed(f"Give exactly one of {choice}.", {
            name: ["Give one proposal: a full targeting, a patch of top-level fields, a guarded rollout, "
                   "an experiment action" + (", or a rollback to a flag version." if creating else ".")]
            for name in (given or ["targeting"])})
    if given[0] == "patch" and not data["patch"]:
        raise ValidationFailed("The patch is empty.", {"patch": ["Give at least one targeting field."]})
    return given[0]


def _experiment_proposal(data: dict) -> dict:
    """``{key, action, decision?, released_variation?}``: a decision only (and always) to conclude."""
    action = data["action"]
    proposal = {"key": data["key"], "action": action}
    errors: dict[str, list[str]] = {}
    if action == "conclude":
        if data.get("decision") is None:
            errors["experiment.decision"] = ["Required to conclude: {outcome, variation, summary}."]
        else:
            proposal["decision"] = {"outcome": data["decision"]["outcome"],
                                    "variation": data["decision"].get("variation"),
                                    "summary": data["decision"].get("summary") or ""}
        if "released_variation" in data:
            proposal["released_variation"] = data["released_variation"]
    else:
        for name in ("decision", "released_variation"):
            if name in data:
                errors[f"experiment.{name}"] = [f"Only a conclusion takes {name}; this request would {action}."]
    if errors:
        raise ValidationFailed("The experiment action is invalid.", errors)
    return proposal


def _find_experiment(key: str) -> Experiment:
    experiment = db.session.scalars(sa.select(Experiment).where(Experiment.key == key)).first()
    if experiment is None:
        raise ValidationFailed("The change request is invalid.",
                               {"experiment.key": [f"Experiment '{key}' does not exist."]})
    return experiment


def _restored_targeting(flag: Flag, environment: Environment, version: int) -> dict:
    """The targeting ``environment`` had at flag ``version`` (a rollback proposal)."""
    snapshot = db.session.scalar(sa.select(FlagVersion.snapshot).where(
        FlagVersion.flag_id == flag.id, FlagVersion.version == version))
    if snapshot is None:
        raise ValidationFailed("Unknown version.", {"rollback.version": [f"Flag '{flag.key}' has no version {version}."]})
    restored = (snapshot.get("environments") or {}).get(environment.key)
    if restored is None:
        raise ValidationFailed("Nothing to restore.", {"rollback.version": [
            f"Version {version} has no targeting for '{environment.key}' (the environment was created later)."]})
    if normalise_targeting(restored) == flag_domain.targeting_for(flag, environment):
        raise ValidationFailed("Nothing to roll back.", {"rollback.version": [
            f"The targeting of '{environment.key}' at version {version} is the live one: a plain rollback "
            f"(POST /api/v1/flags/{flag.key}/rollback) restores the rest of version {version}."]})
    return restored


def _set_proposal(request: ChangeRequest, data: dict, kind: str, flag: Flag, environment: Environment) -> None:
    request.targeting = request.patch = request.rollout = request.experiment = None
    request.rollback_version = None
    if kind == "rollback":
        request.targeting = _restored_targeting(flag, environment, data["rollback"]["version"])
        request.rollback_version = data["rollback"]["version"]
    elif kind == "experiment":
        request.experiment = _experiment_proposal(data["experiment"])
    else:
        setattr(request, kind, data[kind])


def _target(data: dict, kind: str) -> tuple[Flag, Environment, Experiment | None]:
    """The flag and environment a new request is for (an experiment's own, for an experiment action)."""
    errors: dict[str, list[str]] = {}
    experiment = _find_experiment(data["experiment"]["key"]) if kind == "experiment" else None
    if experiment is not None:
        flag = db.session.get(Flag, experiment.flag_id)
        environment = db.session.get(Environment, experiment.environment_id)
        for name, actual in (("flag", flag.key), ("environment", environment.key)):
            if data.get(name) not in (None, actual):
                errors[name] = [f"Experiment '{experiment.key}' is on {name} '{actual}'; leave {name} out."]
        if flag.archived:
            errors["flag"] = [f"Flag '{flag.key}' is archived."]
    else:
        flag = environment = None
        if not data.get("flag"):
            errors["flag"] = ["Required (unless the request is an experiment action)."]
        else:
            flag = db.session.scalars(sa.select(Flag).where(Flag.key == data["flag"])).first()
            if flag is None or flag.archived:
                errors["flag"] = [f"Flag '{data['flag']}' does not exist or is archived."]
        if not data.get("environment"):
            errors["environment"] = ["Required (unless the request is an experiment action)."]
        else:
            environment = db.session.scalars(sa.select(Environment).where(
                Environment.key == data["environment"])).first()
            if environment is None:
                errors["environment"] = [f"Environment '{data['environment']}' does not exist."]
    if errors:
        raise ValidationFailed("The change request is invalid.", errors)
    return flag, environment, experiment


def create(actor: Actor, data: dict) -> ChangeRequest:
    kind = _payload(data, creating=True)
    flag, environment, experiment = _target(data, kind)
    request = ChangeRequest(flag_id=flag.id, environment_id=environment.id, author=actor.name,
                            comment=data.get("comment") or "", revision=1, bypass=False,
                            experiment_id=experiment.id if experiment is not None else None,
                            state="open" if environment.approvals_required > 0 else "approved")
    _set_proposal(request, data, kind, flag, environment)
    if kind == "rollback" and not request.comment:
        request.comment = f"Rollback of {environment.key} to version {request.rollback_version}"
    request.base_version = _current_base(request, flag)
    _validate(flag, environment, request)
    db.session.add(request)
    after = _record(actor, request, "create", None)
    announce("change_request.opened", after, environment=environment.key)
    if request.state == "approved":
        announce("change_request.approved", after, environment=environment.key)
    unit_of_work.commit()
    return request


def _check_active(request: ChangeRequest, doing: str) -> None:
    if request.state not in ACTIVE:
        raise Conflict(f"Change request {request.id} is {request.state}; cannot {doing}.",
                       {"state": [f"Is {request.state}."]})


def _withdraw_schedule(request: ChangeRequest, state: str = "cancelled") -> None:
    for item in db.session.scalars(locked(sa.select(ScheduledChange).where(
            ScheduledChange.change_request_id == request.id, ScheduledChange.state == "pending"))):
        item.state = state
    request.scheduled_at = None


def review(actor: Actor, request_id: int, decision: str, comment: str = "", *,
           revision: int | None = None) -> ChangeRequest:
    """Approve or reject the current revision. ``revision``, when given, is the revision the
    reviewer read: if the request was edited since, the review would count for a proposal
    they have not seen, so it is refused (409) and nothing is recorded."""
    request = get(request_id, lock=True)
    _check_active(request, "review it")
    if actor.name == request.author:
        raise Forbidden("The author of a change request cannot review it"
                        + (" (cancel it instead)." if decision == "reject" else "."),
                        {"decision": ["You wrote this change request."]})
    if revision is not None and revision != request.revision:
        raise Conflict(f"Change request {request.id} was edited since you opened it (revision {revision}, now "
                       f"{request.revision}); read the new revision, then review it.",
                       {"revision": [f"You reviewed revision {revision}; the request is at revision "
                                     f"{request.revision}."]})
    if decision == "approve" and actor.name in approvers(request):
        raise Conflict(f"{actor.name} already approved revision {request.revision}; a reviewer counts once.",
                       {"decision": ["Already approved by you."]})
    before = _snapshot(request)
    request.reviews.append(ChangeRequestReview(revision=request.revision, reviewer=actor.name, decision=decision,
                                               comment=comment or ""))
    save()  # a racing identical review loses here (unique per reviewer and revision): 409
    _, environment = _parts(request)
    became_approved = False
    if decision == "reject":
        _withdraw_schedule(request)
        request.state = "rejected"
        request.closed_by = actor.name
    elif request.state == "open" and len(approvers(request)) >= environment.approvals_required:
        request.state = "approved"
        became_approved = True
    request.updated_at = utcnow()  # every review moves the version: racing reviews cannot both count
    after = _record(actor, request, "reject" if decision == "reject" else "approve", before)
    if decision == "reject":
        announce("change_request.rejected", after, environment=environment.key)
    elif became_approved:
        announce("change_request.approved", after, environment=environment.key)
    unit_of_work.commit()
    return request


def _require_author_or_admin(actor: Actor, request: ChangeRequest, admin: bool, doing: str) -> None:
    if actor.name != request.author and not admin:
        raise Forbidden(f"Only the author ({request.author}) or an admin can {doing} change request {request.id}.")


def update(actor: Actor, request_id: int, changes: dict, *, admin: bool = False,
           if_match: int | None = None) -> ChangeRequest:
    """Edit the proposal or the comment: a new revision, approvals reset to zero."""
    request = get(request_id, lock=True)
    check_version(request.version, if_match)
    _require_author_or_admin(actor, request, admin, "edit")
    _check_active(request, "edit it")
    flag, environment = _parts(request)
    before = _snapshot(request)
    if any(changes.get(name) is not None for name in PAYLOADS):
        kind = _payload(changes, creating=False)
        if (kind == "experiment") != (request.experiment is not None):
            raise ValidationFailed("A request keeps its kind.", {kind: [
                "An experiment action stays an experiment action, and a targeting change a targeting change; "
                "open another request instead."]})
        if kind == "experiment" and changes["experiment"]["key"] != request.experiment["key"]:
            raise ValidationFailed("A request acts on one experiment.", {"experiment.key": [
                f"This request is for experiment '{request.experiment['key']}'; open another request for "
                f"'{changes['experiment']['key']}'."]})
        _set_proposal(request, changes, kind, flag, environment)
    if "comment" in changes:
        request.comment = changes["comment"] or ""
    _validate(flag, environment, request)
    _withdraw_schedule(request)
    request.revision += 1
    request.base_version = _current_base(request, flag)
    request.bypass = False
    request.state = "open" if environment.approvals_required > 0 else "approved"
    _record(actor, request, "update", before)
    unit_of_work.commit()
    return request


def cancel(actor: Actor, request_id: int, *, admin: bool = False, if_match: int | None = None) -> ChangeRequest:
    request = get(request_id, lock=True)
    check_version(request.version, if_match)
    _require_author_or_admin(actor, request, admin, "cancel")
    _check_active(request, "cancel it")
    before = _snapshot(request)
    _withdraw_schedule(request)
    request.state = "cancelled"
    request.closed_by = actor.name
    _record(actor, request, "cancel", before)
    unit_of_work.commit()
    return request


def _approval_problem(request: ChangeRequest, environment: Environment) -> str | None:
    have, need = len(approvers(request)), environment.approvals_required
    if have < need:
        return f"Change request {request.id} has {have} of the {need} approvals environment " \
               f"'{environment.key}' requires."
    return None


def _base_problem(request: ChangeRequest, flag: Flag) -> str | None:
    if request.experiment is not None:
        key, experiment = request.experiment["key"], _experiment_of(request)
        if experiment is None:
            return f"Experiment '{key}' was deleted since the request was written."
        if experiment.version != request.base_version:
            return (f"Experiment '{key}' changed since the request was written (version {request.base_version}, "
                    f"now {experiment.version}); edit the request to re-base it.")
        return None
    if flag.version != request.base_version:
        return (f"Flag '{flag.key}' changed since the request was written (version {request.base_version}, "
                f"now {flag.version}); edit the request to re-base it on the live targeting.")
    return None


def _lock_base(request: ChangeRequest) -> Flag:
    """Lock what the request writes (the experiment of an experiment action, else the flag;
    a request is locked first) and return the flag."""
    if request.experiment is not None and request.experiment_id is not None:
        for_update(Experiment, Experiment.id == request.experiment_id)
        return db.session.get(Flag, request.flag_id)
    return db.session.scalars(locked(sa.select(Flag).where(Flag.id == request.flag_id))).one()


def apply(actor: Actor, request_id: int, *, at: datetime | None = None, bypass: bool = False,
          admin: bool = False, if_match: int | None = None, now: datetime | None = None) -> ChangeRequest:
    """Apply now, or schedule for ``at``. ``bypass`` (admins only) skips the approvals."""
    request = get(request_id, lock=True)
    check_version(request.version, if_match)
    _check_active(request, "apply it")
    if bypass and not admin:
        raise Forbidden("Only an admin can apply a change request with bypass.", {"bypass": ["Needs admin."]})
    flag = _lock_base(request)
    environment = db.session.get(Environment, request.environment_id)
    if not bypass:
        problem = _approval_problem(request, environment)
        if problem:
            raise Conflict(problem, {"approvals": [problem]})
    problem = _base_problem(request, flag)
    if problem:
        raise Conflict(problem, {"base_version": [problem]})
    before = _snapshot(request)
    request.bypass = bypass
    if at is not None:
        now = now or utcnow()
        if at <= now:
            raise ValidationFailed("at must be in the future.", {
                "at": [f"{at.isoformat()} has passed; apply without at to apply now."]})
        _withdraw_schedule(request)
        db.session.add(ScheduledChange(flag_id=flag.id, environment_id=environment.id, at=at, state="pending",
                                       change_request_id=request.id, author=actor.name,
                                       comment=request.comment))
        request.state = "scheduled"
        request.scheduled_at = at
        _record(actor, request, "schedule_bypass" if bypass else "schedule", before)
        unit_of_work.commit()
        return request
    _withdraw_schedule(request)
    _apply_now(actor, request, flag, environment, before)
    unit_of_work.commit()
    return request


def _apply_now(actor: Actor, request: ChangeRequest, flag: Flag, environment: Environment,
               before: dict) -> None:
    """Make the change through its domain function (a targeting write, a rollout start,
    an experiment transition with its own checks), mark the request applied, audit it
    (the caller commits)."""
    note = f"Change request {request.id}" + (" (bypass)" if request.bypass else "")
    writer = Actor(actor.name, actor.request_id, actor.comment or note)
    with race_is_conflict(), protection.sanctioned(), unit_of_work.deferred():
        if request.rollout is not None:
            rollout_domain.create(writer, flag.key, environment.key, request.rollout)
        elif request.experiment is not None:
            _apply_experiment(writer, request)
        else:
            flag_domain.put_targeting(
                writer, flag.key, environment.key, proposed_targeting(flag, environment, request),
                action="apply_change_request_bypass" if request.bypass else "apply_change_request")
    request.state = "applied"
    request.applied_at = utcnow()
    request.applied_by = actor.name
    request.applied_version = _current_base(request, flag)
    after = _record(actor, request, "apply_bypass" if request.bypass else "apply", before)
    announce("change_request.applied", after, environment=environment.key)


def _apply_experiment(writer: Actor, request: ChangeRequest) -> None:
    proposal, experiment = request.experiment, _experiment_of(request)
    if proposal["action"] == "start":
        experiment_domain.start(writer, experiment.key)
    elif proposal["action"] == "stop":
        experiment_domain.stop(writer, experiment.key)
    else:
        data = {"decision": proposal["decision"]}
        if "released_variation" in proposal:
            data["released_variation"] = proposal["released_variation"]
        experiment_domain.conclude(writer, experiment.key, data)


def apply_scheduled(actor: Actor, request: ChangeRequest) -> str | None:
    """The worker's apply of a scheduled request (inside the worker's transaction; the
    request is locked).

    Returns None when applied, else the reason it can no longer be applied
    (the caller marks the schedule and the request ``failed``)."""
    flag = _lock_base(request)
    environment = db.session.get(Environment, request.environment_id)
    if request.state != "scheduled":
        return f"Change request {request.id} is {request.state}, not scheduled."
    if flag.archived:
        return f"Flag '{flag.key}' is archived."
    problem = (None if request.bypass else _approval_problem(request, environment)) or _base_problem(request, flag)
    if problem:
        return problem
    _apply_now(actor, request, flag, environment, _snapshot(request))
    return None


def mark_failed(actor: Actor, request: ChangeRequest, reason: str) -> None:
    """Record that a scheduled request could not be applied (the caller commits)."""
    if request.state not in ACTIVE:
        return
    before = _snapshot(request)
    request.state = "failed"
    request.failure_reason = reason
    _record(actor, request, "fail", before)


def unschedule(actor: Actor, request: ChangeRequest) -> None:
    """Its schedule was cancelled: back to ``approved`` (the caller commits)."""
    if request.state != "scheduled":
        return
    before = _snapshot(request)
    request.state = "approved"
    request.scheduled_at = None
    _record(actor, request, "unschedule", before)


# ---------------------------------------------------------------- proposals for other writers

def active_targeting_requests(author: str, environment: Environment, flag: Flag | None = None
                              ) -> dict[int, ChangeRequest]:
    """``author``'s newest active request proposing a whole targeting in the environment, per
    flag id (of ``flag`` only, when given)."""
    stmt = sa.select(ChangeRequest).where(
        ChangeRequest.author == author, ChangeRequest.environment_id == environment.id,
        ChangeRequest.state.in_(ACTIVE), ChangeRequest.targeting.is_not(None))
    if flag is not None:
        stmt = stmt.where(ChangeRequest.flag_id == flag.id)
    newest: dict[int, ChangeRequest] = {}
    for request in db.session.scalars(stmt.order_by(ChangeRequest.id.desc())):
        newest.setdefault(request.flag_id, request)
    return newest


def propose_targeting(actor: Actor, flag_key: str, environment_key: str, targeting: dict) -> tuple[ChangeRequest, str]:
    """Propose ``targeting`` for the flag in the environment, once: the flags-as-code apply
    in a protected environment (docs/flags-as-code.md).

    Returns the request and what happened to it: ``opened`` (a new request);
    ``pending`` (the actor's active request already proposes exactly this, on the
    flag's current version: nothing is written); ``updated`` (the actor's active
    request proposed another targeting, or was based on an older version of the flag:
    it is edited, which starts a new revision whose approvals start again). The flag
    is locked first, so concurrent proposals of one flag queue and never open two."""
    flag = flag_domain.get(flag_key, lock=True)
    environment = get_environment(environment_key)
    wanted = normalise_targeting(targeting)
    existing = active_targeting_requests(actor.name, environment, flag).get(flag.id)
    if existing is None:
        return create(actor, {"flag": flag.key, "environment": environment.key, "targeting": wanted,
                              "comment": actor.comment or ""}), "opened"
    if normalise_targeting(existing.targeting) == wanted and existing.base_version == flag.version:
        return existing, "pending"
    changes = {"targeting": wanted}
    if actor.comment:
        changes["comment"] = actor.comment
    return update(actor, existing.id, changes), "updated"


def propose_rollback(actor: Actor, flag_key: str, version: int) -> list[ChangeRequest]:
    """One request per protected environment whose targeting a rollback to ``version``
    would change, each restoring that environment's targeting of the version (the
    console's rollback in a protected environment). Nothing else of the version is
    restored: once the requests are applied, a plain rollback to ``version`` passes
    the guard and restores the flag's fields and the other environments."""
    flag = flag_domain.get(flag_key, lock=True)
    changes = protection.rollback_changes(flag, version)
    if not changes:
        raise ValidationFailed("Nothing to propose.", {"version": [
            f"A rollback to version {version} changes no protected environment's targeting: roll back directly."]})
    return [create(actor, {"flag": flag.key, "environment": environment.key, "rollback": {"version": version},
                           "comment": actor.comment or ""}) for environment, _ in changes]


def rollback_leftovers(flag: Flag, version: int) -> list[str]:
    """What else a rollback to ``version`` would restore besides the protected environments'
    targeting: the flag's own fields that differ, and other environments whose targeting differs."""
    snapshot = db.session.scalar(sa.select(FlagVersion.snapshot).where(
        FlagVersion.flag_id == flag.id, FlagVersion.version == version))
    if snapshot is None:
        return []
    live = flag_domain.snapshot(flag)
    fields = [name for name in flag_domain.FLAG_FIELDS if name in snapshot and snapshot[name] != live[name]]
    protected = {environment.key for environment, _ in protection.rollback_changes(flag, version)}
    environments = [key for key, targeting in (snapshot.get("environments") or {}).items()
                    if key in live["environments"] and key not in protected and targeting != live["environments"][key]]
    return [f"field {name}" for name in fields] + [f"targeting in {key}" for key in environments]
