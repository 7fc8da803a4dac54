"""Environments: the standard three, CRUD with ETags and audit, SDK keys."""


def test_new_database_has_standard_environments(viewer):
    response = viewer.get("/api/v1/environments")
    assert response.status_code == 200
    assert [e["key"] for e in response.json["items"]] == ["development", "staging", "production"]
    assert response.json["next_cursor"] is None


def test_environment_crud_with_etags_and_audit(admin):
    created = admin.post("/api/v1/environments", json={"key": "qa", "name": "QA"})
    assert created.status_code == 201 and created.headers["ETag"] == '"1"'
    assert admin.post("/api/v1/environments", json={"key": "qa"}).status_code == 409
    stale = admin.patch("/api/v1/environments/qa", json={"name": "Q"}, headers={"If-Match": '"7"'})
    assert stale.status_code == 412 and stale.json["error"]["code"] == "precondition_failed"
    assert admin.get("/api/v1/environments/qa").json["name"] == "QA"
    updated = admin.patch("/api/v1/environments/qa", json={"name": "Quality"}, headers={"If-Match": '"1"'})
    assert updated.status_code == 200 and updated.headers["ETag"] == '"2"'
    assert admin.delete("/api/v1/environments/qa").status_code == 204
    assert admin.get("/api/v1/environments/qa").status_code == 404
    actions = [(e["action"], e["actor"]) for e in admin.get("/api/v1/audit?resource_key=qa").json["items"]]
    assert actions == [("delete", "alice"), ("update", "alice"), ("create", "alice")]
    entry = admin.get("/api/v1/audit?resource_key=qa&limit=2").json["items"][1]
    assert entry["before"]["name"] == "QA" and entry["after"]["name"] == "Quality"


def test_sdk_keys_create_and_revoke(admin):
    created = admin.post("/api/v1/environments/staging/sdk-keys", json={"name": "web"})
    assert created.status_code == 201
    assert created.json["environment"] == "staging" and created.json["key"].startswith("pc_sdk_")
    keys = admin.get("/api/v1/environments/staging").json["sdk_keys"]
    assert [k["name"] for k in keys] == ["web"] and "key" not in keys[0]
    assert admin.delete(f"/api/v1/environments/production/sdk-keys/{created.json['id']}").status_code == 404
    assert admin.delete(f"/api/v1/environments/staging/sdk-keys/{created.json['id']}").status_code == 204
    assert admin.get("/api/v1/environments/staging").json["sdk_keys"] == []


def test_if_match_names_one_version_as_an_etag(admin):
    """werkzeug parses If-Match: a weak tag names the same version, '*' is no precondition,
    anything but one version ETag is a 400 that changes nothing."""
    assert admin.post("/api/v1/environments", json={"key": "qa", "name": "QA"}).status_code == 201
    for bad in ('"1", "2"', "abc", '""', "", '"\u00b3"', '"1'):
        response = admin.patch("/api/v1/environments/qa", json={"name": "bad"},
                               headers={"If-Match": bad})
        assert response.status_code == 400, (bad, response.json)
        assert response.json["error"]["details"] == {"If-Match": ["Not a version ETag."]}, bad
    assert admin.get("/api/v1/environments/qa").json["name"] == "QA"
    stale = admin.patch("/api/v1/environments/qa", json={"name": "Q"},
                        headers={"If-Match": 'W/"2"'})
    assert stale.status_code == 412
    weak = admin.patch("/api/v1/environments/qa", json={"name": "Q1"},
                       headers={"If-Match": 'W/"1"'})
    assert weak.status_code == 200 and weak.headers["ETag"] == '"2"'
    star = admin.patch("/api/v1/environments/qa", json={"name": "Q2"}, headers={"If-Match": "*"})
    assert star.status_code == 200 and star.headers["ETag"] == '"3"'
