"""Holdouts end to end: real SDK clients against a real gunicorn server (docs/holdouts.md).

Two clients evaluate a flag that is in a 10 % holdout and serves a running
experiment; their events go through POST /sdk/v1/events into the database. No
held-out unit ever appears in the experiment's exposures; every held-out and
measured unit is recorded once per group; the holdout's results count them."""

import hashlib

import sqlalchemy as sa

from pitcrew import Client, Reason
from service.extensions import db
from tests.sdk.support import wait_for
from tests.service.support import make_sdk_key

ENV = "production"
ONOFF = [{"key": "on", "value": True}, {"key": "off", "value": False}]


def group_of(unit: str) -> str | None:
    b = int(hashlib.sha256(f"holdout:h10.{unit}".encode()).hexdigest()[:16], 16) * 10000 // 2**64
    return "held_out" if b < 1000 else "measured" if b < 2000 else None


def exposures():
    rows = db.session.execute(sa.text(
        "SELECT unit, experiment, variation FROM events WHERE type = 'exposure'")).all()
    db.session.commit()
    return rows


def test_real_clients_never_expose_held_out_units_to_the_experiment(live_server, admin):
    assert admin.post("/api/v1/holdouts", json={"key": "h10", "environment": ENV, "percent": 10}).status_code == 201
    assert admin.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": ONOFF}
                      ).status_code == 201
    assert admin.post("/api/v1/metrics", json={"key": "buys", "event": "buy", "type": "conversion"}
                      ).status_code == 201
    r = admin.post("/api/v1/experiments", json={
        "key": "checkout-test", "flag": "checkout", "environment": ENV, "control": "off", "primary_metric": "buys",
        "variations": [{"variation": "off", "weight": 5000}, {"variation": "on", "weight": 5000}]})
    assert r.status_code == 201, r.json
    assert admin.post("/api/v1/experiments/checkout-test/start").status_code == 200
    r = admin.patch(f"/api/v1/flags/checkout/environments/{ENV}",
                    json={"enabled": True, "holdout": "h10", "fallthrough": {"experiment": "checkout-test"}})
    assert r.status_code == 200, r.json

    units = [f"user-{i}" for i in range(1500)]
    groups = {u: group_of(u) for u in units}
    key = make_sdk_key(ENV)
    clients = [Client(live_server.url, key, flush_interval=0.2, poll_interval=0.5, timeout=5) for _ in range(2)]
    try:
        for client in clients:
            assert client.wait_until_ready(10)
            assert wait_for(lambda c=client: c.ruleset.flag("checkout") is not None and
                            c.ruleset.flag("checkout").error is None, 10)
        for n, client in enumerate(clients):
            for u in units[n * 500:]:  # the clients overlap on 1000 units
                r = client.variation_detail("checkout", {"id": u}, None)
                if groups[u] == "held_out":
                    assert (r.reason, r.value, r.in_experiment, r.experiment) == (Reason.HOLDOUT, False, False, None)
                else:
                    assert r.in_experiment and r.experiment == "checkout-test"
                if int(u.split("-")[1]) % 3 == 0:
                    client.track("buy", {"id": u})
            assert client.flush(10)
            assert client.stats()["dropped"] == 0
    finally:
        for client in clients:
            client.close(5)

    rows = exposures()
    in_experiment = {u for u, e, _ in rows if e == "checkout-test"}
    held_out = {u for u, g in groups.items() if g == "held_out"}
    assert in_experiment == set(units) - held_out and not in_experiment & held_out
    recorded = {(u, v) for u, e, v in rows if e == "holdout:h10"}
    assert recorded == {(u, g) for u, g in groups.items() if g}
    assert all(e in ("checkout-test", "holdout:h10") for _, e, _ in rows)

    results = admin.get("/api/v1/holdouts/h10/results?metric=buys").json
    assert results["units"] == {"held_out": len(held_out),
                                "measured": sum(1 for g in groups.values() if g == "measured")}
    assert results["multiple_exposures"] == 0
    experiment = admin.get("/api/v1/experiments/checkout-test/results").json
    assert sum(experiment["units"].values()) == len(units) - len(held_out)
