"""Environments and their SDK keys (admin writes; a new key's secret is shown once)."""

from flask import flash, redirect, render_template, request, url_for

from ...auth import requires
from ...domain import environments as domain
from ...domain import tokens as token_domain
from ...schemas.environments import EnvironmentPatchSchema, EnvironmentSchema
from .. import bp, nav
from ..forms import FieldErrors, Outcome, attempt, load, number, version
from ..session import actor

nav.register("Environments", "console.environments", order=60)


@bp.get("/environments")
def environments():
    return _list()


def _list(errors=None, new=None, status=200):
    items = domain.list_environments(limit=500).items
    return render_template("console/environments.html", title="Environments", items=items,
                           errors=errors or FieldErrors(), new=new or {}), status


@bp.post("/environments")
@requires("admin")
def environment_create():
    doc = {"key": request.form.get("key", "").strip(), "name": request.form.get("name", "").strip() or None,
           "description": request.form.get("description", "")}
    doc = {k: v for k, v in doc.items() if v is not None}
    outcome = attempt(lambda: domain.create(actor(), load(EnvironmentSchema(), doc)))
    if not outcome.ok:
        return _list(outcome.errors, doc, 400)
    flash(f"Created environment {outcome.value.key}.", "success")
    return redirect(url_for("console.environment", key=outcome.value.key), 303)


def _page(key, created=None, status=200, outcome: Outcome | None = None, form: dict | None = None):
    env = domain.get(key)
    keys = sorted(env.sdk_keys, key=lambda k: k.id)
    return render_template("console/environment.html", title=f"Environment {key}", env=env, keys=keys,
                           created=created, outcome=outcome, errors=outcome.errors if outcome else FieldErrors(),
                           form=form or {}), status


@bp.get("/environments/<key>")
def environment(key):
    return _page(key)


@bp.post("/environments/<key>/sdk-keys")
@requires("admin")
def sdk_key_create(key):
    env = domain.get(key)
    name = request.form.get("name", "").strip()[:200]
    sdk_key, secret = token_domain.create_sdk_key(actor(), env, name)
    # Rendered (not redirected): the secret must not travel through a cookie or a URL.
    return _page(key, created={"id": sdk_key.id, "secret": secret, "name": name}, status=201)


@bp.post("/environments/<key>/sdk-keys/<int:key_id>/revoke")
@requires("admin")
def sdk_key_revoke(key, key_id):
    outcome = attempt(token_domain.revoke_sdk_key, actor(), domain.get(key), key_id)
    flash(outcome.error.message if not outcome.ok else f"Revoked SDK key {key_id}.",
          "error" if not outcome.ok else "success")
    return redirect(url_for("console.environment", key=key), 303)


@bp.post("/environments/<key>/delete")
@requires("admin")
def environment_delete(key):
    outcome = attempt(domain.delete, actor(), key, version())
    if not outcome.ok:
        flash(outcome.error.message, "error")
        return redirect(url_for("console.environment", key=key), 303)
    flash(f"Deleted environment {key}.", "success")
    return redirect(url_for("console.environments"), 303)




@bp.post("/environments/<key>/approvals")
@requires("admin")
def environment_approvals(key):
    """Protect an environment (approvals_required > 0: its targeting changes through change
    requests, docs/process.md) or lift the protection (0)."""
    raw = request.form.get("approvals_required", "")
    changes = {"approvals_required": number(raw, integer=True)}
    outcome = attempt(lambda: domain.update(actor(), key, load(EnvironmentPatchSchema(), changes), version()))
    if not outcome.ok:
        return _page(key, outcome=outcome, status=outcome.status, form={"approvals_required": raw})
    needed = outcome.value.approvals_required
    flash(f"{key} now requires {needed} approval(s) for targeting changes." if needed else
          f"{key} no longer requires approvals: targeting changes apply directly.", "success")
    return redirect(url_for("console.environment", key=key), 303)
