"""GET /api/v1/export and POST /api/v1/import through a real gunicorn server, hostile documents included."""

import json
import time
import urllib.error
import urllib.request

import pytest
import sqlalchemy as sa
import yaml

from service.extensions import db
from service.flags_as_code.document import MAX_DEPTH, MAX_NODES
from service.models import AuditEntry, Flag, Segment

from .support import make_token

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]

DOCUMENT_YAML = """\
version: 1
environment: production
flags:
  - key: new-checkout
    name: New checkout
    kind: boolean
    type: release
    variations:
      - {key: "on", value: true}
      - {key: "off", value: false}
    tags: [checkout]
    owner: team-pay
    temporary: true
    targeting:
      enabled: true
      off_variation: "off"
      targets: [{variation: "on", values: [qa-1, qa-2]}]
      rules:
        - id: norway
          description: Norway first (the country code is no, a string, not false)
          conditions: [{attribute: country, op: in, values: [no]}]
          serve: {variation: "on"}
        - id: beta
          conditions: [{op: in_segment, values: [beta]}]
          serve: {rollout: {weights: [["on", 2500], ["off", 7500]]}}
      fallthrough: {variation: "off"}
segments:
  - key: beta
    included: [u-1]
metrics:
  - {key: orders, event: order, type: count}
"""


def request(server, method, path, *, token, body=None, content_type="application/json", timeout=30):
    data = body if body is None or isinstance(body, bytes) else body.encode()
    req = urllib.request.Request(server.url + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def count(model) -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


@pytest.fixture
def tokens():
    return {"editor": make_token("editor"), "viewer": make_token("viewer")}


def test_import_yaml_then_export_through_gunicorn(live_server, tokens):
    audit = count(AuditEntry)  # the tokens' own entries
    status, _, body = request(live_server, "POST", "/api/v1/import?dry_run=true", token=tokens["editor"],
                              body=DOCUMENT_YAML, content_type="application/yaml")
    assert status == 200, body
    assert json.loads(body)["summary"] == {"created": 3, "changed": 0, "unchanged": 0}
    assert count(Flag) == 0 and count(AuditEntry) == audit

    status, _, body = request(live_server, "POST", "/api/v1/import", token=tokens["editor"],
                              body=DOCUMENT_YAML, content_type="application/x-yaml")
    assert status == 200, body
    assert json.loads(body)["dry_run"] is False
    assert count(Flag) == 1 and count(Segment) == 1

    status, headers, body = request(live_server, "GET", "/api/v1/export?environment=production",
                                    token=tokens["viewer"])
    assert status == 200 and headers["Content-Type"].startswith("application/yaml")
    exported = yaml.safe_load(body)
    assert exported["flags"][0]["targeting"]["rules"][0]["conditions"][0]["values"] == ["no"]
    assert exported["flags"][0]["targeting"]["targets"] == [{"variation": "on", "values": ["qa-1", "qa-2"]}]
    status, headers, body_json = request(live_server, "GET", "/api/v1/export?environment=production&format=json",
                                         token=tokens["viewer"])
    assert headers["Content-Type"].startswith("application/json") and json.loads(body_json) == exported

    # The export applied again changes nothing, over the wire too.
    audit = count(AuditEntry)
    status, _, body = request(live_server, "POST", "/api/v1/import", token=tokens["editor"], body=body,
                              content_type="application/yaml")
    assert status == 200 and json.loads(body)["summary"] == {"created": 0, "changed": 0, "unchanged": 3}
    assert count(AuditEntry) == audit


def test_roles_and_query_validation(live_server, tokens):
    status, _, body = request(live_server, "POST", "/api/v1/import", token=tokens["viewer"],
                              body=DOCUMENT_YAML, content_type="application/yaml")
    assert status == 403
    status, _, _ = request(live_server, "GET", "/api/v1/export?environment=production", token="nope")
    assert status == 401
    status, _, body = request(live_server, "GET", "/api/v1/export?environment=production&format=xml",
                              token=tokens["viewer"])
    assert status == 400 and "format" in json.loads(body)["error"]["details"]
    status, _, body = request(live_server, "GET", "/api/v1/export", token=tokens["viewer"])
    assert status == 400 and "environment" in json.loads(body)["error"]["details"]
    status, _, body = request(live_server, "GET", "/api/v1/export?environment=mars", token=tokens["viewer"])
    assert status == 404
    status, _, body = request(live_server, "POST", "/api/v1/import", token=tokens["editor"],
                              body="<xml/>", content_type="text/xml")
    assert status == 415 and "application/yaml" in json.loads(body)["error"]["message"]


def alias_bomb(levels=9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE = [
    ("alias bomb", alias_bomb(), "application/yaml", "aliases"),
    ("single alias", "version: 1\nenvironment: &e production\nx: *e\n", "application/yaml", "aliases"),
    ("deep JSON", "[" * 5000 + "]" * 5000, "application/json", "nested deeper"),
    ("deep YAML", "a:\n" + "".join("  " * i + "- \n" for i in range(1, 200)), "application/yaml", "nested deeper"),
    ("python tag", "version: !!python/object/apply:os.system ['true']\n", "application/yaml", "invalid YAML"),
    ("binary tag", "version: 1\nenvironment: !!binary aGVsbG8=\n", "application/yaml", "not JSON data"),
    ("duplicate key", '{"version": 1, "version": 2}', "application/json", "duplicate key"),
    ("NaN", '{"version": NaN}', "application/json", "NaN"),
    ("not UTF-8", b"version: 1\nenvironment: \xff\xfe\n", "application/yaml", "not UTF-8"),
    ("lone surrogate", '{"version": 1, "environment": "\\ud800"}', "application/json", "surrogate"),
    ("not a mapping", "- 1\n- 2\n", "application/yaml", "mapping"),
    ("timestamp key", "version: 1\n2024-01-01: x\n", "application/yaml", None),
]


@pytest.mark.parametrize("name, body, content_type, reason", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_documents_get_a_400_quickly_and_change_nothing(live_server, tokens, name, body, content_type,
                                                               reason):
    audit = count(AuditEntry)
    started = time.monotonic()
    status, _, raw = request(live_server, "POST", "/api/v1/import", token=tokens["editor"], body=body,
                             content_type=content_type)
    assert status == 400, raw
    assert time.monotonic() - started < 5  # "not frozen", not a timing test
    error = json.loads(raw)["error"]
    if reason:
        assert reason in json.dumps(error), error
    assert count(AuditEntry) == audit and count(Flag) == 0


def test_too_large_documents_get_413(live_server, tokens):
    big = "version: 1\nenvironment: production\n# " + "x" * (3 * 1024 * 1024) + "\n"
    status, _, raw = request(live_server, "POST", "/api/v1/import", token=tokens["editor"], body=big,
                             content_type="application/yaml")
    assert status == 413, raw
    assert json.loads(raw)["error"]["code"] == "payload_too_large"


def test_many_small_values_are_refused_before_validation(app, editor):
    body = json.dumps({"version": 1, "environment": "production", "x": [0] * (MAX_NODES + 1)})
    response = editor.post("/api/v1/import", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json["error"]["details"] == {"_body": [f"more than {MAX_NODES} values"]}


def test_depth_limit_leaves_room_for_real_documents(editor):
    # The deepest real path (flags.N.targeting.rules.N.conditions.N.values.N) is far below the limit.
    assert MAX_DEPTH >= 16
    response = editor.post("/api/v1/import?dry_run=true", data=DOCUMENT_YAML,
                           headers={"Content-Type": "text/yaml"})
    assert response.status_code == 200, response.json
