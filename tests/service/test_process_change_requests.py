"""Change requests in protected environments, through HTTP on the real database:
the guard on direct writes, reviews, edits that reset approvals, apply with
the base-version check, bypass, cancel/reject, scheduled applies run by the
worker (in-process, with its clock injected)."""

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from service.domain import announce as announcements
from service.extensions import db
from service.models import AuditEntry, ChangeRequest, FlagVersion, Rollout
from service.worker import Worker

from .support import ApiClient, at_once, make_token

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
FLAG = "/api/v1/flags/checkout"
PROD = f"{FLAG}/environments/production"


def targeting(**overrides):
    body = {"enabled": True, "off_variation": "off", "prerequisites": [], "targets": [], "rules": [],
            "fallthrough": {"variation": "on"}}
    body.update(overrides)
    return body


def audit_entries(resource_type=None, action=None):
    stmt = sa.select(AuditEntry)
    if resource_type:
        stmt = stmt.where(AuditEntry.resource_type == resource_type)
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    return list(db.session.scalars(stmt.order_by(AuditEntry.id)))


@pytest.fixture
def reviewer(app):
    return ApiClient(app.test_client(), make_token("editor", "rita"))


@pytest.fixture
def protected(admin, editor):
    """Flag 'checkout' on in production (fallthrough off), production needing 2 approvals."""
    assert editor.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": BOOL}).status_code == 201
    assert editor.put(PROD, json=targeting(fallthrough={"variation": "off"})).status_code == 200
    response = admin.patch("/api/v1/environments/production", json={"approvals_required": 2})
    assert response.status_code == 200, response.json
    assert response.json["approvals_required"] == 2 and response.json["protected"] is True
    return admin


def open_request(client, **body):
    response = client.post("/api/v1/change-requests", json={
        "flag": "checkout", "environment": "production", **body})
    assert response.status_code == 201, response.json
    return response.json


# ---------------------------------------------------------------- the guard

def test_direct_writes_to_a_protected_environment_need_a_change_request(protected, editor, admin):
    before = editor.get(PROD).json
    version = editor.get(FLAG).json["version"]
    for response in (editor.put(PROD, json=targeting()), editor.patch(PROD, json={"enabled": False}),
                     admin.put(PROD, json=targeting())):
        assert response.status_code == 409, response.json
        assert response.json["error"]["code"] == "change_request_required"
        assert "environment" in response.json["error"]["details"]
    # A rollback that would change production's targeting is a write to it too.
    rollback = editor.post(f"{FLAG}/rollback", json={"version": 1})
    assert rollback.status_code == 409 and rollback.json["error"]["code"] == "change_request_required"
    schedule = editor.post(f"{PROD}/schedules", json={
        "at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(), "patch": {"enabled": False}})
    assert schedule.status_code == 409 and schedule.json["error"]["code"] == "change_request_required"
    assert editor.get(PROD).json == before and editor.get(FLAG).json["version"] == version
    # Other environments are not protected; a rollback leaving production as it is passes.
    assert editor.put(f"{FLAG}/environments/staging", json=targeting()).status_code == 200
    assert editor.post(f"{FLAG}/rollback", json={"version": 2}).status_code == 200


def test_experiment_lifecycle_in_a_protected_environment_needs_a_change_request(protected, editor, admin):
    assert editor.post("/api/v1/metrics", json={"key": "buys", "event": "buy", "type": "conversion"}).status_code == 201
    created = editor.post("/api/v1/experiments", json={"key": "exp", "flag": "checkout", "environment": "production",
                                                       "primary_metric": "buys"})
    assert created.status_code == 201, created.json  # a draft serves nothing: creating it is not guarded
    start = editor.post("/api/v1/experiments/exp/start")
    assert start.status_code == 409 and start.json["error"]["code"] == "change_request_required"
    assert editor.get("/api/v1/experiments/exp").json["status"] == "draft"
    assert editor.patch("/api/v1/experiments/exp", json={"name": "renamed"}).status_code == 200


def test_approvals_required_and_the_protected_alias(admin):
    env = admin.post("/api/v1/environments", json={"key": "qa", "protected": True}).json
    assert env["approvals_required"] == 1 and env["protected"] is True
    env = admin.patch("/api/v1/environments/qa", json={"approvals_required": 3}).json
    assert env["approvals_required"] == 3 and env["protected"] is True
    assert admin.patch("/api/v1/environments/qa", json={"protected": True}).json["approvals_required"] == 3
    bad = admin.patch("/api/v1/environments/qa", json={"protected": False, "approvals_required": 2})
    assert bad.status_code == 400 and "protected" in bad.json["error"]["details"]
    assert admin.patch("/api/v1/environments/qa", json={"approvals_required": -1}).status_code == 400
    env = admin.patch("/api/v1/environments/qa", json={"protected": False}).json
    assert env["approvals_required"] == 0 and env["protected"] is False


# ---------------------------------------------------------------- reviews and apply

def test_review_and_apply(protected, editor, reviewer, admin, viewer):
    seen = []

    def listen(type, data, env):
        if type.startswith("change_request."):
            seen.append((type, data["id"], env))

    announcements.add_listener(listen)
    try:
        request = open_request(editor, patch={"fallthrough": {"variation": "on"}}, comment="Launch")
        rid = request["id"]
        assert request["state"] == "open" and request["approvals"] == 0 and request["approvals_required"] == 2
        assert request["author"] == "eddie" and request["base_version"] == editor.get(FLAG).json["version"]
        assert request["diff"] == [{"path": "fallthrough.variation", "before": "off", "after": "on",
                                    "op": "replace"}]
        # The author cannot approve their own request.
        own = editor.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "approve"})
        assert own.status_code == 403 and own.json["error"]["code"] == "forbidden"
        # Viewers cannot review at all.
        assert viewer.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "approve"}).status_code == 403
        first = reviewer.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "approve", "comment": "ok"})
        assert first.status_code == 201 and first.json["approvals"] == 1 and first.json["state"] == "open"
        # A reviewer counts once.
        again = reviewer.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "approve"})
        assert again.status_code == 409
        assert editor.get(f"/api/v1/change-requests/{rid}").json["approvals"] == 1
        early = editor.post(f"/api/v1/change-requests/{rid}/apply")
        assert early.status_code == 409 and "1 of the 2" in early.json["error"]["message"]
        second = admin.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "approve"})
        assert second.json["state"] == "approved" and second.json["approved_by"] == ["rita", "alice"]

        applied = editor.post(f"/api/v1/change-requests/{rid}/apply")
        assert applied.status_code == 200, applied.json
        assert applied.json["state"] == "applied" and applied.json["applied_by"] == "eddie"
        assert applied.headers["ETag"] == f'"{applied.json["version"]}"'
        assert editor.get(PROD).json["fallthrough"] == {"variation": "on"}
        flag = editor.get(FLAG).json
        assert applied.json["applied_version"] == flag["version"]
        history = editor.get(f"{FLAG}/history").json["items"][0]
        assert history["action"] == "apply_change_request" and history["actor"] == "eddie"
        # Applied once only.
        assert editor.post(f"/api/v1/change-requests/{rid}/apply").status_code == 409
        actions = [e.action for e in audit_entries("change_request")]
        assert actions == ["create", "approve", "approve", "apply"]
        assert [t for t, _, _ in seen] == ["change_request.opened", "change_request.approved",
                                           "change_request.applied"]
        assert {env for _, _, env in seen} == {"production"}
    finally:
        announcements.remove_listener(listen)


def test_an_edit_after_approval_resets_it(protected, editor, reviewer, admin):
    rid = open_request(editor, patch={"fallthrough": {"variation": "on"}})["id"]
    reviewer.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "approve"})
    assert admin.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "approve"}).json["state"] == "approved"
    # Even a comment-only edit starts a new revision with no approvals.
    edited = editor.patch(f"/api/v1/change-requests/{rid}", json={"patch": {"fallthrough": {"variation": "on"},
                                                                             "enabled": True}, "comment": "v2"})
    assert edited.status_code == 200, edited.json
    assert edited.json["state"] == "open" and edited.json["approvals"] == 0 and edited.json["revision"] == 2
    assert edited.json["approved_by"] == [] and len(edited.json["reviews"]) == 2  # history kept
    refused = editor.post(f"/api/v1/change-requests/{rid}/apply")
    assert refused.status_code == 409 and editor.get(PROD).json["fallthrough"] == {"variation": "off"}
    # The same reviewers may approve the new revision.
    reviewer.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "approve"})
    admin.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "approve"})
    assert editor.post(f"/api/v1/change-requests/{rid}/apply").json["state"] == "applied"
    # Only the author or an admin edits; a stale If-Match is 412.
    rid2 = open_request(editor, patch={"enabled": False})["id"]
    assert reviewer.patch(f"/api/v1/change-requests/{rid2}", json={"comment": "mine"}).status_code == 403
    assert editor.patch(f"/api/v1/change-requests/{rid2}", json={"comment": "x"},
                        headers={"If-Match": '"99"'}).status_code == 412


def test_apply_on_a_stale_base_is_a_409_that_changes_nothing(protected, editor, reviewer, admin):
    rid = open_request(editor, targeting=targeting(fallthrough={"variation": "on"}))["id"]
    reviewer.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "approve"})
    admin.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "approve"})
    # Someone changes the flag meanwhile (here staging's targeting; the flag has one version sequence).
    assert editor.put(f"{FLAG}/environments/staging", json=targeting()).status_code == 200
    assert editor.get(f"/api/v1/change-requests/{rid}").json["conflict"] is True
    versions = db.session.scalar(sa.select(sa.func.count()).select_from(FlagVersion))
    audits = len(audit_entries())
    stale = editor.post(f"/api/v1/change-requests/{rid}/apply")
    assert stale.status_code == 409 and stale.json["error"]["code"] == "conflict"
    assert "base_version" in stale.json["error"]["details"]
    assert editor.get(PROD).json["fallthrough"] == {"variation": "off"}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(FlagVersion)) == versions
    assert len(audit_entries()) == audits
    assert editor.get(f"/api/v1/change-requests/{rid}").json["state"] == "approved"
    # Re-basing (any edit) needs new approvals, then applies.
    assert editor.patch(f"/api/v1/change-requests/{rid}", json={"comment": "rebased"}).json["conflict"] is False


def test_bypass_is_admin_only_and_audited_as_a_bypass(protected, editor, admin):
    rid = open_request(editor, patch={"enabled": False}, comment="Incident: kill it")["id"]
    refused = editor.post(f"/api/v1/change-requests/{rid}/apply", json={"bypass": True})
    assert refused.status_code == 403
    applied = admin.post(f"/api/v1/change-requests/{rid}/apply", json={"bypass": True})
    assert applied.status_code == 200, applied.json
    assert applied.json["state"] == "applied" and applied.json["bypass"] is True and applied.json["approvals"] == 0
    assert editor.get(PROD).json["enabled"] is False
    entry = audit_entries("change_request", "apply_bypass")
    assert len(entry) == 1 and entry[0].actor == "alice" and entry[0].after["bypass"] is True
    assert audit_entries("flag", "apply_change_request_bypass")[0].environment == "production"
    assert editor.get(f"{FLAG}/history").json["items"][0]["action"] == "apply_change_request_bypass"


def test_reject_and_cancel(protected, editor, reviewer, admin):
    rid = open_request(editor, patch={"enabled": False})["id"]
    own = editor.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "reject"})
    assert own.status_code == 403
    rejected = reviewer.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "reject", "comment": "no"})
    assert rejected.json["state"] == "rejected" and rejected.json["closed_by"] == "rita"
    for path in ("apply", "cancel"):
        assert editor.post(f"/api/v1/change-requests/{rid}/{path}").status_code == 409
    assert admin.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "approve"}).status_code == 409

    rid = open_request(editor, patch={"enabled": False})["id"]
    assert reviewer.post(f"/api/v1/change-requests/{rid}/cancel").status_code == 403
    cancelled = editor.post(f"/api/v1/change-requests/{rid}/cancel")
    assert cancelled.json["state"] == "cancelled" and cancelled.json["diff"] == []
    rid = open_request(editor, patch={"enabled": False})["id"]
    assert admin.post(f"/api/v1/change-requests/{rid}/cancel").json["closed_by"] == "alice"

    listed = editor.get("/api/v1/change-requests?flag=checkout&state=cancelled").json["items"]
    assert [r["state"] for r in listed] == ["cancelled", "cancelled"]
    assert editor.get("/api/v1/change-requests?state=open").json["items"] == []
    assert editor.get("/api/v1/change-requests?state=nope").status_code == 400


def test_bad_requests_change_nothing(protected, editor):
    audits = len(audit_entries())
    cases = [
        {"flag": "checkout", "environment": "production"},  # neither targeting nor patch
        {"flag": "checkout", "environment": "production", "patch": {"enabled": True}, "targeting": targeting()},
        {"flag": "checkout", "environment": "production", "patch": {}},
        {"flag": "checkout", "environment": "production", "patch": {"fallthrough": {"variation": "nope"}}},
        {"flag": "missing", "environment": "production", "patch": {"enabled": True}},
        {"flag": "checkout", "environment": "nowhere", "patch": {"enabled": True}},
        {"flag": "checkout", "environment": "production", "patch": {"enabled": "maybe"}},
    ]
    for body in cases:
        response = editor.post("/api/v1/change-requests", json=body)
        assert response.status_code == 400, (body, response.json)
        assert response.json["error"]["details"], body
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ChangeRequest)) == 0
    assert len(audit_entries()) == audits
    assert editor.get("/api/v1/change-requests/999").status_code == 404


def test_unprotected_environment_requests_are_approved_at_once(editor):
    assert editor.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": BOOL}).status_code == 201
    request = editor.post("/api/v1/change-requests", json={"flag": "checkout", "environment": "staging",
                                                           "targeting": targeting()}).json
    assert request["state"] == "approved" and request["approvals_required"] == 0
    assert editor.post(f"/api/v1/change-requests/{request['id']}/apply").json["state"] == "applied"
    assert editor.get(f"{FLAG}/environments/staging").json["enabled"] is True


# ---------------------------------------------------------------- scheduled applies

def approved_request(editor, reviewer, admin, **body):
    rid = open_request(editor, **body)["id"]
    reviewer.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "approve"})
    admin.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "approve"})
    return rid


def test_a_scheduled_change_request_is_applied_by_the_worker(protected, editor, reviewer, admin):
    rid = approved_request(editor, reviewer, admin, patch={"fallthrough": {"variation": "on"}})
    at = datetime.now(UTC) + timedelta(hours=2)
    past = editor.post(f"/api/v1/change-requests/{rid}/apply", json={"at": "2001-01-01T00:00:00Z"})
    assert past.status_code == 400 and "at" in past.json["error"]["details"]
    scheduled = editor.post(f"/api/v1/change-requests/{rid}/apply", json={"at": at.isoformat()})
    assert scheduled.status_code == 200, scheduled.json
    assert scheduled.json["state"] == "scheduled"
    listed = editor.get(f"{PROD}/schedules").json["items"]
    assert len(listed) == 1 and listed[0]["kind"] == "change_request" and listed[0]["change_request"] == rid
    assert listed[0]["state"] == "pending" and listed[0]["patch"] == {"fallthrough": {"variation": "on"}}

    assert Worker(clock=lambda: at - timedelta(seconds=1)).run_once() == 0
    assert editor.get(PROD).json["fallthrough"] == {"variation": "off"}
    assert Worker(clock=lambda: at + timedelta(seconds=1)).run_once() == 1
    db.session.expire_all()
    assert editor.get(PROD).json["fallthrough"] == {"variation": "on"}
    request = editor.get(f"/api/v1/change-requests/{rid}").json
    assert request["state"] == "applied" and request["applied_by"] == "worker"
    assert editor.get(f"{PROD}/schedules").json["items"][0]["state"] == "applied"
    assert Worker(clock=lambda: at + timedelta(hours=1)).run_once() == 0  # once only


def test_a_scheduled_request_whose_flag_moved_on_fails_with_the_reason(protected, editor, reviewer, admin):
    rid = approved_request(editor, reviewer, admin, patch={"fallthrough": {"variation": "on"}})
    at = datetime.now(UTC) + timedelta(minutes=5)
    editor.post(f"/api/v1/change-requests/{rid}/apply", json={"at": at.isoformat()})
    assert editor.patch(FLAG, json={"name": "Checkout v2"}).status_code == 200
    assert Worker(clock=lambda: at + timedelta(seconds=1)).run_once() == 1
    db.session.expire_all()
    request = editor.get(f"/api/v1/change-requests/{rid}").json
    assert request["state"] == "failed" and "changed since the request was written" in request["failure_reason"]
    schedule = editor.get(f"{PROD}/schedules").json["items"][0]
    assert schedule["state"] == "failed" and schedule["failure_reason"] == request["failure_reason"]
    assert editor.get(PROD).json["fallthrough"] == {"variation": "off"}


def test_cancelling_the_schedule_returns_the_request_to_approved(protected, editor, reviewer, admin):
    rid = approved_request(editor, reviewer, admin, patch={"enabled": False})
    at = datetime.now(UTC) + timedelta(hours=1)
    editor.post(f"/api/v1/change-requests/{rid}/apply", json={"at": at.isoformat()})
    sid = editor.get(f"{PROD}/schedules").json["items"][0]["id"]
    cancelled = editor.post(f"{PROD}/schedules/{sid}/cancel")
    assert cancelled.status_code == 200 and cancelled.json["state"] == "cancelled"
    assert editor.get(f"/api/v1/change-requests/{rid}").json["state"] == "approved"
    assert editor.post(f"{PROD}/schedules/{sid}/cancel").status_code == 409
    assert Worker(clock=lambda: at + timedelta(seconds=1)).run_once() == 0
    # Editing a scheduled request withdraws its schedule too.
    editor.post(f"/api/v1/change-requests/{rid}/apply", json={"at": at.isoformat()})
    editor.patch(f"/api/v1/change-requests/{rid}", json={"comment": "later"})
    states = sorted(s["state"] for s in editor.get(f"{PROD}/schedules").json["items"])
    assert states == ["cancelled", "cancelled"]


# ---------------------------------------------------------------- a guarded rollout through a change request

def test_a_guarded_rollout_in_a_protected_environment_goes_through_a_change_request(protected, editor, reviewer,
                                                                                      admin):
    assert editor.post("/api/v1/metrics", json={"key": "buys", "event": "buy", "type": "conversion"}).status_code == 201
    rollout = {"variation": "on", "from_variation": "off", "guardrails": ["buys"],
               "steps": [{"percent": 20, "hold_hours": 24}, {"percent": 100, "hold_hours": 0}]}
    direct = editor.post(f"{PROD}/rollouts", json=rollout)
    assert direct.status_code == 409 and direct.json["error"]["code"] == "change_request_required"
    bad = editor.post("/api/v1/change-requests", json={
        "flag": "checkout", "environment": "production",
        "rollout": {**rollout, "steps": [{"percent": 20, "hold_hours": 24}]}})
    assert bad.status_code == 400 and "rollout.steps.0.percent" in bad.json["error"]["details"]
    both = editor.post("/api/v1/change-requests", json={
        "flag": "checkout", "environment": "production", "rollout": rollout, "patch": {"enabled": True}})
    assert both.status_code == 400
    rid = approved_request(editor, reviewer, admin, rollout=rollout, comment="Ramp the new checkout")
    request = editor.get(f"/api/v1/change-requests/{rid}").json
    assert request["rollout"]["steps"][0] == {"percent": 20, "hold_hours": 24} and request["diff"] == []
    applied = editor.post(f"/api/v1/change-requests/{rid}/apply")
    assert applied.status_code == 200, applied.json
    started = editor.get(f"{PROD}/rollouts").json["items"]
    assert len(started) == 1 and started[0]["state"] == "running" and started[0]["percent"] == 20
    assert [r["id"] for r in editor.get(PROD).json["rules"]] == [f"rollout-{started[0]['id']}"]
    # The rollout then moves production's traffic by itself (its approval covers its steps).
    rollout_row = db.session.get(Rollout, started[0]["id"])
    Worker(clock=lambda: rollout_row.step_started_at + timedelta(hours=25)).run_once()
    db.session.expire_all()
    assert editor.get(f"{PROD}/rollouts/{started[0]['id']}").json["state"] == "completed"
    assert editor.get(PROD).json["fallthrough"] == {"variation": "on"}


# ---------------------------------------------------------------- races, through a real server

def _post(url: str, token: str, body: dict | None = None) -> int:
    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_racing_applies_and_reviews_count_once(protected, editor, live_server):
    rid = open_request(editor, patch={"fallthrough": {"variation": "on"}})["id"]
    base = f"{live_server.url}/api/v1/change-requests/{rid}"
    rita, alice = make_token("editor", "rita"), make_token("admin", "alice")

    # The same reviewer approving four times at once counts once.
    statuses = at_once(*[lambda: _post(f"{base}/reviews", rita, {"decision": "approve"})] * 4)
    assert statuses.count(201) == 1 and set(statuses) <= {201, 409, 503}, statuses  # 503: SQLite busy, retry
    db.session.expire_all()
    assert editor.get(f"/api/v1/change-requests/{rid}").json["approvals"] == 1
    assert editor.post(f"/api/v1/change-requests/{rid}/reviews", json={"decision": "approve"}).status_code == 403
    _post(f"{base}/reviews", alice, {"decision": "approve"})
    # Four applies at once: one wins, the others get 409; one flag version, one audit entry.
    versions = editor.get(FLAG).json["version"]
    statuses = at_once(*[lambda: _post(f"{base}/apply", editor.token)] * 4)
    assert statuses.count(200) == 1 and set(statuses) <= {200, 409, 503}, statuses
    db.session.expire_all()
    assert editor.get(FLAG).json["version"] == versions + 1
    assert len(audit_entries("change_request", "apply")) == 1
