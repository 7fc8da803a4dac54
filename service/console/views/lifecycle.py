"""Flag hygiene and programme insights: the cleanup list (potentially stale and ready to archive
flags, with the reason) and the insights dashboard (docs/lifecycle.md)."""

from flask import flash, redirect, render_template, request, url_for

from ...domain import flags as flag_domain
from ...domain import insights as insights_domain
from ...domain import lifecycle
from ...domain.errors import ValidationFailed
from ...schemas.insights import InsightsQuerySchema
from .. import bp, charts, nav, queries
from ..forms import FieldErrors, attempt, load, version
from ..session import actor

nav.register("Cleanup", "console.cleanup", order=15)
nav.register("Insights", "console.insights", order=35)


@bp.get("/cleanup")
def cleanup():
    items = lifecycle.cleanup()
    return render_template("console/lifecycle/cleanup.html", title="Cleanup", items=items)


@bp.post("/cleanup/<key>/archive")
def cleanup_archive(key):
    outcome = attempt(flag_domain.archive, actor(), key, version())
    flash(outcome.error.message if not outcome.ok else f"Archived {key}.", "error" if not outcome.ok else "success")
    return redirect(url_for("console.cleanup"), 303)


def _days(value):
    return None if value is None else round(value, 1)


def _points(kpi: dict, scale: float = 1.0) -> list:
    return [None if p["value"] is None else p["value"] * scale for p in kpi["series"]]


@bp.get("/insights")
def insights():
    raw = {k: v for k, v in request.args.items() if k in ("from", "to", "environment") and v}
    errors = FieldErrors()
    data = None
    status = 200
    try:
        query = load(InsightsQuerySchema(), raw)
        data = insights_domain.insights(environment=query["environment"], start=query["start"], end=query["end"])
    except ValidationFailed as exc:
        errors, status = FieldErrors(exc.details), 400
    figures = {}
    if data:
        months = data["months"]
        e, r = data["experiments"], data["releases"]
        figures = {
            "experiments": charts.monthly_bars(months, [("started", _points(e["started"])),
                                                        ("concluded", _points(e["concluded"]))],
                                               title="Experiments started and concluded per month",
                                               y_label="experiments", ident="ch-experiments"),
            "win_rate": charts.monthly_bars(months, [("win rate", _points(e["win_rate"], 100))],
                                            title="Win rate (ship / concluded) per month", y_label="%",
                                            ident="ch-win", fmt=lambda v: f"{v:.0f} %"),
            "decision": charts.monthly_bars(months, [("median days", _points(e["median_days_to_decision"]))],
                                            title="Median days from start to decision", y_label="days",
                                            ident="ch-decision", fmt=lambda v: f"{v:.1f}"),
            "velocity": charts.monthly_bars(months, [("changes / week", _points(r["changes_per_week"]))],
                                            title="Release velocity: targeting changes per week", y_label="per week",
                                            ident="ch-velocity", fmt=lambda v: f"{v:.1f}"),
            "rollout": charts.monthly_bars(months, [("median days", _points(r["median_days_to_full_rollout"]))],
                                           title="Time to market: median days from flag created to 100 %",
                                           y_label="days", ident="ch-rollout", fmt=lambda v: f"{v:.1f}"),
            "rollbacks": charts.monthly_bars(months, [("rollbacks", _points(r["rollbacks"]))],
                                             title="Rollbacks per month", y_label="rollbacks", ident="ch-rollbacks"),
            "data_driven": charts.monthly_bars(
                months, [("data-driven", _points(data["decisions"]["data_driven_share"], 100))],
                title="Share of full rollouts decided by a concluded experiment", y_label="%",
                ident="ch-data", fmt=lambda v: f"{v:.0f} %"),
        }
    return render_template("console/lifecycle/insights.html", title="Insights", data=data, figures=figures,
                           errors=errors, args=raw, environments=queries.environments(), days=_days), status
