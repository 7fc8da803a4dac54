"""Flags: list with status per environment, a flag's page, the targeting editor,
environment comparison and copy, history with diffs and rollback.

In a protected environment (``approvals_required > 0``) the writes that the
API refuses with 409 ``change_request_required`` open a change request
instead: the targeting editor's save, the on/off switch, a copy into it and a
rollback that would change its targeting (docs/process.md). The editor also schedules its changes for a time in an
unprotected environment."""

from __future__ import annotations

import json

from flask import abort, flash, redirect, render_template, request, url_for

from pitcrew.evaluation.operators import NUMBER_OPS, OPS

from ...domain import change_requests as request_domain
from ...domain import environments as environment_domain
from ...domain import flags as domain
from ...domain import holdouts as holdout_domain
from ...domain import lifecycle, protection
from ...domain import rollouts as rollout_domain
from ...domain import schedules as schedule_domain
from ...domain.diff import json_diff
from ...domain.errors import ValidationFailed
from ...domain.versioning import check_version
from ...models.types import utcnow
from ...schemas.flags import FlagPatchSchema, FlagSchema, TargetingSchema
from ...schemas.process import ChangeRequestCreateSchema, ScheduleCreateSchema
from .. import bp, nav, queries
from ..forms import (
    FieldErrors,
    Outcome,
    attempt,
    form_items,
    load,
    number,
    unflatten,
    version,
    when,
)
from ..session import actor

nav.register("Flags", "console.flags", order=10)

OP_CHOICES = sorted(OPS)
SERVE_KINDS = (("variation", "a variation"), ("rollout", "a percentage rollout"))


# Filters of the flag list, in display order. Another filter (e.g. a
# lifecycle stage) is one more entry here plus a keyword that
# ``domain.list_flags`` accepts: ``(name, label, kind)`` with kind "text" or
# a callable returning the select's options.
def _stage_options() -> list[tuple[str, str]]:
    return [(stage, stage.replace("_", " ")) for stage in lifecycle.STAGES]


def _type_options() -> list[tuple[str, str]]:
    return [(t, t) for t in domain.TYPES]


FLAG_FILTERS: list[tuple[str, str, object]] = [
    ("q", "Text", "text"),
    ("tag", "Tag", "text"),
    ("owner", "Owner", "text"),
    ("type", "Type", _type_options),
    ("lifecycle", "Lifecycle", _stage_options),
]


# ---------------------------------------------------------------- describing targeting

def describe_serve(serve: dict | None) -> str:
    serve = serve or {}
    if "variation" in serve:
        return serve["variation"]
    if "rollout" in serve:
        weights = serve["rollout"].get("weights") or []
        return " / ".join(f"{k} {_pct(w)}" for k, w in weights)
    if "experiment" in serve:
        return f"experiment {serve['experiment']}"
    return "?"


def _pct(bps) -> str:
    return f"{bps / 100:g} %" if isinstance(bps, int | float) else str(bps)


def describe(targeting: dict) -> str:
    if not targeting.get("enabled"):
        return f"off: serves {targeting.get('off_variation')}"
    parts = []
    if targeting.get("prerequisites"):
        parts.append(f"{len(targeting['prerequisites'])} prerequisite(s)")
    if targeting.get("targets"):
        parts.append(f"{sum(len(t.get('values') or []) for t in targeting['targets'])} targeted unit(s)")
    if targeting.get("holdout"):
        parts.append(f"holdout {targeting['holdout']}")
    if targeting.get("rules"):
        parts.append(f"{len(targeting['rules'])} rule(s)")
    fall = describe_serve(targeting.get("fallthrough"))
    return (", ".join(parts) + f", then {fall}") if parts else f"serves {fall}"


# ---------------------------------------------------------------- list and create

@bp.get("/flags")
def flags():
    args = {name: (request.args.get(name) or "").strip() or None for name, _, _ in FLAG_FILTERS}
    for name, _, kind in FLAG_FILTERS:  # a select's value must be one of its options
        if callable(kind) and args[name] not in {value for value, _ in kind()}:
            args[name] = None
    archived = request.args.get("archived") == "true"
    page = domain.list_flags(**args, archived=archived, limit=50, cursor=request.args.get("cursor") or None)
    environments = queries.environments()
    evaluations = queries.evaluation_stats([f.key for f in page.items])
    stages = lifecycle.compute(page.items)
    rows = []
    for flag in page.items:
        by_env = {row.environment_id: row.targeting for row in flag.targeting}
        cells = []
        for env in environments:
            targeting = by_env.get(env.id) or domain.default_targeting(flag.variations)
            last, count = evaluations.get((flag.key, env.id), (None, 0))
            cells.append({"env": env, "on": bool(targeting.get("enabled")), "summary": describe(targeting),
                          "last": last, "count": count})
        rows.append({"flag": flag, "cells": cells, "stage": stages[flag.id]})
    query = {k: v for k, v in args.items() if v}
    if archived:
        query["archived"] = "true"
    return render_template("console/flags/list.html", title="Flags", rows=rows, environments=environments,
                           filters=FLAG_FILTERS, args=args, archived=archived, next_cursor=page.next_cursor,
                           query=query)


def _parse_value(kind: str, text: str):
    text = (text or "").strip()
    if kind == "boolean":
        return {"true": True, "false": False}.get(text.lower(), text)
    if kind == "number":
        return number(text)
    if kind == "json":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _show_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _flag_form() -> tuple[dict, str]:
    data = unflatten(form_items())
    kind = data.get("kind") or "boolean"
    variations = [v for v in (data.get("variations") or []) if isinstance(v, dict)]
    parsed = [{"key": (v.get("key") or "").strip(), "value": _parse_value(kind, v.get("value")),
               "description": v.get("description") or ""} for v in variations]
    doc = {"key": (data.get("key") or "").strip(), "name": (data.get("name") or "").strip() or None,
           "description": data.get("description") or "", "kind": kind, "variations": parsed,
           "tags": [t.strip() for t in (data.get("tags") or "").split(",") if t.strip()],
           "owner": (data.get("owner") or "").strip() or None, "temporary": data.get("temporary") == "true",
           "type": data.get("type") or "release"}
    if doc["name"] is None:
        del doc["name"]
    return doc, request.form.get("action") or "save"


@bp.route("/flags/new", methods=["GET", "POST"])
def flag_new():
    doc = {"key": "", "name": "", "description": "", "kind": "boolean", "tags": [], "owner": "",
           "temporary": True, "type": "release", "variations": [{"key": "on", "value": True, "description": ""},
                                              {"key": "off", "value": False, "description": ""}]}
    errors = FieldErrors()
    status = 200
    if request.method == "POST":
        doc, action = _flag_form()
        if action == "add_variation":
            doc["variations"].append({"key": "", "value": "", "description": ""})
        elif action.startswith("remove_variation:"):
            index = int(action.split(":")[1])
            if 0 <= index < len(doc["variations"]):
                doc["variations"].pop(index)
        else:
            outcome = attempt(lambda: domain.create(actor(), load(FlagSchema(), doc)))
            if outcome.ok:
                flash(f"Created flag {outcome.value.key}. It is off in every environment.", "success")
                return redirect(url_for("console.flag", key=outcome.value.key), 303)
            errors, status = outcome.errors, 400
    doc = {**doc, "variations": [{**v, "value": _show_value(v["value"])} for v in doc["variations"]]}
    return render_template("console/flags/new.html", title="New flag", doc=doc, errors=errors,
                           types=domain.TYPES), status


# ---------------------------------------------------------------- a flag

def _flag_page(key: str, *, settings_errors: FieldErrors | None = None, outcome: Outcome | None = None,
               status: int = 200):
    flag = domain.get(key)
    environments = queries.environments()
    by_env = {row.environment_id: row.targeting for row in flag.targeting}
    evaluations = queries.evaluation_stats([flag.key])
    requests = [request_domain.to_dict(r) for r in queries.active_change_requests(flag.id)]
    schedules = [schedule_domain.to_dict(s) for s in
                 schedule_domain.list_for_flag(key, state="pending", limit=100).items]
    rollouts = {r.environment_id: rollout_domain.to_dict(r) for r in
                rollout_domain.list_for_flag(key, state="running", limit=100).items}
    envs = []
    for env in environments:
        targeting = by_env.get(env.id) or domain.default_targeting(flag.variations)
        last, count = evaluations.get((flag.key, env.id), (None, 0))
        envs.append({"env": env, "targeting": targeting, "summary": describe(targeting), "last": last,
                     "count": count, "on": bool(targeting.get("enabled")),
                     "requests": [r for r in requests if r["environment"] == env.key],
                     "schedules": [s for s in schedules if s["environment"] == env.key],
                     "rollout": rollouts.get(env.id)})
    return render_template("console/flags/flag.html", title=f"Flag {flag.key}", flag=flag, envs=envs,
                           settings_errors=settings_errors or FieldErrors(), outcome=outcome,
                           show_value=_show_value, requests=requests, schedules=schedules,
                           describe_patch=describe_patch, stage=lifecycle.of(flag), types=domain.TYPES), status


def describe_patch(patch: dict | None) -> str:
    """A targeting patch in a few words ("turn on", "default rule: on; 2 rule(s)")."""
    if not patch:
        return ""
    parts = []
    for name, value in patch.items():
        if name == "enabled":
            parts.append("turn on" if value else "turn off")
        elif name == "off_variation":
            parts.append(f"when off serve {value}")
        elif name == "fallthrough":
            parts.append(f"default rule: {describe_serve(value)}")
        elif isinstance(value, list):
            parts.append(f"{name}: {len(value)}")
        else:
            parts.append(f"{name}: {value}")
    return "; ".join(parts)


def open_change_request(key: str, env: str, form_version: int, **proposal):
    """Open a change request for a write a protected environment refuses directly.

    ``form_version`` is the flag version the page was rendered from: a stale page is a
    conflict here as it would be for a direct write (a request based on a targeting the
    user never saw would silently undo someone's change)."""
    flag = domain.get(key)
    check_version(flag.version, form_version)
    data = load(ChangeRequestCreateSchema(), {"flag": key, "environment": env, **proposal,
                                             "comment": request.form.get("comment") or ""})
    return request_domain.create(actor(), data)


def requested(change_request, env: str, what: str):
    """Flash the opened request and go to its page."""
    needed = environment_domain.get(env).approvals_required
    flash(f"Opened change request #{change_request.id} ({what}). It needs {needed} approval(s) "
          "before it can be applied.", "success")
    return redirect(url_for("console.change_request", request_id=change_request.id), 303)


@bp.get("/flags/<key>")
def flag(key):
    return _flag_page(key)


@bp.post("/flags/<key>/environments/<env>/toggle")
def flag_toggle(key, env):
    enabled = request.form.get("enabled") == "true"
    expected = version()
    if environment_domain.get(env).approvals_required > 0:
        outcome = attempt(open_change_request, key, env, expected, patch={"enabled": enabled})
        if outcome.ok:
            return requested(outcome.value, env, f"turn {key} {'on' if enabled else 'off'} in {env}")
        return _flag_page(key, outcome=outcome, status=outcome.status)
    outcome = attempt(domain.patch_targeting, actor(), key, env, {"enabled": enabled}, expected)
    if not outcome.ok:
        return _flag_page(key, outcome=outcome, status=409 if outcome.conflict else 400)
    flash(f"{key} is now {'on' if enabled else 'off'} in {env}.", "success")
    return redirect(url_for("console.flag", key=key), 303)


@bp.post("/flags/<key>/settings")
def flag_settings(key):
    data = unflatten(form_items())
    changes = {"name": (data.get("name") or "").strip(), "description": data.get("description") or "",
               "tags": [t.strip() for t in (data.get("tags") or "").split(",") if t.strip()],
               "owner": (data.get("owner") or "").strip() or None, "temporary": data.get("temporary") == "true"}
    if data.get("type"):
        changes["type"] = data["type"]
    outcome = attempt(lambda: domain.update(actor(), key, load(FlagPatchSchema(), changes), version()))
    if not outcome.ok:
        return _flag_page(key, settings_errors=outcome.errors, outcome=outcome,
                          status=409 if outcome.conflict else 400)
    flash("Saved the flag's settings.", "success")
    return redirect(url_for("console.flag", key=key), 303)


@bp.post("/flags/<key>/archive")
def flag_archive(key):
    restore = request.form.get("restore") == "true"
    if restore:
        outcome = attempt(domain.update, actor(), key, {"archived": False}, version())
    else:
        outcome = attempt(domain.archive, actor(), key, version())
    if not outcome.ok:
        return _flag_page(key, outcome=outcome, status=409 if outcome.conflict else 400)
    flash(f"{'Restored' if restore else 'Archived'} {key}.", "success")
    return redirect(url_for("console.flag", key=key), 303)


# ---------------------------------------------------------------- targeting editor

def _values_text(op: str, values) -> str:
    """A condition's values, one per line; for ``in``, numbers and booleans as ``=42`` / ``=true``."""
    if not isinstance(values, list):
        return "" if values is None else str(values)
    out = []
    for v in values:
        if isinstance(v, str):
            out.append(v)
        elif op == "in":
            out.append("=" + json.dumps(v))
        else:
            out.append(json.dumps(v))
    return "\n".join(out)


def _parse_values(op: str, text: str) -> list:
    out = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        if op in NUMBER_OPS:
            out.append(number(line))
        elif op == "in" and line.startswith("="):
            try:
                out.append(json.loads(line[1:]))
            except ValueError:
                out.append(line)
        else:
            out.append(line)
    return out


def _parse_serve(data: dict | None, variation_keys: list[str]) -> dict:
    data = data or {}
    kind = data.get("kind") or "variation"
    if kind == "experiment":
        return {"experiment": data.get("experiment") or ""}
    if kind == "rollout":
        rollout = data.get("rollout") or {}
        weights = []
        for pair in rollout.get("weights") or []:  # fields .N.0 (variation) and .N.1 (percent)
            if not isinstance(pair, list) or len(pair) != 2:
                continue
            share = number(pair[1])
            bps = round(share * 100) if isinstance(share, float | int) else (share if share is not None else 0)
            weights.append([pair[0] or "", bps])
        out = {"weights": weights}
        if (rollout.get("bucket_by") or "").strip():
            out["bucket_by"] = rollout["bucket_by"].strip()
        if rollout.get("salt"):
            out["salt"] = rollout["salt"]
        return {"rollout": out}
    return {"variation": data.get("variation") or ""}


def parse_targeting(data: dict, variation_keys: list[str]) -> dict:
    """The targeting document from the editor's fields (named by JSON path)."""
    rules = []
    for rule in data.get("rules") or []:
        if not isinstance(rule, dict):
            continue
        conditions = []
        for cond in rule.get("conditions") or []:
            if not isinstance(cond, dict):
                continue
            op = cond.get("op") or "in"
            item = {"op": op, "negate": cond.get("negate") == "true"}
            if op != "in_segment":
                item["attribute"] = (cond.get("attribute") or "").strip()
            if op != "exists":
                item["values"] = _parse_values(op, cond.get("values"))
            conditions.append(item)
        rules.append({"id": (rule.get("id") or "").strip(), "description": rule.get("description") or "",
                      "conditions": conditions, "serve": _parse_serve(rule.get("serve"), variation_keys)})
    targets = [{"variation": t.get("variation") or "",
                "values": [v.strip() for v in (t.get("values") or "").splitlines() if v.strip()]}
               for t in data.get("targets") or [] if isinstance(t, dict)]
    prerequisites = [{"flag": (p.get("flag") or "").strip(), "variation": (p.get("variation") or "").strip()}
                     for p in data.get("prerequisites") or [] if isinstance(p, dict)]
    return {"enabled": data.get("enabled") == "true", "off_variation": data.get("off_variation") or "",
            "holdout": (data.get("holdout") or "").strip() or None,
            "prerequisites": prerequisites, "targets": targets, "rules": rules,
            "fallthrough": _parse_serve(data.get("fallthrough"), variation_keys)}


def _new_rule(targeting: dict, keys: list[str]) -> dict:
    taken = {r.get("id") for r in targeting["rules"]}
    n = len(targeting["rules"]) + 1
    while f"rule-{n}" in taken:
        n += 1
    return {"id": f"rule-{n}", "description": "", "conditions": [{"attribute": "", "op": "in", "values": []}],
            "serve": {"variation": keys[0]}}


def apply_action(targeting: dict, action: str, keys: list[str]) -> bool:
    """Structural edits (add/remove/move); True when ``action`` was one of them."""
    name, *args = action.split(":")
    index = [int(a) for a in args if a.isdigit()]
    rules = targeting["rules"]
    if name == "add_rule":
        rules.append(_new_rule(targeting, keys))
    elif name == "remove_rule" and index and index[0] < len(rules):
        rules.pop(index[0])
    elif name == "up_rule" and index and 0 < index[0] < len(rules):
        rules[index[0] - 1], rules[index[0]] = rules[index[0]], rules[index[0] - 1]
    elif name == "add_condition" and index and index[0] < len(rules):
        rules[index[0]]["conditions"].append({"attribute": "", "op": "in", "values": []})
    elif name == "remove_condition" and len(index) == 2 and index[0] < len(rules):
        conditions = rules[index[0]]["conditions"]
        if index[1] < len(conditions):
            conditions.pop(index[1])
    elif name == "add_target":
        targeting["targets"].append({"variation": keys[0], "values": []})
    elif name == "remove_target" and index and index[0] < len(targeting["targets"]):
        targeting["targets"].pop(index[0])
    elif name == "add_prerequisite":
        targeting["prerequisites"].append({"flag": "", "variation": ""})
    elif name == "remove_prerequisite" and index and index[0] < len(targeting["prerequisites"]):
        targeting["prerequisites"].pop(index[0])
    else:
        return False
    return True


@bp.route("/flags/<key>/targeting/<env>", methods=["GET", "POST"])
def targeting_edit(key, env):
    flag, targeting = domain.get_targeting(key, env)
    protected = environment_domain.get(env).approvals_required > 0
    keys = [v["key"] for v in flag.variations]
    errors, outcome, status = FieldErrors(), None, 200
    form_version = flag.version
    if request.method == "POST":
        form_version = version()
        targeting = parse_targeting(unflatten(form_items()), keys)
        action = request.form.get("action") or "save"
        if not apply_action(targeting, action, keys):
            if action == "schedule":
                outcome = attempt(_schedule_changes, key, env, targeting, form_version)
                if outcome.ok:
                    flash(f"Scheduled change {outcome.value.id} of {key} in {env} for "
                          f"{outcome.value.at:%Y-%m-%d %H:%M} UTC.", "success")
                    return redirect(url_for("console.flag_schedules", key=key), 303)
                errors = outcome.without_prefix("patch")
            elif protected:
                outcome = attempt(open_change_request, key, env, form_version, targeting=targeting)
                if outcome.ok:
                    return requested(outcome.value, env, f"new targeting of {key} in {env}")
                errors = outcome.without_prefix("targeting")
            else:
                outcome = attempt(lambda: domain.put_targeting(actor(), key, env, load(TargetingSchema(), targeting),
                                                               form_version))
                if outcome.ok:
                    flash(f"Saved targeting of {key} in {env} (version {outcome.value[0].version}).", "success")
                    return redirect(url_for("console.flag", key=key), 303)
                errors = outcome.errors
            status = outcome.status
    return render_editor(flag, env, targeting, errors=errors, outcome=outcome, form_version=form_version,
                         status=status)


def render_editor(flag, env: str, targeting: dict, *, errors: FieldErrors, outcome: Outcome | None,
                  form_version: int, status: int = 200, change_request: dict | None = None):
    """The targeting editor: of the flag's live targeting, or of a change request's proposal
    (``change_request``, saved as an edit of the request)."""
    environment = environment_domain.get(env)
    keys = [v["key"] for v in flag.variations]
    segments = _segment_keys()
    holdouts = [(h.key, f"{h.key} ({h.percent:g} % held out)")
                for h in holdout_domain.list_holdouts(environment=env, limit=500).items]
    other_flags = [f.key for f in domain.list_flags(limit=500).items if f.key != flag.key]
    pending = [r for r in (request_domain.to_dict(r) for r in queries.active_change_requests(flag.id))
               if r["environment"] == env]
    title = (f"Change request #{change_request['id']}: targeting of {flag.key} in {env}" if change_request
             else f"Targeting of {flag.key} in {env}")
    return render_template("console/flags/targeting.html", title=title, flag=flag,
                           env=env, t=targeting, keys=keys, errors=errors, outcome=outcome, version=form_version,
                           ops=OP_CHOICES, serve_kinds=SERVE_KINDS, values_text=_values_text, segments=segments,
                           other_flags=other_flags, holdouts=holdouts, pct=_pct, environment=environment,
                           protected=environment.approvals_required > 0, pending=pending,
                           change_request=change_request, now=utcnow(),
                           at=request.form.get("at", "") if request.method == "POST" else ""), status


def _schedule_changes(key: str, env: str, targeting: dict, form_version: int):
    """Schedule the editor's changes: the top-level fields that differ from the live targeting
    become the scheduled patch (fields left as they are keep whatever is live when it is due)."""
    flag, live = domain.get_targeting(key, env)
    check_version(flag.version, form_version)
    wanted = load(TargetingSchema(), targeting)
    patch = {name: value for name, value in wanted.items() if live.get(name) != value}
    if not patch:
        raise ValidationFailed("Nothing to schedule.", {"at": [
            "The targeting above is the same as the live one: change something, then schedule it."]})
    data = load(ScheduleCreateSchema(), {"at": when(), "patch": patch, "comment": request.form.get("comment") or ""})
    return schedule_domain.create(actor(), key, env, data)


def _segment_keys() -> list[str]:
    from ...domain import segments as segment_domain

    return [s.key for s in segment_domain.list_segments(limit=500).items]


# ---------------------------------------------------------------- compare and copy

@bp.get("/flags/<key>/compare")
def flag_compare(key):
    flag = domain.get(key)
    environments = [e.key for e in queries.environments()]
    if len(environments) < 2:
        abort(404)
    left = request.args.get("left") or environments[-2]
    right = request.args.get("right") or environments[-1]
    if left not in environments or right not in environments:
        abort(404)
    snapshot = domain.snapshot(flag)["environments"]
    a, b = snapshot[left], snapshot[right]
    return render_template("console/flags/compare.html", title=f"Compare {key}", flag=flag, left=left, right=right,
                           a=a, b=b, environments=environments, diff=json_diff(a, b), describe=describe,
                           describe_serve=describe_serve, dumps=lambda v: json.dumps(v, indent=2))


@bp.post("/flags/<key>/copy")
def flag_copy(key):
    source, target = request.form.get("source") or "", request.form.get("target") or ""
    expected = version()
    if source == target:
        flash("Pick two different environments.", "error")
        return redirect(url_for("console.flag_compare", key=key, left=source, right=target), 303)
    _, targeting = domain.get_targeting(key, source)
    if environment_domain.get(target).approvals_required > 0:
        outcome = attempt(open_change_request, key, target, expected, targeting=targeting)
        if outcome.ok:
            return requested(outcome.value, target, f"copy the targeting of {key} from {source} to {target}")
        return render_template("console/error.html", title="Not copied", message=outcome.error.message,
                               details=outcome.error.details), outcome.status
    outcome = attempt(domain.put_targeting, actor(), key, target, targeting, expected, action="copy_targeting")
    if not outcome.ok:
        flag = domain.get(key)
        return render_template("console/error.html", title="Not copied", message=outcome.error.message,
                               details=outcome.error.details, flag=flag), 409 if outcome.conflict else 400
    flash(f"Copied the targeting of {key} from {source} to {target}.", "success")
    return redirect(url_for("console.flag_compare", key=key, left=source, right=target), 303)


# ---------------------------------------------------------------- history and rollback

@bp.get("/flags/<key>/history")
def flag_history(key):
    flag = domain.get(key)
    page = domain.history(key, limit=30, cursor=request.args.get("cursor") or None)
    protected = {v["version"]: [(env.key, env.approvals_required)
                                for env, _ in protection.rollback_changes(flag, v["version"])]
                 for v in page.items if v["version"] != flag.version}
    return render_template("console/flags/history.html", title=f"History of {key}", flag=flag, versions=page.items,
                           next_cursor=page.next_cursor, dumps=json.dumps, protected=protected)


def _propose_rollback(key: str, target: int, expected: int):
    """Change requests restoring the protected environments' targeting of version ``target``
    (docs/process.md), and what else of that version they leave as it is."""
    flag = domain.get(key)
    check_version(flag.version, expected)
    leftovers = request_domain.rollback_leftovers(flag, target)
    return request_domain.propose_rollback(actor(), key, target), leftovers


@bp.post("/flags/<key>/rollback")
def flag_rollback(key):
    target = number(request.form.get("target"), integer=True)
    if not isinstance(target, int):
        abort(400)
    if protection.rollback_changes(domain.get(key), target):
        outcome = attempt(_propose_rollback, key, target, version())
        if not outcome.ok:
            return render_template("console/error.html", title="Not proposed", message=outcome.error.message,
                                   details=outcome.error.details), outcome.status
        requests, leftovers = outcome.value
        names = {env.id: env.key for env in queries.environments()}
        opened = ", ".join(f"#{r.id} ({names[r.environment_id]})" for r in requests)
        note = (f" Not part of {'it' if len(requests) == 1 else 'them'}: {', '.join(leftovers)}; once applied, roll "
                f"back to version {target} again to restore those." if leftovers else "")
        flash(f"Opened change request{'s' if len(requests) > 1 else ''} {opened} restoring the targeting of "
              f"version {target}; approvals are needed before it changes.{note}", "success")
        if len(requests) == 1:
            return redirect(url_for("console.change_request", request_id=requests[0].id), 303)
        return redirect(url_for("console.change_requests", flag=key, state="open"), 303)
    outcome = attempt(domain.rollback, actor(), key, target, version())
    if not outcome.ok:
        return render_template("console/error.html", title="Not rolled back", message=outcome.error.message,
                               details=outcome.error.details), 409 if outcome.conflict else 400
    flash(f"Rolled {key} back to the content of version {target} (now version {outcome.value.version}).", "success")
    return redirect(url_for("console.flag_history", key=key), 303)
