"""Home, sign-in and sign-out."""

from flask import flash, redirect, render_template, request, url_for

from ...domain import audit as audit_domain
from ...domain import change_requests as request_domain
from ...domain import experiments as experiment_domain
from ...domain import rollouts as rollout_domain
from ...domain import tokens as token_domain
from .. import bp, nav, queries
from ..session import can, current_user, safe_next, sign_in, sign_out

nav.register("Home", "console.home", order=0)


@bp.get("/")
def home():
    running = experiment_domain.list_experiments(status="running", limit=20).items
    recent = audit_domain.list_entries(limit=12).items
    to_review, review_total = queries.awaiting_review(current_user().name, limit=10) if can("editor") else ([], 0)
    rollouts = [rollout_domain.to_dict(r) for r in queries.all_rollouts(state="running", limit=10).items]
    return render_template("console/home.html", title="Home", running=running, recent=recent,
                           to_dict=experiment_domain.to_dict, to_review=[request_domain.to_dict(r) for r in to_review],
                           review_total=review_total, rollouts=rollouts)


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    status = 200
    if request.method == "POST":
        secret = (request.form.get("token") or "").strip()
        if secret.startswith(token_domain.SDK_PREFIX):
            error, status = "That is an SDK key; sign in with a personal admin token (pc_admin_…).", 401
        elif not secret or sign_in(secret) is None:
            error, status = "Invalid or revoked token.", 401
        else:
            return redirect(safe_next(request.args.get("next")), 303)
    elif request.args.get("ended"):
        error = "Your session ended (signed out elsewhere, or the token was revoked). Sign in again."
    return render_template("console/login.html", title="Sign in", error=error), status


@bp.post("/logout")
def logout():
    sign_out()
    flash("Signed out.", "success")
    return redirect(url_for("console.login"), 303)


logout.required_role = "viewer"  # anyone signed in may sign out
