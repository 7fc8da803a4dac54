"""Set-ups shared by the console's process tests (change requests, schedules, guarded
rollouts): through the API and the real worker, never by writing rows directly."""

import json
import random
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

from service.extensions import db
from service.models import Rollout
from service.worker import Worker

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
STEPS = [{"percent": 10, "hold_hours": 1}, {"percent": 50, "hold_hours": 1}, {"percent": 100, "hold_hours": 0}]


def boolean_flag(client, key: str = "checkout", *, on_in: tuple = ("production",)) -> None:
    """A boolean flag serving "off" by its default rule, turned on in ``on_in``."""
    assert client.post("/api/v1/flags", json={"key": key, "kind": "boolean", "variations": BOOL}).status_code == 201
    for env in on_in:
        body = {"enabled": True, "off_variation": "off", "fallthrough": {"variation": "off"}}
        response = client.put(f"/api/v1/flags/{key}/environments/{env}", json=body)
        assert response.status_code == 200, response.json


def protect(admin, env: str = "production", approvals: int = 2) -> None:
    response = admin.patch(f"/api/v1/environments/{env}", json={"approvals_required": approvals})
    assert response.status_code == 200, response.json


def events_for(experiment: str, units: range, rates: dict, rng: random.Random, prefix: str = "u") -> list[dict]:
    """Exposures of ``units`` to the rollout's two arms (alternating) and their purchases,
    as an SDK would send them."""
    events = []
    now = datetime.now(UTC)
    for i in units:
        unit = f"{prefix}{i}"
        variation = "on" if i % 2 else "off"
        events.append({"id": str(uuid.uuid4()), "type": "exposure", "ts": now.isoformat(), "unit": unit,
                       "experiment": experiment, "variation": variation})
        if rng.random() < rates[variation]:
            events.append({"id": str(uuid.uuid4()), "type": "track", "unit": unit, "event": "purchase",
                           "ts": (now + timedelta(seconds=1)).isoformat()})
    return events


def send(post, events: list[dict]) -> None:
    """``post(body) -> status``: the events endpoint through a test client or over HTTP."""
    for i in range(0, len(events), 1000):
        assert post({"events": events[i:i + 1000]}) == 202


def http_post(url: str, sdk_key: str):
    def post(body) -> int:
        request = urllib.request.Request(f"{url}/sdk/v1/events", data=json.dumps(body).encode(), method="POST",
                                         headers={"Authorization": f"Bearer {sdk_key}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status
    return post


def harmful_rollout(client, post, *, batches=(60, 240, 400), seed: int = 3) -> dict:
    """A guarded rollout of "on" over "off" (purchases: on 30 %, off 60 %) in production,
    checked by the real worker after each batch of traffic (clock a few minutes apart):
    not enough data at first, then harm, so it rolls back with its numbers. The rollout."""
    assert client.post("/api/v1/metrics", json={"key": "purchases", "event": "purchase",
                                                "type": "conversion"}).status_code == 201
    created = client.post("/api/v1/flags/checkout/environments/production/rollouts", json={
        "variation": "on", "from_variation": "off", "steps": STEPS, "guardrails": ["purchases"], "alpha": 0.05})
    assert created.status_code == 201, created.json
    rollout = created.json
    t0 = db.session.get(Rollout, rollout["id"]).step_started_at
    rng = random.Random(seed)
    start = 0
    for k, size in enumerate(batches):
        send(post, events_for(rollout["experiment"], range(start, start + size), {"on": 0.3, "off": 0.6}, rng))
        start += size
        Worker(clock=lambda k=k: t0 + timedelta(minutes=1 + 6 * k)).run_once()
        db.session.expire_all()
        if db.session.get(Rollout, rollout["id"]).state != "running":
            break
    return client.get(f"/api/v1/flags/checkout/environments/production/rollouts/{rollout['id']}").json
