"""Change requests: reviewed changes to a flag's targeting in a protected environment.

Life of a request (docs/process.md):

* ``create`` records the proposed ``targeting`` (a full replacement),
  ``patch`` (top-level fields that replace the live ones when applied) or
  ``rollout`` (a guarded rollout to start), validated against the live state, with ``base_version`` = the flag's
  version now. State ``open`` (``approved`` at once where no approval is
  required).
* ``review``: approve or reject. The author cannot review their own request;
  each reviewer counts once per revision. Enough approvals -> ``approved``; a
  rejection -> ``rejected`` (final).
* ``update`` (PATCH): any edit starts a new revision: approvals drop to zero,
  the request is ``open`` again, re-based on the flag's current version, and
  a pending schedule is withdrawn.
* ``apply``: needs the environment's ``approvals_required`` approvals (an
  admin may pass ``bypass``, audited as a bypass) and the flag still at
  ``base_version`` (else 409 ``conflict``). With ``at`` the request is
  ``scheduled`` and the worker applies it then (service/domain/schedules.py),
  repeating both checks; a check that fails there marks it ``failed``.
* ``cancel`` (author or admin) while open, approved or scheduled.
"""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from ..extensions import db
from ..models import ChangeRequest, ChangeRequestReview, Environment, Flag, ScheduledChange
from ..models.types import utcnow
from . import Actor, audit, protection, unit_of_work
from . import flags as flag_domain
from . import rollouts as rollout_domain
from .announce import announce
from .concurrency import locked, race_is_conflict, save
from .diff import json_diff
from .environments import get as get_environment
from .errors import Conflict, Forbidden, NotFound, ValidationFailed
from .pagination import Page, by_id, paginate
from .targeting import normalise as normalise_targeting
from .versioning import check_version

ACTIVE = ("open", "approved", "scheduled")
DECISIONS = ("approve", "reject")


# ---------------------------------------------------------------- reading

def get(request_id: int, *, lock: bool = False) -> ChangeRequest:
    stmt = sa.select(ChangeRequest).where(ChangeRequest.id == request_id)
    request = db.session.scalars(locked(stmt) if lock else stmt).first()
    if request is None:
        raise NotFound(f"Change request {request_id} does not exist.")
    return request


def list_requests(*, flag: str | None = None, environment: str | None = None, state: str | None = None,
                  limit: int = 50, cursor: str | None = None) -> Page:
    stmt = sa.select(ChangeRequest).options(selectinload(ChangeRequest.reviews))
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


def proposed_targeting(flag: Flag, environment: Environment, request: ChangeRequest) -> dict:
    """The targeting the request would leave live, if applied now (a rollout's
    request leaves it as it is until the rollout's first step)."""
    if request.rollout is not None:
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


def to_dict(request: ChangeRequest) -> dict:
    return _to_dict(request, *_parts(request))


def _to_dict(request: ChangeRequest, flag: Flag, environment: Environment) -> dict:
    live = flag_domain.targeting_for(flag, environment)
    proposed = proposed_targeting(flag, environment, request)
    return {
        "id": request.id, "flag": flag.key, "environment": environment.key, "state": request.state,
        "author": request.author, "comment": request.comment,
        "targeting": request.targeting, "patch": request.patch, "rollout": request.rollout,
        "base_version": request.base_version, "flag_version": flag.version,
        "conflict": request.state in ACTIVE and flag.version != request.base_version,
        "revision": request.revision,
        "approvals": len(approvers(request)), "approvals_required": environment.approvals_required,
        "approved_by": approvers(request),
        "reviews": [{"reviewer": r.reviewer, "decision": r.decision, "comment": r.comment,
                     "revision": r.revision, "created_at": r.created_at} for r in request.reviews],
        "bypass": request.bypass, "at": request.scheduled_at,
        "applied_at": request.applied_at, "applied_by": request.applied_by,
        "applied_version": request.applied_version, "closed_by": request.closed_by,
        "failure_reason": request.failure_reason,
        "live": live, "proposed": proposed,
        "diff": json_diff(live, proposed) if request.state in ACTIVE else [],
        "version": request.version, "created_at": request.created_at, "updated_at": request.updated_at,
    }


def _snapshot(request: ChangeRequest) -> dict:
    """JSON-ready record for the audit log and announcements."""
    flag, environment = _parts(request)
    return {"id": request.id, "flag": flag.key, "environment": environment.key, "state": request.state,
            "author": request.author, "comment": request.comment, "targeting": request.targeting,
            "patch": request.patch, "rollout": request.rollout, "base_version": request.base_version, "revision": request.revision,
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

def _validate(flag: Flag, environment: Environment, request: ChangeRequest) -> None:
    """The proposal must be valid against the live state (else 400/409, nothing stored)."""
    if request.rollout is not None:
        try:
            rollout_domain.check_start(flag, environment, request.rollout)
        except (ValidationFailed, Conflict) as exc:
            exc.details = {f"rollout.{path}": reasons for path, reasons in exc.details.items()}
            raise
        return
    prefix = "targeting" if request.targeting is not None else "patch"
    flag_domain.check_targeting(flag, environment, proposed_targeting(flag, environment, request),
                                 flag.variations, prefix)


PAYLOADS = ("targeting", "patch", "rollout")


def _payload(data: dict) -> tuple[dict | None, dict | None, dict | None]:
    given = [name for name in PAYLOADS if data.get(name) is not None]
    if len(given) != 1:
        raise ValidationFailed("Give exactly one of targeting, patch and rollout.", {
            name: ["Give one of: a full targeting, a patch of top-level fields, or a guarded rollout."]
            for name in (given or ["targeting"])})
    if data.get("patch") is not None and not data["patch"]:
        raise ValidationFailed("The patch is empty.", {"patch": ["Give at least one targeting field."]})
    return data.get("targeting"), data.get("patch"), data.get("rollout")


def create(actor: Actor, data: dict) -> ChangeRequest:
    flag = db.session.scalars(sa.select(Flag).where(Flag.key == data["flag"])).first()
    if flag is None or flag.archived:
        raise ValidationFailed("The change request is invalid.",
                               {"flag": [f"Flag '{data['flag']}' does not exist or is archived."]})
    environment = db.session.scalars(sa.select(Environment).where(Environment.key == data["environment"])).first()
    if environment is None:
        raise ValidationFailed("The change request is invalid.",
                               {"environment": [f"Environment '{data['environment']}' does not exist."]})
    targeting, patch, rollout = _payload(data)
    request = ChangeRequest(flag_id=flag.id, environment_id=environment.id, author=actor.name,
                            comment=data.get("comment") or "", targeting=targeting, patch=patch, rollout=rollout,
                            base_version=flag.version, revision=1, bypass=False,
                            state="open" if environment.approvals_required > 0 else "approved")
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


def review(actor: Actor, request_id: int, decision: str, comment: str = "") -> ChangeRequest:
    request = get(request_id, lock=True)
    _check_active(request, "review it")
    if actor.name == request.author:
        raise Forbidden("The author of a change request cannot review it"
                        + (" (cancel it instead)." if decision == "reject" else "."),
                        {"decision": ["You wrote this change request."]})
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
        request.targeting, request.patch, request.rollout = _payload(changes)
    if "comment" in changes:
        request.comment = changes["comment"] or ""
    _validate(flag, environment, request)
    _withdraw_schedule(request)
    request.revision += 1
    request.base_version = flag.version
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
    if flag.version != request.base_version:
        return (f"Flag '{flag.key}' changed since the request was written (version {request.base_version}, "
                f"now {flag.version}); edit the request to re-base it on the live targeting.")
    return None


def apply(actor: Actor, request_id: int, *, at: datetime | None = None, bypass: bool = False,
          admin: bool = False, if_match: int | None = None, now: datetime | None = None) -> ChangeRequest:
    """Apply now, or schedule for ``at``. ``bypass`` (admins only) skips the approvals."""
    request = get(request_id, lock=True)
    check_version(request.version, if_match)
    _check_active(request, "apply it")
    if bypass and not admin:
        raise Forbidden("Only an admin can apply a change request with bypass.", {"bypass": ["Needs admin."]})
    flag = db.session.scalars(locked(sa.select(Flag).where(Flag.id == request.flag_id))).one()
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
    """Write the targeting, mark the request applied, audit it (the caller commits)."""
    note = f"Change request {request.id}" + (" (bypass)" if request.bypass else "")
    writer = Actor(actor.name, actor.request_id, actor.comment or note)
    with race_is_conflict(), protection.sanctioned(), unit_of_work.deferred():
        if request.rollout is not None:
            rollout_domain.create(writer, flag.key, environment.key, request.rollout)
        else:
            flag_domain.put_targeting(
                writer, flag.key, environment.key, proposed_targeting(flag, environment, request),
                action="apply_change_request_bypass" if request.bypass else "apply_change_request")
    request.state = "applied"
    request.applied_at = utcnow()
    request.applied_by = actor.name
    request.applied_version = flag.version
    after = _record(actor, request, "apply_bypass" if request.bypass else "apply", before)
    announce("change_request.applied", after, environment=environment.key)


def apply_scheduled(actor: Actor, request: ChangeRequest) -> str | None:
    """The worker's apply of a scheduled request (inside the worker's transaction).

    Returns None when applied, else the reason it can no longer be applied
    (the caller marks the schedule and the request ``failed``)."""
    flag = db.session.scalars(locked(sa.select(Flag).where(Flag.id == request.flag_id))).one()
    environment = db.session.get(Environment, request.environment_id)
    if request.state != "scheduled":
        return f"Change request {request.id} is {request.state}, not scheduled."
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
