"""Scheduled changes: a targeting patch (or an approved change request) due at a time.

The worker (service/worker.py) calls :func:`apply_next_due` in a loop. Each
call claims one due change with a row lock (service/domain/concurrency.py),
applies it and marks it ``applied`` in the same transaction, so a change is
applied exactly once however many workers run and whenever one dies. Due
changes of one flag are applied in order of ``at`` (then id): a change is
not claimed while an earlier one of its flag is pending.

A change that no longer validates when due (a variation or segment gone, a
change request whose flag moved on, an environment that became protected)
is marked ``failed`` with the reason, in its own transaction. SDKs learn of
an applied change like of any other write: the ruleset version moves.
"""

import logging
import os
import socket
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from ..extensions import db
from ..models import ChangeRequest, Environment, Flag, ScheduledChange
from ..models.types import utcnow
from . import Actor, audit, protection, unit_of_work
from . import change_requests as request_domain
from . import flags as flag_domain
from .announce import announce
from .concurrency import begin_exclusive, locked, save
from .environments import get as get_environment
from .errors import Conflict, DomainError, NotFound, ValidationFailed
from .pagination import Page, by_id, paginate
from .targeting import normalise as normalise_targeting
from .versioning import check_version

WORKER = "worker"


def worker_id() -> str:
    """Which worker process applied a change (for operators; the audit actor is "worker")."""
    return f"worker {socket.gethostname()}:{os.getpid()}"

log = logging.getLogger("pitcrew.worker")


# ---------------------------------------------------------------- reading

def _flag(key: str) -> Flag:
    return flag_domain.get(key)


def list_for_flag(flag_key: str, environment_key: str | None = None, *, state: str | None = None,
                  limit: int = 50, cursor: str | None = None) -> Page:
    flag = _flag(flag_key)
    stmt = sa.select(ScheduledChange).where(ScheduledChange.flag_id == flag.id)
    if environment_key:
        stmt = stmt.where(ScheduledChange.environment_id == get_environment(environment_key).id)
    if state:
        stmt = stmt.where(ScheduledChange.state == state)
    return paginate(stmt, ScheduledChange.id, limit=limit, cursor=cursor, descending=True)


def get(flag_key: str, environment_key: str, schedule_id: int, *, lock: bool = False) -> ScheduledChange:
    flag = _flag(flag_key)
    environment = get_environment(environment_key)
    stmt = sa.select(ScheduledChange).where(ScheduledChange.id == schedule_id, ScheduledChange.flag_id == flag.id,
                                            ScheduledChange.environment_id == environment.id)
    item = db.session.scalars(locked(stmt) if lock else stmt).first()
    if item is None:
        raise NotFound(f"Flag '{flag_key}' has no scheduled change {schedule_id} in {environment_key}.")
    return item


def to_dicts(items: list[ScheduledChange]) -> list[dict]:
    """The scheduled changes as the API shows them; what they refer to is read once for all."""
    flags = by_id(Flag, (i.flag_id for i in items))
    environments = by_id(Environment, (i.environment_id for i in items))
    requests = by_id(ChangeRequest, (i.change_request_id for i in items if i.change_request_id))
    return [_to_dict(i, flags[i.flag_id], environments[i.environment_id],
                     requests.get(i.change_request_id)) for i in items]


def to_dict(item: ScheduledChange) -> dict:
    return to_dicts([item])[0]


def _to_dict(item: ScheduledChange, flag: Flag, environment: Environment,
             request: ChangeRequest | None) -> dict:
    return {
        "id": item.id, "flag": flag.key, "environment": environment.key, "at": item.at, "state": item.state,
        "kind": "change_request" if request else "patch",
        "patch": item.patch if request is None else request.patch,
        "targeting": request.targeting if request else None,
        "change_request": item.change_request_id, "author": item.author, "comment": item.comment,
        "applied_at": item.applied_at, "applied_version": item.applied_version,
        "failure_reason": item.failure_reason, "version": item.version,
        "created_at": item.created_at, "updated_at": item.updated_at,
    }


def _snapshot(item: ScheduledChange) -> dict:
    return audit.json_ready(to_dict(item))


def _record(actor: Actor, item: ScheduledChange, action: str, before: dict | None) -> dict:
    save()
    after = _snapshot(item)
    audit.record(actor, action, "schedule", str(item.id), environment=after["environment"],
                 before=before, after=after)
    return after


# ---------------------------------------------------------------- writing

def create(actor: Actor, flag_key: str, environment_key: str, data: dict, *,
           now: datetime | None = None) -> ScheduledChange:
    """Schedule a targeting patch; refused (409) in a protected environment, whose
    changes are scheduled through an approved change request's apply with ``at``."""
    flag = _flag(flag_key)
    environment = get_environment(environment_key)
    protection.guard_targeting(environment)
    if flag.archived:
        raise Conflict(f"Flag '{flag.key}' is archived.", {"flag": ["Archived."]})
    at = data["at"]
    if at <= (now or utcnow()):
        raise ValidationFailed("at must be in the future.", {"at": [f"{at.isoformat()} has passed."]})
    patch = data["patch"]
    if not patch:
        raise ValidationFailed("The patch is empty.", {"patch": ["Give at least one targeting field."]})
    targeting = normalise_targeting({**flag_domain.targeting_for(flag, environment), **patch})
    flag_domain.check_targeting(flag, environment, targeting, flag.variations, "patch")
    item = ScheduledChange(flag_id=flag.id, environment_id=environment.id, at=at, state="pending", patch=patch,
                           author=actor.name, comment=data.get("comment") or "")
    db.session.add(item)
    _record(actor, item, "create", None)
    unit_of_work.commit()
    return item


def cancel(actor: Actor, flag_key: str, environment_key: str, schedule_id: int,
           if_match: int | None = None) -> ScheduledChange:
    """Withdraw a pending change; a scheduled change request goes back to ``approved``."""
    item = get(flag_key, environment_key, schedule_id, lock=True)
    check_version(item.version, if_match)
    if item.state != "pending":
        raise Conflict(f"Scheduled change {item.id} is {item.state}; only a pending one can be cancelled.",
                       {"state": [f"Is {item.state}."]})
    before = _snapshot(item)
    item.state = "cancelled"
    if item.change_request_id:
        request_domain.unschedule(actor, request_domain.get(item.change_request_id, lock=True))
    _record(actor, item, "cancel", before)
    unit_of_work.commit()
    return item


# ---------------------------------------------------------------- the worker

def _due(now: datetime):
    earlier = aliased(ScheduledChange)
    blocked = sa.exists().where(
        earlier.flag_id == ScheduledChange.flag_id, earlier.state == "pending",
        sa.or_(earlier.at < ScheduledChange.at, sa.and_(earlier.at == ScheduledChange.at,
                                                          earlier.id < ScheduledChange.id)))
    return (sa.select(ScheduledChange)
            .where(ScheduledChange.state == "pending", ScheduledChange.at <= now, ~blocked)
            .order_by(ScheduledChange.at, ScheduledChange.id))


def _apply(actor: Actor, item: ScheduledChange) -> str | None:
    """Apply one claimed change; None when applied, else why it cannot be."""
    if item.change_request_id:  # locks the request, then what it writes (the API's order)
        request = request_domain.get(item.change_request_id, lock=True)
        return request_domain.apply_scheduled(actor, request)
    flag = db.session.scalars(locked(sa.select(Flag).where(Flag.id == item.flag_id))).one()
    environment = db.session.get(Environment, item.environment_id)
    if flag.archived:
        return f"Flag '{flag.key}' is archived."
    if environment.approvals_required > 0:
        return (f"Environment '{environment.key}' became protected after this change was scheduled; "
                "schedule it through a change request.")
    targeting = {**flag_domain.targeting_for(flag, environment), **item.patch}
    with protection.sanctioned():
        flag_domain.put_targeting(actor, flag.key, environment.key, targeting, action="apply_schedule")
    return None


def apply_next_due(now: datetime | None = None) -> ScheduledChange | None:
    """Claim the next due change, apply it and commit; None when nothing is due.

    Exactly once: the claim (a row lock), the targeting write, the state
    change and the audit entries commit together. A change that fails
    validation is marked ``failed`` in a second transaction."""
    now = now or utcnow()
    begin_exclusive()
    item = db.session.scalars(locked(_due(now).limit(1), skip_locked=True, of=ScheduledChange)).first()
    if item is None or item.state != "pending":
        db.session.rollback()
        return None
    item_id = item.id
    actor = Actor(WORKER, comment=f"Scheduled change {item.id} by {item.author}"
                  + (f": {item.comment}" if item.comment else ""))
    try:
        with unit_of_work.deferred():
            before = _snapshot(item)
            problem = _apply(actor, item)
            if problem is None:
                item.state = "applied"
                item.applied_at = utcnow()
                item.applied_by = worker_id()
                item.applied_version = db.session.get(Flag, item.flag_id).version
                after = _record(actor, item, "apply", before)
                announce("schedule.applied", after, environment=after["environment"])
    except DomainError as exc:
        problem = _reason(exc)
    except sa.exc.DBAPIError:
        db.session.rollback()
        raise  # the database is unwell: leave the change pending, the worker backs off
    except Exception as exc:  # a bug: fail this change rather than retry it forever
        log.exception("scheduled change %s: unexpected error", item_id)
        problem = f"Internal error while applying ({type(exc).__name__}); see the worker log."
    if problem is None:
        db.session.commit()
        return item
    db.session.rollback()
    return _fail(item_id, problem, now)


def _reason(exc: DomainError) -> str:
    details = "; ".join(f"{path}: {', '.join(map(str, reasons))}" for path, reasons in (exc.details or {}).items())
    return f"{exc.message} {details}".strip()


def _fail(item_id: int, reason: str, now: datetime) -> ScheduledChange | None:
    """Mark a claimed change failed (and its change request), in a fresh transaction."""
    begin_exclusive()
    item = db.session.scalars(locked(sa.select(ScheduledChange).where(ScheduledChange.id == item_id))).first()
    if item is None or item.state != "pending":
        db.session.rollback()
        return item
    actor = Actor(WORKER, comment=f"Scheduled change {item.id} failed")
    with unit_of_work.deferred():
        before = _snapshot(item)
        item.state = "failed"
        item.failure_reason = reason
        if item.change_request_id:
            request_domain.mark_failed(actor, request_domain.get(item.change_request_id, lock=True), reason)
        after = _record(actor, item, "fail", before)
        announce("schedule.failed", after, environment=after["environment"])
    db.session.commit()
    return item


# ---------------------------------------------------------------- queue metrics

def queue_stats(now: datetime) -> tuple[int, int, float]:
    """(due, pending, lag seconds of the oldest due change) for /metrics."""
    due, pending, oldest = db.session.execute(sa.select(
        sa.func.count().filter(ScheduledChange.at <= now), sa.func.count(),
        sa.func.min(ScheduledChange.at)).where(ScheduledChange.state == "pending")).one()
    lag = max(0.0, (now - oldest).total_seconds()) if due and oldest is not None else 0.0
    return int(due or 0), int(pending or 0), lag
