"""Flags, segments and targeting through HTTP: validation, concurrency, history,
rollback, ruleset delivery (config, ETag/304, stream, remote evaluation)."""

import json
import threading
import time
import urllib.request

import pytest

from pitcrew.evaluation import compile_ruleset, evaluate

from .support import audit_count, make_sdk_key

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]


def create_flag(client, key="new-checkout", kind="boolean", variations=None, **extra):
    response = client.post("/api/v1/flags", json={"key": key, "name": key, "kind": kind,
                                                  "variations": variations or BOOL, **extra})
    assert response.status_code == 201, response.json
    return response


def targeting(**overrides):
    body = {"enabled": True, "off_variation": "off", "prerequisites": [], "targets": [], "rules": [],
            "fallthrough": {"variation": "on"}}
    body.update(overrides)
    return body


def put_targeting(client, body, key="new-checkout", env="production", **kw):
    return client.put(f"/api/v1/flags/{key}/environments/{env}", json=body, **kw)


# ---------------------------------------------------------------- flags CRUD

def test_create_flag_defaults_to_off_everywhere(editor):
    response = create_flag(editor, tags=["checkout"], owner="team-pay")
    flag = response.json
    assert response.headers["ETag"] == '"1"'
    assert flag["version"] == 1 and flag["archived"] is False and flag["temporary"] is True
    assert set(flag["environments"]) == {"development", "staging", "production"}
    assert flag["environments"]["production"] == {
        "enabled": False, "off_variation": "off", "prerequisites": [], "targets": [], "rules": [],
        "fallthrough": {"variation": "on"}}
    assert editor.post("/api/v1/flags", json={"key": "new-checkout", "kind": "boolean", "variations": BOOL}).status_code == 409


def test_list_filters(editor):
    create_flag(editor, "a-flag", tags=["pay"], owner="ann")
    create_flag(editor, "b-flag", tags=["search"], owner="bob", description="Faster search")
    create_flag(editor, "c-flag", tags=["pay", "search"], owner="ann")
    editor.delete("/api/v1/flags/c-flag")
    keys = lambda q: [f["key"] for f in editor.get(f"/api/v1/flags{q}").json["items"]]  # noqa: E731
    assert keys("") == ["a-flag", "b-flag"]
    assert keys("?tag=pay") == ["a-flag"]
    assert keys("?owner=bob") == ["b-flag"]
    assert keys("?q=faster") == ["b-flag"]
    assert keys("?archived=true") == ["c-flag"]
    first = editor.get("/api/v1/flags?limit=1").json
    assert len(first["items"]) == 1 and first["next_cursor"]
    assert [f["key"] for f in editor.get(f"/api/v1/flags?limit=1&cursor={first['next_cursor']}").json["items"]] == ["b-flag"]


@pytest.mark.parametrize("body, field", [
    ({"key": "Bad Key", "kind": "boolean", "variations": BOOL}, "key"),
    ({"key": "x", "kind": "colour", "variations": BOOL}, "kind"),
    ({"key": "x", "kind": "boolean", "variations": [{"key": "a", "value": True}]}, "variations"),
    ({"key": "x", "kind": "boolean", "variations": [*BOOL, {"key": "maybe", "value": False}]}, "variations"),
    ({"key": "x", "kind": "boolean", "variations": [{"key": "on", "value": "yes"}, {"key": "off", "value": False}]}, "variations.0.value"),
    ({"key": "x", "kind": "number", "variations": [{"key": "a", "value": True}]}, "variations.0.value"),
    ({"key": "x", "kind": "string", "variations": [{"key": "a", "value": 3}]}, "variations.0.value"),
    ({"key": "x", "kind": "string", "variations": [{"key": "a", "value": "x"}, {"key": "a", "value": "y"}]}, "variations.1.key"),
])
def test_flag_validation_is_per_field_and_changes_nothing(editor, body, field):
    before = audit_count()
    response = editor.post("/api/v1/flags", json=body)
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "validation_error"
    assert field in response.json["error"]["details"], response.json
    assert editor.get("/api/v1/flags/x").status_code == 404
    assert audit_count() == before


# ---------------------------------------------------------------- targeting validation

@pytest.mark.parametrize("body, field", [
    (targeting(off_variation="nope"), "off_variation"),
    (targeting(fallthrough={"rollout": {"weights": [["on", 5000], ["off", 4000]]}}), "fallthrough.rollout.weights"),
    (targeting(fallthrough={"variation": "on", "experiment": "x"}), "fallthrough"),
    (targeting(rules=[{"id": "r1", "conditions": [{"attribute": "a", "op": "nope", "values": [1]}], "serve": {"variation": "on"}}]), "rules.0.conditions.0.op"),
    (targeting(rules=[{"id": "r1", "conditions": [{"attribute": "a", "op": "matches", "values": ["("]}], "serve": {"variation": "on"}}]), "rules.0.conditions.0.values"),
    (targeting(rules=[{"id": "r1", "conditions": [{"attribute": "v", "op": "semver_gt", "values": ["1.02.3"]}], "serve": {"variation": "on"}}]), "rules.0.conditions.0.values"),
    (targeting(rules=[{"id": "r1", "conditions": [{"attribute": "t", "op": "before", "values": ["yesterday"]}], "serve": {"variation": "on"}}]), "rules.0.conditions.0.values"),
    (targeting(rules=[{"id": "r1", "conditions": [{"attribute": "n", "op": "gt", "values": ["5"]}], "serve": {"variation": "on"}}]), "rules.0.conditions.0.values"),
    (targeting(rules=[{"id": "r1", "conditions": [{"attribute": "n", "op": "gt", "values": [1, 2]}], "serve": {"variation": "on"}}]), "rules.0.conditions.0.values"),
    (targeting(rules=[{"id": "r1", "conditions": [{"attribute": "n", "op": "in", "values": []}], "serve": {"variation": "on"}}]), "rules.0.conditions.0.values"),
    (targeting(rules=[{"id": "r1", "conditions": [{"op": "in_segment", "values": ["ghosts"]}], "serve": {"variation": "on"}}]), "rules.0.conditions.0.values"),
    (targeting(rules=[{"id": "r1", "conditions": [], "serve": {"variation": "maybe"}}]), "rules.0.serve.variation"),
    (targeting(rules=[{"id": "r1", "conditions": [], "serve": {"experiment": "ghost-exp"}}]), "rules.0.serve.experiment"),
    (targeting(targets=[{"variation": "on", "values": ["u1"]}, {"variation": "off", "values": ["u1"]}]), "targets.1.values"),
    (targeting(prerequisites=[{"flag": "ghost", "variation": "on"}]), "prerequisites.0.flag"),
    (targeting(prerequisites=[{"flag": "other", "variation": "nope"}]), "prerequisites.0.variation"),
    (targeting(prerequisites=[{"flag": "new-checkout", "variation": "on"}]), "prerequisites.0.flag"),
    (targeting(rules=[{"id": "r1", "conditions": [{"attribute": "a", "op": "in", "values": ["x"]}], "serve": {"variation": "on"}},
                      {"id": "r1", "conditions": [], "serve": {"variation": "on"}}]), "rules.1.id"),
    ({"enabled": True, "off_variation": "off"}, "fallthrough"),
])
def test_targeting_validation_is_per_field_and_changes_nothing(editor, body, field):
    create_flag(editor)
    create_flag(editor, "other")
    before = audit_count()
    response = put_targeting(editor, body)
    assert response.status_code == 400, response.json
    details = response.json["error"]["details"]
    assert any(path == field or path.startswith(field + ".") for path in details), details
    flag = editor.get("/api/v1/flags/new-checkout")
    assert flag.json["version"] == 1 and flag.json["environments"]["production"]["enabled"] is False
    assert audit_count() == before


def test_prerequisite_cycle_is_rejected(editor):
    for key in ("a", "b", "c"):
        create_flag(editor, key)
    assert put_targeting(editor, targeting(prerequisites=[{"flag": "b", "variation": "on"}]), key="a").status_code == 200
    assert put_targeting(editor, targeting(prerequisites=[{"flag": "c", "variation": "on"}]), key="b").status_code == 200
    response = put_targeting(editor, targeting(prerequisites=[{"flag": "a", "variation": "on"}]), key="c")
    assert response.status_code == 400
    assert "c -> a -> b -> c" in " ".join(response.json["error"]["details"]["prerequisites"])
    # The same edge in another environment is fine: graphs are per environment.
    assert put_targeting(editor, targeting(prerequisites=[{"flag": "a", "variation": "on"}]), key="c", env="staging").status_code == 200


def test_variation_change_must_keep_targeting_valid(editor):
    create_flag(editor, "color", kind="string", variations=[{"key": "red", "value": "r"}, {"key": "blue", "value": "b"}])
    put_targeting(editor, targeting(off_variation="red", fallthrough={"variation": "blue"}), key="color")
    response = editor.patch("/api/v1/flags/color", json={"variations": [{"key": "red", "value": "r"}]})
    assert response.status_code == 400
    assert "environments.production.fallthrough.variation" in response.json["error"]["details"]
    ok = editor.patch("/api/v1/flags/color", json={"variations": [{"key": "red", "value": "r"}, {"key": "blue", "value": "B"}]})
    assert ok.status_code == 200 and ok.json["variations"][1]["value"] == "B"


def test_targeting_put_patch_and_etags(editor):
    create_flag(editor)
    response = put_targeting(editor, targeting(), headers={"If-Match": '"1"'})
    assert response.status_code == 200 and response.headers["ETag"] == '"2"'
    assert response.json["enabled"] is True
    got = editor.get("/api/v1/flags/new-checkout/environments/production")
    assert got.headers["ETag"] == '"2"' and got.json == response.json
    patched = editor.patch("/api/v1/flags/new-checkout/environments/production", json={"enabled": False})
    assert patched.status_code == 200 and patched.json["enabled"] is False and patched.json["fallthrough"] == {"variation": "on"}
    assert patched.headers["ETag"] == '"3"'
    assert editor.get("/api/v1/flags/new-checkout/environments/staging").json["enabled"] is False
    assert editor.get("/api/v1/flags/new-checkout/environments/nowhere").status_code == 404


def test_stale_if_match_is_412_and_changes_nothing(editor):
    create_flag(editor)
    put_targeting(editor, targeting())
    before = audit_count()
    for response in (
        put_targeting(editor, targeting(enabled=False), headers={"If-Match": '"1"'}),
        editor.patch("/api/v1/flags/new-checkout", json={"name": "x"}, headers={"If-Match": '"1"'}),
        editor.delete("/api/v1/flags/new-checkout", headers={"If-Match": '"1"'}),
        editor.post("/api/v1/flags/new-checkout/rollback", json={"version": 1}, headers={"If-Match": '"1"'}),
    ):
        assert response.status_code == 412, response.json
        assert response.json["error"]["code"] == "precondition_failed"
    flag = editor.get("/api/v1/flags/new-checkout").json
    assert flag["version"] == 2 and flag["name"] == "new-checkout" and flag["archived"] is False
    assert audit_count() == before


def test_history_has_actor_time_and_diff(editor, admin):
    create_flag(editor)
    put_targeting(editor, targeting(rules=[{"id": "de", "conditions": [{"attribute": "country", "op": "in", "values": ["DE"]}],
                                            "serve": {"variation": "on"}}]))
    admin.patch("/api/v1/flags/new-checkout", json={"name": "New checkout"}, headers={"X-Pitcrew-Comment": "rename"})
    items = editor.get("/api/v1/flags/new-checkout/history").json["items"]
    assert [(i["version"], i["action"], i["actor"]) for i in items] == [
        (3, "update", "alice"), (2, "update_targeting", "eddie"), (1, "create", "eddie")]
    assert items[0]["comment"] == "rename"
    assert items[0]["diff"] == [{"path": "name", "op": "replace", "before": "new-checkout", "after": "New checkout"}]
    paths = {d["path"] for d in items[1]["diff"]}
    assert paths == {"environments.production.enabled", "environments.production.rules"}
    assert all(i["created_at"] for i in items)
    page = editor.get("/api/v1/flags/new-checkout/history?limit=1").json
    assert page["items"][0]["diff"] == items[0]["diff"] and page["next_cursor"]


def test_rollback_restores_exact_earlier_version(editor):
    create_flag(editor)
    v2 = put_targeting(editor, targeting(targets=[{"variation": "on", "values": ["u1"]}])).json
    put_targeting(editor, targeting(enabled=False, rules=[{"id": "x", "conditions": [], "serve": {"variation": "off"}}]))
    editor.patch("/api/v1/flags/new-checkout", json={"name": "renamed", "tags": ["t"]})
    snapshot_v2 = next(i["snapshot"] for i in editor.get("/api/v1/flags/new-checkout/history").json["items"] if i["version"] == 2)
    response = editor.post("/api/v1/flags/new-checkout/rollback", json={"version": 2})
    assert response.status_code == 200 and response.headers["ETag"] == '"5"'
    restored = response.json
    assert {k: restored[k] for k in snapshot_v2} == snapshot_v2
    assert restored["environments"]["production"] == v2
    history = editor.get("/api/v1/flags/new-checkout/history?limit=1").json["items"][0]
    assert history["action"] == "rollback" and history["snapshot"] == snapshot_v2
    assert editor.post("/api/v1/flags/new-checkout/rollback", json={"version": 99}).status_code == 400


def test_archive_and_prerequisite_dependents(editor, sdk):
    create_flag(editor, "base")
    create_flag(editor, "child")
    put_targeting(editor, targeting(prerequisites=[{"flag": "base", "variation": "on"}]), key="child")
    conflict = editor.delete("/api/v1/flags/base")
    assert conflict.status_code == 409 and conflict.json["error"]["details"]["flags"] == ["child"]
    archived = editor.delete("/api/v1/flags/child")
    assert archived.status_code == 200 and archived.json["archived"] is True
    assert "child" not in sdk.get("/sdk/v1/config").json["flags"]
    assert editor.patch("/api/v1/flags/child", json={"archived": False}).status_code == 200
    assert "child" in sdk.get("/sdk/v1/config").json["flags"]


# ---------------------------------------------------------------- segments

def test_segments_crud_validation_and_in_use_conflict(editor):
    response = editor.post("/api/v1/segments", json={
        "key": "beta", "included": ["u1"], "excluded": ["u2"],
        "rules": [[{"attribute": "plan", "op": "in", "values": ["pro"]}]]})
    assert response.status_code == 201 and response.headers["ETag"] == '"1"'
    bad = editor.post("/api/v1/segments", json={"key": "bad", "rules": [[{"op": "in_segment", "values": ["beta"]}]]})
    assert bad.status_code == 400 and "rules.0.0.op" in bad.json["error"]["details"]
    bad_regex = editor.post("/api/v1/segments", json={"key": "bad", "rules": [[{"attribute": "a", "op": "matches", "values": ["["]}]]})
    assert bad_regex.status_code == 400 and "rules.0.0.values.0" in bad_regex.json["error"]["details"]
    assert editor.post("/api/v1/segments", json={"key": "beta"}).status_code == 409
    stale = editor.patch("/api/v1/segments/beta", json={"included": []}, headers={"If-Match": '"5"'})
    assert stale.status_code == 412
    updated = editor.patch("/api/v1/segments/beta", json={"included": ["u1", "u3"]}, headers={"If-Match": '"1"'})
    assert updated.status_code == 200 and updated.json["included"] == ["u1", "u3"] and updated.headers["ETag"] == '"2"'

    create_flag(editor)
    put_targeting(editor, targeting(rules=[{"id": "b", "conditions": [{"op": "in_segment", "values": ["beta"]}],
                                            "serve": {"variation": "on"}}]), env="staging")
    conflict = editor.delete("/api/v1/segments/beta")
    assert conflict.status_code == 409 and conflict.json["error"]["details"]["flags"] == ["new-checkout"]
    assert editor.get("/api/v1/segments/beta").status_code == 200
    put_targeting(editor, targeting(), env="staging")
    assert editor.delete("/api/v1/segments/beta").status_code == 204
    assert editor.get("/api/v1/segments/beta").status_code == 404


# ---------------------------------------------------------------- SDK delivery

def test_config_etag_304_and_new_etag_after_any_change(editor, sdk):
    create_flag(editor)
    first = sdk.get("/sdk/v1/config")
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert etag == f'"{first.json["version"]}"' and first.json["environment"] == "production"
    assert first.json["flags"]["new-checkout"]["targeting"]["enabled"] is False
    not_modified = sdk.get("/sdk/v1/config", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.data == b""

    changes = [
        lambda: put_targeting(editor, targeting()),
        lambda: editor.post("/api/v1/segments", json={"key": "beta"}),
        lambda: editor.patch("/api/v1/segments/beta", json={"included": ["x"]}),
        lambda: editor.patch("/api/v1/flags/new-checkout", json={"description": "d"}),
        lambda: create_flag(editor, "another"),
        lambda: editor.delete("/api/v1/flags/another"),
        lambda: editor.post("/api/v1/flags/new-checkout/rollback", json={"version": 1}),
    ]
    seen = {etag}
    for change in changes:
        assert change().status_code in (200, 201)
        response = sdk.get("/sdk/v1/config", headers={"If-None-Match": etag})
        assert response.status_code == 200, change
        etag = response.headers["ETag"]
        assert etag not in seen
        seen.add(etag)
    # A change in another environment leaves this one's ruleset alone.
    put_targeting(editor, targeting(), env="staging")
    assert sdk.get("/sdk/v1/config", headers={"If-None-Match": etag}).status_code == 304


def test_config_body_is_what_the_engine_compiles(editor, sdk):
    create_flag(editor)
    put_targeting(editor, targeting(targets=[{"variation": "off", "values": ["42"]}]))
    compiled = compile_ruleset(sdk.get("/sdk/v1/config").json)
    assert evaluate(compiled, "new-checkout", {"id": 42}, None).to_dict()["reason"] == "TARGET_MATCH"
    assert evaluate(compiled, "new-checkout", {"id": "u"}, None).value is True


def test_remote_evaluation_uses_the_engine(editor, sdk):
    create_flag(editor)
    create_flag(editor, "color", kind="string", variations=[{"key": "red", "value": "r"}, {"key": "blue", "value": "b"}])
    put_targeting(editor, targeting(rules=[{"id": "de", "conditions": [{"attribute": "country", "op": "in", "values": ["DE"]}],
                                            "serve": {"variation": "off"}}]))
    response = sdk.post("/sdk/v1/evaluate", json={"context": {"id": "u1", "country": "DE"}})
    assert response.status_code == 200
    flags = response.json["flags"]
    assert flags["new-checkout"] == {"value": False, "variation": "off", "reason": "RULE_MATCH", "rule_id": "de",
                                     "experiment": None, "in_experiment": False}
    assert flags["color"]["reason"] == "OFF" and flags["color"]["value"] == "b"
    only = sdk.post("/sdk/v1/evaluate", json={"context": {"id": "u1"}, "flags": ["new-checkout", "ghost"]}).json["flags"]
    assert only["new-checkout"]["reason"] == "FALLTHROUGH" and only["ghost"]["reason"] == "FLAG_NOT_FOUND"
    assert sdk.post("/sdk/v1/evaluate", json={"context": "nope"}).status_code == 400


def test_sdk_key_sees_only_its_environment_and_revoked_key_is_401(editor, admin, anonymous):
    create_flag(editor)
    put_targeting(editor, targeting(), env="staging")
    staging = make_sdk_key("staging")
    body = anonymous.get("/sdk/v1/config", headers={"Authorization": f"Bearer {staging}"}).json
    assert body["environment"] == "staging" and body["flags"]["new-checkout"]["targeting"]["enabled"] is True
    assert editor.get("/sdk/v1/config").status_code == 403
    key_id = admin.get("/api/v1/environments/staging").json["sdk_keys"][0]["id"]
    admin.delete(f"/api/v1/environments/staging/sdk-keys/{key_id}")
    assert anonymous.get("/sdk/v1/config", headers={"Authorization": f"Bearer {staging}"}).status_code == 401


def test_stream_announces_a_change_within_one_second(editor, live_server):
    create_flag(editor)
    key = make_sdk_key("production")
    request = urllib.request.Request(f"{live_server.url}/sdk/v1/stream", headers={"Authorization": f"Bearer {key}"})
    events: list[tuple[float, dict]] = []
    stream = urllib.request.urlopen(request, timeout=10)

    def read():
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("data:"):
                events.append((time.monotonic(), json.loads(line[5:])))
                if len(events) >= 2:
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert events, "no initial config event"
    changed_at = time.monotonic()
    assert put_targeting(editor, targeting()).status_code == 200
    reader.join(5)
    stream.close()
    assert len(events) == 2, events
    assert events[1][1]["version"] > events[0][1]["version"]
    assert events[1][0] - changed_at < 1.0


def test_rollback_version_out_of_range_is_400(editor):
    create_flag(editor)
    response = editor.post("/api/v1/flags/new-checkout/rollback", json={"version": 251126743274124640256})
    assert response.status_code == 400 and "version" in response.json["error"]["details"]
