"""Holdouts (docs/holdouts.md): list and create, edit and delete, results (table and forest plot)."""

from __future__ import annotations

import marshmallow as ma
from flask import Response, flash, redirect, render_template, request, url_for

from ...analysis.export import results_csv
from ...analysis.settings import CORRECTIONS, ENGINES
from ...auth import requires
from ...domain import environments as environment_domain
from ...domain import holdouts as domain
from ...domain import metrics as metric_domain
from ...schemas.holdouts import HoldoutPatchSchema, HoldoutResultsQuerySchema, HoldoutSchema
from .. import bp, charts, nav
from ..forms import FieldErrors, attempt, flatten_messages, load, number, version
from ..session import actor
from .experiments import fmt_lift, fmt_p, fmt_value, verdict_text

nav.register("Holdouts", "console.holdouts", order=33)


def _form(*, new: bool) -> dict:
    form = request.form
    doc = {"name": form.get("name", "").strip(), "description": form.get("description", ""),
           "percent": number(form.get("percent")), "unit": form.get("unit", "").strip()}
    if new:
        doc |= {"key": form.get("key", "").strip(), "environment": form.get("environment", "")}
    return {k: v for k, v in doc.items() if v not in ("", None) or k in ("key", "percent")}


@bp.route("/holdouts", methods=["GET", "POST"])
def holdouts():
    errors, status = FieldErrors(), 200
    new = {"key": "", "environment": request.args.get("environment") or "production", "name": "", "description": "",
           "percent": "5", "unit": "id"}
    if request.method == "POST":
        doc = _form(new=True)
        outcome = attempt(lambda: domain.create(actor(), load(HoldoutSchema(), doc)))
        if outcome.ok:
            flash(f"Created holdout {outcome.value.key}: name it in a flag's targeting to join the flag.", "success")
            return redirect(url_for("console.holdout", key=outcome.value.key), 303)
        errors, status = outcome.errors, outcome.status
        new |= {k: request.form.get(k, "") for k in new}
    environment = request.args.get("environment") or None
    page = domain.list_holdouts(environment=environment, limit=100, cursor=request.args.get("cursor"))
    environments = [e.key for e in environment_domain.list_environments(limit=500).items]
    return render_template("console/holdouts/list.html", title="Holdouts", items=domain.to_dicts(page.items),
                           next_cursor=page.next_cursor, new=new, errors=errors, environments=environments,
                           environment=environment), status


@bp.route("/holdouts/<key>", methods=["GET", "POST"])
def holdout(key):
    holdout = domain.get(key)
    errors, outcome, status, doc = FieldErrors(), None, 200, None
    if request.method == "POST":
        doc = _form(new=False)
        outcome = attempt(lambda: domain.update(actor(), key, load(HoldoutPatchSchema(), doc), version()))
        if outcome.ok:
            flash("Saved the holdout.", "success")
            return redirect(url_for("console.holdout", key=key), 303)
        errors, status = outcome.errors, outcome.status
        holdout = domain.get(key)
    data = domain.to_dict(holdout)
    shown = {**data, **{k: request.form.get(k, "") for k in ("name", "description", "percent", "unit")}} \
        if doc is not None else data
    return render_template("console/holdouts/holdout.html", title=f"Holdout {key}", h=data, doc=shown,
                           errors=errors, outcome=outcome,
                           form_version=request.form.get("version") or holdout.version), status


@bp.post("/holdouts/<key>/delete")
@requires("editor")
def holdout_delete(key):
    outcome = attempt(domain.delete, actor(), key, version())
    if not outcome.ok:
        flash(outcome.error.message, "error")
        return redirect(url_for("console.holdout", key=key), 303)
    flash(f"Deleted holdout {key} and its recorded units.", "success")
    return redirect(url_for("console.holdouts"), 303)


# ---------------------------------------------------------------- results

def _query() -> tuple[dict, FieldErrors]:
    """The results request from the page's query string, validated by the API's schema."""
    raw = {"metric": request.args.getlist("metric")}
    for name in ("engine", "alpha", "correction"):
        if request.args.get(name):
            raw[name] = request.args[name]
    try:
        return HoldoutResultsQuerySchema().load(raw), FieldErrors()
    except ma.ValidationError as exc:
        return {}, FieldErrors(flatten_messages(exc.messages))


def _forest(results: dict):
    rows = []
    for entry in results["metrics"]:
        measured = next(v for v in entry["variations"] if v["variation"] == "measured")
        rel = measured.get("relative")
        rows.append(charts.ForestRow(entry["metric"], *((rel["estimate"], *rel["ci"]) if rel else (None, None, None)),
                                     note=verdict_text(measured.get("verdict")),
                                     highlight=measured.get("verdict") in ("winner", "loser")))
    return charts.forest_plot(
        rows, title=f"Cumulative relative lift of the flags in holdout {results['holdout']}, per metric",
        x_label="Relative lift, measured slice vs held-out units (%)", ident="holdout-forest")


@bp.get("/holdouts/<key>/results")
def holdout_results(key):
    holdout = domain.to_dict(domain.get(key))
    metrics = [m.key for m in metric_domain.list_metrics(limit=500).items]
    chosen = request.args.getlist("metric")
    results = plot = None
    errors = FieldErrors()
    status = 200
    if chosen:
        query, errors = _query()
        if not errors:
            query.pop("format", None)
            outcome = attempt(domain.results, key, metrics=query.pop("metric"), **query)
            if outcome.ok:
                results = outcome.value
                plot = _forest(results)
            else:
                errors, status = outcome.errors, outcome.status
        else:
            status = 400
    return render_template("console/holdouts/results.html", title=f"Holdout {key}: results", h=holdout,
                           metrics=metrics, chosen=chosen, results=results, plot=plot, errors=errors,
                           engines=ENGINES, corrections=CORRECTIONS, fmt_value=fmt_value, fmt_lift=fmt_lift,
                           fmt_p=fmt_p, args=request.args), status


@bp.get("/holdouts/<key>/results.csv")
def holdout_results_csv(key):
    query, errors = _query()
    if errors:
        return Response("Choose at least one metric.\n", status=400, mimetype="text/plain")
    query.pop("format", None)
    document = domain.results(key, metrics=query.pop("metric"), **query)
    return Response(results_csv(document), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="holdout-{key}-results.csv"'})
