"""Experiments: list by status, create, setup, lifecycle (start, stop, conclude),
results (table, forest plot, cumulative lift over time, breakdown, downloads).

In an environment that requires approvals the lifecycle buttons open a change
request for the action instead (the API refuses the direct write with 409
``change_request_required``; docs/process.md); the page lists the requests in
play for the experiment."""

from __future__ import annotations

from flask import Response, flash, jsonify, redirect, render_template, request, url_for

from ...analysis.export import results_csv
from ...analysis.settings import CORRECTIONS, DEFAULT_ANALYSIS, ENGINES
from ...domain import change_requests as request_domain
from ...domain import environments as environment_domain
from ...domain import experiments as domain
from ...domain import flags as flag_domain
from ...domain import metrics as metric_domain
from ...domain.errors import DomainError
from ...domain.experiments import OUTCOMES
from ...domain.versioning import check_version
from ...models import STATUSES
from ...schemas.experiments import ConcludeSchema, ExperimentPatchSchema, ExperimentSchema
from ...schemas.process import ChangeRequestCreateSchema
from .. import bp, charts, nav, queries
from ..forms import FieldErrors, attempt, checked, load, number, version
from ..session import actor
from .flags import requested

nav.register("Experiments", "console.experiments", order=30)


# ---------------------------------------------------------------- formatting (also used by templates)

def fmt_value(value, metric_type: str) -> str:
    if value is None:
        return "–"
    if metric_type == "conversion":
        return f"{value * 100:.2f} %"
    return f"{value:,.4g}"


def fmt_lift(test: dict | None, relative: bool, metric_type: str = "mean") -> str:
    if not test:
        return "–"
    lo, hi = test["ci"]
    if relative:
        return f"{test['estimate'] * 100:+.1f} % [{lo * 100:+.1f} %, {hi * 100:+.1f} %]"
    if metric_type == "conversion":
        return f"{test['estimate'] * 100:+.2f} pts [{lo * 100:+.2f}, {hi * 100:+.2f}]"
    return f"{test['estimate']:+.4g} [{lo:+.4g}, {hi:+.4g}]"


def fmt_p(value) -> str:
    if value is None:
        return "–"
    return "< 0.0001" if value < 0.0001 else f"{value:.4f}"


VERDICT_TEXT = {"winner": "winner", "loser": "loser", "inconclusive": "inconclusive",
                "not_enough_data": "not enough data", None: ""}


@bp.app_template_filter("verdict_text")
def verdict_text(verdict):
    return VERDICT_TEXT.get(verdict, verdict or "")


# ---------------------------------------------------------------- list and create

@bp.get("/experiments")
def experiments():
    status = request.args.get("status") or None
    if status not in STATUSES:
        status = None
    page = domain.list_experiments(status=status, limit=100, cursor=request.args.get("cursor") or None)
    items = domain.to_dicts(page.items)
    return render_template("console/experiments/list.html", title="Experiments", items=items, status=status,
                           statuses=STATUSES, next_cursor=page.next_cursor)


def _choices():
    flags = [f.key for f in flag_domain.list_flags(limit=500).items]
    environments = [e.key for e in queries.environments()]
    metrics = [m.key for m in metric_domain.list_metrics(limit=500).items]
    return flags, environments, metrics


def _analysis_from_form(form) -> dict:
    analysis = {"engine": form.get("engine") or "frequentist", "alpha": number(form.get("alpha")),
                "sequential": checked("sequential"), "cuped": checked("cuped"),
                "correction": form.get("correction") or None}
    mde = number(form.get("target_mde"))
    analysis["target_mde"] = mde / 100 if isinstance(mde, float) else mde
    ctw = number(form.get("chance_to_win"))
    analysis["chance_to_win"] = ctw / 100 if isinstance(ctw, float) else ctw
    return {k: v for k, v in analysis.items() if v is not None or k == "correction"}


def _common_from_form(form) -> dict:
    return {"name": form.get("name", "").strip() or None, "hypothesis": form.get("hypothesis", ""),
            "owner": form.get("owner", "").strip() or None,
            "tags": [t.strip() for t in form.get("tags", "").split(",") if t.strip()],
            "primary_metric": form.get("primary_metric") or None,
            "secondary_metrics": [m for m in form.getlist("secondary_metrics") if m],
            "guardrail_metrics": [m for m in form.getlist("guardrail_metrics") if m],
            "dimensions": [d.strip() for d in form.get("dimensions", "").split(",") if d.strip()],
            "analysis": _analysis_from_form(form)}


AUDIENCES = [("last", "After the flag's rules: contexts that no rule matches (existing targeting "
                      "keeps precedence)"),
             ("first", "Before the flag's rules: every context but individual targets")]


def _audiences(flag_key: str, env_key: str) -> list[tuple[str, str]]:
    """The audience choices: first, last, and the audience of each of the flag's rules there."""
    choices = list(AUDIENCES)
    if not flag_key or not env_key:
        return choices
    try:
        _, targeting = flag_domain.get_targeting(flag_key, env_key)
    except DomainError:
        return choices
    for rule in targeting.get("rules") or []:
        about = f": {rule['description']}" if rule.get("description") else ""
        choices.append((f"rule:{rule['id']}",
                        f"The audience of rule {rule['id']}{about} (right before it)"))
    return choices


def _audience_from_form(choice: str) -> dict:
    if choice.startswith("rule:"):
        return {"rule_id": choice.removeprefix("rule:")}
    return {"position": "first" if choice == "first" else "last"}


def _describe_audience(audience: dict | None) -> str:
    if audience is None:
        return "no rule serves it"
    before = audience["preceded_by"]
    where = f"rule {audience['position'] + 1} of the flag's targeting"
    if not before:
        return f"{where}, first"
    return f"{where}, after {', '.join(before)} (their contexts do not enter it)"


@bp.route("/experiments/new", methods=["GET", "POST"])
def experiment_new():
    flags, environments, metrics = _choices()
    environment = request.args.get("environment", "")
    if environment not in environments:
        default = environments[0] if environments else ""
        environment = "production" if "production" in environments else default
    doc = {"key": "", "flag": request.args.get("flag", ""), "environment": environment,
           "analysis": DEFAULT_ANALYSIS}
    choice = "last"
    errors, status = FieldErrors(), 200
    if request.method == "POST":
        doc = {**_common_from_form(request.form), "key": request.form.get("key", "").strip(),
               "flag": request.form.get("flag", ""), "environment": request.form.get("environment", "")}
        choice = request.form.get("audience", "last")
        data = {k: v for k, v in doc.items() if not (k == "name" and v is None)}
        data["audience"] = _audience_from_form(choice)
        outcome = attempt(lambda: domain.create(actor(), load(ExperimentSchema(), data)))
        if outcome.ok:
            audience = domain.to_dict(outcome.value)["audience"]
            flash(f"Created draft experiment {outcome.value.key}; its rule is "
                  f"{_describe_audience(audience)}.", "success")
            return redirect(url_for("console.experiment", key=outcome.value.key), 303)
        errors, status = outcome.errors, 400
        doc["analysis"] = {**DEFAULT_ANALYSIS, **doc["analysis"]}
    return render_template("console/experiments/new.html", title="New experiment", doc=doc,
                           errors=errors, flags=flags, environments=environments, metrics=metrics,
                           engines=ENGINES, corrections=CORRECTIONS,
                           audiences=_audiences(doc["flag"], doc["environment"]),
                           audience=choice), status


# ---------------------------------------------------------------- an experiment

def _forest(entry: dict, control: str, ident: str):
    rows = [charts.ForestRow(v["variation"], *(_rel(v)), note=verdict_text(v.get("verdict")),
                             highlight=v.get("verdict") in ("winner", "loser"))
            for v in entry["variations"] if v["variation"] != control]
    return charts.forest_plot(rows, title=f"Relative lift of {entry['metric']} vs {control}, with interval",
                              x_label=f"Relative lift of {entry['metric']} vs control {control} (%)", ident=ident)


def _rel(v: dict):
    rel = v.get("relative")
    if not rel:
        return None, None, None
    return rel["estimate"], rel["ci"][0], rel["ci"][1]


def _timeseries_chart(series: dict, control: str):
    days = series["days"]
    labels = [d["date"][5:] for d in days]  # MM-DD
    treatments = [v["variation"] for v in days[0]["variations"] if v["variation"] != control] if days else []
    lines = []
    for t in treatments:
        points = []
        for i, day in enumerate(days):
            v = next(x for x in day["variations"] if x["variation"] == t)
            est, lo, hi = _rel(v)
            points.append((i, est, lo, hi))
        lines.append(charts.Series(f"{t} vs {control}", points))
    return charts.interval_series(
        labels, lines, title=f"Cumulative relative lift of {series['metric']} over time",
        y_label=f"Lift of {series['metric']} (%)", x_label="Day (UTC, cumulative to the end of the day)",
        ident="timeseries")


def _experiment_page(key: str, *, errors: FieldErrors | None = None, outcome=None, status: int = 200,
                     form_version: int | None = None):
    experiment = domain.get(key)
    data = domain.to_dict(experiment)
    flags, environments, metrics = _choices()
    roles = {data["primary_metric"]: "primary"} | {m: "secondary" for m in data["secondary_metrics"]} \
        | {m: "guardrail" for m in data["guardrail_metrics"]}
    dimension = request.args.get("dimension") or None
    if dimension not in (data["dimensions"] or []):
        dimension = None
    results = series = None
    forest_plots, series_chart = {}, None
    if experiment.status != "draft" or request.args.get("preview"):
        results = domain.results(key, dimension=dimension)
        for entry in results["metrics"]:
            if entry["dimension"] is None:
                forest_plots[entry["metric"]] = _forest(entry, data["control"], f"forest-{entry['metric']}")
        if data["primary_metric"] and any(e["metric"] == data["primary_metric"] for e in results["metrics"]):
            series = domain.timeseries(key)
            series_chart = _timeseries_chart(series, data["control"]) if series["days"] else None
    flag = flag_domain.get(data["flag"])
    _, targeting = flag_domain.get_targeting(data["flag"], data["environment"])
    audience = [rule for rule in targeting.get("rules") or []
                if (rule.get("serve") or {}).get("experiment") == key]
    if (targeting.get("fallthrough") or {}).get("experiment") == key:
        audience.append({"id": "default rule", "conditions": []})
    approvals = environment_domain.get(data["environment"]).approvals_required
    requests = [request_domain.to_dict(r) for r in request_domain.list_requests(experiment=key, limit=50).items
                if r.state in request_domain.ACTIVE]
    return render_template(
        "console/experiments/experiment.html", title=f"Experiment {key}", e=data, results=results,
        approvals=approvals, requests=requests,
        series=series, series_chart=series_chart, forest_plots=forest_plots, roles=roles, dimension=dimension,
        errors=errors or FieldErrors(), outcome=outcome, metrics=metrics, engines=ENGINES, corrections=CORRECTIONS,
        outcomes=OUTCOMES, fmt_value=fmt_value, fmt_lift=fmt_lift, fmt_p=fmt_p, flag=flag,
        form_version=form_version or data["version"], audience=audience, flag_on=bool(targeting.get("enabled"))), \
        status


@bp.get("/experiments/<key>")
def experiment(key):
    return _experiment_page(key)


@bp.post("/experiments/<key>/setup")
def experiment_setup(key):
    current = domain.get(key)
    form = request.form
    changes = _common_from_form(form)
    if changes["name"] is None:
        del changes["name"]
    if current.status == "draft":
        arms = []
        for i, arm in enumerate(current.variations):
            share = number(form.get(f"variations.{i}.weight"))
            arms.append({"variation": form.get(f"variations.{i}.variation", arm["variation"]),
                         "weight": round(share * 100) if isinstance(share, float) else share})
        changes["variations"] = arms
        changes["control"] = form.get("control") or current.control
    traffic = number(form.get("traffic"))
    if current.status in ("draft", "running"):
        changes["traffic"] = round(traffic * 100) if isinstance(traffic, float) else traffic
    expected = version()
    outcome = attempt(lambda: domain.update(actor(), key, load(ExperimentPatchSchema(), changes), expected))
    if not outcome.ok:
        return _experiment_page(key, errors=outcome.errors, outcome=outcome,
                                status=409 if outcome.conflict else 400, form_version=expected)
    flash("Saved the experiment's setup.", "success")
    return redirect(url_for("console.experiment", key=key), 303)


def _protected(key: str) -> bool:
    experiment = domain.get(key)
    return environment_domain.get(domain.to_dict(experiment)["environment"]).approvals_required > 0


def _propose(key: str, action: str, expected: int, data: dict | None = None):
    """Open a change request for ``action`` (the environment requires approvals). A page
    rendered from an older version of the experiment is a conflict, as for a direct write."""
    check_version(domain.get(key).version, expected)
    body = {"experiment": {"key": key, "action": action, **(data or {})},
            "comment": request.form.get("comment") or ""}
    return request_domain.create(actor(), load(ChangeRequestCreateSchema(), body))


def _proposed(key: str, action: str, outcome):
    if not outcome.ok:
        return _experiment_page(key, errors=outcome.without_prefix("experiment"), outcome=outcome,
                                status=outcome.status)
    env = domain.to_dict(domain.get(key))["environment"]
    return requested(outcome.value, env, f"{action} experiment {key}")


def _transition(key: str, fn, message: str, action: str):
    expected = version()
    if _protected(key):
        return _proposed(key, action, attempt(_propose, key, action, expected))
    outcome = attempt(fn, actor(), key, expected)
    if not outcome.ok:
        return _experiment_page(key, errors=outcome.errors, outcome=outcome,
                                status=409 if outcome.error.code in ("conflict", "precondition_failed") else 400)
    flash(message, "success")
    return redirect(url_for("console.experiment", key=key), 303)


@bp.post("/experiments/<key>/start")
def experiment_start(key):
    return _transition(key, domain.start, f"Started {key}: units are being assigned.", "start")


@bp.post("/experiments/<key>/stop")
def experiment_stop(key):
    return _transition(key, domain.stop, f"Stopped {key}: results keep the data up to now.", "stop")


@bp.post("/experiments/<key>/conclude")
def experiment_conclude(key):
    form = request.form
    data = {"decision": {"outcome": form.get("outcome", ""), "variation": form.get("decision_variation") or None,
                         "summary": form.get("summary", "")},
            "released_variation": form.get("released_variation") or None}
    expected = version()
    if _protected(key):
        return _proposed(key, "conclude", attempt(_propose, key, "conclude", expected, data))
    outcome = attempt(lambda: domain.conclude(actor(), key, load(ConcludeSchema(), data), expected))
    if not outcome.ok:
        return _experiment_page(key, errors=outcome.errors, outcome=outcome,
                                status=409 if outcome.conflict else 400, form_version=expected)
    flash(f"Concluded {key}: {data['decision']['outcome']}.", "success")
    return redirect(url_for("console.experiment", key=key), 303)


@bp.get("/experiments/<key>/results.csv")
def experiment_results_csv(key):
    document = domain.results(key, dimension=request.args.get("dimension") or None)
    return Response(results_csv(document), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{key}-results.csv"'})


@bp.get("/experiments/<key>/results.json")
def experiment_results_json(key):
    response = jsonify(domain.results(key, dimension=request.args.get("dimension") or None))
    response.headers["Content-Disposition"] = f'attachment; filename="{key}-results.json"'
    return response
