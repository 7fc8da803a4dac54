"""Metrics and experiments through HTTP: validation, lifecycle rules, layers,
the experiment rule in flag targeting, SDK ruleset changes, audit, ETags, the
sample-size tool."""

import pytest
import sqlalchemy as sa

from service.analysis import power
from service.extensions import db
from service.models import AuditEntry, Environment, Event

from .support import audit_count

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
THREE = [{"key": "a", "value": "a"}, {"key": "b", "value": "b"}, {"key": "c", "value": "c"}]


def audit_actions(key: str) -> list[str]:
    return list(db.session.scalars(sa.select(AuditEntry.action).where(
        AuditEntry.resource_type == "experiment", AuditEntry.resource_key == key).order_by(AuditEntry.id)))


def ruleset_version(env: str = "production") -> int:
    return db.session.scalar(sa.select(Environment.ruleset_version).where(Environment.key == env))


def create_flag(client, key="checkout", variations=None, kind="boolean"):
    response = client.post("/api/v1/flags", json={"key": key, "kind": kind, "variations": variations or BOOL})
    assert response.status_code == 201, response.json


def create_metric(client, key="purchases", **extra):
    body = {"key": key, "event": "purchase", "type": "conversion", **extra}
    response = client.post("/api/v1/metrics", json=body)
    assert response.status_code == 201, response.json
    return response.json


def create_experiment(client, key="checkout-test", **extra):
    body = {"key": key, "flag": "checkout", "environment": "production",
            "variations": [{"variation": "off", "weight": 5000}, {"variation": "on", "weight": 5000}],
            "control": "off", "primary_metric": "purchases", **extra}
    response = client.post("/api/v1/experiments", json=body)
    assert response.status_code == 201, response.json
    return response.json


@pytest.fixture
def setup(editor):
    create_flag(editor)
    create_metric(editor)
    return editor


# ---------------------------------------------------------------- metrics

def test_metric_crud_etag_and_audit(editor, viewer):
    created = editor.post("/api/v1/metrics", json={"key": "revenue", "event": "purchase", "type": "mean",
                                                   "window_hours": 72, "winsorize": 0.99, "tags": ["money"]})
    assert created.status_code == 201 and created.headers["ETag"] == '"1"'
    body = created.json
    assert body["name"] == "revenue" and body["direction"] == "increase" and body["denominator"] is None
    assert viewer.get("/api/v1/metrics/revenue").json["winsorize"] == 0.99
    assert [m["key"] for m in viewer.get("/api/v1/metrics?tag=money").json["items"]] == ["revenue"]
    assert viewer.post("/api/v1/metrics", json={"key": "x", "event": "e", "type": "count"}).status_code == 403
    assert editor.post("/api/v1/metrics", json={"key": "revenue", "event": "e", "type": "count"}).status_code == 409

    stale = editor.patch("/api/v1/metrics/revenue", json={"direction": "decrease"}, headers={"If-Match": '"9"'})
    assert stale.status_code == 412
    patched = editor.patch("/api/v1/metrics/revenue", json={"direction": "decrease"}, headers={"If-Match": '"1"'})
    assert patched.status_code == 200 and patched.headers["ETag"] == '"2"' and patched.json["direction"] == "decrease"
    assert editor.delete("/api/v1/metrics/revenue").status_code == 204
    assert viewer.get("/api/v1/metrics/revenue").status_code == 404
    actions = [e["action"] for e in editor.get("/api/v1/audit?resource_type=metric").json["items"]]
    assert actions == ["delete", "update", "create"]


@pytest.mark.parametrize("body, field", [
    ({"type": "ratio"}, "denominator"),
    ({"type": "mean", "denominator": "visit"}, "denominator"),
    ({"type": "conversion", "winsorize": 0.99}, "winsorize"),
    ({"type": "mean", "winsorize": 99}, "winsorize"),
    ({"type": "mean", "window_hours": 0}, "window_hours"),
    ({"type": "median"}, "type"),
    ({"type": "mean", "direction": "up"}, "direction"),
])
def test_metric_validation(editor, body, field):
    before = audit_count()
    response = editor.post("/api/v1/metrics", json={"key": "m", "event": "purchase", **body})
    assert response.status_code == 400, response.json
    assert field in response.json["error"]["details"]
    assert audit_count() == before


def test_ratio_metric_and_type_change_drops_denominator(editor):
    create_metric(editor, "aov", type="ratio", denominator="purchase")
    changed = editor.patch("/api/v1/metrics/aov", json={"type": "mean"})
    assert changed.status_code == 200 and changed.json["denominator"] is None


def test_metric_in_use_cannot_be_deleted(setup):
    create_experiment(setup)
    response = setup.delete("/api/v1/metrics/purchases")
    assert response.status_code == 409 and "checkout-test" in response.json["error"]["message"]


# ---------------------------------------------------------------- experiments: create

def test_create_experiment_adds_rule_to_flag_targeting(setup, viewer):
    version = ruleset_version()
    created = create_experiment(setup, dimensions=["country"], tags=["q3"])
    assert created["status"] == "draft" and created["salt"] == "checkout-test" and created["unit"] == "id"
    assert created["traffic"] == 10000 and created["layer"] is None and created["version"] == 1
    assert created["analysis"] == {"engine": "frequentist", "alpha": 0.05, "sequential": False,
                                   "sequential_n": 5000, "cuped": False, "cuped_days": 14, "correction": None,
                                   "prior_mean": None, "prior_variance": None,
                                   "target_mde": 0.05, "chance_to_win": 0.95}
    flag = viewer.get("/api/v1/flags/checkout").json
    rules = flag["environments"]["production"]["rules"]
    assert rules == [{"id": "experiment-checkout-test", "description": "Experiment checkout-test",
                      "conditions": [], "serve": {"experiment": "checkout-test"}}]
    assert flag["environments"]["staging"]["rules"] == []
    assert ruleset_version() > version
    assert audit_actions("checkout-test") == ["create"]
    # A second experiment on the same flag gets its own rule; the first is not duplicated.
    create_experiment(setup, "checkout-test-2")
    rules = viewer.get("/api/v1/flags/checkout").json["environments"]["production"]["rules"]
    assert [r["id"] for r in rules] == ["experiment-checkout-test", "experiment-checkout-test-2"]


def test_default_variations_are_the_flags_with_equal_weights(setup):
    create_flag(setup, "three", THREE, kind="string")
    created = setup.post("/api/v1/experiments", json={"key": "abc", "flag": "three", "environment": "staging"})
    assert created.status_code == 201, created.json
    assert created.json["variations"] == [{"variation": "a", "weight": 3334}, {"variation": "b", "weight": 3333},
                                          {"variation": "c", "weight": 3333}]
    # The control is what users get today: the off variation of the flag in that environment
    # (a new flag is off and serves its last variation)...
    assert created.json["control"] == "c"
    body = {"enabled": True, "off_variation": "b", "fallthrough": {"variation": "a"}}
    assert setup.put("/api/v1/flags/three/environments/production", json=body).status_code == 200
    in_production = setup.post("/api/v1/experiments", json={"key": "abc-prod", "flag": "three",
                                                            "environment": "production"})
    assert in_production.status_code == 201 and in_production.json["control"] == "b"
    # ... unless the experiment does not test it: then its first variation; a given control wins.
    arms = [{"variation": "a", "weight": 5000}, {"variation": "c", "weight": 5000}]
    without_off = setup.post("/api/v1/experiments", json={
        "key": "abc-ac", "flag": "three", "environment": "production", "variations": arms})
    assert without_off.status_code == 201 and without_off.json["control"] == "a"
    given = setup.post("/api/v1/experiments", json={
        "key": "abc-given", "flag": "three", "environment": "production", "control": "a"})
    assert given.status_code == 201 and given.json["control"] == "a"


@pytest.mark.parametrize("extra, field", [
    ({"variations": [{"variation": "off", "weight": 5000}, {"variation": "maybe", "weight": 5000}]},
     "variations.1.variation"),
    ({"variations": [{"variation": "off", "weight": 5000}, {"variation": "on", "weight": 4000}]}, "variations"),
    ({"variations": [{"variation": "off", "weight": 10000}]}, "variations"),
    ({"variations": [{"variation": "off", "weight": 5000}, {"variation": "off", "weight": 5000}]},
     "variations.1.variation"),
    ({"variations": []}, "variations"),
    ({"control": "maybe"}, "control"),
    ({"primary_metric": "nope"}, "primary_metric"),
    ({"secondary_metrics": ["purchases"]}, "secondary_metrics.0"),
    ({"layer": {"key": "checkout", "range": [5000, 5000]}}, "layer.range"),
    ({"layer": {"key": "checkout", "range": [0, 10001]}}, "layer.range.1"),
    ({"traffic": 10001}, "traffic"),
    ({"salt": "a:b"}, "salt"),
    ({"flag": "missing"}, "flag"),
    ({"environment": "moon"}, "environment"),
    ({"analysis": {"engine": "magic"}}, "analysis.engine"),
    ({"analysis": {"correction": "bonferroni"}}, "analysis.correction"),
])
def test_create_validation_changes_nothing(setup, viewer, extra, field):
    before = audit_count()
    response = setup.post("/api/v1/experiments", json={
        "key": "bad", "flag": "checkout", "environment": "production",
        "variations": [{"variation": "off", "weight": 5000}, {"variation": "on", "weight": 5000}],
        "control": "off", "primary_metric": "purchases", **extra})
    assert response.status_code == 400, response.json
    assert field in response.json["error"]["details"], response.json
    assert viewer.get("/api/v1/experiments/bad").status_code == 404
    assert audit_count() == before
    assert viewer.get("/api/v1/flags/checkout").json["environments"]["production"]["rules"] == []


def test_duplicate_key_and_roles(setup, viewer):
    create_experiment(setup)
    assert setup.post("/api/v1/experiments", json={"key": "checkout-test", "flag": "checkout",
                                                   "environment": "production"}).status_code == 409
    assert viewer.post("/api/v1/experiments/checkout-test/start").status_code == 403
    assert viewer.get("/api/v1/experiments").json["items"][0]["key"] == "checkout-test"
    assert viewer.get("/api/v1/experiments?status=running").json["items"] == []
    assert len(viewer.get("/api/v1/experiments?flag=checkout&environment=production").json["items"]) == 1


# ---------------------------------------------------------------- lifecycle

def test_lifecycle_with_audit_etags_and_ruleset(setup, sdk):
    create_experiment(setup, secondary_metrics=[])
    assert sdk.get("/sdk/v1/config").json["experiments"] == {}

    assert setup.post("/api/v1/experiments/checkout-test/start", headers={"If-Match": '"5"'}).status_code == 412
    version = ruleset_version()
    started = setup.post("/api/v1/experiments/checkout-test/start", headers={"If-Match": '"1"'})
    assert started.status_code == 200 and started.headers["ETag"] == '"2"'
    assert started.json["status"] == "running" and started.json["started_at"]
    assert ruleset_version() > version
    config = sdk.get("/sdk/v1/config").json
    assert config["experiments"]["checkout-test"]["status"] == "running"
    assert config["experiments"]["checkout-test"]["traffic"] == 10000
    assert setup.post("/api/v1/experiments/checkout-test/start").status_code == 409

    # Running: assignment fields are frozen, traffic may only grow.
    for change in ({"variations": [{"variation": "off", "weight": 2000}, {"variation": "on", "weight": 8000}]},
                   {"control": "on"}, {"unit": "account_id"}, {"salt": "other"},
                   {"layer": {"key": "l", "range": [0, 5000]}}):
        response = setup.patch("/api/v1/experiments/checkout-test", json=change)
        assert response.status_code == 409, (change, response.json)
        assert next(iter(change)) in response.json["error"]["details"]
    assert setup.patch("/api/v1/experiments/checkout-test", json={"traffic": 5000}).status_code == 409
    assert setup.patch("/api/v1/experiments/checkout-test", json={"released_variation": "on"}).status_code == 409
    assert setup.patch("/api/v1/experiments/checkout-test", json={"name": "Checkout"}).json["name"] == "Checkout"
    version = ruleset_version()
    # Same value for a frozen field is fine (PUT-like clients resend everything).
    assert setup.patch("/api/v1/experiments/checkout-test", json={"control": "off", "traffic": 10000}).status_code == 200
    assert ruleset_version() > version

    stopped = setup.post("/api/v1/experiments/checkout-test/stop")
    assert stopped.status_code == 200 and stopped.json["status"] == "stopped" and stopped.json["stopped_at"]
    assert "checkout-test" not in sdk.get("/sdk/v1/config").json["experiments"]
    assert setup.post("/api/v1/experiments/checkout-test/stop").status_code == 409
    assert setup.patch("/api/v1/experiments/checkout-test", json={"traffic": 10000}).status_code == 200
    assert setup.patch("/api/v1/experiments/checkout-test", json={"released_variation": "maybe"}).status_code == 400
    released = setup.patch("/api/v1/experiments/checkout-test", json={"released_variation": "on"})
    assert released.status_code == 200 and released.json["released_variation"] == "on"
    assert sdk.get("/sdk/v1/config").json["experiments"]["checkout-test"]["released_variation"] == "on"

    bad = setup.post("/api/v1/experiments/checkout-test/conclude", json={"decision": {"outcome": "ship"}})
    assert bad.status_code == 400 and "decision.variation" in bad.json["error"]["details"]
    concluded = setup.post("/api/v1/experiments/checkout-test/conclude", json={
        "decision": {"outcome": "ship", "variation": "on", "summary": "+3% conversion"},
        "released_variation": "on"})
    assert concluded.status_code == 200, concluded.json
    assert concluded.json["status"] == "concluded" and concluded.json["concluded_at"]
    assert concluded.json["decision"] == {"outcome": "ship", "variation": "on", "summary": "+3% conversion"}
    assert setup.post("/api/v1/experiments/checkout-test/conclude",
                      json={"decision": {"outcome": "iterate"}}).status_code == 409
    assert audit_actions("checkout-test") == ["create", "start", "update", "update", "stop", "update", "update",
                                              "conclude"]
    entry = setup.get("/api/v1/audit?resource_type=experiment&limit=1").json["items"][0]
    assert entry["before"]["status"] == "stopped" and entry["after"]["status"] == "concluded"
    assert entry["environment"] == "production" and entry["actor"] == "eddie"


def test_start_requires_primary_metric_and_draft_may_change_everything(setup):
    create_experiment(setup, primary_metric=None)
    response = setup.post("/api/v1/experiments/checkout-test/start")
    assert response.status_code == 400 and "primary_metric" in response.json["error"]["details"]
    assert audit_actions("checkout-test") == ["create"]
    changed = setup.patch("/api/v1/experiments/checkout-test", json={
        "variations": [{"variation": "off", "weight": 9000}, {"variation": "on", "weight": 1000}],
        "control": "on", "unit": "account_id", "salt": "s2", "traffic": 100, "primary_metric": "purchases",
        "analysis": {"engine": "bayesian"}})
    assert changed.status_code == 200, changed.json
    assert changed.json["analysis"]["engine"] == "bayesian" and changed.json["analysis"]["alpha"] == 0.05
    assert setup.post("/api/v1/experiments/checkout-test/start").status_code == 200


def test_conclude_a_running_experiment_stops_it(setup):
    create_experiment(setup)
    setup.post("/api/v1/experiments/checkout-test/start")
    concluded = setup.post("/api/v1/experiments/checkout-test/conclude",
                           json={"decision": {"outcome": "rollback", "summary": "no effect"}})
    assert concluded.status_code == 200
    assert concluded.json["stopped_at"] and concluded.json["released_variation"] is None
    assert concluded.json["decision"]["variation"] is None


def test_layers_reject_overlapping_running_experiments(setup):
    create_experiment(setup, "left", layer={"key": "checkout", "range": [0, 5000]})
    create_experiment(setup, "overlap", layer={"key": "checkout", "range": [4000, 6000]})
    create_experiment(setup, "right", layer={"key": "checkout", "range": [5000, 10000]})
    create_experiment(setup, "elsewhere", layer={"key": "search", "range": [0, 10000]})
    assert setup.post("/api/v1/experiments/left/start").status_code == 200
    before = audit_count()
    clash = setup.post("/api/v1/experiments/overlap/start")
    assert clash.status_code == 409 and "left" in clash.json["error"]["message"]
    assert audit_count() == before
    assert setup.post("/api/v1/experiments/right/start").status_code == 200
    assert setup.post("/api/v1/experiments/elsewhere/start").status_code == 200
    setup.post("/api/v1/experiments/left/stop")
    assert setup.post("/api/v1/experiments/overlap/start").status_code == 409  # still overlaps "right"
    setup.post("/api/v1/experiments/right/stop")
    assert setup.post("/api/v1/experiments/overlap/start").status_code == 200


def test_delete_rules(setup, viewer, sdk):
    create_experiment(setup)
    setup.post("/api/v1/experiments/checkout-test/start")
    assert setup.delete("/api/v1/experiments/checkout-test").status_code == 409
    sdk.post("/sdk/v1/events", json={"events": [
        {"id": "00000000-0000-4000-8000-000000000001", "type": "exposure", "ts": "2024-01-01T00:00:00Z",
         "unit": "u1", "experiment": "checkout-test", "variation": "on"},
        {"id": "00000000-0000-4000-8000-000000000002", "type": "track", "ts": "2024-01-01T00:00:01Z",
         "unit": "u1", "event": "purchase"}]})
    setup.post("/api/v1/experiments/checkout-test/stop")
    assert setup.delete("/api/v1/experiments/checkout-test", headers={"If-Match": '"1"'}).status_code == 412
    assert setup.delete("/api/v1/experiments/checkout-test").status_code == 204
    assert viewer.get("/api/v1/experiments/checkout-test").status_code == 404
    # The exposures went with it; track events stay (other experiments use them).
    assert [e.type for e in db.session.scalars(sa.select(Event))] == ["track"]
    assert audit_actions("checkout-test")[-1] == "delete"
    # Its rule left the flag's targeting, which therefore stays writable.
    targeting = viewer.get("/api/v1/flags/checkout/environments/production").json
    assert targeting["rules"] == []
    assert setup.put("/api/v1/flags/checkout/environments/production", json=targeting).status_code == 200
    history = viewer.get("/api/v1/flags/checkout/history?limit=2").json["items"]
    assert history[1]["action"] == "remove_experiment_rule"


def test_flag_variations_used_by_an_experiment_cannot_be_removed(setup):
    create_flag(setup, "three", THREE, kind="string")
    setup.post("/api/v1/experiments", json={"key": "abc", "flag": "three", "environment": "staging"})
    response = setup.patch("/api/v1/flags/three", json={"variations": THREE[:2]})
    assert response.status_code == 400


# ---------------------------------------------------------------- sample size tool

def test_sample_size_tool(viewer, editor):
    body = {"baseline": 0.1, "mde": 0.05}
    response = editor.post("/api/v1/tools/sample-size", json=body)
    assert response.status_code == 200, response.json
    expected = power.sample_size(0.1, 0.05)
    assert response.json["per_variation"] == expected.per_variation
    assert response.json["total"] == 2 * expected.per_variation
    mde = editor.post("/api/v1/tools/sample-size", json={"baseline": 20.0, "stddev": 15.0,
                                                          "units_per_variation": 5000, "variations": 3})
    assert mde.status_code == 200
    assert mde.json["minimum_detectable_effect"] == pytest.approx(
        power.minimum_detectable_effect(5000, 20.0, stddev=15.0, variations=3))
    both = editor.post("/api/v1/tools/sample-size", json={"baseline": 0.1, "mde": 0.05,
                                                           "units_per_variation": expected.per_variation})
    assert both.json["achieved_power"] == pytest.approx(0.8, abs=1e-3)
    assert editor.post("/api/v1/tools/sample-size", json={"baseline": 0.1}).status_code == 400
    bad = editor.post("/api/v1/tools/sample-size", json={"baseline": 1.5, "mde": 0.05})
    assert bad.status_code == 400 and "baseline" in bad.json["error"]["details"]
    assert viewer.post("/api/v1/tools/sample-size", json=body).status_code == 200  # changes nothing


def test_remote_evaluation_logs_each_exposure_once(setup, sdk):
    create_experiment(setup, dimensions=["country"])
    assert setup.post("/api/v1/experiments/checkout-test/start").status_code == 200
    assert setup.patch("/api/v1/flags/checkout/environments/production", json={"enabled": True}).status_code == 200
    for _ in range(2):
        result = sdk.post("/sdk/v1/evaluate", json={"context": {"id": "u-7", "country": "DE"},
                                                    "flags": ["checkout"]}).json["flags"]["checkout"]
        assert result["in_experiment"] is True and result["experiment"] == "checkout-test"
    exposures = list(db.session.scalars(sa.select(Event).where(Event.type == "exposure")))
    assert len(exposures) == 1
    exposure = exposures[0]
    assert (exposure.unit, exposure.experiment, exposure.variation) == ("u-7", "checkout-test", result["variation"])
    assert exposure.unit_type == "id" and exposure.attributes["country"] == "DE"
    # Evaluating without the experiment's unit records nothing.
    sdk.post("/sdk/v1/evaluate", json={"context": {"country": "DE"}})
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == 1
