"""Flags as code: export, diff, apply (one transaction, idempotent), round trip, CLI.

HTTP-level hostile input and the live server are in test_flags_as_code_api.py.
"""

import copy
import json

import pytest
import sqlalchemy as sa
import yaml

from service.domain import Actor, environments
from service.domain.errors import ValidationFailed
from service.extensions import db
from service.flags_as_code.apply import apply
from service.flags_as_code.document import dump, parse
from service.flags_as_code.export import export_document
from service.models import (
    AuditEntry,
    Environment,
    Flag,
    FlagTargeting,
    FlagVersion,
    Metric,
    Segment,
)

from .conftest import _empty_database
from .support import make_token

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
ACTOR = Actor("tests")


def ok(response, status=200):
    assert response.status_code == status, response.json
    return response.json


def build_state(client) -> None:
    """A production environment using most features: segments, every serve kind, prerequisites, metrics."""
    ok(client.post("/api/v1/segments", json={
        "key": "beta-testers", "name": "Beta testers", "included": ["u-1", "u-2"], "excluded": ["u-9"],
        "rules": [[{"attribute": "email", "op": "ends_with", "values": ["@acme.com"]}]]}), 201)
    ok(client.post("/api/v1/segments", json={"key": "staff", "tags": ["internal"]}), 201)
    ok(client.post("/api/v1/flags", json={"key": "billing-v2", "kind": "boolean", "variations": BOOL,
                                          "owner": "team-pay", "tags": ["pay"], "temporary": False}), 201)
    ok(client.put("/api/v1/flags/billing-v2/environments/production", json={
        "enabled": True, "off_variation": "off", "fallthrough": {"variation": "on"}}))
    ok(client.post("/api/v1/flags", json={
        "key": "checkout-layout", "name": "Checkout layout", "description": "Which checkout we show",
        "kind": "string", "variations": [{"key": "classic", "value": "classic", "description": "today"},
                                         {"key": "compact", "value": "compact"},
                                         {"key": "wizard", "value": "wizard"}]}), 201)
    ok(client.put("/api/v1/flags/checkout-layout/environments/production", json={
        "enabled": True, "off_variation": "classic",
        "prerequisites": [{"flag": "billing-v2", "variation": "on"}],
        "targets": [{"variation": "wizard", "values": ["u-7", "u-8"]}],
        "rules": [
            {"id": "beta", "description": "Beta testers first",
             "conditions": [{"op": "in_segment", "values": ["beta-testers"]}], "serve": {"variation": "wizard"}},
            {"id": "mobile", "conditions": [
                {"attribute": "platform", "op": "in", "values": ["ios", "android"]},
                {"attribute": "app_version", "op": "semver_gte", "values": ["4.2.0"]},
                {"attribute": "country", "op": "in", "values": ["FR"], "negate": True}],
             "serve": {"rollout": {"weights": [["classic", 5000], ["compact", 5000]], "bucket_by": "account"}}},
        ],
        "fallthrough": {"rollout": {"weights": [["classic", 9000], ["compact", 1000], ["wizard", 0]]}}}))
    ok(client.post("/api/v1/flags", json={"key": "search-config", "kind": "json", "variations": [
        {"key": "default", "value": {"limit": 10, "fuzzy": False}},
        {"key": "wide", "value": {"limit": 50, "boost": {"title": 2.5}, "fuzzy": True}}]}), 201)
    ok(client.post("/api/v1/metrics", json={"key": "checkout-conversion", "event": "purchase",
                                            "type": "conversion", "window_hours": 72}), 201)
    ok(client.post("/api/v1/metrics", json={"key": "revenue", "name": "Revenue per user", "event": "purchase",
                                            "type": "mean", "winsorize": 0.99, "tags": ["money"]}), 201)


def counts() -> dict:
    models = (AuditEntry, Flag, FlagTargeting, FlagVersion, Segment, Metric)
    result = {m.__name__: db.session.scalar(sa.select(sa.func.count()).select_from(m)) for m in models}
    result["ruleset_versions"] = sorted(db.session.scalars(sa.select(Environment.ruleset_version)))
    result["versions"] = sorted(db.session.execute(sa.select(Flag.key, Flag.version)).all())
    return result


def empty_database() -> None:
    db.session.remove()
    _empty_database()
    environments.ensure_defaults()


# ---------------------------------------------------------------- export

def test_export_is_deterministic_and_sorted(admin):
    build_state(admin)
    document = export_document("production")
    assert document["version"] == 1 and document["environment"] == "production"
    assert [f["key"] for f in document["flags"]] == ["billing-v2", "checkout-layout", "search-config"]
    assert [s["key"] for s in document["segments"]] == ["beta-testers", "staff"]
    assert [m["key"] for m in document["metrics"]] == ["checkout-conversion", "revenue"]
    flag = document["flags"][1]
    assert list(flag) == ["key", "name", "description", "kind", "type", "variations", "tags", "owner",
                          "temporary", "targeting"]
    assert flag["type"] == "release"
    assert list(flag["targeting"]) == ["enabled", "off_variation", "prerequisites", "targets", "rules",
                                       "fallthrough"]
    assert flag["targeting"]["rules"][1]["conditions"][2] == {
        "attribute": "country", "op": "in", "values": ["FR"], "negate": True}
    # Free-form JSON values have sorted keys whatever the database (JSONB reorders them).
    assert list(document["flags"][2]["variations"][1]["value"]) == ["boost", "fuzzy", "limit"]
    # A flag nobody configured in production exports its default (off) targeting.
    assert document["flags"][2]["targeting"]["enabled"] is False
    # Same database state, same bytes; YAML and JSON hold the same document.
    assert dump(export_document("production"), "yaml") == dump(document, "yaml")
    assert parse(dump(document, "yaml"), "yaml") == document == parse(dump(document, "json"), "json")


def test_export_other_environment_and_archived_flags(admin):
    build_state(admin)
    ok(admin.delete("/api/v1/flags/search-config"))
    staging = export_document("staging")
    assert [f["key"] for f in staging["flags"]] == ["billing-v2", "checkout-layout"]
    assert all(f["targeting"]["enabled"] is False for f in staging["flags"])
    with pytest.raises(Exception) as info:
        export_document("nowhere")
    assert "nowhere" in str(info.value)


# ---------------------------------------------------------------- round trip and idempotency

@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_round_trip_export_apply_on_empty_database_export(admin, fmt):
    build_state(admin)
    text = dump(export_document("production"), fmt)
    empty_database()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Flag)) == 0
    result = apply(ACTOR, parse(text, fmt))
    assert result["summary"] == {"created": 7, "changed": 0, "unchanged": 0}
    assert dump(export_document("production"), fmt) == text
    # Written through the domain: each flag has history and audit entries, rulesets moved.
    assert db.session.scalar(sa.select(sa.func.count()).select_from(FlagVersion)) >= 3
    entries = db.session.scalars(sa.select(AuditEntry)).all()
    assert {e.resource_type for e in entries} == {"flag", "segment", "metric"}
    assert all(e.actor == "tests" and e.comment == "flags as code: apply" for e in entries)


def test_applying_the_same_document_twice_changes_nothing_the_second_time(admin):
    build_state(admin)
    document = export_document("production")
    document["flags"][0]["description"] = "Bill through the new provider"
    document["flags"].append({"key": "new-banner", "kind": "boolean", "variations": BOOL, "targeting": {
        "enabled": True, "off_variation": "off", "fallthrough": {"variation": "on"}}})
    first = apply(ACTOR, copy.deepcopy(document))
    assert first["summary"] == {"created": 1, "changed": 1, "unchanged": 6}
    before = counts()
    second = apply(ACTOR, copy.deepcopy(document))
    assert second["summary"] == {"created": 0, "changed": 0, "unchanged": 8}
    assert all(item["changes"] == [] for section in ("flags", "segments", "metrics") for item in second[section])
    assert counts() == before


def test_a_document_written_by_hand_with_defaults_left_out_is_idempotent(admin):
    text = """
version: 1
environment: production
flags:
  - key: dark-mode
    kind: boolean
    variations: [{key: "on", value: true}, {key: "off", value: false}]
    targeting:
      enabled: true
      off_variation: "off"
      rules:
        - id: staff
          conditions: [{attribute: email, op: ends_with, values: ["@acme.com"]}]
          serve: {variation: "on"}
      fallthrough: {variation: "off"}
segments:
  - key: staff
metrics:
  - {key: clicks, event: click, type: count}
"""
    assert apply(ACTOR, parse(text))["summary"] == {"created": 3, "changed": 0, "unchanged": 0}
    before = counts()
    assert apply(ACTOR, parse(text))["summary"] == {"created": 0, "changed": 0, "unchanged": 3}
    assert counts() == before
    exported = export_document("production")
    assert exported["flags"][0]["name"] == "dark-mode"
    assert exported["flags"][0]["targeting"]["rules"][0]["conditions"][0]["negate"] is False


# ---------------------------------------------------------------- dry run and diff

def changed_document():
    document = export_document("production")
    layout = document["flags"][1]
    layout["targeting"]["rules"][1]["conditions"][1]["values"] = ["5.0.0"]
    layout["targeting"]["enabled"] = False
    layout["tags"] = ["checkout"]
    document["segments"][0]["included"].append("u-3")
    document["metrics"][1]["winsorize"] = 0.95
    document["metrics"].append({"key": "refunds", "event": "refund", "type": "count", "direction": "decrease"})
    return document


def test_dry_run_returns_the_field_level_diff_and_changes_nothing(admin):
    build_state(admin)
    document = changed_document()
    before = counts()
    response = admin.post("/api/v1/import?dry_run=true", json=document)
    result = ok(response)
    assert counts() == before
    assert result["dry_run"] is True
    assert result["summary"] == {"created": 1, "changed": 3, "unchanged": 4}
    layout = next(f for f in result["flags"] if f["key"] == "checkout-layout")
    assert layout["status"] == "changed"
    assert {c["path"]: (c["before"], c["after"]) for c in layout["changes"]} == {
        "tags": ([], ["checkout"]),
        "targeting.enabled": (True, False),
        "targeting.rules.1.conditions.1.values.0": ("4.2.0", "5.0.0"),
    }
    segment = next(s for s in result["segments"] if s["key"] == "beta-testers")
    assert segment["changes"] == [{"path": "included", "op": "replace", "before": ["u-1", "u-2"],
                                   "after": ["u-1", "u-2", "u-3"]}]
    assert [m["status"] for m in result["metrics"]] == ["unchanged", "created", "changed"]
    assert [f["status"] for f in result["flags"]] == ["unchanged", "changed", "unchanged"]

    applied = ok(admin.post("/api/v1/import", json=document))
    assert applied["dry_run"] is False and applied["summary"] == result["summary"]
    after = counts()
    assert after["Metric"] == before["Metric"] + 1
    assert after["AuditEntry"] == before["AuditEntry"] + 5  # flag fields, targeting, segment, 2 metrics
    assert dict(after["versions"])["checkout-layout"] == dict(before["versions"])["checkout-layout"] + 2
    assert all(a > b for a, b in zip(after["ruleset_versions"], before["ruleset_versions"], strict=True))
    assert apply(ACTOR, document)["summary"] == {"created": 0, "changed": 0, "unchanged": 8}
    assert admin.get("/api/v1/flags/checkout-layout/environments/production").json["enabled"] is False


def test_a_dry_run_reports_write_time_problems_like_an_apply(admin):
    build_state(admin)
    document = export_document("production")
    document["flags"][1]["targeting"]["prerequisites"] = [{"flag": "no-such-flag", "variation": "on"}]
    before = counts()
    response = admin.post("/api/v1/import?dry_run=true", json=document)
    assert response.status_code == 400
    assert response.json["error"]["details"] == {"flags.1.targeting.prerequisites.0.flag": ["unknown flag 'no-such-flag'"]}
    assert counts() == before


# ---------------------------------------------------------------- all or nothing

def test_apply_is_all_or_nothing_and_names_every_problem_path(admin):
    build_state(admin)
    before = counts()
    document = export_document("production")
    document["segments"].append({"key": "vip", "included": ["u-1"]})
    document["flags"].append({"key": "good-flag", "kind": "boolean", "variations": BOOL,
                              "targeting": {"enabled": True, "off_variation": "off",
                                            "fallthrough": {"variation": "on"}}})
    document["flags"].append({"key": "bad-flag", "kind": "boolean", "variations": BOOL, "targeting": {
        "enabled": True, "off_variation": "off", "fallthrough": {"variation": "maybe"},
        "rules": [{"id": "r", "conditions": [{"op": "in_segment", "values": ["ghosts"]}],
                   "serve": {"variation": "on"}}]}})
    document["flags"][0]["kind"] = "string"
    document["metrics"].append({"key": "bad-metric", "event": "x", "type": "ratio"})
    response = admin.post("/api/v1/import", json=document)
    assert response.status_code == 400, response.json
    details = response.json["error"]["details"]
    assert set(details) == {"flags.0.kind", "flags.4.targeting.fallthrough.variation",
                            "metrics.2.denominator"}
    # the segment reference is only checked once the shape is valid, like a direct write
    document["flags"][4]["targeting"]["fallthrough"] = {"variation": "off"}
    details = admin.post("/api/v1/import", json=document).json["error"]["details"]
    assert set(details) == {"flags.0.kind", "flags.4.targeting.rules.0.conditions.0.values", "metrics.2.denominator"}
    assert "ghosts" in details["flags.4.targeting.rules.0.conditions.0.values"][0]
    assert counts() == before
    assert admin.get("/api/v1/segments/vip").status_code == 404
    assert admin.get("/api/v1/flags/good-flag").status_code == 404


def test_schema_problems_name_their_path_and_unknown_fields_are_refused(admin):
    document = {"version": 1, "environment": "production", "flags": [
        {"key": "Bad Key", "kind": "boolean", "variations": BOOL, "archived": True, "colour": "red",
         "targeting": {"enabled": True, "off_variation": "off", "fallthrough": {"variation": "on", "extra": 1},
                       "rules": [{"id": "r", "conditions": [{"attribute": "a", "op": "in", "values": [1],
                                                             "case_insensitive": True}],
                                  "serve": {"variation": "on"}}]}}],
        "segments": [{"key": "s", "members": []}], "experiments": []}
    response = admin.post("/api/v1/import", json=document)
    assert response.status_code == 400
    details = response.json["error"]["details"]
    assert details["flags.0.key"][0].startswith("Must match")
    for path in ("flags.0.archived", "flags.0.colour", "flags.0.targeting.fallthrough.extra",
                 "flags.0.targeting.rules.0.conditions.0.case_insensitive", "segments.0.members", "experiments"):
        assert details[path] == ["Unknown field."], path
    assert admin.post("/api/v1/import", json={"version": 2, "environment": "production"}).json[
        "error"]["details"] == {"version": ["Must be 1."]}
    assert admin.post("/api/v1/import", json={"version": 1, "environment": "mars"}).json[
        "error"]["details"]["environment"][0].startswith("Unknown environment 'mars'")
    duplicate = {"version": 1, "environment": "production", "metrics": [
        {"key": "m", "event": "e", "type": "count"}, {"key": "m", "event": "f", "type": "count"}]}
    assert admin.post("/api/v1/import", json=duplicate).json["error"]["details"] == {
        "metrics.1.key": ["Duplicate key 'm' (also metrics.0)."]}
    assert admin.post("/api/v1/import", json=[1, 2]).status_code == 400


def test_flag_type_is_stored_exported_and_validated(admin):
    doc = {"version": 1, "environment": "production", "flags": [
        {"key": "kill-payments", "kind": "boolean", "type": "kill-switch", "variations": BOOL,
         "targeting": {"enabled": False, "off_variation": "off", "fallthrough": {"variation": "on"}}}]}
    result = ok(admin.post("/api/v1/import", json=doc))
    assert result["warnings"] == [] and result["summary"]["created"] == 1
    assert admin.get("/api/v1/flags/kill-payments").json["type"] == "kill-switch"
    assert export_document("production")["flags"][0]["type"] == "kill-switch"
    assert ok(admin.post("/api/v1/import", json=doc))["summary"]["unchanged"] == 1
    doc["flags"][0]["type"] = "operational"
    changed = ok(admin.post("/api/v1/import", json=doc))
    assert changed["flags"][0]["changes"] == [{"path": "type", "op": "replace", "before": "kill-switch",
                                               "after": "operational"}]
    assert admin.get("/api/v1/flags/kill-payments").json["type"] == "operational"
    doc["flags"][0]["type"] = "forever"
    assert admin.post("/api/v1/import", json=doc).json["error"]["details"] == {
        "flags.0.type": ["Must be one of: release, experiment, operational, kill-switch, permission."]}


# ---------------------------------------------------------------- order of writes

def test_references_resolve_whatever_the_document_order(admin):
    doc = {"version": 1, "environment": "production", "flags": [
        {"key": "child", "kind": "boolean", "variations": BOOL, "targeting": {
            "enabled": True, "off_variation": "off", "prerequisites": [{"flag": "parent", "variation": "on"}],
            "rules": [{"id": "r", "conditions": [{"op": "in_segment", "values": ["pilots"]}],
                       "serve": {"variation": "on"}}],
            "fallthrough": {"variation": "off"}}},
        {"key": "parent", "kind": "boolean", "variations": BOOL, "targeting": {
            "enabled": True, "off_variation": "off", "prerequisites": [{"flag": "grandparent", "variation": "yes"}],
            "fallthrough": {"variation": "on"}}},
        {"key": "grandparent", "kind": "string", "variations": [{"key": "yes", "value": "y"},
                                                                 {"key": "no", "value": "n"}],
         "targeting": {"enabled": True, "off_variation": "no", "fallthrough": {"variation": "yes"}}}],
        "segments": [{"key": "pilots", "included": ["p-1"]}]}
    assert ok(admin.post("/api/v1/import", json=doc))["summary"]["created"] == 4
    # Reverse the chain in one document: grandparent now needs child. Writing
    # grandparent first would be a cycle against the stored child -> parent link.
    doc["flags"][0]["targeting"]["prerequisites"] = []
    doc["flags"][1]["targeting"]["prerequisites"] = [{"flag": "child", "variation": "on"}]
    doc["flags"][2]["targeting"]["prerequisites"] = [{"flag": "parent", "variation": "on"}]
    assert ok(admin.post("/api/v1/import", json=doc))["summary"] == {"created": 0, "changed": 3, "unchanged": 1}
    # A real cycle inside the document is refused at its path.
    doc["flags"][0]["targeting"]["prerequisites"] = [{"flag": "grandparent", "variation": "yes"}]
    details = admin.post("/api/v1/import", json=doc).json["error"]["details"]
    assert any(path.endswith("targeting.prerequisites") and "cycle" in messages[0]
               for path, messages in details.items()), details


def test_renaming_variations_that_targeting_uses_in_one_document(admin):
    doc = {"version": 1, "environment": "production", "flags": [
        {"key": "layout", "kind": "string", "variations": [{"key": "a", "value": "A"}, {"key": "b", "value": "B"}],
         "targeting": {"enabled": True, "off_variation": "a",
                       "fallthrough": {"rollout": {"weights": [["a", 5000], ["b", 5000]]}}}}]}
    ok(admin.post("/api/v1/import", json=doc))
    doc["flags"][0]["variations"] = [{"key": "left", "value": "A"}, {"key": "right", "value": "B"}]
    doc["flags"][0]["targeting"] = {"enabled": True, "off_variation": "left",
                                    "fallthrough": {"rollout": {"weights": [["left", 2000], ["right", 8000]]}}}
    ok(admin.post("/api/v1/import", json=doc))
    flag = admin.get("/api/v1/flags/layout").json
    assert [v["key"] for v in flag["variations"]] == ["left", "right"]
    assert flag["environments"]["production"]["off_variation"] == "left"
    assert len(admin.get("/api/v1/flags/layout/history").json["items"]) == 5  # create, 2 + update, targeting, drop


def test_archived_flag_named_in_a_document_is_restored(admin):
    build_state(admin)
    document = export_document("production")
    ok(admin.delete("/api/v1/flags/search-config"))
    result = apply(ACTOR, document)
    entry = next(f for f in result["flags"] if f["key"] == "search-config")
    assert entry["status"] == "changed"
    assert entry["changes"] == [{"path": "archived", "op": "replace", "before": True, "after": False}]
    assert admin.get("/api/v1/flags/search-config").json["archived"] is False


def test_what_the_document_does_not_name_is_left_alone(admin):
    build_state(admin)
    apply(ACTOR, {"version": 1, "environment": "production"})
    assert len(export_document("production")["flags"]) == 3


# ---------------------------------------------------------------- CLI

def test_cli_export_apply_and_dry_run(app, admin, tmp_path):
    build_state(admin)
    runner = app.test_cli_runner()
    out = tmp_path / "production.yaml"
    result = runner.invoke(args=["export", "--environment", "production", "--output", str(out)])
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(out.read_text())
    assert document == export_document("production")
    stdout = runner.invoke(args=["export", "-e", "production", "--format", "json"]).output
    assert json.loads(stdout) == document

    document["flags"][0]["targeting"]["enabled"] = False
    out.write_text(dump(document, "yaml"))
    before = counts()
    result = runner.invoke(args=["apply", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "Would apply to production: 0 created, 1 changed, 6 unchanged." in result.output
    assert "targeting.enabled: true -> false" in result.output
    assert counts() == before

    result = runner.invoke(args=["apply", str(out), "--actor", "ci-bot", "--comment", "PR #12", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["summary"]["changed"] == 1
    db.session.expire_all()
    entry = db.session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert (entry.actor, entry.comment, entry.resource_key) == ("ci-bot", "PR #12", "billing-v2")

    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nenvironment: production\nflags:\n  - key: x\n    kind: nope\n")
    result = runner.invoke(args=["apply", str(bad)])
    assert result.exit_code == 1
    assert "flags.0.kind" in result.output and "flags.0.targeting" in result.output


def test_apply_validation_error_leaves_cli_session_usable(app, admin, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "environment": "production", "segments": [
        {"key": "ok-segment"}, {"key": "bad", "rules": [[{"attribute": "a", "op": "nope", "values": [1]}]]}]}))
    runner = app.test_cli_runner()
    assert runner.invoke(args=["apply", str(bad)]).exit_code == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Segment)) == 0
    with pytest.raises(ValidationFailed) as info:
        apply(ACTOR, json.loads(bad.read_text()))
    assert set(info.value.details) == {"segments.1.rules.0.0.op"}
    assert make_token("viewer")  # the session still works


def test_an_environment_requiring_approvals_gets_change_requests_for_its_targeting(admin):
    """In-process (as the CLI runs it): the targeting change is proposed, the rest written.
    The API, the console and idempotency are covered in test_process_gaps.py."""
    from service.models import ChangeRequest

    build_state(admin)
    ok(admin.patch("/api/v1/environments/production", json={"approvals_required": 2}))
    document = export_document("production")
    document["flags"][0]["targeting"]["enabled"] = False
    document["metrics"].append({"key": "refunds", "event": "refund", "type": "count"})
    before = counts()
    result = apply(ACTOR, document)
    assert [(p["flag"], p["status"]) for p in result["change_requests"]] == [("billing-v2", "opened")]
    after = counts()
    assert after["Metric"] == before["Metric"] + 1 and after["versions"] == before["versions"]
    db.session.expire_all()
    request = db.session.scalars(sa.select(ChangeRequest)).one()
    assert (request.state, request.author, request.targeting["enabled"]) == ("open", "tests", False)
    assert export_document("production")["flags"][0]["targeting"]["enabled"] is True
