"""End to end: SDK clients against a real service (gunicorn, shared test database)
run an experiment on a simulated population with a known lift; the results
endpoint finds it, and the CSV export parses and matches the JSON.

Three ``pitcrew.Client`` instances stand in for three app servers. Each simulated
user is evaluated by one of them (the SDK assigns the variation locally and
reports the exposure), then converts with probability 20 % (control) or
30 % (treatment) and, when converting, tracks a purchase with a value. The
admin side (flag, metrics, experiment, results) goes through the admin API.
"""

import csv
import io
import random

import pytest
import sqlalchemy as sa

from pitcrew import Client
from service.extensions import db
from service.models import Event

from .support import make_sdk_key

USERS = 3000
RATES = {"off": 0.20, "on": 0.30}
PLANS = ("free", "pro")


@pytest.fixture
def running_experiment(admin):
    flag = admin.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": [
        {"key": "on", "value": True}, {"key": "off", "value": False}]})
    assert flag.status_code == 201, flag.json
    admin.post("/api/v1/metrics", json={"key": "purchases", "event": "purchase", "type": "conversion"})
    admin.post("/api/v1/metrics", json={"key": "revenue", "event": "purchase", "type": "mean"})
    created = admin.post("/api/v1/experiments", json={
        "key": "checkout-redesign", "flag": "checkout", "environment": "production",
        "variations": [{"variation": "off", "weight": 5000}, {"variation": "on", "weight": 5000}],
        "control": "off", "primary_metric": "purchases", "secondary_metrics": ["revenue"],
        "dimensions": ["plan"]})
    assert created.status_code == 201, created.json
    # The experiment's rule was added to the flag's production targeting; turn the flag on.
    enabled = admin.patch("/api/v1/flags/checkout/environments/production", json={"enabled": True})
    assert enabled.status_code == 200, enabled.json
    assert admin.post("/api/v1/experiments/checkout-redesign/start").status_code == 200
    return admin


def simulate(url: str, sdk_key: str) -> dict:
    rng = random.Random(1234)
    truth = {"off": [0, 0], "on": [0, 0]}  # units, conversions
    clients = [Client(url, sdk_key, poll_interval=1, flush_interval=0.2) for _ in range(3)]
    try:
        for client in clients:
            assert client.wait_until_ready(10)
        for u in range(USERS):
            context = {"id": f"user-{u}", "plan": PLANS[u % 2]}
            client = clients[u % 3]
            detail = client.variation_detail("checkout", context, False)
            assert detail.in_experiment and detail.experiment == "checkout-redesign", detail
            variation = detail.variation
            truth[variation][0] += 1
            if rng.random() < RATES[variation]:
                truth[variation][1] += 1
                client.track("purchase", context, value=round(rng.uniform(5, 50), 2))
            if u % 7 == 0:  # a repeat visit: deduplicated by the SDK, idempotent either way
                client.variation("checkout", context, False)
        for client in clients:
            assert client.flush(15)
            stats = client.stats()
            assert stats["dropped"] == 0 and stats["failed"] == 0, stats
    finally:
        for client in clients:
            client.close()
    return truth


def test_sdk_clients_produce_results_with_the_known_lift(running_experiment, live_server, viewer):
    truth = simulate(live_server.url, make_sdk_key("production"))
    db.session.expire_all()
    exposures = db.session.scalar(sa.select(sa.func.count()).select_from(Event).where(Event.type == "exposure"))
    assert exposures == USERS  # one per user: the repeat visits were deduplicated

    response = viewer.get("/api/v1/experiments/checkout-redesign/results")
    assert response.status_code == 200, response.json
    results = response.json
    assert results["units"] == {"off": truth["off"][0], "on": truth["on"][0]}
    assert results["multiple_exposures"] == 0 and results["srm"]["flagged"] is False
    purchases = next(m for m in results["metrics"] if m["metric"] == "purchases" and m["dimension"] is None)
    control, treatment = purchases["variations"]
    assert control["value"] == pytest.approx(truth["off"][1] / truth["off"][0])
    assert treatment["value"] == pytest.approx(truth["on"][1] / truth["on"][0])
    # The known lift (+10 points, +50 %) is found and inside the intervals.
    assert treatment["absolute"]["p_value"] < 0.001
    lo, hi = treatment["absolute"]["ci"]
    assert lo < RATES["on"] - RATES["off"] < hi and lo > 0
    lo, hi = treatment["relative"]["ci"]
    assert lo < RATES["on"] / RATES["off"] - 1 < hi

    # CSV export of the same results (with a breakdown by the recorded dimension).
    document = viewer.get("/api/v1/experiments/checkout-redesign/results?dimension=plan").json
    text = viewer.get("/api/v1/experiments/checkout-redesign/results?dimension=plan&format=csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    expected = [(m, v) for m in document["metrics"] for v in m["variations"]]
    assert len(rows) == len(expected) == 2 * 3 * 2  # 2 metrics x (overall + 2 plans) x 2 variations
    for row, (metric, v) in zip(rows, expected, strict=True):
        assert row["metric"] == metric["metric"] and row["variation"] == v["variation"]
        assert row["dimension_value"] == (metric["dimension"]["value"] if metric["dimension"] else "")
        assert int(row["units"]) == v["units"] and float(row["value"]) == v["value"]
        if v["absolute"] is not None:
            assert float(row["abs_estimate"]) == v["absolute"]["estimate"]
            assert [float(row["abs_ci_low"]), float(row["abs_ci_high"])] == v["absolute"]["ci"]
            assert float(row["rel_p_value"]) == v["relative"]["p_value"]
        else:
            assert row["abs_estimate"] == row["rel_p_value"] == ""
    plans = {m["dimension"]["value"] for m in document["metrics"] if m["dimension"]}
    assert plans == set(PLANS)

    exposures_csv = viewer.get("/api/v1/experiments/checkout-redesign/exposures").get_data(as_text=True)
    exported = list(csv.DictReader(io.StringIO(exposures_csv)))
    assert len(exported) == USERS and {r["plan"] for r in exported} == set(PLANS)
