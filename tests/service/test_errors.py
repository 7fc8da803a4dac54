"""One error shape for every refusal, and refused input changes nothing: validation
details per field, malformed JSON, media types, sizes, Flask's own 404/405, text and
numbers no database can store."""

import gzip

from .support import audit_count


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
