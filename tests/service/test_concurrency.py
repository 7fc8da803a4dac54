"""Optimistic concurrency under real races: 20 concurrent writes against the live gunicorn server.

With the same ``If-Match``: exactly one 2xx, every other request 412 with
the JSON error shape, one audit entry, the winner's content stored. Without
``If-Match``: the writes are serialised (service/domain/locking.py): all
succeed, each on the state the previous one left (distinct versions, an
unbroken before/after chain in the audit log), so no update is lost.
Runs on SQLite and PostgreSQL (TEST_DATABASE_URL)."""

import itertools

import pytest
import sqlalchemy as sa
from sqlalchemy.orm.exc import StaleDataError

from service.errors import handle_database_error
from service.extensions import db
from service.models import AuditEntry, Flag

from .support import LiveClient, at_once

N = 20
BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]


def audit_entries(resource_type: str, key: str) -> list[AuditEntry]:
    db.session.rollback()
    return list(db.session.scalars(sa.select(AuditEntry).where(
        AuditEntry.resource_type == resource_type, AuditEntry.resource_key == key).order_by(AuditEntry.id)))


def race(client: LiveClient, method: str, path: str, bodies, headers=None):
    """Send ``len(bodies)`` requests at once (released together by a barrier); the responses in order."""
    return at_once(*[lambda body=body: client.request(method, path, json=body, headers=headers) for body in bodies])


def assert_one_winner(responses, success=200):
    statuses = sorted(r.status for r in responses)
    assert statuses == [success] + [412] * (len(responses) - 1), statuses
    for response in responses:
        if response.status == 412:
            assert response.json["error"]["code"] == "precondition_failed"
            assert set(response.json["error"]) == {"code", "message", "details"}
    return next(r for r in responses if r.status == success)


def targeting(rule_id: str, enabled=True):
    return {"enabled": enabled, "off_variation": "off", "prerequisites": [], "targets": [],
            "rules": [{"id": rule_id, "description": "", "conditions": [], "serve": {"variation": "on"}}],
            "fallthrough": {"variation": "off"}}


@pytest.fixture
def flag(live_admin):
    response = live_admin.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": BOOL})
    assert response.status == 201, response.json
    return "checkout"


# ---------------------------------------------------------------- same If-Match: one winner

def test_flag_patch_race(live_admin, flag):
    audits = len(audit_entries("flag", flag))
    responses = race(live_admin, "PATCH", f"/api/v1/flags/{flag}", [{"name": f"name-{i}"} for i in range(N)],
                     {"If-Match": '"1"'})
    winner = assert_one_winner(responses)
    assert winner.header("ETag") == '"2"'
    stored = live_admin.get(f"/api/v1/flags/{flag}").json
    assert (stored["name"], stored["version"]) == (winner.json["name"], 2)
    assert len(audit_entries("flag", flag)) == audits + 1
    assert [v["version"] for v in live_admin.get(f"/api/v1/flags/{flag}/history").json["items"]] == [2, 1]


def test_targeting_put_race(live_admin, flag):
    path = f"/api/v1/flags/{flag}/environments/production"
    responses = race(live_admin, "PUT", path, [targeting(f"rule-{i}") for i in range(N)], {"If-Match": '"1"'})
    winner = assert_one_winner(responses)
    assert live_admin.get(path).json == winner.json
    assert len(audit_entries("flag", flag)) == 2  # create + the one winner


def test_targeting_patch_race(live_admin, flag):
    path = f"/api/v1/flags/{flag}/environments/staging"
    bodies = [{"rules": targeting(f"rule-{i}")["rules"], "enabled": i % 2 == 0} for i in range(N)]
    winner = assert_one_winner(race(live_admin, "PATCH", path, bodies, {"If-Match": '"1"'}))
    assert live_admin.get(path).json == winner.json
    assert len(audit_entries("flag", flag)) == 2


def test_rollback_race(live_admin, flag):
    live_admin.patch(f"/api/v1/flags/{flag}", json={"name": "second"})
    responses = race(live_admin, "POST", f"/api/v1/flags/{flag}/rollback", [{"version": 1}] * N,
                     {"If-Match": '"2"'})
    assert_one_winner(responses)
    assert live_admin.get(f"/api/v1/flags/{flag}").json["version"] == 3
    assert len(audit_entries("flag", flag)) == 3


def test_segment_patch_race(live_admin):
    assert live_admin.post("/api/v1/segments", json={"key": "beta"}).status == 201
    responses = race(live_admin, "PATCH", "/api/v1/segments/beta",
                     [{"included": [f"user-{i}"]} for i in range(N)], {"If-Match": '"1"'})
    winner = assert_one_winner(responses)
    stored = live_admin.get("/api/v1/segments/beta").json
    assert stored["included"] == winner.json["included"] and stored["version"] == 2
    assert len(audit_entries("segment", "beta")) == 2


def test_environment_patch_race(live_admin):
    assert live_admin.post("/api/v1/environments", json={"key": "qa"}).status == 201
    responses = race(live_admin, "PATCH", "/api/v1/environments/qa", [{"name": f"QA {i}"} for i in range(N)],
                     {"If-Match": '"1"'})
    winner = assert_one_winner(responses)
    assert live_admin.get("/api/v1/environments/qa").json["name"] == winner.json["name"]
    assert len(audit_entries("environment", "qa")) == 2


def test_metric_patch_race(live_admin):
    assert live_admin.post("/api/v1/metrics", json={"key": "buy", "event": "purchase",
                                                    "type": "conversion"}).status == 201
    responses = race(live_admin, "PATCH", "/api/v1/metrics/buy", [{"name": f"Buy {i}"} for i in range(N)],
                     {"If-Match": '"1"'})
    winner = assert_one_winner(responses)
    assert live_admin.get("/api/v1/metrics/buy").json["name"] == winner.json["name"]
    assert len(audit_entries("metric", "buy")) == 2


@pytest.fixture
def experiment(live_admin, flag):
    assert live_admin.post("/api/v1/metrics", json={"key": "buy", "event": "purchase",
                                                    "type": "conversion"}).status == 201
    created = live_admin.post("/api/v1/experiments", json={
        "key": "exp", "flag": flag, "environment": "production", "primary_metric": "buy"})
    assert created.status == 201, created.json
    return "exp"


def test_experiment_patch_race(live_admin, experiment):
    responses = race(live_admin, "PATCH", f"/api/v1/experiments/{experiment}",
                     [{"name": f"Exp {i}", "traffic": 100 * i} for i in range(N)], {"If-Match": '"1"'})
    winner = assert_one_winner(responses)
    stored = live_admin.get(f"/api/v1/experiments/{experiment}").json
    assert (stored["name"], stored["traffic"], stored["version"]) == (
        winner.json["name"], winner.json["traffic"], 2)
    assert len(audit_entries("experiment", experiment)) == 2


def test_experiment_start_race(live_admin, experiment):
    responses = race(live_admin, "POST", f"/api/v1/experiments/{experiment}/start", [None] * N,
                     {"If-Match": '"1"'})
    assert_one_winner(responses)
    assert [e.action for e in audit_entries("experiment", experiment)] == ["create", "start"]


# ---------------------------------------------------------------- no If-Match: serialised, nothing lost

def assert_serialised(responses, entries, start_version: int, field: str):
    """Every write succeeded on top of the previous one: distinct versions, an unbroken audit chain."""
    assert sorted(r.status for r in responses) == [200] * len(responses), [r.json for r in responses
                                                                           if r.status != 200]
    assert sorted(int(r.header("ETag").strip('"')) for r in responses) == list(
        range(start_version + 1, start_version + len(responses) + 1))
    updates = entries[-len(responses):]
    assert all(e.action == "update" for e in updates)
    for previous, entry in itertools.pairwise(updates):
        assert entry.before[field] == previous.after[field], "a write did not see the one before it"


def test_flag_writes_without_if_match_are_serialised(live_admin, flag):
    responses = race(live_admin, "PATCH", f"/api/v1/flags/{flag}", [{"name": f"name-{i}"} for i in range(N)])
    assert_serialised(responses, audit_entries("flag", flag), 1, "name")
    assert len(live_admin.get(f"/api/v1/flags/{flag}/history?limit=100").json["items"]) == N + 1


def test_targeting_patches_without_if_match_keep_each_others_fields(live_admin, flag):
    """Half the writers switch the flag on, half change its rules: both kinds of change survive."""
    path = f"/api/v1/flags/{flag}/environments/production"
    bodies = [{"enabled": True} if i % 2 else {"rules": targeting(f"rule-{i}")["rules"]} for i in range(N)]
    responses = race(live_admin, "PATCH", path, bodies)
    assert sorted(r.status for r in responses) == [200] * N
    stored = live_admin.get(path).json
    assert stored["enabled"] is True and len(stored["rules"]) == 1
    assert live_admin.get(f"/api/v1/flags/{flag}").json["version"] == N + 1


def test_segment_and_environment_writes_without_if_match_are_serialised(live_admin):
    assert live_admin.post("/api/v1/segments", json={"key": "beta"}).status == 201
    responses = race(live_admin, "PATCH", "/api/v1/segments/beta", [{"name": f"Beta {i}"} for i in range(N)])
    assert_serialised(responses, audit_entries("segment", "beta"), 1, "name")
    assert live_admin.post("/api/v1/environments", json={"key": "qa"}).status == 201
    responses = race(live_admin, "PATCH", "/api/v1/environments/qa", [{"name": f"QA {i}"} for i in range(N)])
    assert_serialised(responses, audit_entries("environment", "qa"), 1, "name")


def test_concurrent_creates_of_one_key_give_one_201_and_409s(live_admin):
    responses = race(live_admin, "POST", "/api/v1/flags",
                     [{"key": "same", "kind": "boolean", "variations": BOOL}] * N)
    statuses = sorted(r.status for r in responses)
    assert statuses == [201] + [409] * (N - 1), statuses
    assert all(r.json["error"]["code"] == "conflict" for r in responses if r.status == 409)
    assert len(audit_entries("flag", "same")) == 1


def test_concurrent_revokes_of_one_token_give_one_204(live_admin):
    created = live_admin.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"})
    assert created.status == 201
    token_id = created.json["id"]
    responses = race(live_admin, "DELETE", f"/api/v1/tokens/{token_id}", [None] * N)
    statuses = sorted(r.status for r in responses)
    assert statuses == [204] + [404] * (N - 1), statuses
    assert [e.action for e in audit_entries("token", str(token_id))] == ["create", "revoke"]


def test_an_update_based_on_a_stale_read_is_refused_412_not_500(app, admin):
    """The second line of defence: every UPDATE is conditional on the version read (version_id_col)."""
    assert admin.post("/api/v1/flags", json={"key": "f", "kind": "boolean", "variations": BOOL}).status_code == 201
    db.session.rollback()
    flag = db.session.scalars(sa.select(Flag).where(Flag.key == "f")).one()
    with db.engine.begin() as other:  # another writer commits version 2 meanwhile
        other.execute(sa.update(Flag.__table__).where(Flag.__table__.c.id == flag.id).values(version=2))
    flag.name, flag.version = "lost update?", flag.version + 1
    with pytest.raises(StaleDataError) as raised:
        db.session.flush()
    db.session.rollback()
    with app.test_request_context():
        response = handle_database_error(raised.value)
    assert response.status_code == 412 and response.json["error"]["code"] == "precondition_failed"
    assert db.session.scalars(sa.select(Flag.name).where(Flag.key == "f")).one() == "f"
