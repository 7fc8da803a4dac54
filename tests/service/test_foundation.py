"""Service foundation: health, auth and roles, environments, tokens, audit, errors."""

import gzip

import sqlalchemy as sa

from service.extensions import db
from service.models import AuditEntry, Token

from .support import make_sdk_key


def audit_count() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))


def test_health_and_readiness(anonymous):
    assert anonymous.get("/healthz").json == {"status": "ok"}
    response = anonymous.get("/readyz")
    assert response.status_code == 200 and response.json["database"] == "ok"


def test_new_database_has_standard_environments(viewer):
    response = viewer.get("/api/v1/environments")
    assert response.status_code == 200
    assert [e["key"] for e in response.json["items"]] == ["development", "staging", "production"]
    assert response.json["next_cursor"] is None


def test_missing_and_malformed_credentials_are_401(anonymous):
    for headers in ({}, {"Authorization": "Token abc"}, {"Authorization": "Bearer pc_admin_nope"}):
        response = anonymous.get("/api/v1/environments", headers=headers)
        assert response.status_code == 401
        assert response.json["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_revoked_token_is_401(admin, editor):
    assert editor.get("/api/v1/environments").status_code == 200
    token_id = db.session.scalars(sa.select(Token.id).where(Token.name == "eddie")).one()
    assert admin.delete(f"/api/v1/tokens/{token_id}").status_code == 204
    response = editor.get("/api/v1/environments")
    assert response.status_code == 401 and response.json["error"]["code"] == "unauthorized"


def test_viewer_cannot_write(viewer):
    before = audit_count()
    response = viewer.post("/api/v1/environments", json={"key": "qa"})
    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"
    assert viewer.get("/api/v1/environments/qa").status_code == 404
    assert audit_count() == before


def test_editor_cannot_manage_tokens_or_environments(editor):
    assert editor.get("/api/v1/tokens").status_code == 403
    assert editor.post("/api/v1/tokens", json={"name": "x", "role": "admin"}).status_code == 403
    assert editor.delete("/api/v1/tokens/1").status_code == 403
    assert editor.post("/api/v1/environments/production/sdk-keys", json={}).status_code == 403
    assert editor.delete("/api/v1/environments/production").status_code == 403
    assert editor.get("/api/v1/audit").status_code == 200


def test_sdk_key_cannot_reach_admin_api_and_admin_token_cannot_reach_sdk(admin, anonymous):
    key = make_sdk_key("production")
    response = anonymous.get("/api/v1/environments", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"
    admin_response = admin.get("/sdk/v1/config")
    assert admin_response.status_code == 403
    assert admin_response.json["error"]["code"] == "forbidden"


def test_token_lifecycle_shows_secret_once_and_stores_only_hash(admin):
    created = admin.post("/api/v1/tokens", json={"name": "ci", "role": "editor"})
    assert created.status_code == 201
    secret = created.json["token"]
    assert secret.startswith("pc_admin_") and len(secret) >= len("pc_admin_") + 43
    listed = admin.get("/api/v1/tokens").json["items"]
    assert {t["name"] for t in listed} >= {"alice", "ci"}
    assert all("token" not in t and "token_hash" not in t for t in listed)
    row = db.session.get(Token, created.json["id"])
    assert row.token_hash != secret and secret not in row.token_hash and len(row.token_hash) == 64
    ci = admin.__class__(admin.client, secret)
    assert ci.get("/api/v1/environments").status_code == 200
    assert db.session.get(Token, created.json["id"]).last_used_at is not None
    assert ci.post("/api/v1/tokens", json={"name": "x", "role": "admin"}).status_code == 403


def test_cli_creates_token(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["tokens", "create", "--role", "viewer", "--name", "cli-made"])
    assert result.exit_code == 0, result.output
    secret = result.output.strip()
    assert secret.startswith("pc_admin_")
    token = db.session.scalars(sa.select(Token).where(Token.name == "cli-made")).one()
    assert token.role == "viewer"
    assert app.test_client().get("/api/v1/environments", headers={"Authorization": f"Bearer {secret}"}).status_code == 200


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


def test_failed_mutation_writes_no_audit_entry(admin):
    before = audit_count()
    assert admin.post("/api/v1/environments", json={"key": "Bad Key!"}).status_code == 400
    assert admin.post("/api/v1/environments", json={"key": "production"}).status_code == 409
    assert admin.patch("/api/v1/environments/production", json={"protected": "maybe"}).status_code == 400
    assert admin.delete("/api/v1/tokens/999").status_code == 404
    assert audit_count() == before


def test_validation_error_names_the_field(admin):
    response = admin.post("/api/v1/environments", json={"key": "Bad Key!", "colour": "red"})
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == "validation_error"
    assert "key" in error["details"] and "colour" in error["details"]


def test_malformed_json_is_400(admin):
    response = admin.post("/api/v1/environments", data="{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json["error"]["code"] == "malformed_json"


def test_wrong_content_type_is_415(admin):
    response = admin.post("/api/v1/environments", data="key=qa", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    assert response.json["error"]["code"] == "unsupported_media_type"
    gz = admin.post("/api/v1/environments", data=gzip.compress(b"{}"), headers={"Content-Type": "application/gzip"})
    assert gz.status_code == 415


def test_oversized_body_is_413(admin, app):
    big = '{"key": "qa", "description": "' + "x" * (app.config["MAX_CONTENT_LENGTH"] + 10) + '"}'
    response = admin.post("/api/v1/environments", data=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json["error"]["code"] == "payload_too_large"
    assert admin.get("/api/v1/environments/qa").status_code == 404


def test_flask_404_and_405_use_the_error_shape(admin):
    missing = admin.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"
    wrong_method = admin.put("/api/v1/environments", json={})
    assert wrong_method.status_code == 405 and wrong_method.json["error"]["code"] == "method_not_allowed"
    assert "GET" in wrong_method.headers["Allow"]


def test_audit_filters_and_pagination(admin):
    for i in range(5):
        admin.post("/api/v1/environments", json={"key": f"env-{i}"})
    first = admin.get("/api/v1/audit?resource_type=environment&limit=2").json
    assert len(first["items"]) == 2 and first["next_cursor"]
    seen = [e["resource_key"] for e in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = admin.get(f"/api/v1/audit?resource_type=environment&limit=2&cursor={cursor}").json
        seen += [e["resource_key"] for e in page["items"]]
        cursor = page["next_cursor"]
    assert seen == [f"env-{i}" for i in reversed(range(5))]
    assert admin.get("/api/v1/audit?actor=nobody").json["items"] == []
    assert admin.get("/api/v1/audit?since=2999-01-01T00:00:00Z").json["items"] == []
    bad = admin.get("/api/v1/audit?cursor=zzz")
    assert bad.status_code == 400 and "cursor" in bad.json["error"]["details"]


def test_openapi_document_and_docs(anonymous):
    spec = anonymous.get("/api/openapi.json")
    assert spec.status_code == 200
    paths = spec.json["paths"]
    assert "/api/v1/environments" in paths and "/api/v1/tokens/{token_id}" in paths
    assert spec.json["openapi"].startswith("3.")
    assert anonymous.get("/api/docs").status_code == 200


def test_metrics_count_requests_by_route_and_status(anonymous, viewer):
    viewer.get("/api/v1/environments")
    body = anonymous.get("/metrics").get_data(as_text=True)
    assert 'pitcrew_http_requests_total{method="GET",route="/api/v1/environments",status="200"}' in body
    assert "pitcrew_http_request_duration_seconds_bucket" in body


def test_request_log_is_json_without_secrets(viewer, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="pitcrew.request"):
        viewer.get("/api/v1/environments", headers={"X-Request-Id": "abc123"})
    records = [r for r in caplog.records if r.name == "pitcrew.request"]
    assert records, "no request log line"
    fields = records[-1].fields
    assert fields["request_id"] == "abc123" and fields["route"] == "/api/v1/environments"
    assert fields["status"] == 200 and fields["actor"] == "vera"
    from service.observability import JsonFormatter

    line = JsonFormatter().format(records[-1])
    assert viewer.token not in line and "Bearer" not in line


def test_lone_surrogates_are_rejected_not_stored(admin):
    body = '{"key": "qa", "name": "bad \\udbaf text"}'
    response = admin.post("/api/v1/environments", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.json
    assert response.json["error"]["details"] == {"name": ["Contains an unpaired UTF-16 surrogate."]}
    assert admin.get("/api/v1/environments/qa").status_code == 404
    # A proper surrogate pair (an emoji) is fine.
    ok = admin.post("/api/v1/environments", data='{"key": "qa", "name": "QA \\ud83d\\ude80"}',
                    headers={"Content-Type": "application/json"})
    assert ok.status_code == 201 and ok.json["name"] == "QA \U0001F680"


def test_numbers_too_large_to_store_are_400(admin):
    before = audit_count()
    response = admin.delete(f"/api/v1/environments/production/sdk-keys/{2**70}")
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "validation_error"
    assert audit_count() == before
