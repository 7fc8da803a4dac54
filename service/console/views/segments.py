"""Segments: list, create, edit (included/excluded ids and rules as JSON)."""

import json

from flask import flash, redirect, render_template, request, url_for

from ...auth import requires
from ...domain import segments as domain
from ...schemas.segments import SegmentPatchSchema, SegmentSchema
from .. import bp, nav
from ..forms import FieldErrors, attempt, load, version
from ..session import actor

nav.register("Segments", "console.segments", order=20)


def _form() -> tuple[dict, FieldErrors]:
    form = request.form
    doc = {"name": form.get("name", "").strip(), "description": form.get("description", ""),
           "tags": [t.strip() for t in form.get("tags", "").split(",") if t.strip()],
           "included": [u.strip() for u in form.get("included", "").splitlines() if u.strip()],
           "excluded": [u.strip() for u in form.get("excluded", "").splitlines() if u.strip()]}
    errors = FieldErrors()
    text = form.get("rules", "").strip() or "[]"
    try:
        doc["rules"] = json.loads(text)
    except ValueError as exc:
        errors = FieldErrors({"rules": [f"Not valid JSON: {exc}"]})
        doc["rules"] = text
    return doc, errors


def _view(segment, doc=None):
    if doc is None:
        doc = {f: getattr(segment, f) for f in ("name", "description", "tags", "included", "excluded", "rules")}
    rules = doc["rules"] if isinstance(doc["rules"], str) else json.dumps(doc["rules"], indent=2)
    return {**doc, "rules": rules}


@bp.route("/segments", methods=["GET", "POST"])
def segments():
    errors, status = FieldErrors(), 200
    new = {"key": "", "name": "", "description": "", "tags": [], "included": [], "excluded": [], "rules": "[]"}
    if request.method == "POST":
        doc, errors = _form()
        doc["key"] = request.form.get("key", "").strip()
        if not errors:
            outcome = attempt(lambda: domain.create(actor(), load(SegmentSchema(), {k: v for k, v in doc.items()
                                                                                   if v != "" or k == "key"})))
            if outcome.ok:
                flash(f"Created segment {outcome.value.key}.", "success")
                return redirect(url_for("console.segment", key=outcome.value.key), 303)
            errors = outcome.errors
        new, status = _view(None, doc), 400
    page = domain.list_segments(q=request.args.get("q") or None, limit=100, cursor=request.args.get("cursor"))
    return render_template("console/segments.html", title="Segments", items=page.items, next_cursor=page.next_cursor,
                           new=new, errors=errors), status




@bp.route("/segments/<key>", methods=["GET", "POST"])
def segment(key):
    segment = domain.get(key)
    errors, outcome, status, doc = FieldErrors(), None, 200, None
    if request.method == "POST":
        doc, errors = _form()
        if not errors:
            outcome = attempt(lambda: domain.update(actor(), key, load(SegmentPatchSchema(), doc), version()))
            if outcome.ok:
                flash("Saved the segment.", "success")
                return redirect(url_for("console.segment", key=key), 303)
            errors = outcome.errors
        status = 409 if outcome is not None and outcome.conflict else 400
        segment = domain.get(key)
    return render_template("console/segment.html", title=f"Segment {key}", segment=segment,
                           doc=_view(segment, doc), errors=errors, outcome=outcome,
                           form_version=request.form.get("version") or segment.version,
                           used_by=domain.flags_using(key)), status


@bp.post("/segments/<key>/delete")
@requires("editor")
def segment_delete(key):
    outcome = attempt(domain.delete, actor(), key, version())
    if not outcome.ok:
        flash(outcome.error.message, "error")
        return redirect(url_for("console.segment", key=key), 303)
    flash(f"Deleted segment {key}.", "success")
    return redirect(url_for("console.segments"), 303)
