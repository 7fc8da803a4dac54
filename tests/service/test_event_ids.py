"""Event idempotency is per environment, and the ids the server derives cannot be pre-empted."""

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from service import config, ingest
from service.extensions import db
from service.models import Event

from .support import ApiClient, make_sdk_key

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]


def track(event_id: str, unit="u1"):
    moment = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    return {"id": event_id, "type": "track", "ts": moment, "unit": unit, "event": "buy"}


def test_an_id_used_in_one_environment_is_not_a_duplicate_in_another(app):
    development = ApiClient(app.test_client(), make_sdk_key("development"))
    production = ApiClient(app.test_client(), make_sdk_key("production"))
    event_id = str(uuid.uuid4())
    first = development.post("/sdk/v1/events", json={"events": [track(event_id)]})
    assert first.json == {"accepted": 1, "duplicates": 0, "rejected": []}
    second = production.post("/sdk/v1/events", json={"events": [track(event_id)]})
    assert second.json == {"accepted": 1, "duplicates": 0, "rejected": []}
    replay = production.post("/sdk/v1/events", json={"events": [track(event_id)]})
    assert replay.json == {"accepted": 0, "duplicates": 1, "rejected": []}
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == 2


def test_server_event_ids_are_keyed_stable_and_not_uuid5_of_public_values():
    parts = (3, "checkout-test", "user-1", "on")
    one = ingest.server_event_id("k" * 40, *parts)
    assert one == ingest.server_event_id("k" * 40, *parts)
    assert uuid.UUID(one).version == 4
    assert one != ingest.server_event_id("q" * 40, *parts)  # needs the secret
    assert one != ingest.server_event_id("k" * 40, 3, "checkout-test", "user-2", "on")
    namespace = uuid.UUID("4f0b7c52-2b1e-4c1b-9a57-0d7e3c2a9b11")  # the old, public derivation
    assert one != str(uuid.uuid5(namespace, "3:checkout-test:user-1:on"))


def test_remote_evaluation_exposures_use_the_secret_key(app, admin, sdk):
    assert admin.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": BOOL}).status_code == 201
    admin.post("/api/v1/metrics", json={"key": "buy", "event": "buy", "type": "conversion"})
    assert admin.post("/api/v1/experiments", json={"key": "exp", "flag": "checkout", "environment": "production",
                                                   "primary_metric": "buy"}).status_code == 201
    assert admin.patch("/api/v1/flags/checkout/environments/production", json={"enabled": True}).status_code == 200
    assert admin.post("/api/v1/experiments/exp/start").status_code == 200
    for _ in range(2):  # the same unit again: the same id, stored once
        response = sdk.post("/sdk/v1/evaluate", json={"context": {"id": "user-1"}, "flags": ["checkout"]})
        assert response.status_code == 200 and response.json["flags"]["checkout"]["in_experiment"] is True
    db.session.rollback()
    rows = list(db.session.scalars(sa.select(Event).where(Event.type == "exposure")))
    assert len(rows) == 1
    variation = rows[0].variation
    expected = ingest.server_event_id(app.config["SECRET_KEY"], rows[0].environment_id, "exp", "user-1", variation)
    assert str(rows[0].client_id) == expected


def test_secret_key_is_generated_once_per_instance_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("PITCREW_SECRET_KEY", raising=False)
    path = tmp_path / "instance" / config.SECRET_KEY_FILE
    first = config._instance_secret(path)
    assert len(first) >= config.MIN_SECRET_KEY_CHARS and path.stat().st_mode & 0o777 == 0o600
    assert config._instance_secret(path) == first
    assert list(path.parent.iterdir()) == [path]  # no temporary files left behind
    monkeypatch.setenv("PITCREW_SECRET_KEY", "s" * 40)
    assert config.secret_key() == "s" * 40
    monkeypatch.setenv("PITCREW_SECRET_KEY", "short")
    try:
        config.secret_key()
    except RuntimeError as exc:
        assert "at least 32" in str(exc)
    else:
        raise AssertionError("a short PITCREW_SECRET_KEY was accepted")


def test_workers_starting_together_agree_on_one_generated_key(tmp_path):
    """gunicorn workers create the app at the same time: they must all end up with the same key."""
    code = ("import sys; from pathlib import Path; from service import config; "
            "print(config._instance_secret(Path(sys.argv[1])))")
    path = tmp_path / "secret-key"
    processes = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
                 for _ in range(6)]
    keys = {p.communicate(timeout=60)[0].strip() for p in processes}
    assert len(keys) == 1 and keys == {path.read_text().strip()}
