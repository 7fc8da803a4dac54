"""Guarded rollouts: validation, how each step serves (checked with the real
engine on the real ruleset), the worker's decisions with its clock injected,
and two end-to-end runs on simulated traffic through real SDK clients
against a live server: a guardrail the new variation worsens by 20 % rolls
back before the last step; with no effect the rollout completes."""

import itertools
import random
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from pitcrew import Client
from pitcrew.evaluation import compile_ruleset, evaluate
from service import ruleset
from service.domain import announce as announcements
from service.extensions import db
from service.models import AuditEntry, Environment, Rollout
from service.worker import Worker

from .support import make_sdk_key

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
FLAG = "/api/v1/flags/checkout"
PROD = f"{FLAG}/environments/production"
STEPS = [{"percent": 10, "hold_hours": 1}, {"percent": 50, "hold_hours": 1}, {"percent": 75, "hold_hours": 1},
         {"percent": 100, "hold_hours": 0}]


@pytest.fixture
def flag(editor):
    assert editor.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": BOOL}).status_code == 201
    vip = {"id": "vip", "conditions": [{"attribute": "plan", "op": "in", "values": ["vip"]}],
           "serve": {"variation": "on"}}
    body = {"enabled": True, "off_variation": "off", "rules": [vip], "fallthrough": {"variation": "off"}}
    assert editor.put(PROD, json=body).status_code == 200
    assert editor.post("/api/v1/metrics", json={"key": "purchases", "event": "purchase", "type": "conversion"}).status_code == 201
    return editor


def start(client, **overrides):
    body = {"variation": "on", "from_variation": "off", "steps": STEPS, "guardrails": ["purchases"], **overrides}
    return client.post(f"{PROD}/rollouts", json=body)


def served(n: int = 20000) -> dict:
    """{unit: variation} for n units evaluated by the engine on production's current ruleset."""
    db.session.expire_all()
    env = db.session.scalars(sa.select(Environment).where(Environment.key == "production")).one()
    compiled = compile_ruleset(ruleset.build(env.id, env.ruleset_version))
    return {f"u{i}": evaluate(compiled, "checkout", {"id": f"u{i}"}, None).variation for i in range(n)}


# ---------------------------------------------------------------- validation

def test_bad_rollouts_are_refused(flag, admin):
    cases = [
        ({"steps": [{"percent": 50, "hold_hours": 1}, {"percent": 20, "hold_hours": 1},
                    {"percent": 100, "hold_hours": 0}]}, "steps.1.percent"),
        ({"steps": [{"percent": 50, "hold_hours": 1}, {"percent": 90, "hold_hours": 1}]}, "steps.1.percent"),
        ({"steps": [{"percent": 50, "hold_hours": 1}, {"percent": 100, "hold_hours": 5}]}, "steps.1.hold_hours"),
        ({"steps": [{"percent": 100, "hold_hours": 0}]}, "steps"),
        ({"steps": [{"percent": 10.005, "hold_hours": 1}, {"percent": 100, "hold_hours": 0}]}, "steps.0.percent"),
        ({"steps": [{"percent": 0, "hold_hours": 1}, {"percent": 100, "hold_hours": 0}]}, "steps.0.percent"),
        ({"steps": [{"percent": 10, "hold_hours": -1}, {"percent": 100, "hold_hours": 0}]}, "steps.0.hold_hours"),
        ({"guardrails": ["nope"]}, "guardrails.0"),
        ({"guardrails": ["purchases", "purchases"]}, "guardrails"),
        ({"variation": "off"}, "variation"),
        ({"variation": "maybe"}, "variation"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": 0.9}, "alpha"),
    ]
    for overrides, field in cases:
        response = start(flag, **overrides)
        assert response.status_code == 400, (overrides, response.json)
        assert field in response.json["error"]["details"], (overrides, response.json)
    # The fallthrough must serve from_variation; the flag must be on.
    wrong = start(flag, variation="off", from_variation="on")
    assert wrong.status_code == 409 and "from_variation" in wrong.json["error"]["details"]
    assert flag.patch(PROD, json={"enabled": False}).status_code == 200
    assert start(flag).status_code == 409
    assert flag.patch(PROD, json={"enabled": True}).status_code == 200
    assert start(flag).status_code == 201
    assert start(flag).status_code == 409  # one running rollout per flag and environment
    # Protected environments: through a change request.
    admin.patch("/api/v1/environments/staging", json={"approvals_required": 1})
    protected = flag.post(f"{FLAG}/environments/staging/rollouts", json={
        "variation": "on", "from_variation": "off", "steps": STEPS})
    assert protected.status_code == 409 and protected.json["error"]["code"] == "change_request_required"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Rollout)) == 1


# ---------------------------------------------------------------- mechanics

def test_steps_move_traffic_monotonically_and_complete(flag, viewer):
    seen = []

    def listen(type, data, env):
        if type.startswith("rollout."):
            seen.append(type)

    announcements.add_listener(listen)
    try:
        created = start(flag)
        assert created.status_code == 201, created.json
        rollout = created.json
        rid, t0 = rollout["id"], db.session.get(Rollout, created.json["id"]).step_started_at
        assert rollout["state"] == "running" and rollout["percent"] == 10 and rollout["step"] == 0
        live = viewer.get(PROD).json
        assert [r["id"] for r in live["rules"]] == ["vip", f"rollout-{rid}"]
        assert live["rules"][1]["serve"] == {"experiment": rollout["experiment"]}
        assert live["fallthrough"] == {"variation": "off"}
        experiment = viewer.get(f"/api/v1/experiments/{rollout['experiment']}").json
        assert experiment["status"] == "running" and experiment["traffic"] == 2000
        assert experiment["tags"] == ["guarded-rollout"] and experiment["control"] == "off"
        assert experiment["analysis"]["sequential"] is True

        history = []
        for hours, percent in ((0.5, 10), (1.01, 50), (2.02, 75)):
            Worker(clock=lambda h=hours: t0 + timedelta(hours=h)).run_once()
            db.session.expire_all()
            state = viewer.get(f"{PROD}/rollouts/{rid}").json
            assert state["percent"] == percent and state["state"] == "running", state
            history.append(served())
            share = sum(v == "on" for v in history[-1].values()) / len(history[-1])
            assert share == pytest.approx(percent / 100, abs=0.015)
        # A unit that got the new variation keeps it at every later step.
        for earlier, later in itertools.pairwise(history):
            assert all(later[u] == "on" for u, v in earlier.items() if v == "on")
        # Past 50 %: the fallthrough serves the new variation, the experiment keeps equal arms.
        assert viewer.get(PROD).json["fallthrough"] == {"variation": "on"}
        assert viewer.get(f"/api/v1/experiments/{rollout['experiment']}").json["traffic"] == 5000
        # Targeted rules before the rollout keep their say.
        db.session.expire_all()
        env = db.session.scalars(sa.select(Environment).where(Environment.key == "production")).one()
        compiled = compile_ruleset(ruleset.build(env.id, env.ruleset_version))
        assert evaluate(compiled, "checkout", {"id": "u1", "plan": "vip"}, None).rule_id == "vip"

        Worker(clock=lambda: t0 + timedelta(hours=3.1)).run_once()
        db.session.expire_all()
        done = viewer.get(f"{PROD}/rollouts/{rid}").json
        assert done["state"] == "completed" and done["percent"] == 100 and done["next_check_at"] is None
        live = viewer.get(PROD).json
        assert [r["id"] for r in live["rules"]] == ["vip"] and live["fallthrough"] == {"variation": "on"}
        assert set(served(2000).values()) == {"on"}
        experiment = viewer.get(f"/api/v1/experiments/{rollout['experiment']}").json
        assert experiment["status"] == "concluded" and experiment["decision"]["outcome"] == "ship"
        checks = viewer.get(f"{PROD}/rollouts/{rid}/checks").json["items"]
        assert [c["decision"] for c in reversed(checks)] == ["hold", "advance", "advance", "complete"]
        assert checks[0]["metrics"][0]["metric"] == "purchases"
        assert seen == ["rollout.advanced", "rollout.advanced", "rollout.completed"]
        actions = db.session.scalars(sa.select(AuditEntry.action).where(AuditEntry.resource_type == "rollout")
                                     .order_by(AuditEntry.id)).all()
        assert actions == ["create", "advance", "advance", "complete"]
        assert [r["id"] for r in viewer.get(f"{FLAG}/rollouts").json["items"]] == [rid]
        assert viewer.get(f"{PROD}/rollouts?state=running").json["items"] == []
    finally:
        announcements.remove_listener(listen)


def test_the_rollouts_experiment_is_managed_by_the_rollout_alone(flag):
    rollout = start(flag).json
    key = rollout["experiment"]
    for response in (flag.post(f"/api/v1/experiments/{key}/stop"),
                     flag.patch(f"/api/v1/experiments/{key}", json={"traffic": 10000}),
                     flag.delete(f"/api/v1/experiments/{key}")):
        assert response.status_code == 409, response.json
        assert "rollout" in response.json["error"]["message"]
    assert flag.get(f"/api/v1/experiments/{key}").json["status"] == "running"


def test_cancel_restores_the_old_variation(flag, viewer):
    rollout = start(flag, steps=[{"percent": 60, "hold_hours": 1}, {"percent": 100, "hold_hours": 0}]).json
    assert flag.get(PROD).json["fallthrough"] == {"variation": "on"}
    assert viewer.post(f"{PROD}/rollouts/{rollout['id']}/cancel").status_code == 403
    cancelled = flag.post(f"{PROD}/rollouts/{rollout['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json["state"] == "cancelled"
    live = flag.get(PROD).json
    assert live["fallthrough"] == {"variation": "off"} and [r["id"] for r in live["rules"]] == ["vip"]
    assert set(served(2000).values()) == {"off"}
    assert flag.post(f"{PROD}/rollouts/{rollout['id']}/cancel").status_code == 409
    assert flag.get(f"/api/v1/experiments/{rollout['experiment']}").json["decision"]["outcome"] == "rollback"


def test_a_rollout_whose_rule_was_removed_fails(flag):
    rollout = start(flag).json
    live = flag.get(PROD).json
    assert flag.put(PROD, json={**live, "rules": live["rules"][:1]}).status_code == 200
    Worker().run_once()
    db.session.expire_all()
    failed = flag.get(f"{PROD}/rollouts/{rollout['id']}").json
    assert failed["state"] == "failed" and "was removed" in failed["reason"]
    assert flag.get(f"/api/v1/experiments/{rollout['experiment']}").json["status"] == "concluded"


# ---------------------------------------------------------------- end to end, through SDK clients

RATES_HARM = {"off": 0.50, "on": 0.40}  # the new variation worsens purchases by 20 %
RATES_NONE = {"off": 0.50, "on": 0.50}
E2E_STEPS = [{"percent": 10, "hold_hours": 1}, {"percent": 25, "hold_hours": 1}, {"percent": 50, "hold_hours": 1},
             {"percent": 100, "hold_hours": 0}]
USERS_PER_STEP = 3000


def _wait_for_version(clients, version: int) -> None:
    deadline = time.monotonic() + 20
    while any((c.status()["version"] or 0) < version for c in clients):
        assert time.monotonic() < deadline, [c.status() for c in clients]
        time.sleep(0.05)


def run_rollout(client, url: str, sdk_key: str, rates: dict, seed: int) -> tuple[dict, list[dict]]:
    """Simulate USERS_PER_STEP new users per step (and every earlier user returning) through two
    SDK clients, advancing the worker's clock past each hold; the final rollout and the history
    of each user's variations."""
    rng = random.Random(seed)
    created = client.post(f"{PROD}/rollouts", json={"variation": "on", "from_variation": "off", "steps": E2E_STEPS,
                                                    "guardrails": ["purchases"], "alpha": 0.05})
    assert created.status_code == 201, created.json
    rid = created.json["id"]
    t0 = db.session.get(Rollout, rid).step_started_at
    sdks = [Client(url, sdk_key, poll_interval=0.1, flush_interval=0.2) for _ in range(2)]
    assignments: dict[str, list[str]] = {}
    try:
        for sdk in sdks:
            assert sdk.wait_until_ready(10)
        for step in range(len(E2E_STEPS) - 1):
            db.session.expire_all()
            _wait_for_version(sdks, db.session.scalar(
                sa.select(Environment.ruleset_version).where(Environment.key == "production")))
            first = len(assignments)
            for u in list(range(first)) + list(range(first, first + USERS_PER_STEP)):
                context = {"id": f"user-{u}"}
                sdk = sdks[u % 2]
                variation = sdk.variation_detail("checkout", context, False).variation
                assignments.setdefault(context["id"], []).append(variation)
                if u >= first and rng.random() < rates[variation]:
                    sdk.track("purchase", context)
            for sdk in sdks:
                assert sdk.flush(20)
                assert sdk.stats()["dropped"] == 0 and sdk.stats()["failed"] == 0
            Worker(clock=lambda s=step: t0 + timedelta(hours=s + 1, minutes=1)).run_once()
            db.session.expire_all()
            if db.session.get(Rollout, rid).state != "running":
                break
    finally:
        for sdk in sdks:
            sdk.close()
    db.session.expire_all()
    return client.get(f"{PROD}/rollouts/{rid}").json, assignments


@pytest.fixture
def sdk_key(flag):
    return make_sdk_key("production")


def test_e2e_a_harmful_variation_is_rolled_back_before_the_last_step(flag, live_server, sdk_key):
    rollout, assignments = run_rollout(flag, live_server.url, sdk_key, RATES_HARM, seed=7)
    assert rollout["state"] == "rolled_back", rollout
    assert rollout["percent"] < 100
    assert "purchases" in rollout["reason"] and "confidence sequence" in rollout["reason"]
    check = rollout["latest_check"]
    assert check["decision"] == "rollback"
    entry = check["metrics"][0]
    assert entry["harm"] is True and entry["ci"][1] < 0
    assert entry["values"]["on"] < entry["values"]["off"]
    live = flag.get(PROD).json
    assert live["fallthrough"] == {"variation": "off"} and [r["id"] for r in live["rules"]] == ["vip"]
    # A user who got the new variation kept it while the rollout ran (no flip-flop).
    assert all("off" not in v[v.index("on"):] for v in assignments.values() if "on" in v)
    # The rollout's experiment recorded the exposures cleanly: no unit saw both arms.
    results = flag.get(f"/api/v1/experiments/{rollout['experiment']}/results").json
    assert results["multiple_exposures"] == 0 and results["srm"]["flagged"] is False
    assert sum(results["units"].values()) == sum(check["units"].values())


def test_e2e_a_variation_without_effect_completes(flag, live_server, sdk_key):
    rollout, assignments = run_rollout(flag, live_server.url, sdk_key, RATES_NONE, seed=11)
    assert rollout["state"] == "completed", rollout
    checks = flag.get(f"{PROD}/rollouts/{rollout['id']}/checks").json["items"]
    assert [c["decision"] for c in reversed(checks)] == ["advance", "advance", "complete"]
    assert all(not m["harm"] for c in checks for m in c["metrics"])
    assert flag.get(PROD).json["fallthrough"] == {"variation": "on"}
    assert all("off" not in v[v.index("on"):] for v in assignments.values() if "on" in v)


def test_the_experiment_key_fits_and_never_takes_a_users_key(editor):
    key = "f" * 100
    assert editor.post("/api/v1/flags", json={"key": key, "kind": "boolean", "variations": BOOL}).status_code == 201
    path = f"/api/v1/flags/{key}/environments/production"
    assert editor.put(path, json={"enabled": True, "off_variation": "off", "fallthrough": {"variation": "off"}}).status_code == 200
    taken = f"{key[:70]}-rollout-1"
    assert editor.post("/api/v1/experiments", json={"key": taken, "flag": key, "environment": "staging"}).status_code == 201
    created = editor.post(f"{path}/rollouts", json={"variation": "on", "from_variation": "off", "steps": STEPS})
    assert created.status_code == 201, created.json
    assert created.json["experiment"].startswith(taken + "-") and len(created.json["experiment"]) <= 100


def test_a_finished_rollouts_experiment_is_an_ordinary_concluded_experiment(flag):
    rollout = start(flag).json
    assert flag.post(f"{PROD}/rollouts/{rollout['id']}/cancel").status_code == 200
    assert flag.patch(f"/api/v1/experiments/{rollout['experiment']}", json={"name": "Old rollout"}).status_code == 200
    assert flag.delete(f"/api/v1/experiments/{rollout['experiment']}").status_code == 204
    gone = flag.get(f"{PROD}/rollouts/{rollout['id']}").json
    assert gone["state"] == "cancelled" and gone["experiment"] is None
