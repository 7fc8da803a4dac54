"""Protected environments (approvals_required > 0) on the paths that had no approved route:
flags as code opening change requests, experiment start/stop/conclude as change requests,
rollbacks proposed as change requests, and the review's revision check in the domain.

Through the API on the real database (SQLite and PostgreSQL), with one flow per item
through a real gunicorn server (LiveServer)."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from service.extensions import db
from service.flags_as_code.export import export_document
from service.models import (
    AuditEntry,
    ChangeRequest,
    ChangeRequestReview,
    Flag,
    FlagVersion,
    Metric,
)
from service.worker import Worker

from .support import ApiClient, LiveClient, at_once, make_token

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
FLAG = "/api/v1/flags/checkout"
PROD = f"{FLAG}/environments/production"
CR = "/api/v1/change-requests"


def ok(response, status=200):
    assert response.status_code == status, response.json
    return response.json


def targeting(**overrides):
    body = {"enabled": True, "off_variation": "off", "prerequisites": [], "targets": [], "rules": [],
            "fallthrough": {"variation": "on"}}
    body.update(overrides)
    return body


def counts() -> dict:
    db.session.expire_all()
    models = (AuditEntry, ChangeRequest, ChangeRequestReview, Flag, FlagVersion, Metric)
    return {m.__name__: db.session.scalar(sa.select(sa.func.count()).select_from(m)) for m in models}


def audit(resource_type: str, action: str | None = None) -> list[AuditEntry]:
    db.session.expire_all()
    stmt = sa.select(AuditEntry).where(AuditEntry.resource_type == resource_type)
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    return list(db.session.scalars(stmt.order_by(AuditEntry.id)))


@pytest.fixture
def rita(app):
    return ApiClient(app.test_client(), make_token("editor", "rita"))


@pytest.fixture
def ravi(app):
    return ApiClient(app.test_client(), make_token("editor", "ravi"))


def protect(admin, env="production", approvals=2):
    ok(admin.patch(f"/api/v1/environments/{env}", json={"approvals_required": approvals}))


def approve(request_id, *reviewers, revision=None):
    for reviewer in reviewers:
        body = {"decision": "approve"} | ({"revision": revision} if revision else {})
        ok(reviewer.post(f"{CR}/{request_id}/reviews", json=body), 201)


# ================================================================ 1. flags as code

def flags_state(editor):
    """checkout (on, fallthrough off) and layout (string, off) with production targeting."""
    ok(editor.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": BOOL}), 201)
    ok(editor.put(PROD, json=targeting(fallthrough={"variation": "off"})))
    ok(editor.post("/api/v1/flags", json={"key": "layout", "kind": "string", "variations": [
        {"key": "classic", "value": "classic"}, {"key": "compact", "value": "compact"},
        {"key": "wizard", "value": "wizard"}]}), 201)
    ok(editor.post("/api/v1/metrics", json={"key": "buys", "event": "buy", "type": "conversion"}), 201)


def edited_document():
    """Production's document with: checkout's targeting changed, layout's description and targeting
    changed, a new flag with targeting, a new metric."""
    document = export_document("production")
    flags = {f["key"]: f for f in document["flags"]}
    flags["checkout"]["targeting"]["fallthrough"] = {"variation": "on"}
    flags["layout"]["description"] = "Which checkout layout"
    flags["layout"]["targeting"].update(enabled=True, fallthrough={"variation": "compact"})
    document["flags"].append({"key": "banner", "kind": "boolean", "variations": BOOL, "targeting": {
        "enabled": True, "off_variation": "off", "fallthrough": {"variation": "on"}}})
    document["metrics"].append({"key": "refunds", "event": "refund", "type": "count"})
    return document


def test_flags_as_code_in_a_protected_environment_opens_one_request_per_flag(admin, editor, rita, ravi):
    flags_state(editor)
    protect(admin)
    document = edited_document()
    live_before = {key: editor.get(f"/api/v1/flags/{key}/environments/production").json
                   for key in ("checkout", "layout")}

    # A dry run lists the requests it would open and changes nothing.
    before = counts()
    preview = ok(editor.post("/api/v1/import?dry_run=true", json=document))
    assert preview["summary"] == {"created": 2, "changed": 2, "unchanged": 1}
    assert [(p["flag"], p["status"], p["id"], p["path"]) for p in preview["change_requests"]] == [
        ("banner", "opened", None, "flags.2.targeting"), ("checkout", "opened", None, "flags.0.targeting"),
        ("layout", "opened", None, "flags.1.targeting")]
    assert counts() == before

    result = ok(editor.post("/api/v1/import", json=document, headers={"X-Pitcrew-Comment": "from git"}))
    assert result["dry_run"] is False and [p["status"] for p in result["change_requests"]] == ["opened"] * 3
    ids = {p["flag"]: p["id"] for p in result["change_requests"]}
    # Everything but the targeting is written directly...
    assert editor.get("/api/v1/metrics/refunds").status_code == 200
    assert editor.get("/api/v1/flags/layout").json["description"] == "Which checkout layout"
    assert editor.get("/api/v1/flags/banner/environments/production").json["enabled"] is False  # created off
    # ...the targeting waits in change requests, based on each flag's version after those writes.
    for key in ("checkout", "layout"):
        assert editor.get(f"/api/v1/flags/{key}/environments/production").json == live_before[key]
    for key, rid in ids.items():
        request = ok(editor.get(f"{CR}/{rid}"))
        assert (request["flag"], request["environment"], request["author"], request["state"]) == (
            key, "production", "eddie", "open")
        assert request["comment"] == "from git" and request["conflict"] is False
        assert request["base_version"] == editor.get(f"/api/v1/flags/{key}").json["version"]
        wanted = next(f for f in document["flags"] if f["key"] == key)["targeting"]
        assert request["proposed"]["fallthrough"] == wanted["fallthrough"]
    assert [e.actor for e in audit("change_request", "create")] == ["eddie"] * 3

    # The same document again: nothing new (no request, no version, no audit entry), each reported pending.
    approve(ids["checkout"], rita)
    before = counts()
    again = ok(editor.post("/api/v1/import", json=document))
    assert [(p["flag"], p["status"], p["id"]) for p in again["change_requests"]] == [
        ("banner", "pending", ids["banner"]), ("checkout", "pending", ids["checkout"]),
        ("layout", "pending", ids["layout"])]
    assert counts() == before
    assert ok(editor.get(f"{CR}/{ids['checkout']}"))["approvals"] == 1  # an approval survives a no-op apply

    # A changed document refreshes the author's open request: a new revision, approvals start again.
    document["flags"][0]["targeting"]["targets"] = [{"variation": "on", "values": ["qa-1"]}]
    refreshed = ok(editor.post("/api/v1/import", json=document))
    checkout = next(p for p in refreshed["change_requests"] if p["flag"] == "checkout")
    assert (checkout["status"], checkout["id"], checkout["revision"]) == ("updated", ids["checkout"], 2)
    request = ok(editor.get(f"{CR}/{ids['checkout']}"))
    assert request["approvals"] == 0 and request["proposed"]["targets"] == [{"variation": "on", "values": ["qa-1"]}]
    assert counts()["ChangeRequest"] == 3

    # Another author applying the same document gets requests of their own.
    theirs = ok(rita.post("/api/v1/import", json=document))
    assert [p["status"] for p in theirs["change_requests"]] == ["opened"] * 3
    for p in theirs["change_requests"]:
        ok(rita.post(f"{CR}/{p['id']}/cancel"))

    # Approved and applied, the environment matches the document: the next apply has nothing to propose.
    for rid in ids.values():
        approve(rid, rita, ravi)
        ok(editor.post(f"{CR}/{rid}/apply"))
    final = ok(editor.post("/api/v1/import", json=document))
    assert final["change_requests"] == [] and final["summary"]["changed"] == 0
    assert export_document("production") == ok(editor.get("/api/v1/export?environment=production&format=json"))
    exported = {f["key"]: f for f in export_document("production")["flags"]}
    assert exported["checkout"]["targeting"] == document["flags"][0]["targeting"] | {
        "prerequisites": [], "rules": []}


def test_a_change_to_the_flag_re_bases_its_pending_request(admin, editor, rita):
    flags_state(editor)
    protect(admin, approvals=1)
    document = edited_document()
    rid = ok(editor.post("/api/v1/import", json=document))["change_requests"][1]["id"]
    approve(rid, rita)
    # The flag changes elsewhere (staging): the request would conflict; the next apply re-bases it.
    ok(editor.patch("/api/v1/flags/checkout/environments/staging", json={"enabled": True}))
    assert ok(editor.get(f"{CR}/{rid}"))["conflict"] is True
    again = ok(editor.post("/api/v1/import", json=document))
    assert next(p for p in again["change_requests"] if p["flag"] == "checkout")["status"] == "updated"
    request = ok(editor.get(f"{CR}/{rid}"))
    assert request["conflict"] is False and request["approvals"] == 0 and request["state"] == "open"
    # A document that goes back to the live targeting leaves the author's request alone, with a warning.
    document = export_document("production")
    result = ok(editor.post("/api/v1/import", json=document))
    assert result["change_requests"] == []
    index = [f["key"] for f in document["flags"]].index("checkout")
    assert [w["path"] for w in result["warnings"] if f"#{rid}" in w["message"]] == [f"flags.{index}.targeting"]
    assert ok(editor.get(f"{CR}/{rid}"))["state"] == "open"


def test_problems_in_a_protected_apply_are_reported_at_document_paths(admin, editor):
    flags_state(editor)
    protect(admin)
    document = edited_document()
    document["flags"][0]["targeting"]["fallthrough"] = {"variation": "sideways"}
    before = counts()
    response = editor.post("/api/v1/import", json=document)
    assert response.status_code == 400, response.json
    assert set(response.json["error"]["details"]) == {"flags.0.targeting.fallthrough.variation"}
    assert counts() == before  # the metric, the description, the other requests: all rolled back


def test_a_renamed_variation_stays_until_the_request_is_applied(admin, editor, rita):
    flags_state(editor)
    ok(editor.put("/api/v1/flags/layout/environments/production", json={
        "enabled": True, "off_variation": "classic", "fallthrough": {"variation": "wizard"}}))
    protect(admin, approvals=1)
    document = export_document("production")
    layout = next(f for f in document["flags"] if f["key"] == "layout")
    layout["variations"][2] = {"key": "guided", "value": "guided", "description": ""}  # wizard -> guided
    layout["targeting"]["fallthrough"] = {"variation": "guided"}
    result = ok(editor.post("/api/v1/import", json=document))
    [proposal] = result["change_requests"]
    assert [v["key"] for v in editor.get("/api/v1/flags/layout").json["variations"]] == [
        "classic", "wizard", "compact", "guided"]
    assert any(w["path"] == "flags.1.variations" and "'wizard'" in w["message"] for w in result["warnings"])
    before = counts()
    assert ok(editor.post("/api/v1/import", json=document))["change_requests"][0]["status"] == "pending"
    assert counts() == before
    approve(proposal["id"], rita)
    ok(editor.post(f"{CR}/{proposal['id']}/apply"))
    final = ok(editor.post("/api/v1/import", json=document))
    assert final["change_requests"] == [] and final["warnings"] == []
    assert [v["key"] for v in editor.get("/api/v1/flags/layout").json["variations"]] == [
        "classic", "compact", "guided"]
    assert ok(editor.post("/api/v1/import?dry_run=true", json=document))["summary"]["changed"] == 0


def test_the_cli_reports_the_requests(app, admin, editor, tmp_path):
    import json

    flags_state(editor)
    protect(admin)
    path = tmp_path / "production.json"
    path.write_text(json.dumps(edited_document()))
    runner = app.test_cli_runner()
    dry = runner.invoke(args=["apply", str(path), "--dry-run"])
    assert dry.exit_code == 0 and "change request would open: targeting of checkout (open)" in dry.output
    applied = runner.invoke(args=["apply", str(path), "--actor", "ci"])
    assert applied.exit_code == 0, applied.output
    assert re.search(r"change request #\d+ opened: targeting of banner \(open\)", applied.output), applied.output
    assert db.session.scalars(sa.select(ChangeRequest.author).distinct()).all() == ["ci"]
    assert "pending: targeting of layout" in runner.invoke(args=["apply", str(path), "--actor", "ci"]).output


def test_flags_as_code_through_gunicorn_in_a_protected_environment(live_server, admin, editor):
    flags_state(editor)
    protect(admin)
    client = LiveClient(live_server.url, make_token("editor", "gina"))
    document = edited_document()
    response = client.post("/api/v1/import", json=document)
    assert response.status == 200, response.json
    ids = [p["id"] for p in response.json["change_requests"]]
    assert len(ids) == 3 and all(ids)
    requests = client.get(f"{CR}?state=open").json["items"]
    assert sorted(r["id"] for r in requests) == sorted(ids) and {r["author"] for r in requests} == {"gina"}
    # Two applies of the same document at once open no duplicate.
    statuses = at_once(*[lambda: client.post("/api/v1/import", json=document).status] * 2)
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ChangeRequest)) == 3


def test_apply_raises_the_domains_error_class():
    from service.domain import protection
    from service.flags_as_code import apply as apply_module

    assert apply_module.ChangeRequestRequired is protection.ChangeRequestRequired


# ================================================================ 2. experiment actions

@pytest.fixture
def experiment(admin, editor):
    """A draft experiment 'exp' on checkout in production, production needing 2 approvals."""
    ok(editor.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": BOOL}), 201)
    ok(editor.put(PROD, json=targeting(fallthrough={"variation": "off"})))
    ok(editor.post("/api/v1/metrics", json={"key": "buys", "event": "buy", "type": "conversion"}), 201)
    ok(editor.post("/api/v1/experiments", json={"key": "exp", "flag": "checkout", "environment": "production",
                                                "primary_metric": "buys"}), 201)
    protect(admin)
    return "/api/v1/experiments/exp"


def test_experiment_start_stop_conclude_through_change_requests(experiment, editor, rita, ravi, admin):
    assert editor.post(f"{experiment}/start").json["error"]["code"] == "change_request_required"
    version = editor.get(experiment).json["version"]
    request = ok(editor.post(CR, json={"experiment": {"key": "exp", "action": "start"}, "comment": "Go"}), 201)
    assert (request["flag"], request["environment"], request["state"]) == ("checkout", "production", "open")
    assert request["experiment"] == {"key": "exp", "action": "start"}
    assert request["base_version"] == request["experiment_version"] == version
    assert request["diff"] == [{"path": "experiment.status", "op": "replace", "before": "draft", "after": "running"}]
    assert request["targeting"] is None and request["patch"] is None and request["rollout"] is None
    assert ok(editor.get(f"{CR}?experiment=exp"))["items"][0]["id"] == request["id"]
    assert editor.post(f"{CR}/{request['id']}/apply").status_code == 409  # no approvals yet
    approve(request["id"], rita, ravi)
    applied = ok(editor.post(f"{CR}/{request['id']}/apply"))
    assert applied["state"] == "applied" and applied["applied_version"] == version + 1
    started = editor.get(experiment).json
    assert started["status"] == "running" and started["started_at"] is not None
    entry = audit("experiment", "start")[-1]
    assert (entry.actor, entry.comment) == ("eddie", f"Change request {request['id']}")

    # A stop request whose experiment moves on conflicts; re-based, an admin applies it with a bypass.
    stop = ok(editor.post(CR, json={"experiment": {"key": "exp", "action": "stop"}}), 201)
    ok(editor.patch(experiment, json={"name": "Renamed"}))  # not a serving change: allowed directly
    assert ok(editor.get(f"{CR}/{stop['id']}"))["conflict"] is True
    approve(stop["id"], rita, ravi)
    stale = editor.post(f"{CR}/{stop['id']}/apply")
    assert stale.status_code == 409 and "base_version" in stale.json["error"]["details"]
    assert editor.get(experiment).json["status"] == "running"
    rebased = ok(editor.patch(f"{CR}/{stop['id']}", json={"comment": "re-based"}))
    assert rebased["conflict"] is False and rebased["approvals"] == 0
    assert editor.post(f"{CR}/{stop['id']}/apply", json={"bypass": True}).status_code == 403
    ok(admin.post(f"{CR}/{stop['id']}/apply", json={"bypass": True}))
    assert editor.get(experiment).json["status"] == "stopped"
    assert audit("change_request", "apply_bypass")[-1].after["experiment"] == {"key": "exp", "action": "stop"}
    assert "(bypass)" in audit("experiment", "stop")[-1].comment

    # Conclude: the decision is checked when the request is opened.
    for body, path in (({"key": "exp", "action": "conclude"}, "experiment.decision"),
                       ({"key": "exp", "action": "conclude", "decision": {"outcome": "ship"}},
                        "experiment.decision.variation"),
                       ({"key": "exp", "action": "conclude", "decision": {"outcome": "ship", "variation": "x"}},
                        "experiment.decision.variation"),
                       ({"key": "exp", "action": "stop", "decision": {"outcome": "iterate"}}, "experiment.decision"),
                       ({"key": "exp", "action": "start"}, "experiment.status")):
        response = editor.post(CR, json={"experiment": body})
        assert response.status_code in (400, 409) and path in response.json["error"]["details"], (body, response.json)
    conclude = ok(editor.post(CR, json={"experiment": {
        "key": "exp", "action": "conclude", "decision": {"outcome": "ship", "variation": "on", "summary": "Won"},
        "released_variation": "on"}}), 201)
    assert {d["path"] for d in conclude["diff"]} == {"experiment.status", "experiment.decision",
                                                     "experiment.released_variation"}
    approve(conclude["id"], rita, ravi)
    ok(editor.post(f"{CR}/{conclude['id']}/apply"))
    done = editor.get(experiment).json
    assert done["status"] == "concluded" and done["released_variation"] == "on"
    assert done["decision"] == {"outcome": "ship", "variation": "on", "summary": "Won"}
    assert [e.action for e in audit("change_request")].count("apply") == 2


def test_experiment_requests_are_checked_like_the_direct_route(experiment, editor, admin, rita, ravi):
    # Flag and environment come from the experiment; naming others is an error.
    wrong = editor.post(CR, json={"experiment": {"key": "exp", "action": "start"}, "environment": "staging"})
    assert wrong.status_code == 400 and "environment" in wrong.json["error"]["details"]
    missing = editor.post(CR, json={"experiment": {"key": "nope", "action": "start"}})
    assert missing.status_code == 400 and "experiment.key" in missing.json["error"]["details"]
    both = editor.post(CR, json={"experiment": {"key": "exp", "action": "start"}, "patch": {"enabled": True}})
    assert both.status_code == 400
    assert editor.post(CR, json={"patch": {"enabled": True}}).json["error"]["details"].keys() >= {
        "flag", "environment"}
    # An experiment that cannot start (no primary metric) cannot be proposed to start.
    ok(editor.patch("/api/v1/experiments/exp", json={"primary_metric": None}))
    no_metric = editor.post(CR, json={"experiment": {"key": "exp", "action": "start"}})
    assert no_metric.status_code == 400 and "experiment.primary_metric" in no_metric.json["error"]["details"]
    ok(editor.patch("/api/v1/experiments/exp", json={"primary_metric": "buys"}))
    rid = ok(editor.post(CR, json={"experiment": {"key": "exp", "action": "start"}}), 201)["id"]
    # Its kind and its experiment are fixed.
    assert editor.patch(f"{CR}/{rid}", json={"patch": {"enabled": True}}).status_code == 400
    assert editor.patch(f"{CR}/{rid}", json={"experiment": {"key": "other", "action": "start"}}).status_code == 400
    # Scheduled: the worker starts it at the time.
    approve(rid, rita, ravi)
    at = datetime.now(UTC) + timedelta(hours=1)
    assert ok(editor.post(f"{CR}/{rid}/apply", json={"at": at.isoformat()}))["state"] == "scheduled"
    schedule = editor.get(f"{PROD}/schedules").json["items"][0]
    assert schedule["kind"] == "change_request" and schedule["change_request"] == rid
    assert Worker(clock=lambda: at + timedelta(seconds=1)).run_once() == 1
    db.session.expire_all()
    assert editor.get("/api/v1/experiments/exp").json["status"] == "running"
    assert ok(editor.get(f"{CR}/{rid}"))["applied_by"] == "worker"
    # A request for a deleted experiment cannot be applied.
    ok(editor.post("/api/v1/experiments", json={"key": "exp2", "flag": "checkout", "environment": "production",
                                                "primary_metric": "buys"}), 201)
    rid = ok(editor.post(CR, json={"experiment": {"key": "exp2", "action": "start"}}), 201)["id"]
    assert editor.delete("/api/v1/experiments/exp2").status_code == 204  # a draft serves nothing: deleting it is not guarded
    request = ok(editor.get(f"{CR}/{rid}"))
    assert request["conflict"] is True and request["experiment_version"] is None
    refused = admin.post(f"{CR}/{rid}/apply", json={"bypass": True})
    assert refused.status_code == 409 and "deleted" in refused.json["error"]["message"]


def test_the_experiment_of_a_running_rollout_is_not_proposable(admin, editor):
    ok(editor.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": BOOL}), 201)
    ok(editor.put(f"{FLAG}/environments/staging", json=targeting(fallthrough={"variation": "off"})))
    rollout = ok(editor.post(f"{FLAG}/environments/staging/rollouts", json={
        "variation": "on", "from_variation": "off",
        "steps": [{"percent": 10, "hold_hours": 1}, {"percent": 100, "hold_hours": 0}]}), 201)
    response = editor.post(CR, json={"experiment": {"key": rollout["experiment"], "action": "stop"}})
    assert response.status_code == 409 and "rollout" in response.json["error"]["message"]


def test_experiment_actions_through_gunicorn(live_server, experiment, editor):
    eddie, rita_, ravi_ = (LiveClient(live_server.url, make_token("editor", n)) for n in ("eddie2", "rita", "ravi"))
    assert eddie.post("/api/v1/experiments/exp/start").status == 409
    opened = eddie.post(CR, json={"experiment": {"key": "exp", "action": "start"}})
    assert opened.status == 201, opened.json
    rid = opened.json["id"]
    for reviewer in (rita_, ravi_):
        assert reviewer.post(f"{CR}/{rid}/reviews", json={"decision": "approve", "revision": 1}).status == 201
    applied = eddie.post(f"{CR}/{rid}/apply", json={})
    assert applied.status == 200 and applied.json["state"] == "applied", applied.json
    assert eddie.get("/api/v1/experiments/exp").json["status"] == "running"


# ================================================================ 3. rollbacks

@pytest.fixture
def history(admin, editor):
    """checkout: v1 created, v2 production on (fallthrough off), v3 staging on, v4 renamed,
    v5 production serving on; production then needs 2 approvals."""
    ok(editor.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": BOOL}), 201)
    ok(editor.put(PROD, json=targeting(fallthrough={"variation": "off"})))
    ok(editor.put(f"{FLAG}/environments/staging", json=targeting()))
    ok(editor.patch(FLAG, json={"name": "Checkout v2"}))
    ok(editor.patch(PROD, json={"fallthrough": {"variation": "on"}, "targets": [
        {"variation": "off", "values": ["u-1"]}]}))
    protect(admin)
    return editor.get(FLAG).json


def test_a_rollback_in_a_protected_environment_is_proposed_as_a_change_request(history, editor, rita, ravi):
    assert history["version"] == 5
    refused = editor.post(f"{FLAG}/rollback", json={"version": 1})
    assert refused.status_code == 409 and "rollback: {version: 1}" in refused.json["error"]["message"]
    before = counts()
    request = ok(editor.post(CR, json={"flag": "checkout", "environment": "production", "rollback": {"version": 2}}),
                 201)
    assert request["rollback_version"] == 2 and request["comment"] == "Rollback of production to version 2"
    version_2 = editor.get(f"{FLAG}/history").json["items"][-2]["snapshot"]["environments"]["production"]
    assert request["targeting"] == version_2 and request["proposed"] == version_2
    assert {d["path"] for d in request["diff"]} == {"fallthrough.variation", "targets"}
    assert counts()["FlagVersion"] == before["FlagVersion"]  # nothing live changed
    approve(request["id"], rita, ravi)
    applied = ok(editor.post(f"{CR}/{request['id']}/apply"))
    flag = editor.get(FLAG).json
    # Only production's targeting was restored: the name (v4) and staging (v3) are as they were.
    assert flag["environments"]["production"] == version_2 and applied["applied_version"] == 6
    assert flag["name"] == "Checkout v2" and flag["environments"]["staging"]["enabled"] is True
    # Production now matches version 2: a plain rollback to version 2 passes the guard and restores
    # the rest (the name; staging was off then).
    rolled = ok(editor.post(f"{FLAG}/rollback", json={"version": 2}))
    assert rolled["name"] == "checkout" and rolled["environments"]["staging"]["enabled"] is False
    assert rolled["environments"]["production"] == version_2


def test_rollback_proposals_that_cannot_be_made(history, editor, admin):
    cases = [
        ({"rollback": {"version": 99}}, "rollback.version", "no version 99"),
        ({"rollback": {"version": 5}}, "rollback.version", "is the live one"),
        ({"rollback": {"version": 2}, "targeting": targeting()}, "rollback", "exactly one"),
    ]
    before = counts()
    for body, path, words in cases:
        response = editor.post(CR, json={"flag": "checkout", "environment": "production", **body})
        assert response.status_code == 400 and path in response.json["error"]["details"], response.json
        text = response.json["error"]["message"] + str(response.json["error"]["details"])
        assert words in text, text
    assert counts() == before
    # An environment created after the version has nothing to restore.
    ok(admin.post("/api/v1/environments", json={"key": "eu"}), 201)
    response = editor.post(CR, json={"flag": "checkout", "environment": "eu", "rollback": {"version": 2}})
    assert response.status_code == 400 and "created later" in str(response.json["error"]["details"])
    # A version whose targeting no longer validates (a deleted segment) is refused when proposed.
    ok(admin.patch("/api/v1/environments/production", json={"approvals_required": 0}))
    ok(editor.post("/api/v1/segments", json={"key": "beta", "included": ["u-2"]}), 201)
    ok(editor.patch(PROD, json={"rules": [{"id": "b", "conditions": [{"op": "in_segment", "values": ["beta"]}],
                                           "serve": {"variation": "on"}}]}))
    beta_version = editor.get(FLAG).json["version"]
    ok(editor.patch(PROD, json={"rules": []}))
    assert editor.delete("/api/v1/segments/beta").status_code == 204
    protect(admin)
    response = editor.post(CR, json={"flag": "checkout", "environment": "production",
                                     "rollback": {"version": beta_version}})
    assert response.status_code == 400, response.json
    assert "rollback.targeting.rules.0.conditions.0.values" in response.json["error"]["details"]
    assert f"version {beta_version} can no longer be restored" in response.json["error"]["message"]


def test_a_rollback_proposal_through_gunicorn(live_server, history, editor):
    gina, rita_, ravi_ = (LiveClient(live_server.url, make_token("editor", n)) for n in ("gina", "rita", "ravi"))
    # Edited, a rollback proposal becomes a targeting of its own.
    other = gina.post(CR, json={"flag": "checkout", "environment": "production", "rollback": {"version": 1}})
    assert other.status == 201 and other.json["rollback_version"] == 1, other.json
    edited = gina.patch(f"{CR}/{other.json['id']}", json={"targeting": targeting()})
    assert edited.status == 200 and edited.json["rollback_version"] is None and edited.json["revision"] == 2
    assert gina.post(f"{CR}/{other.json['id']}/cancel").status == 200
    # Proposed, reviewed and applied over HTTP.
    response = gina.post(CR, json={"flag": "checkout", "environment": "production", "rollback": {"version": 2}})
    assert response.status == 201, response.json
    rid = response.json["id"]
    assert response.json["rollback_version"] == 2 and response.json["state"] == "open"
    for reviewer in (rita_, ravi_):
        assert reviewer.post(f"{CR}/{rid}/reviews", json={"decision": "approve", "revision": 1}).status == 201
    applied = gina.post(f"{CR}/{rid}/apply", json={})
    assert applied.status == 200 and applied.json["state"] == "applied", applied.json
    flag = gina.get(FLAG).json
    assert flag["environments"]["production"]["fallthrough"] == {"variation": "off"}
    assert flag["name"] == "Checkout v2"  # the rest of version 2 is a plain rollback away
    assert gina.post(f"{FLAG}/rollback", json={"version": 2}).status == 200
    assert gina.get(FLAG).json["name"] == "checkout"


# ================================================================ 4. the review's revision

@pytest.fixture
def open_request(admin, editor):
    ok(editor.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": BOOL}), 201)
    protect(admin)
    return ok(editor.post(CR, json={"flag": "checkout", "environment": "production", "patch": {"enabled": True}}),
              201)["id"]


def test_a_review_of_a_revision_the_reviewer_did_not_see_is_refused(open_request, editor, rita):
    rid = open_request
    ok(editor.patch(f"{CR}/{rid}", json={"comment": "v2"}))
    before = counts()
    stale = rita.post(f"{CR}/{rid}/reviews", json={"decision": "approve", "revision": 1})
    assert stale.status_code == 409 and stale.json["error"]["code"] == "conflict"
    assert "edited since you opened it" in stale.json["error"]["message"]
    assert "revision" in stale.json["error"]["details"]
    assert counts() == before
    assert rita.post(f"{CR}/{rid}/reviews", json={"decision": "approve", "revision": 0}).status_code == 400
    reviewed = ok(rita.post(f"{CR}/{rid}/reviews", json={"decision": "approve", "revision": 2}), 201)
    assert reviewed["approvals"] == 1 and reviewed["reviews"][0]["revision"] == 2
    # Without a revision the review counts for the current one (as before).
    ok(editor.patch(f"{CR}/{rid}", json={"comment": "v3"}))
    assert ok(rita.post(f"{CR}/{rid}/reviews", json={"decision": "reject"}), 201)["state"] == "rejected"


def test_concurrent_edit_and_review_never_count_an_unseen_revision(live_server, open_request):
    rid = open_request
    author = LiveClient(live_server.url, make_token("editor", "eddie"))
    reviewer = LiveClient(live_server.url, make_token("editor", "rita"))
    def approvals_by_rita(request) -> list[int]:
        return [r["revision"] for r in request["reviews"] if r["reviewer"] == "rita"]

    for round_ in range(8):
        current = reviewer.get(f"{CR}/{rid}").json
        seen, earlier = current["revision"], approvals_by_rita(current)
        edit, review = at_once(
            lambda: author.patch(f"{CR}/{rid}", json={"comment": f"round {round_}"}).status,  # noqa: B023
            lambda: reviewer.post(f"{CR}/{rid}/reviews", json={"decision": "approve",
                                                               "revision": seen}).status)  # noqa: B023
        # A lost race is a 409 or 412 (the version column), or 503 when SQLite stays busy: never a wrong count.
        assert edit in (200, 409, 412, 503) and review in (201, 409, 412, 503), (edit, review)
        request = reviewer.get(f"{CR}/{rid}").json
        added = approvals_by_rita(request)[len(earlier):]
        # An approval is recorded only when accepted, and only for the revision the reviewer read.
        assert added == ([seen] if review == 201 else []), (edit, review, request["reviews"])
        if edit == 200:
            assert request["revision"] == seen + 1 and request["approvals"] == 0
        if review == 409 and seen not in earlier:
            assert edit == 200  # refused because the edit came first (a second approval is refused too)
