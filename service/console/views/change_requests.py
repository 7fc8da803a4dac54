"""Change requests (docs/process.md): the list with filters, a request's page (its diff
against the live targeting, or what an experiment action changes; reviews, edit, apply
now or at a time, an admin's bypass, cancel), and the edit page (the targeting editor,
or the guarded-rollout form, of the proposal; an experiment action is cancelled and
proposed again instead). Every write is one call of ``service.domain.change_requests``,
so the rules are the API's: the author never approves, a reviewer counts once, a review
names the revision it read, any edit resets the approvals, an apply checks the
approvals and the base version."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from ...domain import change_requests as domain
from ...domain import flags as flag_domain
from ...domain import schedules as schedule_domain
from ...domain.errors import ValidationFailed
from ...models.process import CHANGE_REQUEST_STATES
from ...models.types import utcnow
from ...schemas.process import ApplySchema, ChangeRequestPatchSchema, ReviewSchema
from .. import bp, nav, queries
from ..forms import (
    FieldErrors,
    Outcome,
    attempt,
    form_items,
    load,
    number,
    unflatten,
    version,
    when,
)
from ..session import actor, can, current_user
from . import flags as flag_views
from . import rollouts as rollout_views

nav.register("Change requests", "console.change_requests", order=12)


# ---------------------------------------------------------------- list

@bp.get("/change-requests")
def change_requests():
    environments = [e.key for e in queries.environments()]
    flag = (request.args.get("flag") or "").strip() or None
    environment = request.args.get("environment") or None
    state = request.args.get("state") or None
    environment = environment if environment in environments else None
    state = state if state in CHANGE_REQUEST_STATES else None
    page = domain.list_requests(flag=flag, environment=environment, state=state, limit=50,
                                cursor=request.args.get("cursor") or None)
    query = {k: v for k, v in {"flag": flag, "environment": environment, "state": state}.items() if v}
    return render_template("console/change_requests/list.html", title="Change requests",
                           items=[domain.to_dict(r) for r in page.items], next_cursor=page.next_cursor,
                           args=query, query=query, environments=environments, states=CHANGE_REQUEST_STATES,
                           flags=[f.key for f in flag_domain.list_flags(limit=500).items])


# ---------------------------------------------------------------- one request

def _page(request_id: int, *, outcome: Outcome | None = None, errors: FieldErrors | None = None,
          form: str | None = None, status: int = 200):
    data = domain.to_dict(domain.get(request_id))
    me = current_user().name
    schedule = queries.pending_schedule_of(request_id) if data["state"] == "scheduled" else None
    return render_template(
        "console/change_requests/detail.html", title=f"Change request #{request_id}", r=data,
        flag=flag_domain.get(data["flag"]), outcome=outcome, errors=errors or FieldErrors(), form=form,
        is_author=me == data["author"], approved_by_me=me in data["approved_by"],
        may_manage=me == data["author"] or can("admin"), active=data["state"] in queries.ACTIVE_REQUEST_STATES,
        schedule=schedule, now=utcnow(), describe=flag_views.describe, describe_serve=flag_views.describe_serve,
        describe_patch=flag_views.describe_patch), status


@bp.get("/change-requests/<int:request_id>")
def change_request(request_id):
    return _page(request_id)


def _done(request_id: int, message: str):
    flash(message, "success")
    return redirect(url_for("console.change_request", request_id=request_id), 303)


def _failed(request_id: int, outcome: Outcome, form: str, prefix: str | None = None):
    errors = outcome.without_prefix(prefix) if prefix else outcome.errors
    return _page(request_id, outcome=outcome, errors=errors, form=form, status=outcome.status)


def _review(request_id: int, data: dict):
    """Review the revision the reviewer saw (the form carries it): if the request was edited
    since the page was rendered, the domain refuses it (409) rather than count it for a
    proposal the reviewer has not read."""
    loaded = load(ReviewSchema(), data)
    if loaded["revision"] is None:
        raise ValidationFailed("The form does not say which revision you reviewed; reload the page.",
                               {"revision": ["Missing."]})
    return domain.review(actor(), request_id, loaded["decision"], loaded["comment"], revision=loaded["revision"])


@bp.post("/change-requests/<int:request_id>/reviews")
def change_request_review(request_id):
    data = {"decision": request.form.get("decision", ""), "comment": request.form.get("comment", ""),
            "revision": number(request.form.get("revision"), integer=True)}
    outcome = attempt(_review, request_id, data)
    if not outcome.ok:
        return _failed(request_id, outcome, "review")
    verb = "Approved" if data["decision"] == "approve" else "Rejected"
    return _done(request_id, f"{verb} change request #{request_id} (state: {outcome.value.state}).")


def _apply(request_id: int, mode: str, bypass: bool, expected: int):
    data = {"bypass": bypass}
    if mode == "at":
        at = when()
        if not at:
            raise ValidationFailed("Give the time to apply at.", {"at": ["Required: a time in UTC."]})
        data["at"] = at
    loaded = load(ApplySchema(), data)
    return domain.apply(actor(), request_id, at=loaded["at"], bypass=loaded["bypass"], admin=can("admin"),
                        if_match=expected)


@bp.post("/change-requests/<int:request_id>/apply")
def change_request_apply(request_id):
    mode = "at" if request.form.get("mode") == "at" else "now"
    bypass = request.form.get("bypass") == "true"
    outcome = attempt(_apply, request_id, mode, bypass, version())
    if not outcome.ok:
        return _failed(request_id, outcome, "bypass" if bypass else "apply")
    item = outcome.value
    note = " with an admin bypass (recorded as such)" if bypass else ""
    if item.state == "scheduled":
        return _done(request_id, f"Scheduled change request #{request_id} for {item.scheduled_at:%Y-%m-%d %H:%M} "
                                 f"UTC{note}; the worker applies it then.")
    return _done(request_id, f"Applied change request #{request_id}{note}: the flag is at version "
                             f"{item.applied_version}.")


@bp.post("/change-requests/<int:request_id>/cancel")
def change_request_cancel(request_id):
    outcome = attempt(domain.cancel, actor(), request_id, admin=can("admin"), if_match=version())
    if not outcome.ok:
        return _failed(request_id, outcome, "cancel")
    return _done(request_id, f"Cancelled change request #{request_id}.")


def _unschedule(request_id: int, expected: int):
    data = domain.to_dict(domain.get(request_id))
    schedule = queries.pending_schedule_of(request_id)
    if schedule is None:
        raise ValidationFailed(f"Change request {request_id} has no pending schedule.",
                               {"state": [f"Is {data['state']}."]})
    return schedule_domain.cancel(actor(), data["flag"], data["environment"], schedule.id, if_match=expected)


@bp.post("/change-requests/<int:request_id>/unschedule")
def change_request_unschedule(request_id):
    outcome = attempt(_unschedule, request_id, version())
    if not outcome.ok:
        return _failed(request_id, outcome, "unschedule")
    return _done(request_id, f"Cancelled the schedule of change request #{request_id}; it is approved again.")


@bp.post("/change-requests/<int:request_id>/comment")
def change_request_comment(request_id):
    """Edit the request's comment (also re-bases it on the live flag): a new revision."""
    changes = {"comment": request.form.get("comment", "")}
    outcome = attempt(lambda: domain.update(actor(), request_id, load(ChangeRequestPatchSchema(), changes),
                                            admin=can("admin"), if_match=version()))
    if not outcome.ok:
        return _failed(request_id, outcome, "comment")
    return _done(request_id, f"Saved change request #{request_id} as revision {outcome.value.revision}, based on "
                             f"flag version {outcome.value.base_version}; its approvals start again from zero.")


# ---------------------------------------------------------------- editing the proposal

@bp.route("/change-requests/<int:request_id>/edit", methods=["GET", "POST"])
def change_request_edit(request_id):
    data = domain.to_dict(domain.get(request_id))
    flag = flag_domain.get(data["flag"])
    keys = [v["key"] for v in flag.variations]
    if data["rollout"] is not None:
        return _edit_rollout(request_id, data, flag)
    if data["experiment"] is not None:  # its action is its whole proposal: cancel and propose another
        flash("An experiment action is not edited: cancel the request and propose another from the experiment's "
              "page (its comment can be edited here).", "warning")
        return redirect(url_for("console.change_request", request_id=request_id), 303)
    targeting, errors, outcome, status = data["proposed"], FieldErrors(), None, 200
    form_version = data["version"]
    if request.method == "POST":
        form_version = version()
        targeting = flag_views.parse_targeting(unflatten(form_items()), keys)
        action = request.form.get("action") or "save"
        if not flag_views.apply_action(targeting, action, keys):
            outcome = _save_proposal(request_id, "targeting", targeting, form_version)
            if outcome.ok:
                return _saved(request_id, outcome)
            errors, status = outcome.without_prefix("targeting"), outcome.status
    return flag_views.render_editor(flag, data["environment"], targeting, errors=errors, outcome=outcome,
                                    form_version=form_version, status=status, change_request=data)


def _save_proposal(request_id: int, field: str, proposal: dict, form_version) -> Outcome:
    """A new revision of the request's ``field`` (targeting or rollout) with the form's comment."""
    changes = {field: proposal, "comment": request.form.get("comment", "")}
    return attempt(lambda: domain.update(actor(), request_id, load(ChangeRequestPatchSchema(), changes),
                                         admin=can("admin"), if_match=form_version))


def _saved(request_id: int, outcome: Outcome):
    return _done(request_id, f"Saved change request #{request_id} as revision "
                             f"{outcome.value.revision}; its approvals start again from zero.")


def _edit_rollout(request_id: int, data: dict, flag):
    proposal, errors, outcome, status = data["rollout"], FieldErrors(), None, 200
    form_version = data["version"]
    if request.method == "POST":
        form_version = version()
        proposal, action = rollout_views.parse_form()
        if not rollout_views.apply_step_action(proposal, action):
            outcome = _save_proposal(request_id, "rollout", proposal, form_version)
            if outcome.ok:
                return _saved(request_id, outcome)
            errors, status = outcome.without_prefix("rollout"), outcome.status
    return rollout_views.render_form(flag, data["environment"], proposal, errors=errors, outcome=outcome,
                                     status=status, change_request=data, form_version=form_version)
