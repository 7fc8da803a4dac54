"""LaunchDarkly -> document: translation of a realistic REST API export, the report, and
evaluation of the result through Pitcrew's engine against LaunchDarkly's documented semantics
(targets, every clause operator, on/off, prerequisites; percentages only by size)."""

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from pitcrew.evaluation import compile_ruleset, evaluate
from service.domain import Actor
from service.domain.errors import ValidationFailed
from service.extensions import db
from service.flags_as_code.apply import apply
from service.flags_as_code.document import ruleset
from service.flags_as_code.export import export_document
from service.importers.launchdarkly import translate
from service.models import AuditEntry

FIXTURES = Path(__file__).parent / "fixtures" / "launchdarkly"


def load(name):
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="module")
def translated():
    return translate(load("flags.json"), "production", segments=load("segments.json"))


@pytest.fixture(scope="module")
def engine(translated):
    return compile_ruleset(ruleset(translated[0]))


def flag(document, key):
    return next(f for f in document["flags"] if f["key"] == key)


def run(engine, key, context):
    result = evaluate(engine, key, context, "DEFAULT")
    assert result.reason != "ERROR", result
    return result.variation, result.reason


# ---------------------------------------------------------------- translation

def test_translation_of_flags_variations_and_targets(translated):
    document, report = translated
    assert document["environment"] == "production"
    assert [f["key"] for f in document["flags"]] == [
        "api-rate-limit", "billing-v2", "checkout-layout", "new-onboarding", "search.ranking"]
    billing = flag(document, "billing-v2")
    assert billing["kind"] == "boolean" and billing["temporary"] is False and billing["owner"] == "ariel@acme.com"
    assert billing["variations"] == [{"key": "enabled", "value": True, "description": "Enabled"},
                                     {"key": "disabled", "value": False, "description": "Disabled"}]
    assert billing["targeting"]["targets"] == [{"variation": "disabled", "values": ["qa-1", "qa-2"]}]
    assert flag(document, "api-rate-limit")["kind"] == "number"
    assert flag(document, "search.ranking")["kind"] == "json"
    assert {"kind": "flag", "from": "Search.Ranking", "to": "search.ranking"} in report.renamed


def test_clause_operators_translate_to_conditions(translated):
    rules = {r["id"]: r for r in flag(translated[0], "checkout-layout")["targeting"]["rules"]}
    assert rules["staff"]["conditions"] == [{"attribute": "id", "op": "in", "values": ["u-admin", "u-ops"],
                                             "negate": False}]
    assert [c["op"] for c in rules["r-strings"]["conditions"]] == ["ends_with", "starts_with", "contains"]
    assert rules["r-strings"]["conditions"][2]["negate"] is True
    # several values of an order operator: any matches, so the loosest bound
    assert [(c["op"], c["values"]) for c in rules["r-numbers"]["conditions"]] == [
        ("gte", [18]), ("lt", [70]), ("gt", [10]), ("lte", [500])]
    # epoch milliseconds become an exact RFC 3339 instant
    assert rules["r-dates"]["conditions"][0]["values"] == ["2024-01-01T00:00:00.000Z"]
    # semVerEqual with two versions: two rules; negated: both conditions in one rule
    assert [rules[f"r-semver-eq-{i}"]["conditions"][0]["values"] for i in (1, 2)] == [["3.9.1"], ["3.9.2"]]
    assert [(c["values"], c["negate"]) for c in rules["r-not-versions"]["conditions"][:2]] == [
        (["2.0.0"], True), (["2.0.1"], True)]
    assert rules["r-segment"]["conditions"] == [{"op": "in_segment", "values": ["beta-testers"], "negate": False}]
    assert rules["r-rollout"]["serve"] == {"rollout": {
        "weights": [["classic", 5000], ["compact", 2500], ["wizard", 2500]], "bucket_by": "accountId"}}


def test_report_lists_everything_left_out_with_its_reason(translated):
    report = translated[1].to_dict()
    untranslated = {item["path"]: item["reason"] for item in report["untranslated"]}
    expected = {
        "flags.checkout-layout.environments.production.rules.9": "context kind 'organization'",
        "flags.checkout-layout.environments.production.rules.10": "reaches into an object",
        "flags.billing-v2.environments.production.contextTargets.1": "context kind 'device'",
        "flags.api-rate-limit.environments.production.offVariation": "application's default value",
        "flags.old-banner": "archived",
        "flags.staging-only": "no configuration for environment 'production'",
        "flags.new-onboarding.environments.production.prerequisites.1": "'identity-v3' is not in the export",
        "flags.new-onboarding.environments.production.rules.0": "'notAnOperator' has no Pitcrew equivalent",
        "segments.0.rules.1": "percentage of its matches",
        "segments.0.includedContexts.1": "context kind 'device'",
        "segments.2": "unbounded",
    }
    assert set(untranslated) == set(expected)
    for path, fragment in expected.items():
        assert fragment in untranslated[path], (path, untranslated[path])
    notes = " ".join(n["message"] for n in report["notes"])
    for fragment in ("experiment allocation", "rounded to 0.01%", "milliseconds", "Python regular expressions",
                     "bucket 0", "kept included"):
        assert fragment in notes
    assert "keep their size but not their membership" in report["bucketing"]
    assert report["counts"]["flags"] == 5 and report["counts"]["segments"] == 2


def test_segments_keep_launchdarkly_membership(translated):
    segment = next(s for s in translated[0]["segments"] if s["key"] == "beta-testers")
    assert segment["included"] == ["u-1", "u-2", "u-3", "u-4"]
    assert segment["excluded"] == ["u-9"]  # u-3 is included in LaunchDarkly, where included wins
    assert segment["rules"] == [[{"attribute": "email", "op": "ends_with", "values": ["@beta.acme.com"],
                                  "negate": False}]]


def test_segment_match_without_the_segments_export_is_reported():
    document, report = translate(load("flags.json"), "production")
    assert document["segments"] == []
    reasons = {i["path"]: i["reason"] for i in report.untranslated}
    assert "pass --segments" in reasons["flags.checkout-layout.environments.production.rules.8"]
    assert all(r["id"] != "r-segment" for r in flag(document, "checkout-layout")["targeting"]["rules"])


def test_single_flag_and_bad_input():
    one = load("flags.json")["items"][1]
    document, _ = translate(one, "production")
    assert [f["key"] for f in document["flags"]] == ["checkout-layout"]
    # its prerequisite is not in this export: reported and left out
    assert flag(document, "checkout-layout")["targeting"]["prerequisites"] == []
    with pytest.raises(ValidationFailed) as info:
        translate({"something": "else"}, "production")
    assert "LaunchDarkly flags export" in str(info.value)


# ---------------------------------------------------------------- evaluation (LaunchDarkly semantics)

def test_on_off_targets_and_fallthrough(engine):
    assert run(engine, "billing-v2", {"id": "qa-1"}) == ("disabled", "TARGET_MATCH")
    assert run(engine, "billing-v2", {"id": "someone"}) == ("enabled", "FALLTHROUGH")
    assert run(engine, "api-rate-limit", {"id": "someone"}) == ("10000", "OFF")
    assert run(engine, "checkout-layout", {"id": "u-7"}) == ("wizard", "TARGET_MATCH")


def test_prerequisites(engine):
    # qa-1 gets billing-v2 'disabled', so checkout-layout's prerequisite fails: its off variation.
    assert run(engine, "checkout-layout", {"id": "qa-1"}) == ("classic", "PREREQUISITE_FAILED")
    assert run(engine, "new-onboarding", {"id": "u-7"}) == ("enabled", "FALLTHROUGH")
    assert run(engine, "new-onboarding", {"id": "u-8", "tier": "gold"})[0] == "enabled"
    assert run(engine, "new-onboarding", {"id": "nobody"}) == ("disabled", "PREREQUISITE_FAILED")


CLAUSE_CASES = [
    # (context, expected variation or None for "no rule matched", rule id)
    ({"id": "u-admin"}, "wizard", "staff"),
    ({"id": "x", "email": "ann@acme.io", "name": "Dr Ann", "plan": "pro"}, "compact", "r-strings"),
    ({"id": "x", "email": "ann@ACME.io", "name": "Dr Ann", "plan": "pro"}, None, None),  # case sensitive
    ({"id": "x", "email": "ann@acme.io", "name": "Dr Ann", "plan": "enterprise-xl"}, None, None),  # negated
    ({"id": "x", "email": "ann@acme.io", "name": "Dr Ann"}, None, None),  # missing attribute: no match, negated too
    ({"id": "x", "username": "bot-42"}, "classic", "r-regex"),
    ({"id": "x", "username": "bot-4x"}, None, None),
    ({"id": "x", "age": 18, "seats": 11}, "compact", "r-numbers"),
    ({"id": "x", "age": 17, "seats": 11}, None, None),
    ({"id": "x", "age": "19", "seats": 11}, None, None),  # numbers only: "19" is not 19
    ({"id": "x", "age": 69.5, "seats": 500}, "compact", "r-numbers"),
    ({"id": "x", "signupDate": "2024-06-01T12:00:00Z"}, "wizard", "r-dates"),
    ({"id": "x", "signupDate": "2023-12-31T23:59:59Z"}, None, None),
    ({"id": "x", "appVersion": "5.2.0"}, "wizard", "r-semver"),
    ({"id": "x", "appVersion": "6.0.0"}, None, None),
    ({"id": "x", "appVersion": "4.1.0"}, None, None),
    ({"id": "x", "appVersion": "3.9.2"}, "classic", "r-semver-eq-2"),
    ({"id": "x", "appVersion": "2.0.1", "country": "NO"}, None, None),
    ({"id": "x", "appVersion": "2.1.0", "country": "NO"}, "compact", "r-not-versions"),
    ({"id": "x", "country": "NO"}, None, None),  # a missing attribute never matches, negated or not
    ({"id": "u-1"}, "wizard", "r-segment"),
    ({"id": "u-3"}, "wizard", "r-segment"),  # included and excluded in LaunchDarkly: included wins
    ({"id": "u-9", "email": "x@beta.acme.com"}, None, None),  # excluded
    ({"id": "x", "email": "x@beta.acme.com"}, "wizard", "r-segment"),
    ({"id": "x", "tier": "beta", "accountId": "acct-1"}, "*", "r-rollout"),
    ({"id": "x", "tier": "beta"}, None, None),  # rollout without its unit: skipped, falls through
]


@pytest.mark.parametrize("context, expected, rule_id", CLAUSE_CASES)
def test_every_clause_operator_evaluates_as_in_launchdarkly(engine, context, expected, rule_id):
    result = evaluate(engine, "checkout-layout", context, "DEFAULT")
    if expected is None:
        assert result.reason == "FALLTHROUGH", result
    else:
        assert (result.reason, result.rule_id) == ("RULE_MATCH", rule_id), result
        if expected != "*":
            assert result.variation == expected


def shares(engine, key, contexts):
    counts = {}
    for context in contexts:
        variation = evaluate(engine, key, context, None).variation
        counts[variation] = counts.get(variation, 0) + 1
    return {k: v / len(contexts) for k, v in counts.items()}


def test_percentages_keep_their_size(engine):
    n = 20000
    fallthrough = shares(engine, "checkout-layout", [{"id": f"user-{i}"} for i in range(n)])
    assert abs(fallthrough["classic"] - 0.9) < 0.01 and abs(fallthrough["compact"] - 0.1) < 0.01
    assert "wizard" not in fallthrough
    rule = shares(engine, "checkout-layout", [{"id": "x", "tier": "beta", "accountId": f"a-{i}"} for i in range(n)])
    assert abs(rule["classic"] - 0.5) < 0.015 and abs(rule["compact"] - 0.25) < 0.015
    ranking = shares(engine, "search.ranking", [{"id": f"user-{i}"} for i in range(n)])
    assert abs(ranking["vector"] - 0.6667) < 0.015


# ---------------------------------------------------------------- CLI and apply

def test_cli_translates_and_the_document_applies_idempotently(app, tmp_path):
    runner = app.test_cli_runner()
    out, report_path = tmp_path / "ld.yaml", tmp_path / "report.json"
    result = runner.invoke(args=["import-launchdarkly", str(FIXTURES / "flags.json"), "--environment", "production",
                                 "--segments", str(FIXTURES / "segments.json"), "--output", str(out),
                                 "--report", str(report_path)])
    assert result.exit_code == 0, result.output
    assert "Not translated (11)" in result.output and "not their membership" in result.output
    assert json.loads(report_path.read_text())["counts"]["untranslated"] == 11
    document = yaml.safe_load(out.read_text())

    assert apply(Actor("migration"), document)["summary"]["created"] == 7
    assert export_document("production") == document
    entries = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))
    assert apply(Actor("migration"), document)["summary"]["created"] == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == entries

    strict = runner.invoke(args=["import-launchdarkly", str(FIXTURES / "flags.json"), "-e", "production",
                                 "--target", "staging", "--strict", "--format", "json"])
    assert strict.exit_code == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"items": 3}')
    assert runner.invoke(args=["import-launchdarkly", str(bad), "-e", "production"]).exit_code == 1
