"""Hostile input answers 4xx with the JSON error shape, changes nothing, and the server stays up.

Against the live gunicorn server: deeply nested JSON on every JSON endpoint
(listed from the OpenAPI document), NUL characters wherever text is stored,
keys ending in a newline, the documented size limits, LIKE wildcards in
``q=``. Runs on SQLite and PostgreSQL."""

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from service.domain import limits
from service.extensions import db
from service.models import Event, Flag, Segment

from .support import audit_count

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
DEEP = b"[" * 10_000 + b"]" * 10_000
JUST_TOO_DEEP = json.dumps({"key": "x", "value": json.loads("[" * limits.MAX_JSON_DEPTH + "]" * limits.MAX_JSON_DEPTH)})


def assert_error(response, status: int, code: str | None = None):
    assert response.status == status, (response.status, response.body[:300])
    body = response.json
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


def assert_up(client):
    assert client.get("/healthz", token=None).status == 200
    assert client.get("/readyz", token=None).status == 200


def json_operations(client):
    """(method, path) of every operation that takes a JSON body, path parameters filled in."""
    spec = client.get("/api/openapi.json", token=None).json
    operations = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in ("post", "put", "patch") and "requestBody" in operation:
                operations.append((method.upper(), re.sub(r"\{[^}]+\}", lambda m: "1" if "id" in m.group() else "x",
                                                          path)))
    return operations


def client_for(path, live_admin, live_sdk):
    return live_sdk if path.startswith("/sdk/") else live_admin


def test_json_nested_10000_deep_is_malformed_on_every_json_endpoint(live_admin, live_sdk):
    operations = json_operations(live_admin)
    assert {("POST", "/sdk/v1/events"), ("POST", "/sdk/v1/evaluate"), ("POST", "/api/v1/flags"),
            ("PUT", "/api/v1/flags/x/environments/x")} <= set(operations)
    audits = audit_count()
    for method, path in operations:
        client = client_for(path, live_admin, live_sdk)
        for body in (DEEP, JUST_TOO_DEEP.encode()):
            if path == "/sdk/v1/events" and body is not DEEP:
                continue  # events are checked one by one
            error = assert_error(client.request(method, path, data=body), 400, "malformed_json")
            assert "JSON" in error["message"] or "nested" in error["message"], (method, path, error)
    assert audit_count() == audits
    assert_up(live_admin)


def test_nul_characters_are_refused_before_anything_is_stored(live_admin, live_sdk):
    audits = audit_count()
    for method, path in json_operations(live_admin):
        if path == "/sdk/v1/events":
            continue
        client = client_for(path, live_admin, live_sdk)
        error = assert_error(client.request(method, path, json={"name": "bad\u0000name", "context": {}}), 400,
                             "validation_error")
        assert error["details"] == {"name": ["Contains a NUL character (\\u0000), which cannot be stored; remove it."]}
    nested = live_admin.post("/api/v1/flags", json={"key": "f", "kind": "json", "variations": [
        {"key": "a", "value": {"deep": ["ok", "n\u0000ul"]}}]})
    assert assert_error(nested, 400)["details"] == {
        "variations.0.value.deep.1": ["Contains a NUL character (\\u0000), which cannot be stored; remove it."]}
    assert assert_error(live_admin.get("/api/v1/flags?q=a%00b"), 400)["details"].keys() == {"q"}
    assert assert_error(live_admin.get("/api/v1/flags/a%00b"), 400)["details"].keys() == {"_path"}
    key_in_body = live_admin.post("/api/v1/segments", json={"key": "s", "included": ["u\u0000"]})
    assert assert_error(key_in_body, 400)["details"].keys() == {"included.0"}
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Flag)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Segment)) == 0
    assert audit_count() == audits
    assert_up(live_admin)


def test_nul_in_the_audit_comment_header_is_refused(admin):
    # Flask's test client: HTTP clients will not even send a NUL in a header.
    response = admin.post("/api/v1/segments", json={"key": "s"}, headers={"X-Pitcrew-Comment": "a\x00b"})
    assert response.status_code == 400 and "X-Pitcrew-Comment" in response.json["error"]["details"]
    long = admin.post("/api/v1/segments", json={"key": "s"}, headers={"X-Pitcrew-Comment": "c" * 1001})
    assert long.status_code == 400
    assert admin.get("/api/v1/segments/s").status_code == 404


def event(**extra):
    moment = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    return {"id": str(uuid.uuid4()), "type": "track", "ts": moment, "unit": "u1", "event": "buy", **extra}


def test_events_refuse_nul_characters(live_sdk, live_admin):
    bad = [event(unit="u\u0000"), event(event="b\u0000uy"), event(attributes={"country": "D\u0000E"}),
           event(attributes={"k\u0000ey": "v"}), event(attributes={"unit_type": "i\u0000d"}),
           {**event(), "type": "exposure", "experiment": "e\u0000", "variation": "on"}]
    good = [event(attributes={"note": "a literal \\u0000 is just text"})]
    response = live_sdk.post("/sdk/v1/events", json={"events": bad + good})
    assert response.status == 202, response.json
    assert response.json["accepted"] == 1
    assert sorted(r["index"] for r in response.json["rejected"]) == list(range(len(bad)))
    assert all("NUL" in r["error"] for r in response.json["rejected"]), response.json["rejected"]
    db.session.rollback()
    rows = list(db.session.scalars(sa.select(Event)))
    assert [str(r.client_id) for r in rows] == [good[0]["id"]]
    assert_up(live_admin)


@pytest.mark.parametrize("path,body,field", [
    ("/api/v1/flags", {"key": "abc\n", "kind": "boolean", "variations": BOOL}, "key"),
    ("/api/v1/flags", {"key": "abc", "kind": "boolean", "variations": [{"key": "on\n", "value": True},
                                                                        {"key": "off", "value": False}]},
     "variations.0.key"),
    ("/api/v1/segments", {"key": "beta\n"}, "key"),
    ("/api/v1/metrics", {"key": "buy\n", "event": "purchase", "type": "conversion"}, "key"),
    ("/api/v1/environments", {"key": "qa\n"}, "key"),
    ("/api/v1/experiments", {"key": "exp\n", "flag": "f", "environment": "production"}, "key"),
    ("/api/v1/experiments", {"key": "exp", "flag": "f\n", "environment": "production"}, "flag"),
    ("/api/v1/experiments", {"key": "exp", "flag": "f", "environment": "production", "dimensions": ["plan\n"]},
     "dimensions.0"),
])
def test_keys_ending_in_a_newline_are_refused(live_admin, path, body, field):
    error = assert_error(live_admin.post(path, json=body), 400, "validation_error")
    assert field in error["details"], error


def flag_with_targeting(client, **targeting):
    assert client.post("/api/v1/flags", json={"key": "f", "kind": "boolean", "variations": BOOL}).status == 201
    body = {"enabled": True, "off_variation": "off", "fallthrough": {"variation": "on"}, **targeting}
    return client.put("/api/v1/flags/f/environments/production", json=body)


def rule(i=0, conditions=None):
    return {"id": f"r{i}", "conditions": conditions or [], "serve": {"variation": "on"}}


def cond(values):
    return {"attribute": "country", "op": "in", "values": values}


@pytest.mark.parametrize("targeting,field", [
    ({"rules": [rule(0, [cond(list(range(limits.VALUES_PER_CONDITION + 1)))])]}, "rules.0.conditions.0.values"),
    ({"rules": [rule(0, [cond(["x" * (limits.CONDITION_STRING_CHARS + 1)])])]}, "rules.0.conditions.0.values.0"),
    ({"rules": [rule(0, [cond(["de"])] * (limits.CONDITIONS_PER_RULE + 1))]}, "rules.0.conditions"),
    ({"rules": [rule(i) for i in range(limits.RULES_PER_FLAG + 1)]}, "rules"),
    ({"prerequisites": [{"flag": f"p{i}", "variation": "on"} for i in range(limits.PREREQUISITES + 1)]},
     "prerequisites"),
    ({"targets": [{"variation": "on", "values": [f"u{i}" for i in range(limits.TARGETS_PER_FLAG // 2 + 1)]},
                  {"variation": "off", "values": [f"v{i}" for i in range(limits.TARGETS_PER_FLAG // 2)]}]},
     "targets"),
    ({"rules": [rule(i, [cond([f"{i}-{j}-xxxxxxxxxx" for j in range(200)])]) for i in range(100)]}, "_body"),
    ({"rules": [{"id": "r", "serve": {"rollout": {"weights": {"on": 10000}}}}]}, "rules.0.serve.rollout.weights"),
])
def test_targeting_limits_answer_400_naming_the_field(live_admin, targeting, field):
    assert flag_with_targeting(live_admin).status == 200
    audits = audit_count()
    error = assert_error(live_admin.put("/api/v1/flags/f/environments/production", json={
        "enabled": True, "off_variation": "off", "fallthrough": {"variation": "on"}, **targeting}), 400,
        "validation_error")
    assert field in error["details"], error["details"].keys()
    assert live_admin.get("/api/v1/flags/f").json["version"] == 2
    assert audit_count() == audits


def test_weights_errors_show_the_expected_shape(live_admin):
    error = assert_error(flag_with_targeting(live_admin, rules=[
        {"id": "r", "serve": {"rollout": {"weights": [["on", 5000], ["off"]]}}}]), 400)
    assert any("[[variation, basis_points]" in m for m in error["details"]["rules.0.serve.rollout.weights.1"])
    error = assert_error(live_admin.put("/api/v1/flags/f/environments/production", json={
        "enabled": True, "off_variation": "off", "fallthrough": {"rollout": {"weights": {"on": 10000}}}}), 400)
    assert any("[[variation, basis_points]" in m for m in error["details"]["fallthrough.rollout.weights"])


def test_unknown_op_lists_the_valid_ops(live_admin):
    error = assert_error(flag_with_targeting(live_admin, rules=[rule(0, [{"attribute": "a", "op": "equals",
                                                                          "values": ["x"]}])]), 400)
    message = " ".join(error["details"]["rules.0.conditions.0.op"])
    assert "'equals'" in message and all(op in message for op in ("in", "matches", "semver_gte", "exists"))


@pytest.mark.parametrize("path,body,field", [
    ("/api/v1/segments", {"key": "s", "included": [f"u{i}" for i in range(limits.SEGMENT_UNITS + 1)]}, "included"),
    ("/api/v1/segments", {"key": "s", "excluded": ["x" * (limits.UNIT_CHARS + 1)]}, "excluded.0"),
    ("/api/v1/segments", {"key": "s", "rules": [[cond(["x"])]] * (limits.SEGMENT_RULES + 1)}, "rules"),
    ("/api/v1/segments", {"key": "s", "tags": [f"t{i}" for i in range(limits.TAGS + 1)]}, "tags"),
    ("/api/v1/flags", {"key": "f", "kind": "string", "variations": [
        {"key": f"v{i}", "value": str(i)} for i in range(limits.VARIATIONS + 1)]}, "variations"),
    ("/api/v1/flags", {"key": "f", "name": "n" * (limits.NAME_CHARS + 1), "kind": "boolean", "variations": BOOL},
     "name"),
    ("/api/v1/metrics", {"key": "m", "event": "e", "type": "count", "tags": ["x" * (limits.TAG_CHARS + 1)]},
     "tags.0"),
])
def test_resource_limits_answer_400_naming_the_field(live_admin, path, body, field):
    audits = audit_count()
    error = assert_error(live_admin.post(path, json=body), 400, "validation_error")
    assert field in error["details"], error["details"].keys()
    assert live_admin.get(f"{path}/{body['key']}").status == 404
    assert audit_count() == audits


def test_q_wildcards_match_literally(live_admin):
    for key, name in (("a-b", "plain"), ("axb", "100% sure"), ("a_b", "under_score")):
        assert live_admin.post("/api/v1/flags", json={"key": key, "name": name, "kind": "boolean",
                                                      "variations": BOOL}).status == 201
        assert live_admin.post("/api/v1/segments", json={"key": key, "name": name}).status == 201
    for resource in ("flags", "segments"):
        def keys(q, resource=resource):
            return sorted(i["key"] for i in live_admin.get(f"/api/v1/{resource}?q={q}").json["items"])

        assert keys("%25") == ["axb"]
        assert keys("_") == ["a_b"]
        assert keys("a%5Cb") == []  # a backslash is literal too
        assert keys("a") == ["a-b", "a_b", "axb"]


def test_tag_filter_is_literal_and_handles_any_text(live_admin):
    for key, tags in (("one", ["50%"]), ("two", ["5x"]), ("three", ["é\"q"])):
        assert live_admin.post("/api/v1/flags", json={"key": key, "kind": "boolean", "variations": BOOL,
                                                      "tags": tags}).status == 201
    assert [i["key"] for i in live_admin.get("/api/v1/flags?tag=50%25").json["items"]] == ["one"]
    assert [i["key"] for i in live_admin.get("/api/v1/flags?tag=5_").json["items"]] == []
    assert [i["key"] for i in live_admin.get("/api/v1/flags?tag=%C3%A9%22q").json["items"]] == ["three"]


def test_nan_and_infinity_are_not_json(live_admin):
    body = b'{"key": "f", "kind": "json", "variations": [{"key": "a", "value": NaN}]}'
    assert_error(live_admin.post("/api/v1/flags", data=body), 400, "malformed_json")
    body = b'{"baseline": Infinity}'
    assert_error(live_admin.post("/api/v1/tools/sample-size", data=body), 400, "malformed_json")
    assert_up(live_admin)


def test_numbers_read_back_equal_on_every_database(live_admin):
    values = [2.251799759896167e16, -9007199254740993.0, 0.1, 1e-300, 10**18, 5.0]
    assert flag_with_targeting(live_admin, rules=[rule(0, [cond(values)])]).status == 200
    stored = live_admin.get("/api/v1/flags/f/environments/production").json["rules"][0]["conditions"][0]["values"]
    assert stored == values  # PostgreSQL's jsonb would turn 2.251799759896167e16 into 22517997598961670
    too_big = b'{"enabled": true, "off_variation": "off", "fallthrough": {"variation": "on"}, "rules": [' \
              b'{"id": "r", "conditions": [{"attribute": "a", "op": "gt", "values": [1e400]}], ' \
              b'"serve": {"variation": "on"}}]}'
    assert_error(live_admin.put("/api/v1/flags/f/environments/production", data=too_big), 400, "malformed_json")


def test_booleans_must_be_json_booleans(live_admin):
    assert flag_with_targeting(live_admin).status == 200
    for body in ({"enabled": "true"}, {"enabled": 1},
                 {"rules": [rule(0, [{"attribute": "a", "op": "exists", "negate": "yes"}])]}):
        error = assert_error(live_admin.patch("/api/v1/flags/f/environments/production", json=body), 400)
        assert any("boolean" in m for messages in error["details"].values() for m in messages), error
