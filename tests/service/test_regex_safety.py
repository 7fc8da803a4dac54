"""Catastrophic regular expressions are refused at write time through the admin API
(targeting PUT/PATCH and segment POST/PATCH), naming the field and changing nothing; and
remote evaluation of accepted patterns on hostile values stays fast (docs/regex.md)."""

import time

import pytest

from tests.sdk.test_regex import CATASTROPHIC, EVIL_TEXTS

from .test_flags import audit_count, create_flag, put_targeting, targeting


def _rule(pattern):
    return {"id": "r1", "conditions": [{"attribute": "email", "op": "matches", "values": [pattern]}],
            "serve": {"variation": "on"}}


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_targeting_with_a_catastrophic_pattern_is_400_and_changes_nothing(editor, pattern):
    create_flag(editor)
    before = audit_count()
    start = time.monotonic()
    response = put_targeting(editor, targeting(rules=[_rule(pattern)]))
    assert response.status_code == 400, response.json
    details = response.json["error"]["details"]
    assert "rules.0.conditions.0.values.0" in details, details
    assert "unsafe pattern" in str(details)
    patched = editor.patch("/api/v1/flags/new-checkout/environments/production",
                           json={"rules": [_rule(pattern)]})
    assert patched.status_code == 400
    assert time.monotonic() - start < 5  # refused by analysis, not by running the pattern
    flag = editor.get("/api/v1/flags/new-checkout").json
    assert flag["version"] == 1 and flag["environments"]["production"]["rules"] == []
    assert audit_count() == before


@pytest.mark.parametrize("pattern", [r"^(a+)+$", r"(a|aa)+$", r"(\w+\s?)*$", r"(a)\1"])
def test_segment_with_a_catastrophic_pattern_is_400(editor, pattern):
    rules = [[{"attribute": "email", "op": "matches", "values": [pattern]}]]
    response = editor.post("/api/v1/segments", json={"key": "evil", "rules": rules})
    assert response.status_code == 400 and "rules.0.0.values.0" in response.json["error"]["details"]
    assert editor.get("/api/v1/segments/evil").status_code == 404
    assert editor.post("/api/v1/segments", json={"key": "fine"}).status_code == 201
    patched = editor.patch("/api/v1/segments/fine", json={"rules": rules})
    assert patched.status_code == 400
    assert editor.get("/api/v1/segments/fine").json["rules"] == []


def test_remote_evaluation_of_accepted_patterns_on_hostile_values_is_fast(editor, sdk):
    create_flag(editor)
    rules = [{"id": f"r{i}", "conditions": [{"attribute": "email", "op": "matches", "values": [p]}],
              "serve": {"variation": "on"}}
             for i, p in enumerate([r"^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}$", r"\w+\s\w+!$",
                                    r"^(\d{1,3}\.){3}\d{1,3}$"])]
    assert put_targeting(editor, targeting(fallthrough={"variation": "off"}, rules=rules)).status_code == 200
    start = time.monotonic()
    for text in EVIL_TEXTS:
        response = sdk.post("/sdk/v1/evaluate", json={"context": {"id": "u", "email": text},
                                                     "flags": ["new-checkout"]})
        assert response.status_code == 200
    assert time.monotonic() - start < 5
    hit = sdk.post("/sdk/v1/evaluate", json={"context": {"id": "u", "email": "ann@example.com"},
                                             "flags": ["new-checkout"]})
    assert hit.json["flags"]["new-checkout"]["rule_id"] == "r0"
