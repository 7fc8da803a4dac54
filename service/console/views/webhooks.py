"""Webhooks (admin only): list and create (secret shown once), a webhook's page with its
delivery log, redelivery, secret rotation, enable/disable and delete (docs/webhooks.md)."""

from flask import abort, flash, redirect, render_template, request, url_for

from ...auth import requires
from ...domain import webhooks as domain
from ...domain.announce import EVENT_TYPES
from ...domain.errors import NotFound
from ...schemas.webhooks import WebhookPatchSchema, WebhookSchema
from .. import bp, nav, queries
from ..forms import FieldErrors, attempt, checked, load, version
from ..session import actor

nav.register("Webhooks", "console.webhooks", role="admin", order=75)


def _form() -> dict:
    events = request.form.getlist("events")
    environments = request.form.getlist("environments")
    return {"url": request.form.get("url", "").strip(), "description": request.form.get("description", ""),
            "events": ["*"] if checked("all_events") else events,
            "environments": environments or None, "format": request.form.get("format") or "standard"}


def _list_page(errors=None, created=None, new=None, status=200):
    items = domain.list_webhooks(limit=500).items
    return render_template("console/webhooks/list.html", title="Webhooks", items=items, errors=errors or FieldErrors(),
                           created=created, new=new or {"events": ["*"], "format": "standard"},
                           event_types=EVENT_TYPES, environments=queries.environments(),
                           formats=domain.FORMATS), status


@bp.get("/webhooks")
@requires("admin")
def webhooks():
    return _list_page()


@bp.post("/webhooks")
@requires("admin")
def webhook_create():
    doc = _form()
    outcome = attempt(lambda: domain.create(actor(), load(WebhookSchema(), doc)))
    if not outcome.ok:
        return _list_page(outcome.errors, new=doc, status=400)
    webhook, secret = outcome.value
    return _list_page(created={"id": webhook.id, "url": webhook.url, "secret": secret}, status=201)


def _webhook_page(webhook_id: int, *, secret=None, outcome=None, status=200):
    try:
        webhook = domain.get(webhook_id)
    except NotFound:
        abort(404)
    state = request.args.get("state") or None
    page = domain.list_deliveries(webhook_id, state=state if state in ("pending", "succeeded", "failed") else None,
                                  limit=50, cursor=request.args.get("cursor") or None)
    return render_template("console/webhooks/webhook.html", title=f"Webhook {webhook.id}", webhook=webhook,
                           info=domain.to_dict(webhook), deliveries=page.items, next_cursor=page.next_cursor,
                           state=state, secret=secret, outcome=outcome, event_types=EVENT_TYPES,
                           environments=queries.environments(), formats=domain.FORMATS), status


@bp.get("/webhooks/<int:webhook_id>")
@requires("admin")
def webhook(webhook_id):
    return _webhook_page(webhook_id)


@bp.post("/webhooks/<int:webhook_id>")
@requires("admin")
def webhook_update(webhook_id):
    if request.form.get("action") == "toggle":
        changes = {"enabled": request.form.get("enabled") == "true"}
    else:
        doc = _form()
        changes = {k: doc[k] for k in ("url", "description", "events", "environments", "format")}
    outcome = attempt(lambda: domain.update(actor(), webhook_id, load(WebhookPatchSchema(), changes), version()))
    if not outcome.ok:
        return _webhook_page(webhook_id, outcome=outcome, status=409 if outcome.conflict else 400)
    flash("Saved the webhook.", "success")
    return redirect(url_for("console.webhook", webhook_id=webhook_id), 303)


@bp.post("/webhooks/<int:webhook_id>/rotate")
@requires("admin")
def webhook_rotate(webhook_id):
    outcome = attempt(domain.rotate_secret, actor(), webhook_id, None, version())
    if not outcome.ok:
        return _webhook_page(webhook_id, outcome=outcome, status=409 if outcome.conflict else 400)
    return _webhook_page(webhook_id, secret=outcome.value[1])


@bp.post("/webhooks/<int:webhook_id>/deliveries/<int:delivery_id>/retry")
@requires("admin")
def webhook_retry(webhook_id, delivery_id):
    outcome = attempt(domain.retry, actor(), webhook_id, delivery_id)
    flash(outcome.error.message if not outcome.ok else f"Delivery {delivery_id} will be sent again shortly.",
          "error" if not outcome.ok else "success")
    return redirect(url_for("console.webhook", webhook_id=webhook_id), 303)


@bp.post("/webhooks/<int:webhook_id>/delete")
@requires("admin")
def webhook_delete(webhook_id):
    outcome = attempt(domain.delete, actor(), webhook_id, version())
    if not outcome.ok:
        return _webhook_page(webhook_id, outcome=outcome, status=409 if outcome.conflict else 400)
    flash(f"Deleted webhook {webhook_id}.", "success")
    return redirect(url_for("console.webhooks"), 303)
