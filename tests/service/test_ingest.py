"""POST /sdk/v1/events (docs/api.md): batch limits, per-event validation with
partial acceptance, idempotency by event id, timestamps, gzip (and gzip bombs),
evaluation counts, and the stored rows."""

import gzip
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from service import ingest
from service.extensions import db
from service.models import Environment, Event, FlagEvaluation

from .support import make_sdk_key

NOW = datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def exposure(**extra):
    return {"id": str(uuid.uuid4()), "type": "exposure", "ts": iso(NOW - timedelta(minutes=1)), "unit": "user-1",
            "experiment": "checkout-test", "variation": "on", **extra}


def track(**extra):
    return {"id": str(uuid.uuid4()), "type": "track", "ts": iso(NOW - timedelta(minutes=1)), "unit": "user-1",
            "event": "purchase", **extra}


def stored() -> list[Event]:
    return list(db.session.scalars(sa.select(Event).order_by(Event.ts, Event.type)))


def post_gzip(sdk, body: bytes, **headers):
    return sdk.post("/sdk/v1/events", data=body, headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip", **headers})


def test_valid_batch_is_stored_and_committed(sdk):
    events = [exposure(attributes={"unit_type": "id", "country": "DE", "plan": "pro"}),
              track(value=12.5, attributes={"unit_type": "account_id"}), track(unit=42)]
    response = sdk.post("/sdk/v1/events", json={"events": events})
    assert response.status_code == 202
    assert response.json == {"accepted": 3, "duplicates": 0, "rejected": []}
    db.session.expire_all()
    rows = {str(r.client_id): r for r in stored()}
    assert set(rows) == {e["id"] for e in events}
    ex = rows[events[0]["id"]]
    production = db.session.scalar(sa.select(Environment.id).where(Environment.key == "production"))
    assert (ex.environment_id, ex.type, ex.unit, ex.unit_type, ex.experiment, ex.variation) == (
        production, "exposure", "user-1", "id", "checkout-test", "on")
    assert ex.attributes == {"country": "DE", "plan": "pro"}  # unit_type lives in its own column
    assert ingest.from_micros(ex.ts) == datetime.fromisoformat(events[0]["ts"])
    tr = rows[events[1]["id"]]
    assert (tr.type, tr.event, tr.value, tr.unit_type, tr.attributes) == ("track", "purchase", 12.5, "account_id", None)
    assert rows[events[2]["id"]].unit == "42" and rows[events[2]["id"]].value is None


def test_partial_acceptance_reports_each_rejected_event(sdk):
    good = [exposure(), track()]
    bad = [
        ("not an event", "must be an object"),
        ({**track(), "id": "nope"}, "id"),
        ({**track(), "id": None}, "id"),
        ({**track(), "type": "click"}, "type"),
        (track(ts="yesterday"), "ts"),
        (track(ts=1714564800), "ts"),
        (track(ts=iso(NOW + timedelta(hours=2))), "future"),
        (track(ts="1999-12-31T23:59:59Z"), "2000"),
        (track(unit=""), "unit"),
        (track(unit=True), "unit"),
        (track(unit="x" * 257), "unit"),
        (track(unit=10 ** 300), "unit"),
        (track(event=None), "event"),
        (track(value="12"), "value"),
        (track(value=True), "value"),
        (track(value=10 ** 400), "range"),
        (exposure(experiment=None), "experiment"),
        (exposure(variation=""), "variation"),
        (track(attributes=["a"]), "attributes"),
        (track(attributes={"unit_type": 5}), "unit_type"),
        (track(unit="a\x00b"), "NUL"),
        (track(event="\ud800"), "surrogate"),
        (exposure(variation="x\x00"), "NUL"),
        (track(attributes={"k": "\udfff"}), "surrogate"),
        (track(attributes={"unit_type": "a\x00"}), "NUL"),
        (track(attributes={"k": float("nan")}), "invalid event"),
    ]
    events = [good[0]] + [b[0] for b in bad] + [good[1]]
    response = sdk.post("/sdk/v1/events", data=json.dumps({"events": events}),
                        headers={"Content-Type": "application/json"})
    assert response.status_code == 202, response.json
    assert response.json["accepted"] == 2 and response.json["duplicates"] == 0
    rejected = response.json["rejected"]
    assert [r["index"] for r in rejected] == list(range(1, len(bad) + 1))
    for r, (_, needle) in zip(rejected, bad, strict=True):
        assert needle in r["error"], r
    assert {str(e.client_id) for e in stored()} == {good[0]["id"], good[1]["id"]}


def test_replayed_batch_stores_nothing_twice(sdk):
    events = [exposure(), track(value=1.0), track(value=2.0)]
    first = sdk.post("/sdk/v1/events", json={"events": events})
    assert first.json == {"accepted": 3, "duplicates": 0, "rejected": []}
    replay = sdk.post("/sdk/v1/events", json={"events": [*events, track()]})
    assert replay.json == {"accepted": 1, "duplicates": 3, "rejected": []}
    same_batch = track()
    twice = sdk.post("/sdk/v1/events", json={"events": [same_batch, same_batch]})
    assert twice.json == {"accepted": 1, "duplicates": 1, "rejected": []}
    assert len(stored()) == 5
    # Non-canonical spellings of one UUID are the same event.
    upper = sdk.post("/sdk/v1/events", json={"events": [{**same_batch, "id": same_batch["id"].upper()}]})
    assert upper.json["duplicates"] == 1


def test_timestamps_with_offsets_and_without(sdk):
    moment = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    events = [track(ts="2024-05-01T14:00:00+02:00"), track(ts="2024-05-01T12:00:00"),
              track(ts="2024-05-01T12:00:00.000000Z"), track(ts=iso(NOW + timedelta(minutes=50)))]
    assert sdk.post("/sdk/v1/events", json={"events": events}).json["accepted"] == 4
    times = sorted(ingest.from_micros(e.ts) for e in stored())
    assert times[:3] == [moment] * 3


def test_gzip_body(sdk):
    events = [track(value=float(i)) for i in range(500)]
    response = post_gzip(sdk, gzip.compress(json.dumps({"events": events}).encode()))
    assert response.status_code == 202 and response.json["accepted"] == 500


def test_gzip_bomb_and_bad_gzip(sdk):
    # 50 MiB of spaces compress to ~50 KiB: refused without inflating it all.
    bomb = gzip.compress(b'{"events": []' + b" " * (50 * 1024 * 1024) + b"}")
    assert len(bomb) < 1024 * 1024
    response = post_gzip(sdk, bomb)
    assert response.status_code == 413 and response.json["error"]["code"] == "payload_too_large"
    assert post_gzip(sdk, b"not gzip at all").status_code == 400
    truncated = gzip.compress(json.dumps({"events": [track()]}).encode())[:-12]
    assert post_gzip(sdk, truncated).status_code == 400
    unknown = sdk.post("/sdk/v1/events", data=b"{}", headers={"Content-Type": "application/json",
                                                              "Content-Encoding": "br"})
    assert unknown.status_code == 415
    assert stored() == []


def test_batch_limits(sdk):
    response = sdk.post("/sdk/v1/events", json={"events": [track() for _ in range(1001)]})
    assert response.status_code == 413 and response.json["error"]["code"] == "payload_too_large"
    big = [track(attributes={"blob": "x" * 2000}) for _ in range(600)]  # ~1.3 MB of JSON
    assert len(json.dumps({"events": big})) > 1024 * 1024
    assert post_gzip(sdk, gzip.compress(json.dumps({"events": big}).encode())).status_code == 413
    assert sdk.post("/sdk/v1/events", json={"events": [track() for _ in range(1000)]}).status_code == 202
    assert stored() and len(stored()) == 1000


@pytest.mark.parametrize("body, status", [
    (b"not json", 400), (b"[]", 400), (b'{"events": {}}', 400), (b"", 400), (b'{"events": []}', 202),
])
def test_malformed_batches(sdk, body, status):
    response = sdk.post("/sdk/v1/events", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.json
    if status == 400:
        assert response.json["error"]["code"] in ("malformed_json", "validation_error", "bad_request")


def test_content_type_and_credentials(sdk, admin, anonymous):
    assert sdk.post("/sdk/v1/events", data="x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert admin.post("/sdk/v1/events", json={"events": []}).status_code == 403
    assert anonymous.post("/sdk/v1/events", json={"events": []}).status_code == 401


def test_evaluation_counts_are_summed_per_day(sdk):
    today = NOW.date()
    body = {"events": [], "evaluations": [
        {"flag": "checkout", "variation": "on", "count": 5, "start": iso(NOW - timedelta(minutes=5)),
         "end": iso(NOW)},
        {"flag": "checkout", "variation": "on", "count": 2},
        {"flag": "checkout", "variation": None, "count": 1},
        {"flag": "old", "variation": "off", "count": 3, "end": "2024-01-02T00:00:00Z"},
        {"flag": "", "count": 1}, {"flag": "x", "count": -1}, {"flag": "x", "count": True}, "junk",
        {"flag": "x", "variation": 3, "count": 1},
    ]}
    assert sdk.post("/sdk/v1/events", json=body).status_code == 202
    assert sdk.post("/sdk/v1/events", json={"evaluations": [{"flag": "checkout", "variation": "on",
                                                             "count": 10}]}).status_code == 202
    rows = {(r.flag, r.variation, r.day): r.count for r in db.session.scalars(sa.select(FlagEvaluation))}
    assert rows == {("checkout", "on", today): 17, ("checkout", "", today): 1,
                    ("old", "off", datetime(2024, 1, 2).date()): 3}
    assert sdk.post("/sdk/v1/events", json={"evaluations": "nonsense"}).status_code == 202


def test_events_of_a_deleted_environment_go_with_it(admin):
    admin.post("/api/v1/environments", json={"key": "qa"})
    key = make_sdk_key("qa")
    response = admin.post("/sdk/v1/events", json={"events": [track()]}, token=key)
    assert response.status_code == 202 and len(stored()) == 1
    assert admin.delete("/api/v1/environments/qa").status_code == 204
    assert stored() == []


def test_validate_is_pure_and_fast_enough():
    """The hand-written checks need no database: 1000 events validate in well under 50 ms."""
    events = [track(value=1.5, attributes={"unit_type": "id"}) if i % 2 else exposure(attributes={"country": "DE"})
              for i in range(1000)]
    started = time.perf_counter()
    rows, rejected = ingest.validate(events, environment_id=1)
    assert time.perf_counter() - started < 0.05
    assert len(rows) == 1000 and rejected == []
