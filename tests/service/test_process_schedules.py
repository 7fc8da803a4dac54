"""Scheduled targeting patches through HTTP, applied by the worker (in-process,
clock injected): timing, validation when due, cancel, per-flag order, the
queue gauges on /metrics."""

import re
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from service.domain import Actor
from service.domain import schedules as schedule_domain
from service.extensions import db
from service.models import AuditEntry, Environment
from service.worker import Worker

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
FLAG = "/api/v1/flags/checkout"
STAGING = f"{FLAG}/environments/staging"


def setup_flag(client, key="checkout"):
    assert client.post("/api/v1/flags", json={"key": key, "kind": "boolean", "variations": BOOL}).status_code == 201
    body = {"enabled": True, "off_variation": "off", "fallthrough": {"variation": "off"}}
    assert client.put(f"/api/v1/flags/{key}/environments/staging", json=body).status_code == 200


def later(**delta) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)


def ruleset_version(env="staging") -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(Environment.ruleset_version).where(Environment.key == env))


def test_schedule_is_applied_once_when_due(editor, viewer):
    setup_flag(editor)
    at = later(hours=3)
    created = editor.post(f"{STAGING}/schedules", json={"at": at.isoformat(), "comment": "Launch at 9",
                                                        "patch": {"fallthrough": {"variation": "on"}}})
    assert created.status_code == 201, created.json
    item = created.json
    assert item["state"] == "pending" and item["kind"] == "patch" and item["author"] == "eddie"
    assert created.headers["ETag"] == f'"{item["version"]}"'
    assert viewer.get(f"{STAGING}/schedules/{item['id']}").json["comment"] == "Launch at 9"
    assert [s["id"] for s in viewer.get(f"{FLAG}/schedules").json["items"]] == [item["id"]]
    assert viewer.get(f"{FLAG}/schedules?environment=production").json["items"] == []
    assert viewer.get(f"{STAGING}/schedules?state=applied").json["items"] == []

    version = ruleset_version()
    assert Worker(clock=lambda: at - timedelta(seconds=1)).run_once() == 0
    assert viewer.get(STAGING).json["fallthrough"] == {"variation": "off"}
    assert Worker(clock=lambda: at).run_once() == 1
    db.session.expire_all()
    assert viewer.get(STAGING).json["fallthrough"] == {"variation": "on"}
    assert ruleset_version() > version  # SDKs learn through the usual propagation
    applied = viewer.get(f"{STAGING}/schedules/{item['id']}").json
    assert applied["state"] == "applied" and applied["applied_version"] == viewer.get(FLAG).json["version"]
    history = viewer.get(f"{FLAG}/history").json["items"][0]
    assert history["action"] == "apply_schedule" and history["actor"] == "worker"
    assert "Scheduled change" in history["comment"]
    assert Worker(clock=lambda: at + timedelta(days=1)).run_once() == 0
    entries = db.session.scalars(sa.select(AuditEntry.action).where(AuditEntry.resource_type == "schedule")).all()
    assert entries == ["create", "apply"]


def test_bad_schedules_are_refused(editor):
    setup_flag(editor)
    cases = [({"at": "2001-01-01T00:00:00Z", "patch": {"enabled": False}}, "at"),
             ({"at": later(hours=1).isoformat(), "patch": {}}, "patch"),
             ({"at": later(hours=1).isoformat(), "patch": {"off_variation": "nope"}}, "patch.off_variation"),
             ({"at": later(hours=1).isoformat(), "patch": {"colour": "red"}}, "patch.colour"),
             ({"at": "tomorrow", "patch": {"enabled": False}}, "at"),
             ({"patch": {"enabled": False}}, "at")]
    for body, field in cases:
        response = editor.post(f"{STAGING}/schedules", json=body)
        assert response.status_code == 400, (body, response.json)
        assert field in response.json["error"]["details"], response.json
    assert editor.post("/api/v1/flags/missing/environments/staging/schedules", json={
        "at": later(hours=1).isoformat(), "patch": {"enabled": False}}).status_code == 404
    assert editor.get(f"{STAGING}/schedules").json["items"] == []


def test_a_change_that_no_longer_validates_fails_with_the_reason(editor):
    setup_flag(editor)
    assert editor.post("/api/v1/segments", json={"key": "beta", "included": ["u1"]}).status_code == 201
    at = later(hours=1)
    rule = {"id": "beta", "conditions": [{"op": "in_segment", "values": ["beta"]}], "serve": {"variation": "on"}}
    item = editor.post(f"{STAGING}/schedules", json={"at": at.isoformat(), "patch": {"rules": [rule]}}).json
    assert editor.delete("/api/v1/segments/beta").status_code == 204
    assert Worker(clock=lambda: at + timedelta(seconds=5)).run_once() == 1
    db.session.expire_all()
    failed = editor.get(f"{STAGING}/schedules/{item['id']}").json
    assert failed["state"] == "failed" and "unknown segment 'beta'" in failed["failure_reason"]
    assert editor.get(STAGING).json["rules"] == []
    assert Worker(clock=lambda: at + timedelta(hours=1)).run_once() == 0


def test_an_environment_protected_after_scheduling_fails_the_change(editor, admin):
    setup_flag(editor)
    at = later(hours=1)
    item = editor.post(f"{STAGING}/schedules", json={"at": at.isoformat(), "patch": {"enabled": False}}).json
    admin.patch("/api/v1/environments/staging", json={"approvals_required": 1})
    Worker(clock=lambda: at).run_once()
    db.session.expire_all()
    failed = editor.get(f"{STAGING}/schedules/{item['id']}").json
    assert failed["state"] == "failed" and "became protected" in failed["failure_reason"]
    assert editor.get(STAGING).json["enabled"] is True


def test_cancel(editor, viewer):
    setup_flag(editor)
    at = later(hours=1)
    item = editor.post(f"{STAGING}/schedules", json={"at": at.isoformat(), "patch": {"enabled": False}}).json
    assert viewer.post(f"{STAGING}/schedules/{item['id']}/cancel").status_code == 403
    assert editor.post(f"{STAGING}/schedules/{item['id']}/cancel", headers={"If-Match": '"7"'}).status_code == 412
    cancelled = editor.post(f"{STAGING}/schedules/{item['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json["state"] == "cancelled"
    assert editor.post(f"{STAGING}/schedules/{item['id']}/cancel").status_code == 409
    assert editor.post(f"{FLAG}/environments/production/schedules/{item['id']}/cancel").status_code == 404
    assert Worker(clock=lambda: at).run_once() == 0
    assert editor.get(STAGING).json["enabled"] is True


def test_changes_of_one_flag_apply_in_time_order(editor):
    setup_flag(editor)
    at = later(hours=1)
    for i, variation in enumerate(["on", "off", "on"]):
        body = {"at": (at + timedelta(seconds=i)).isoformat(), "patch": {
            "fallthrough": {"variation": variation}, "targets": [{"variation": "on", "values": [f"user-{i}"]}]}}
        assert editor.post(f"{STAGING}/schedules", json=body).status_code == 201
    # A later change created first must still wait for the earlier ones.
    body = {"at": (at + timedelta(seconds=10)).isoformat(), "patch": {"targets": []}}
    assert editor.post(f"{STAGING}/schedules", json=body).status_code == 201
    assert Worker(clock=lambda: at + timedelta(seconds=1)).run_once() == 2
    db.session.expire_all()
    assert editor.get(STAGING).json["targets"] == [{"variation": "on", "values": ["user-1"]}]
    assert Worker(clock=lambda: at + timedelta(minutes=1)).run_once() == 2
    db.session.expire_all()
    assert editor.get(STAGING).json["targets"] == [] and editor.get(STAGING).json["fallthrough"] == {"variation": "on"}
    actions = [v["action"] for v in editor.get(f"{FLAG}/history").json["items"]]
    assert actions[:4] == ["apply_schedule"] * 4


def _gauge(text: str, name: str, queue: str) -> float:
    match = re.search(rf'^{name}{{queue="{queue}"}} (\S+)$', text, re.M)
    assert match, text
    return float(match.group(1))


def test_metrics_show_queue_depth_and_lag(editor, anonymous):
    setup_flag(editor)
    past = datetime.now(UTC) - timedelta(minutes=10)
    # Scheduled "10 minutes ago" for 1 minute later: due now, 9 minutes late.
    schedule_domain.create(Actor("tests"), "checkout", "staging", {"at": past + timedelta(minutes=1),
                                                                   "patch": {"enabled": False}}, now=past)
    editor.post(f"{STAGING}/schedules", json={"at": later(hours=1).isoformat(), "patch": {"enabled": True}})
    text = anonymous.get("/metrics").get_data(as_text=True)
    assert _gauge(text, "pitcrew_worker_queue_depth", "schedules") == 1
    assert _gauge(text, "pitcrew_worker_queue_pending", "schedules") == 2
    assert 8 * 60 < _gauge(text, "pitcrew_worker_queue_lag_seconds", "schedules") < 60 * 60
    assert _gauge(text, "pitcrew_worker_queue_depth", "rollouts") == 0
    Worker().run_once()
    text = anonymous.get("/metrics").get_data(as_text=True)
    assert _gauge(text, "pitcrew_worker_queue_depth", "schedules") == 0
    assert _gauge(text, "pitcrew_worker_queue_lag_seconds", "schedules") == 0
