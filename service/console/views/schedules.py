"""Scheduled changes (docs/process.md): a flag's scheduled changes with their state
(pending, applied, failed with the reason, cancelled), a quick "turn on/off at"
form, cancel; the same list across flags. The targeting editor schedules any
other change (``views/flags.py``); in a protected environment a change is
scheduled through its change request's apply at a time."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from ...domain import change_requests as request_domain
from ...domain import flags as flag_domain
from ...domain import schedules as domain
from ...models.process import SCHEDULE_STATES
from ...models.types import utcnow
from ...schemas.process import ScheduleCreateSchema
from .. import bp, nav, queries
from ..forms import FieldErrors, Outcome, attempt, load, version, when
from ..session import actor
from . import flags as flag_views

nav.register("Schedules", "console.schedules", order=14)

QUICK_CHANGES = (("on", "turn the flag on"), ("off", "turn the flag off"))


def _state_arg() -> str | None:
    state = request.args.get("state") or None
    return state if state in SCHEDULE_STATES else None


@bp.get("/schedules")
def schedules():
    state = _state_arg()
    page = queries.all_schedules(state=state, limit=50, cursor=request.args.get("cursor") or None)
    return render_template("console/schedules/list.html", title="Scheduled changes",
                           items=[domain.to_dict(s) for s in page.items], next_cursor=page.next_cursor, state=state,
                           states=SCHEDULE_STATES, flag=None, query={"state": state} if state else {},
                           describe_patch=flag_views.describe_patch)


def _flag_page(key: str, *, errors: FieldErrors | None = None, outcome: Outcome | None = None, status: int = 200,
               new: dict | None = None):
    flag = flag_domain.get(key)
    environments = queries.environments()
    environment = request.args.get("environment") or None
    environment = environment if environment in [e.key for e in environments] else None
    state = _state_arg()
    page = domain.list_for_flag(key, environment, state=state, limit=50, cursor=request.args.get("cursor") or None)
    query = {k: v for k, v in {"environment": environment, "state": state}.items() if v}
    unprotected = [e.key for e in environments if not e.approvals_required]
    return render_template("console/schedules/list.html", title=f"Scheduled changes of {key}", flag=flag,
                           items=[domain.to_dict(s) for s in page.items], next_cursor=page.next_cursor, state=state,
                           states=SCHEDULE_STATES, environment=environment, environments=environments,
                           unprotected=unprotected, query=query, errors=errors or FieldErrors(), outcome=outcome,
                           new=new or {"environment": unprotected[0] if unprotected else "", "change": "on", "at": ""},
                           changes=QUICK_CHANGES, now=utcnow(), describe_patch=flag_views.describe_patch), status


@bp.get("/flags/<key>/schedules")
def flag_schedules(key):
    return _flag_page(key)


@bp.post("/flags/<key>/schedules")
def flag_schedule_create(key):
    new = {"environment": request.form.get("environment", ""), "change": request.form.get("change", "on"),
           "at": when()}
    data = {"at": new["at"], "patch": {"enabled": new["change"] == "on"}, "comment": request.form.get("comment", "")}
    outcome = attempt(lambda: domain.create(actor(), key, new["environment"], load(ScheduleCreateSchema(), data)))
    if not outcome.ok:
        return _flag_page(key, errors=outcome.errors, outcome=outcome, status=outcome.status, new=new)
    flash(f"Scheduled change {outcome.value.id}: {key} turns {new['change']} in {new['environment']} at "
          f"{outcome.value.at:%Y-%m-%d %H:%M} UTC.", "success")
    return redirect(url_for("console.flag_schedules", key=key), 303)


@bp.post("/flags/<key>/environments/<env>/schedules/<int:schedule_id>/cancel")
def flag_schedule_cancel(key, env, schedule_id):
    outcome = attempt(domain.cancel, actor(), key, env, schedule_id, if_match=version())
    if not outcome.ok:
        return _flag_page(key, outcome=outcome, status=outcome.status)
    item = outcome.value
    message = f"Cancelled scheduled change {schedule_id}."
    if item.change_request_id:
        state = request_domain.get(item.change_request_id).state
        message += f" Change request #{item.change_request_id} is {state} again."
    flash(message, "success")
    return redirect(url_for("console.flag_schedules", key=key), 303)
