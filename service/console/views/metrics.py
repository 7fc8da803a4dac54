"""Metrics: list (tag filter), create, edit."""

from flask import flash, redirect, render_template, request, url_for

from ...domain import metrics as domain
from ...domain.metrics import DIRECTIONS, TYPES
from ...schemas.metrics import MetricPatchSchema, MetricSchema
from .. import bp, nav
from ..forms import FieldErrors, attempt, load, number, version
from ..session import actor

nav.register("Metrics", "console.metrics", order=40)
FIELDS = ("name", "description", "event", "type", "denominator", "direction", "window_hours", "winsorize", "tags")


def _form() -> dict:
    form = request.form
    return {"name": form.get("name", "").strip() or None, "description": form.get("description", ""),
            "event": form.get("event", "").strip(), "type": form.get("type", ""),
            "denominator": form.get("denominator", "").strip() or None, "direction": form.get("direction", ""),
            "window_hours": number(form.get("window_hours")), "winsorize": number(form.get("winsorize")),
            "tags": [t.strip() for t in form.get("tags", "").split(",") if t.strip()]}


def _clean(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if not (k == "name" and v is None)}


@bp.route("/experiment-metrics", methods=["GET", "POST"])
def metrics():
    errors, status = FieldErrors(), 200
    new = {"key": "", "type": "conversion", "direction": "increase"}
    if request.method == "POST":
        new = {**_form(), "key": request.form.get("key", "").strip()}
        outcome = attempt(lambda: domain.create(actor(), load(MetricSchema(), _clean(new))))
        if outcome.ok:
            flash(f"Created metric {outcome.value.key}.", "success")
            return redirect(url_for("console.metrics"), 303)
        errors, status = outcome.errors, 400
    tag = request.args.get("tag") or None
    page = domain.list_metrics(tag=tag, limit=100, cursor=request.args.get("cursor"))
    return render_template("console/metrics.html", title="Metrics", items=page.items, next_cursor=page.next_cursor,
                           new=new, errors=errors, types=TYPES, directions=DIRECTIONS, tag=tag), status


@bp.route("/experiment-metrics/<key>", methods=["GET", "POST"])
def metric(key):
    metric = domain.get(key)
    errors, outcome, status = FieldErrors(), None, 200
    doc = {f: getattr(metric, f) for f in FIELDS}
    form_version = metric.version
    if request.method == "POST":
        doc = _form()
        form_version = version()
        outcome = attempt(lambda: domain.update(actor(), key, load(MetricPatchSchema(), _clean(doc)), form_version))
        if outcome.ok:
            flash("Saved the metric.", "success")
            return redirect(url_for("console.metric", key=key), 303)
        errors, status = outcome.errors, 409 if outcome.conflict else 400
        metric = domain.get(key)
    return render_template("console/metric.html", title=f"Metric {key}", metric=metric, doc=doc, errors=errors,
                           outcome=outcome, form_version=form_version, types=TYPES, directions=DIRECTIONS,
                           used_by=domain.experiments_using(key)), status
