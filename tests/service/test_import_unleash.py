"""Unleash -> document: translation of a realistic feature export (batch and state formats), the
report, and evaluation of the result through Pitcrew's engine against Unleash's documented
semantics (its client specification: constraint operators, inverted and missing fields,
strategies, dependencies; percentages only by size)."""

import json
from pathlib import Path

import pytest
import yaml

from pitcrew.evaluation import compile_ruleset, evaluate
from service.domain import Actor
from service.domain.errors import ValidationFailed
from service.flags_as_code.apply import apply
from service.flags_as_code.document import ruleset
from service.flags_as_code.export import export_document
from service.importers.unleash import translate

FIXTURES = Path(__file__).parent / "fixtures" / "unleash"


def load(name):
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="module")
def translated():
    return translate(load("features-export.json"), "production", segments=load("segments.json"))


@pytest.fixture(scope="module")
def engine(translated):
    return compile_ruleset(ruleset(translated[0]))


def flag(document, key):
    return next(f for f in document["flags"] if f["key"] == key)


def enabled(engine, key, context) -> bool:
    result = evaluate(engine, key, context, "DEFAULT")
    assert result.reason != "ERROR", result
    return result.value is True


# ---------------------------------------------------------------- translation

def test_flags_types_tags_and_variants(translated):
    document, _report = translated
    assert [f["key"] for f in document["flags"]] == [
        "banner-color", "checkout.operators", "child-flag", "child-of-variant", "dark-mode", "kill-payments",
        "legacy-strategies", "orphan-child", "pricing-page", "rollout-flexible"]
    kill = flag(document, "kill-payments")
    assert (kill["kind"], kill["type"], kill["temporary"]) == ("boolean", "kill-switch", False)
    assert kill["tags"] == ["payments", "team:billing"]
    assert kill["targeting"]["enabled"] is False
    banner = flag(document, "banner-color")
    assert banner["kind"] == "json"
    assert [v["value"] for v in banner["variations"]] == [
        {"enabled": True, "name": "Blue", "payload": {"type": "string", "value": "#0000ff"}},
        {"enabled": True, "name": "Green", "payload": {"type": "json", "value": '{"hex": "#00ff00"}'}},
        {"enabled": True, "name": "Red"}, {"enabled": False, "name": "disabled"}]
    assert banner["targeting"]["off_variation"] == "disabled"
    assert banner["targeting"]["rules"][-1]["serve"] == {"rollout": {"weights": [
        ["blue", 5000], ["green", 3000], ["red", 2000]]}}
    pricing = flag(document, "pricing-page")
    assert pricing["kind"] == "string"
    # the 50% strategy's own variants (70/30) share the gate: 35% / 15% / 50% disabled
    assert pricing["targeting"]["rules"][-1]["serve"] == {"rollout": {"weights": [
        ["annual-first", 3500], ["monthly-first", 1500], ["disabled", 5000]]}}
    assert [s["key"] for s in document["segments"]] == ["beta-testers", "internal-staff"]
    assert document["segments"][0]["rules"] == [[
        {"attribute": "email", "op": "ends_with", "values": ["@beta.acme.com"], "negate": False},
        {"attribute": "optIn", "op": "in", "values": ["true"], "negate": False}]]


def test_report_lists_everything_left_out(translated):
    report = translated[1].to_dict()
    reasons = " | ".join(f"{i['path']}: {i['reason']}" for i in report["untranslated"])
    for fragment in ("features.Old_Feature: archived", "case-insensitive STR_CONTAINS", "a random percentage",
                     "'172.16.0.0/12'", "applicationHostname", "custom strategy 'my-custom-strategy'"):
        assert fragment in reasons
    assert len(report["untranslated"]) == 6
    notes = " | ".join(n["message"] for n in report["notes"])
    for fragment in ("JSON number", "currentTime", "RE2", "'appName' is SDK configuration", "stickiness 'default'",
                     "another chance", "reordered", "'not-exported' is not in the export", "disabled strategy"):
        assert fragment in notes, fragment
    assert "not their membership" in report["bucketing"]


def test_segments_of_a_batch_export_need_their_definitions():
    document, report = translate(load("features-export.json"), "production")
    reasons = [i["reason"] for i in report.untranslated]
    assert sum("pass --segments" in r for r in reasons) == 2
    assert document["segments"] == []


def test_state_export_with_segments_and_environments():
    document, _report = translate(load("state-export.json"), "production")
    search = flag(document, "search-v2")
    # sortOrder puts the segment strategy first; the 40% rollout comes after (percentages last anyway)
    assert [r["id"] for r in search["targeting"]["rules"]] == ["st-2", "st-1"]
    assert search["targeting"]["rules"][1]["serve"] == {"rollout": {"weights": [["on", 4000], ["off", 6000]]}}
    # an enabled flag without strategies is on for everyone (Unleash SDK behaviour)
    assert flag(document, "onboarding-tour")["targeting"]["fallthrough"] == {"variation": "on"}
    assert document["segments"][0]["key"] == "internal"
    development, _ = translate(load("state-export.json"), "development", target="staging")
    assert development["environment"] == "staging"
    assert flag(development, "search-v2")["targeting"]["rules"][0]["conditions"] == []
    with pytest.raises(ValidationFailed) as info:
        translate(load("state-export.json"), "qa")
    assert "'qa' is not in this export" in str(info.value.details)
    with pytest.raises(ValidationFailed):
        translate({"flags": []}, "production")


# ---------------------------------------------------------------- evaluation (Unleash semantics)

OPERATOR_CASES = [
    # strategy 0: userId IN
    ({"id": "u-1"}, True),
    ({"id": "u-3"}, False),
    # strategy 1: country NOT_IN [NO, SE] AND plan IN [pro]; NOT_IN holds for a missing field
    ({"id": "x", "country": "DK", "plan": "pro"}, True),
    ({"id": "x", "country": "NO", "plan": "pro"}, False),
    ({"id": "x", "plan": "pro"}, True),
    # strategy 2: email ends with, name starts with ("Dr " trimmed), team NOT contains "ops" (inverted)
    ({"id": "x", "email": "a@acme.com", "name": "Dr Who", "team": "growth"}, True),
    ({"id": "x", "email": "a@acme.com", "name": "Dr Who", "team": "devops"}, False),
    ({"id": "x", "email": "a@acme.com", "name": "Dr Who"}, True),  # inverted: a missing field holds
    ({"id": "x", "email": "a@ACME.com", "name": "Dr Who"}, False),  # case sensitive
    # strategy 3: 10 < seats <= 500 and 18 <= age < 65.5
    ({"id": "x", "seats": 500, "age": 18}, True),
    ({"id": "x", "seats": 10, "age": 30}, False),
    ({"id": "x", "seats": 11, "age": 65.5}, False),
    # strategy 4: NUM_EQ 3 (12 == 12.0 in Unleash: numbers compare as numbers)
    ({"id": "x", "level": 3.0}, True),
    # strategy 5: date range on currentTime, exclusive
    ({"id": "x", "currentTime": "2024-06-01T00:00:00Z", "region": "eu"}, True),
    ({"id": "x", "currentTime": "2025-01-01T00:00:00.000Z", "region": "eu"}, False),
    ({"id": "x", "currentTime": "2024-01-01T02:00:00+02:00", "region": "eu"}, False),  # same instant: not after
    # strategy 6: 4.1.0 < appVersion < 6.0.0
    ({"id": "x", "appVersion": "5.0.0-beta.1"}, True),
    ({"id": "x", "appVersion": "6.0.0"}, False),
    ({"id": "x", "appVersion": "6.0.0-rc.1"}, True),  # a prerelease sorts before its release
    # strategy 7: SEMVER_EQ
    ({"id": "x", "appVersion": "3.9.1"}, True),
    # strategy 8: inverted IN [free] AND beta IN [yes]
    ({"id": "x", "tier": "pro", "beta": "yes"}, True),
    ({"id": "x", "tier": "free", "beta": "yes"}, False),
    ({"id": "x", "beta": "yes"}, True),
    # strategy 10: REGEX
    ({"id": "x", "username": "bot-12"}, True),
    ({"id": "x", "username": "bot-12x"}, False),
    # strategy 11: appName IN [web] AND segment Beta Testers (its constraints ANDed)
    ({"id": "x", "appName": "web", "email": "a@beta.acme.com", "optIn": "true"}, True),
    ({"id": "x", "appName": "web", "email": "a@beta.acme.com"}, False),
    ({"id": "x", "appName": "ios", "email": "a@beta.acme.com", "optIn": "true"}, False),
    # nothing matches
    ({"id": "x"}, False),
]


@pytest.mark.parametrize("context, expected", OPERATOR_CASES)
def test_constraints_evaluate_as_in_unleash(engine, context, expected):
    assert enabled(engine, "checkout.operators", context) is expected


def test_strategies_are_any_of(engine):
    # userWithId after percentage strategies in Unleash's order still enables its ids
    assert all(enabled(engine, "rollout-flexible", {"id": u}) for u in ("vip-1", "vip-2", "vip-3"))
    # flexibleRollout 100% on accountId for enterprise: needs the accountId
    assert enabled(engine, "rollout-flexible", {"id": "zz-not-rolled", "plan": "enterprise", "accountId": "a-1"})
    assert enabled(engine, "dark-mode", {"id": "u-1"}) and not enabled(engine, "dark-mode", {"id": "u-2"})
    assert not enabled(engine, "kill-payments", {"id": "u-1"})  # environment disabled
    assert enabled(engine, "legacy-strategies", {"id": "x", "remoteAddress": "198.51.100.23"})
    assert enabled(engine, "legacy-strategies", {"id": "x", "remoteAddress": "203.0.113.7"})
    assert not enabled(engine, "legacy-strategies", {"id": "x", "remoteAddress": "198.51.101.1"})


def test_percentages_keep_their_size_and_units_get_the_larger_percentage(engine):
    n = 20000
    on_all = sum(enabled(engine, "rollout-flexible", {"id": f"user-{i}"}) for i in range(n)) / n
    assert abs(on_all - 0.25) < 0.012
    # Danish users match both the 60% and the 25% strategy (same stickiness and group): 60%
    on_dk = sum(enabled(engine, "rollout-flexible", {"id": f"user-{i}", "country": "DK"}) for i in range(n)) / n
    assert abs(on_dk - 0.60) < 0.012
    counts = {}
    for i in range(n):
        value = evaluate(engine, "banner-color", {"id": f"user-{i}"}, None).value["name"]
        counts[value] = counts.get(value, 0) + 1
    assert abs(counts["Blue"] / n - 0.5) < 0.015 and abs(counts["Red"] / n - 0.2) < 0.015


def test_variant_overrides_and_strategy_variants(engine):
    assert evaluate(engine, "banner-color", {"id": "designer-1"}, None).value["name"] == "Blue"
    assert evaluate(engine, "banner-color", {"id": "x", "country": "IE"}, None).value["name"] == "Green"
    staff = evaluate(engine, "pricing-page", {"id": "x", "email": "ann@acme.com"}, None)
    assert staff.value == "monthly-first"
    assert evaluate(engine, "pricing-page", {"id": "x"}, None).value == "disabled"


def test_dependencies(engine):
    # parent kill-payments is disabled: the child is disabled (Unleash spec 17)
    assert not enabled(engine, "child-flag", {"id": "u-1"})
    # parents: banner-color must serve Green, dark-mode must be on
    assert enabled(engine, "child-of-variant", {"id": "u-1", "country": "IE"})
    assert not enabled(engine, "child-of-variant", {"id": "u-2", "country": "IE"})  # dark-mode off for u-2
    assert not enabled(engine, "child-of-variant", {"id": "designer-1"})  # Blue, not Green
    # a parent missing from the export: Unleash never enables the child
    assert not enabled(engine, "orphan-child", {"id": "u-1"})


# ---------------------------------------------------------------- CLI and apply

def test_cli_translates_and_the_document_applies_idempotently(app, tmp_path):
    runner = app.test_cli_runner()
    out = tmp_path / "unleash.yaml"
    result = runner.invoke(args=["import-unleash", str(FIXTURES / "features-export.json"), "-e", "production",
                                 "--segments", str(FIXTURES / "segments.json"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "Not translated (6)" in result.output
    document = yaml.safe_load(out.read_text())
    summary = apply(Actor("migration"), document)["summary"]
    assert summary == {"created": 12, "changed": 0, "unchanged": 0}
    exported = export_document("production")
    # everything round-trips, the Unleash feature types included
    assert document["flags"] == exported["flags"]
    assert {f["type"] for f in exported["flags"]} > {"release"}
    assert exported["segments"] == document["segments"]
    assert apply(Actor("migration"), document)["summary"] == {"created": 0, "changed": 0, "unchanged": 12}
