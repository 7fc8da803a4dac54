"""Admin tokens (admin only): list, create (secret shown once), revoke."""

from flask import flash, redirect, render_template, request, url_for

from ...auth import requires
from ...domain import tokens as domain
from ...models import ROLES
from ...schemas.tokens import TokenCreateSchema
from .. import bp, nav
from ..forms import FieldErrors, attempt, load
from ..session import actor

nav.register("Tokens", "console.tokens", role="admin", order=70)


def _page(errors=None, created=None, new=None, status=200):
    include = request.args.get("revoked") == "true"
    items = domain.list_tokens(include_revoked=include, limit=500).items
    return render_template("console/tokens.html", title="Tokens", items=items, roles=ROLES, include=include,
                           errors=errors or FieldErrors(), created=created, new=new or {}), status


@bp.get("/tokens")
@requires("admin")
def tokens():
    return _page()


@bp.post("/tokens")
@requires("admin")
def token_create():
    doc = {"name": request.form.get("name", "").strip(), "role": request.form.get("role", "")}
    outcome = attempt(lambda: domain.create_token(actor(), **load(TokenCreateSchema(), doc)))
    if not outcome.ok:
        return _page(outcome.errors, new=doc, status=400)
    token, secret = outcome.value
    return _page(created={"name": token.name, "role": token.role, "secret": secret}, status=201)


@bp.post("/tokens/<int:token_id>/revoke")
@requires("admin")
def token_revoke(token_id):
    outcome = attempt(domain.revoke_token, actor(), token_id)
    flash(outcome.error.message if not outcome.ok else f"Revoked token {token_id}; its sessions end now.",
          "error" if not outcome.ok else "success")
    return redirect(url_for("console.tokens"), 303)
