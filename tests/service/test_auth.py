"""Authentication and roles: bearer tokens, their lifecycle (shown once, stored hashed,
revoked), default-deny roles, SDK keys kept off the admin API and back."""

import sqlalchemy as sa

from service.extensions import db
from service.models import Token

from .support import audit_count, make_sdk_key


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
