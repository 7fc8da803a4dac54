"""Guarded rollouts (docs/process.md): start one from a flag's environment (in a
protected environment the form opens a change request proposing it), a rollout's
page (progress, time to the next check, every stored check, a guardrail plot per
metric, the reason it ended, cancel), and lists per flag and across flags."""

from __future__ import annotations

from datetime import datetime

from flask import flash, redirect, render_template, request, url_for

from ...domain import environments as environment_domain
from ...domain import flags as flag_domain
from ...domain import metrics as metric_domain
from ...domain import rollouts as domain
from ...domain.versioning import check_version
from ...models.process import ROLLOUT_STATES
from ...models.types import utcnow
from ...schemas.process import GuardedRolloutCreateSchema
from .. import bp, charts, nav, queries
from ..forms import FieldErrors, Outcome, attempt, form_items, load, number, unflatten, version
from ..session import actor
from . import flags as flag_views

nav.register("Rollouts", "console.rollouts", order=16)

DEFAULT_STEPS = ({"percent": 5, "hold_hours": 24}, {"percent": 25, "hold_hours": 24},
                 {"percent": 50, "hold_hours": 24}, {"percent": 100, "hold_hours": 0})
STATE_TEXT = {"running": "running", "completed": "completed", "rolled_back": "rolled back",
              "cancelled": "cancelled", "failed": "failed"}


@bp.app_template_filter("pct_text")
def pct_text(value) -> str:
    return f"{value:g} %" if isinstance(value, int | float) else str(value)


@bp.app_template_filter("num")
def num(value) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


@bp.app_template_filter("rollout_state")
def rollout_state(state) -> str:
    return STATE_TEXT.get(state, state or "")


def until(moment: datetime | None, now: datetime | None = None) -> str:
    """'in 4 min 10 s' / 'due now' for a time ahead (UTC)."""
    if moment is None:
        return "–"
    seconds = int((moment - (now or utcnow())).total_seconds())
    if seconds <= 0:
        return "due now"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d"] if days else []
    if hours:
        parts.append(f"{hours} h")
    if minutes and not days:
        parts.append(f"{minutes} min")
    if not days and not hours:
        parts.append(f"{secs} s")
    return "in " + " ".join(parts)


# ---------------------------------------------------------------- lists

def _rows(items) -> list[dict]:
    return [domain.to_dict(r) for r in items]


@bp.get("/rollouts")
def rollouts():
    state = request.args.get("state") or None
    state = state if state in ROLLOUT_STATES else None
    page = queries.all_rollouts(state=state, limit=50, cursor=request.args.get("cursor") or None)
    return render_template("console/rollouts/list.html", title="Guarded rollouts", items=_rows(page.items),
                           next_cursor=page.next_cursor, state=state, states=ROLLOUT_STATES, flag=None,
                           query={"state": state} if state else {})


@bp.get("/flags/<key>/rollouts")
def flag_rollouts(key):
    flag = flag_domain.get(key)
    state = request.args.get("state") or None
    state = state if state in ROLLOUT_STATES else None
    page = domain.list_for_flag(key, state=state, limit=50, cursor=request.args.get("cursor") or None)
    return render_template("console/rollouts/list.html", title=f"Guarded rollouts of {key}", items=_rows(page.items),
                           next_cursor=page.next_cursor, state=state, states=ROLLOUT_STATES, flag=flag,
                           environments=queries.environments(), query={"state": state} if state else {})


# ---------------------------------------------------------------- starting

def default_proposal(flag, targeting: dict) -> dict:
    keys = [v["key"] for v in flag.variations]
    current = (targeting.get("fallthrough") or {}).get("variation") or keys[-1]
    new = next((k for k in keys if k != current), current)
    return {"variation": new, "from_variation": current, "steps": [dict(s) for s in DEFAULT_STEPS],
            "guardrails": [], "alpha": 0.05, "comment": ""}


def parse_form() -> tuple[dict, str]:
    """The rollout body from the form (fields named as its JSON paths), and the button pressed."""
    data = unflatten(form_items())
    steps = [{"percent": number(s.get("percent")), "hold_hours": number(s.get("hold_hours"))}
             for s in data.get("steps") or [] if isinstance(s, dict)]
    proposal = {"variation": data.get("variation") or "", "from_variation": data.get("from_variation") or "",
                "steps": steps, "guardrails": [m for m in request.form.getlist("guardrails") if m],
                "alpha": number(data.get("alpha")), "comment": request.form.get("comment") or ""}
    if proposal["alpha"] is None:
        del proposal["alpha"]  # the API's default
    return proposal, request.form.get("action") or "save"


def apply_step_action(proposal: dict, action: str) -> bool:
    """Add or remove a step (the form re-renders, nothing is saved); True when it was one."""
    steps = proposal["steps"]
    if action == "add_step":
        steps.insert(max(0, len(steps) - 1), {"percent": None, "hold_hours": 24})
        return True
    if action.startswith("remove_step:"):
        index = action.split(":", 1)[1]
        if index.isdigit() and int(index) < len(steps):
            steps.pop(int(index))
        return True
    return False


def render_form(flag, env: str, proposal: dict, *, errors: FieldErrors, outcome: Outcome | None, status: int = 200,
                change_request: dict | None = None, form_version: int):
    environment = environment_domain.get(env)
    metrics = [(m.key, f"{m.key} ({'higher' if m.direction == 'increase' else 'lower'} is better)")
               for m in metric_domain.list_metrics(limit=500).items]
    _, targeting = flag_domain.get_targeting(flag.key, env)
    return render_template("console/rollouts/new.html", title=f"Guarded rollout of {flag.key} in {env}", flag=flag,
                           env=env, environment=environment, p=proposal, errors=errors, outcome=outcome,
                           keys=[v["key"] for v in flag.variations], metrics=metrics, targeting=targeting,
                           describe=flag_views.describe, change_request=change_request,
                           form_version=form_version), status


def _start(key: str, env: str, proposal: dict, form_version: int):
    flag = flag_domain.get(key)
    check_version(flag.version, form_version)
    return domain.create(actor(), key, env, load(GuardedRolloutCreateSchema(), proposal))


@bp.route("/flags/<key>/environments/<env>/rollouts/new", methods=["GET", "POST"])
def rollout_new(key, env):
    flag, targeting = flag_domain.get_targeting(key, env)
    protected = environment_domain.get(env).approvals_required > 0
    proposal, errors, outcome, status = default_proposal(flag, targeting), FieldErrors(), None, 200
    form_version = flag.version
    if request.method == "POST":
        form_version = version()
        proposal, action = parse_form()
        if not apply_step_action(proposal, action):
            if protected:
                outcome = attempt(flag_views.open_change_request, key, env, form_version, rollout=proposal)
                if outcome.ok:
                    return flag_views.requested(outcome.value, env, f"a guarded rollout of {key} in {env}")
                errors = outcome.without_prefix("rollout")
            else:
                outcome = attempt(_start, key, env, proposal, form_version)
                if outcome.ok:
                    flash(f"Started guarded rollout #{outcome.value.id}: {proposal['variation']} at "
                          f"{pct_text(outcome.value.steps[0]['percent'])} of {key}'s default rule in {env}.",
                          "success")
                    return redirect(url_for("console.rollout", key=key, env=env, rollout_id=outcome.value.id), 303)
                errors = outcome.errors
            status = outcome.status
    return render_form(flag, env, proposal, errors=errors, outcome=outcome, status=status, form_version=form_version)


# ---------------------------------------------------------------- a rollout

def _lift_format(metric_type: str):
    if metric_type == "conversion":
        return charts.points, "pct. points"
    return (lambda v: f"{v:+.4g}"), "metric units"


def fmt_lift(entry: dict) -> str:
    if entry.get("estimate") is None:
        return "–"
    fmt, _ = _lift_format(entry.get("type"))
    lo, hi = entry.get("ci") or (None, None)
    interval = f" [{fmt(lo)}, {fmt(hi)}]" if lo is not None else ""
    return fmt(entry["estimate"]) + interval


def fmt_value(entry: dict, value) -> str:
    if value is None:
        return "–"
    if entry.get("type") == "conversion":
        return f"{value * 100:.2f} %"
    return f"{value:.4g}"


def guardrail_plots(rollout: dict, checks: list) -> list[tuple[str, object]]:
    """One plot per guardrail metric over the stored checks (oldest first)."""
    plots = []
    old, new = rollout["from_variation"], rollout["variation"]
    for key in rollout["guardrails"]:
        points, kind, direction = [], None, "increase"
        for check in checks:
            entry = next((m for m in check.metrics or [] if m.get("metric") == key), None)
            if entry is None:
                continue
            kind, direction = entry.get("type"), entry.get("direction") or direction
            lo, hi = entry.get("ci") or (None, None)
            points.append(charts.Check(f"{check.checked_at:%m-%d %H:%M}", entry.get("estimate"), lo, hi,
                                       bool(entry.get("harm")), pct_text(check.percent)))
        fmt, unit = _lift_format(kind)
        better = "higher" if direction == "increase" else "lower"
        harm_text = f"{new} {'below' if direction == 'increase' else 'above'} {old}; {better} is better"
        plots.append((key, charts.guardrail_plot(
            points, title=f"Guardrail {key}: lift of {new} over {old} at each check, with its confidence sequence",
            y_label=f"Lift, {new} − {old} ({unit})", x_label=f"Check of {key} (UTC, month-day hour:minute)",
            harm_below=direction == "increase", harm_text=harm_text, ident=f"guardrail-{key}", fmt=fmt)))
    return plots


@bp.get("/flags/<key>/environments/<env>/rollouts/<int:rollout_id>")
def rollout(key, env, rollout_id):
    return _rollout_page(key, env, rollout_id)


def _rollout_page(key: str, env: str, rollout_id: int, *, outcome: Outcome | None = None, status: int = 200):
    item = domain.get(key, env, rollout_id)
    data = domain.to_dict(item)
    series = queries.rollout_checks(item.id)
    page = domain.list_checks(key, env, rollout_id, limit=50, cursor=request.args.get("cursor") or None)
    now = utcnow()
    return render_template("console/rollouts/rollout.html", title=f"Guarded rollout #{rollout_id} of {key}",
                           r=data, flag=flag_domain.get(key), plots=guardrail_plots(data, series),
                           checks=[domain.check_to_dict(c) for c in page.items], next_cursor=page.next_cursor,
                           total_checks=len(series), now=now, until=until, fmt_lift=fmt_lift, fmt_value=fmt_value,
                           outcome=outcome), status


@bp.post("/flags/<key>/environments/<env>/rollouts/<int:rollout_id>/cancel")
def rollout_cancel(key, env, rollout_id):
    outcome = attempt(domain.cancel, actor(), key, env, rollout_id, if_match=version())
    if not outcome.ok:
        return _rollout_page(key, env, rollout_id, outcome=outcome, status=outcome.status)
    flash(f"Cancelled guarded rollout #{rollout_id}: the default rule serves "
          f"{outcome.value.from_variation} again.", "success")
    return redirect(url_for("console.rollout", key=key, env=env, rollout_id=rollout_id), 303)
