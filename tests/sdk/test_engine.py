"""Unit tests of the evaluation engine (pitcrew.evaluation) beyond the conformance file."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pitcrew.evaluation import (
    CompiledRuleset,
    EvaluationResult,
    InvalidRuleset,
    Reason,
    bucket,
    compile_ruleset,
    evaluate,
    validate_segment_rules,
    validate_targeting,
)
from pitcrew.evaluation.bucketing import digest_threshold, threshold
from pitcrew.evaluation.operators import parse_instant, parse_semver

ROOT = Path(__file__).resolve().parents[2]
ONOFF = [{"key": "on", "value": True}, {"key": "off", "value": False}]


def ref_bucket(salt: str, unit: str) -> int:
    """Independent implementation of the bucketing formula (docs/evaluation.md)."""
    return int(hashlib.sha256(f"{salt}.{unit}".encode()).hexdigest()[:16], 16) * 10000 // 2**64


def ref_pick(weights, b):
    acc = 0
    for variation, weight in weights:
        acc += weight
        if b < acc:
            return variation
    raise AssertionError("weights do not sum to 10000")


def flag(key="f", *, variations=ONOFF, **targeting):
    t = {"enabled": True, "off_variation": "off", "fallthrough": {"variation": "off"}}
    t.update(targeting)
    return {"key": key, "kind": "boolean", "version": 1, "variations": variations, "targeting": t}


def ruleset(*flags, segments=None, experiments=None, version=1):
    return {
        "version": version,
        "environment": "test",
        "flags": {f["key"]: f for f in flags},
        "segments": segments or {},
        "experiments": experiments or {},
        "layers": {},
    }


def rollout(weights, **kw):
    return {"rollout": {"weights": [list(w) for w in weights], **kw}}


def experiment(key="exp", **kw):
    e = {
        "key": key,
        "flag": "f",
        "status": "running",
        "variations": [{"variation": "off", "weight": 5000}, {"variation": "on", "weight": 5000}],
        "control": "off",
        "traffic": 10000,
        "unit": "id",
        "salt": key,
        "layer": None,
        "released_variation": None,
        "dimensions": [],
    }
    e.update(kw)
    return e


UNITS = [f"unit-{i}" for i in range(100_000)]


# --------------------------------------------------------------------------- interface


def test_result_shape():
    r = EvaluationResult(1, "a", Reason.RULE_MATCH, "r1", "exp", True, "u")
    assert r.to_dict() == {
        "value": 1,
        "variation": "a",
        "reason": "RULE_MATCH",
        "rule_id": "r1",
        "experiment": "exp",
        "in_experiment": True,
    }
    assert r.unit == "u"
    assert not hasattr(r, "__dict__")
    assert set(EvaluationResult.__slots__) == {
        "value", "variation", "reason", "rule_id", "experiment", "in_experiment", "unit", "holdout",
    }  # fmt: skip
    d = EvaluationResult("d", None, Reason.ERROR)
    assert (d.rule_id, d.experiment, d.in_experiment, d.unit) == (None, None, False, None)


def test_reason_constants():
    for name in (
        "OFF", "FALLTHROUGH", "TARGET_MATCH", "RULE_MATCH", "PREREQUISITE_FAILED",
        "FLAG_NOT_FOUND", "ERROR", "CLIENT_NOT_READY", "WRONG_TYPE",
    ):  # fmt: skip
        assert getattr(Reason, name) == name


def test_compiled_ruleset_accessors():
    exp = experiment("e1")
    rs = ruleset(
        flag("a", kind="x"),
        {**flag("gone"), "archived": True},
        {"key": "broken", "kind": "string", "variations": ONOFF},
        experiments={"e1": exp},
        version=9,
    )
    c = compile_ruleset(rs)
    assert isinstance(c, CompiledRuleset)
    assert c.version == 9
    assert sorted(c.flag_keys) == ["a", "broken"]
    assert c.flag("a").kind == "boolean"
    assert [v["key"] for v in c.flag("a").variations] == ["on", "off"]
    assert c.flag("a").error is None
    assert c.flag("broken").error and c.flag("broken").kind == "string"
    assert c.flag("gone") is None and c.flag("missing") is None and c.flag(["x"]) is None
    assert c.experiment("e1") is exp
    assert c.experiment("nope") is None


def test_compile_rejects_unusable_rulesets():
    for bad in (None, [], "x", {"flags": []}, {"version": "7"}, {"version": True}, {"segments": 3}):
        with pytest.raises(InvalidRuleset):
            compile_ruleset(bad)
    assert issubclass(InvalidRuleset, ValueError)
    c = compile_ruleset({})
    assert c.version == 0 and list(c.flag_keys) == []


def test_bad_flag_is_isolated():
    good = flag("good", fallthrough={"variation": "on"})
    bad = [
        flag("b1", rules=[{"id": "r", "conditions": [{"attribute": "a", "op": "nope", "values": [1]}],
                           "serve": {"variation": "on"}}]),
        flag("b2", off_variation="missing"),
        flag("b3", fallthrough={"variation": "on", "rollout": {"weights": [["on", 10000]]}}),
        flag("b4", fallthrough=rollout([("on", 5000), ("off", 4000)])),
        flag("b5", rules=[{"id": "r", "conditions": [{"attribute": "a", "op": "matches", "values": ["("]}],
                           "serve": {"variation": "on"}}]),
        flag("b6", variations=[{"key": "on", "value": 1}, {"key": "on", "value": 2}], off_variation="on"),
        flag("b7", enabled="yes"),
        {"key": "b8", "variations": ONOFF, "targeting": None},
        {"key": "b9"},
        "not an object",
        flag("b10", enabled=False, rules=[{"id": "r", "conditions": [{"op": "in"}], "serve": {"variation": "on"}}]),
    ]  # fmt: skip
    rs = ruleset(good)
    for i, b in enumerate(bad):
        rs["flags"][f"bad{i}"] = b
    c = compile_ruleset(rs)
    assert evaluate(c, "good", {"id": "u"}, None).reason == Reason.FALLTHROUGH
    for i in range(len(bad)):
        r = evaluate(c, f"bad{i}", {"id": "u"}, "dflt")
        assert (r.reason, r.value, r.variation) == (Reason.ERROR, "dflt", None), i
        assert c.flag(f"bad{i}").error


def test_missing_segment_never_matches():
    f = flag(rules=[{"id": "r", "conditions": [{"op": "in_segment", "values": ["ghost"]}],
                     "serve": {"variation": "on"}}])  # fmt: skip
    c = compile_ruleset(ruleset(f))
    assert evaluate(c, "f", {"id": "u"}, None).reason == Reason.FALLTHROUGH


def test_invalid_segment_makes_referencing_flags_error():
    segs = {
        "bad": {"key": "bad", "rules": [[{"op": "in_segment", "values": ["other"]}]]},
        "ok": {"key": "ok", "included": ["u"]},
    }
    uses_bad = flag("uses-bad", rules=[{"id": "r", "conditions": [{"op": "in_segment", "values": ["ok", "bad"]}],
                                        "serve": {"variation": "on"}}])  # fmt: skip
    uses_ok = flag("uses-ok", rules=[{"id": "r", "conditions": [{"op": "in_segment", "values": ["ok"]}],
                                      "serve": {"variation": "on"}}])  # fmt: skip
    c = compile_ruleset(ruleset(uses_bad, uses_ok, segments=segs))
    assert evaluate(c, "uses-bad", {"id": "u"}, None).reason == Reason.ERROR
    assert evaluate(c, "uses-ok", {"id": "u"}, None).reason == Reason.RULE_MATCH


def test_invalid_experiment_makes_flag_error_only_when_it_applies():
    exps = {
        "bad-running": experiment("bad-running", variations=[{"variation": "on", "weight": 10}]),
        "bad-draft": experiment("bad-draft", status="draft", variations="garbage"),
        "unknown-variation": experiment(
            "unknown-variation", variations=[{"variation": "maybe", "weight": 10000}]
        ),
    }
    flags = [flag(k, fallthrough={"experiment": k}) for k in exps]
    c = compile_ruleset(ruleset(*flags, experiments=exps))
    assert evaluate(c, "bad-running", {"id": "u"}, None).reason == Reason.ERROR
    assert evaluate(c, "unknown-variation", {"id": "u"}, None).reason == Reason.ERROR
    r = evaluate(c, "bad-draft", {"id": "u"}, None)
    assert (r.reason, r.variation, r.experiment) == (Reason.FALLTHROUGH, "off", None)


def test_prerequisite_cycles_are_errors():
    flags = [
        flag("a", prerequisites=[{"flag": "b", "variation": "on"}]),
        flag("b", prerequisites=[{"flag": "a", "variation": "on"}]),
        flag("self", prerequisites=[{"flag": "self", "variation": "on"}]),
        flag("leaf", fallthrough={"variation": "on"}),
        flag(
            "ok",
            prerequisites=[{"flag": "leaf", "variation": "on"}],
            fallthrough={"variation": "on"},
        ),
    ]
    c = compile_ruleset(ruleset(*flags))
    for k in ("a", "b", "self"):
        assert evaluate(c, k, {"id": "u"}, None).reason == Reason.ERROR
        assert "cycle" in c.flag(k).error
    assert evaluate(c, "ok", {"id": "u"}, None).value is True


def test_deep_prerequisite_chain_does_not_raise():
    n = 3000
    flags = [flag("p0", fallthrough={"variation": "on"})]
    flags += [
        flag(
            f"p{i}",
            prerequisites=[{"flag": f"p{i - 1}", "variation": "on"}],
            fallthrough={"variation": "on"},
        )
        for i in range(1, n)
    ]
    c = compile_ruleset(ruleset(*flags))
    assert evaluate(c, "p10", {}, None).value is True
    assert evaluate(c, f"p{n - 1}", {}, None).reason in (Reason.FALLTHROUGH, Reason.ERROR)


def test_prerequisite_never_reports_an_exposure():
    exps = {"exp": experiment("exp")}
    inner = flag("inner", fallthrough={"experiment": "exp"})
    outer = flag("outer", prerequisites=[{"flag": "inner", "variation": "on"}],
                 fallthrough={"variation": "on"})  # fmt: skip
    c = compile_ruleset(ruleset(inner, outer, experiments=exps))
    seen = Counter()
    for u in UNITS[:2000]:
        r = evaluate(c, "outer", {"id": u}, None)
        assert not r.in_experiment and r.experiment is None and r.unit is None
        expected = (
            "on" if ref_pick([("off", 5000), ("on", 5000)], ref_bucket("exp", u)) == "on" else "off"
        )
        assert r.variation == expected
        seen[r.reason] += 1
    assert seen[Reason.FALLTHROUGH] and seen[Reason.PREREQUISITE_FAILED]


def test_constant_results_are_shared_and_experiment_results_fresh():
    exps = {"exp": experiment("exp")}
    c = compile_ruleset(ruleset(flag("c", targets=[{"variation": "on", "values": ["u"]}]),
                                flag("e", fallthrough={"experiment": "exp"}), experiments=exps))  # fmt: skip
    assert evaluate(c, "c", {"id": "u"}, None) is evaluate(c, "c", {"id": "u"}, None)
    assert evaluate(c, "c", {"id": "v"}, None) is evaluate(c, "c", {"id": "w"}, None)
    a, b = evaluate(c, "e", {"id": "u"}, None), evaluate(c, "e", {"id": "u"}, None)
    assert a is not b and a == b and a.unit == "u" and a.in_experiment


def test_experiment_unit_is_the_unit_form():
    c = compile_ruleset(
        ruleset(flag("e", fallthrough={"experiment": "exp"}), experiments={"exp": experiment()})
    )
    assert evaluate(c, "e", {"id": 42}, None).unit == "42"


# --------------------------------------------------------------------------- never raises


class Weird:
    def __eq__(self, other):
        raise RuntimeError("boom")

    def __hash__(self):
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    "context",
    [
        {"id": "\ud800"},
        {"id": 10**5000},
        {"id": Weird(), "a": Weird()},
        {"a": float("nan")},
        {"a": float("inf")},
        {"a": [[[]]]},
        {"a": {"b": [1]}},
        {"a": "x" * 100_000},
        {1: 2, None: 3},
    ],
)
def test_evaluate_never_raises_on_odd_contexts(context):
    rules = [
        {"id": f"r{i}", "conditions": [{"attribute": "a", "op": op, "values": vals}], "serve": {"variation": "on"}}
        for i, (op, vals) in enumerate([
            ("in", ["x", 1, True]), ("contains", ["x"]), ("matches", ["^x"]), ("gt", [1]),
            ("semver_gt", ["1.0.0"]), ("after", ["2020-01-01"]), ("exists", None),
        ])
    ]  # fmt: skip
    rules.append(
        {
            "id": "seg",
            "conditions": [{"op": "in_segment", "values": ["s"]}],
            "serve": {"variation": "on"},
        }
    )
    f = flag(
        targets=[{"variation": "on", "values": ["u"]}],
        rules=rules,
        fallthrough=rollout([("on", 5000), ("off", 5000)]),
    )
    c = compile_ruleset(ruleset(f, segments={"s": {"key": "s", "included": ["u"]}}))
    r = evaluate(c, "f", context, "d")
    assert isinstance(r, EvaluationResult)


def test_evaluate_never_raises_on_odd_arguments():
    c = compile_ruleset(ruleset(flag()))
    assert evaluate(None, "f", {}, 1).reason == Reason.ERROR
    assert evaluate("junk", "f", {}, 1).reason == Reason.ERROR
    assert evaluate(c, ["f"], {}, 1).reason == Reason.ERROR
    assert evaluate(c, None, {}, 1).reason == Reason.FLAG_NOT_FOUND
    assert evaluate(c, "f", Weird(), 1).reason == Reason.ERROR


def test_mapping_context_is_accepted():
    from types import MappingProxyType

    c = compile_ruleset(ruleset(flag(targets=[{"variation": "on", "values": ["u"]}])))
    assert evaluate(c, "f", MappingProxyType({"id": "u"}), None).reason == Reason.TARGET_MATCH


# --------------------------------------------------------------------------- bucketing and rollouts


def test_bucket_matches_independent_implementation():
    for i in range(5000):
        salt, unit = f"salt-{i % 7}", f"u{i}é"
        assert bucket(salt, unit) == ref_bucket(salt, unit)


def test_digest_threshold_equivalence():
    # bucket(s, u) < T  <=>  digest < digest_threshold(T), including at band edges.
    for i in range(20000):
        unit = f"u{i}"
        b = ref_bucket("s", unit)
        digest = hashlib.sha256(f"s.{unit}".encode()).digest()
        for t in (b, b + 1, 0, 10000, (i * 37) % 10001):
            assert (b < t) == (digest < digest_threshold(t))
    assert threshold(0) == 0 and threshold(10000) == 2**64


@pytest.mark.parametrize(
    "weights",
    [
        [("on", 5000), ("off", 5000)],
        [("on", 1000), ("off", 9000)],
        [("red", 3333), ("off", 0), ("green", 3333), ("on", 3334)],
    ],
)
def test_rollout_split_and_reference_agreement(weights):
    variations = [{"key": k, "value": k} for k in ("on", "off", "red", "green")]
    f = flag("split", variations=variations, fallthrough=rollout(weights))
    c = compile_ruleset(ruleset(f))
    counts = Counter()
    for i, u in enumerate(UNITS):
        v = evaluate(c, "split", {"id": u}, None).variation
        counts[v] += 1
        if i < 20000:
            assert v == ref_pick(weights, ref_bucket("split", u))
    for key, w in weights:
        assert abs(counts[key] / len(UNITS) - w / 10000) < 0.01, (key, counts)


def test_rollout_bucket_by_salt_and_integer_units():
    f = flag("f", fallthrough=rollout([("on", 5000), ("off", 5000)], bucket_by="org", salt="s1"))
    c = compile_ruleset(ruleset(f))
    for i in range(2000):
        expected = ref_pick([("on", 5000), ("off", 5000)], ref_bucket("s1", str(i)))
        assert evaluate(c, "f", {"org": i, "id": "x"}, None).variation == expected
        assert evaluate(c, "f", {"org": str(i)}, None).variation == expected


def assignments(compiled, flag_key, units):
    return [evaluate(compiled, flag_key, {"id": u}, None).variation for u in units]


STICKY_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pitcrew.evaluation import compile_ruleset, evaluate
rs = json.loads(sys.stdin.read())
c = compile_ruleset(rs)
units = [f"unit-{i}" for i in range(3000)]
print(json.dumps([evaluate(c, "f", {"id": u}, None).variation for u in units]))
"""


def sticky_ruleset():
    return ruleset(
        flag("f", variations=[{"key": k, "value": k} for k in ("on", "off", "x")],
             fallthrough=rollout([("on", 3000), ("off", 3000), ("x", 4000)])),
    )  # fmt: skip


def test_stickiness_across_processes():
    rs = sticky_ruleset()
    here = assignments(compile_ruleset(rs), "f", UNITS[:3000])
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", STICKY_SCRIPT, str(ROOT / "sdk")],
            input=json.dumps(rs),
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=60,
        )
        assert json.loads(out.stdout) == here


def test_stickiness_after_unrelated_edits():
    rs = sticky_ruleset()
    before = assignments(compile_ruleset(rs), "f", UNITS[:5000])
    edited = copy.deepcopy(rs)
    edited["version"] = 2
    edited["flags"]["other"] = flag("other", fallthrough=rollout([("on", 100), ("off", 9900)]))
    edited["flags"]["f"]["version"] = 7
    edited["flags"]["f"]["targeting"]["rules"] = [
        {"id": "r", "conditions": [{"attribute": "country", "op": "in", "values": ["DE"]}],
         "serve": {"variation": "on"}},
    ]  # fmt: skip
    edited["flags"]["f"]["targeting"]["targets"] = [{"variation": "on", "values": ["someone-else"]}]
    edited["segments"]["s"] = {"key": "s", "included": ["unit-1"]}
    edited["flags"] = dict(reversed(edited["flags"].items()))
    assert assignments(compile_ruleset(edited), "f", UNITS[:5000]) == before


def test_raising_rollout_keeps_units_that_had_on():
    ten = compile_ruleset(ruleset(flag("f", fallthrough=rollout([("on", 1000), ("off", 9000)]))))
    fifty = compile_ruleset(ruleset(flag("f", fallthrough=rollout([("on", 5000), ("off", 5000)]))))
    had = assignments(ten, "f", UNITS)
    now = assignments(fifty, "f", UNITS)
    on_before = {u for u, v in zip(UNITS, had, strict=True) if v == "on"}
    on_after = {u for u, v in zip(UNITS, now, strict=True) if v == "on"}
    assert on_before and on_before <= on_after
    assert abs(len(on_after) / len(UNITS) - 0.5) < 0.01


def test_raising_experiment_traffic_keeps_admitted_units():
    def compiled(traffic):
        exp = experiment("exp", traffic=traffic, layer={"key": "checkout", "range": [0, 8000]})
        return compile_ruleset(
            ruleset(flag("f", fallthrough={"experiment": "exp"}), experiments={"exp": exp})
        )

    low, high = compiled(1000), compiled(5000)
    admitted_low = {}
    admitted_high = {}
    for u in UNITS[:30000]:
        r = evaluate(low, "f", {"id": u}, None)
        if r.in_experiment:
            admitted_low[u] = r.variation
        r = evaluate(high, "f", {"id": u}, None)
        if r.in_experiment:
            admitted_high[u] = r.variation
            in_layer = ref_bucket("layer:checkout", u) < 8000
            assert in_layer and ref_bucket("exp:traffic", u) < 5000
            assert r.variation == ref_pick([("off", 5000), ("on", 5000)], ref_bucket("exp", u))
    assert admitted_low
    for u, v in admitted_low.items():
        assert admitted_high[u] == v
    share = len(admitted_high) / 30000
    assert abs(share - 0.8 * 0.5) < 0.015


def test_experiment_layers_are_mutually_exclusive():
    exps = {
        "a": experiment("a", layer={"key": "L", "range": [0, 5000]}),
        "b": experiment("b", layer={"key": "L", "range": [5000, 10000]}),
    }
    c = compile_ruleset(ruleset(flag("fa", fallthrough={"experiment": "a"}),
                                flag("fb", fallthrough={"experiment": "b"}), experiments=exps))  # fmt: skip
    both = 0
    for u in UNITS[:5000]:
        ina = evaluate(c, "fa", {"id": u}, None).in_experiment
        inb = evaluate(c, "fb", {"id": u}, None).in_experiment
        assert ina != inb
        both += ina
    assert 2300 < both < 2700


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("1.2.3", (1, 2, 3, (1,))),
        ("v1", (1, 0, 0, (1,))),
        ("1.2", (1, 2, 0, (1,))),
        ("0.0.0-0", (0, 0, 0, (0, (0, 0)))),
        ("1.0.0-alpha.1+b.01", (1, 0, 0, (0, (1, "alpha"), (0, 1)))),
        ("1.0.0-0a", (1, 0, 0, (0, (1, "0a")))),
    ],
)
def test_parse_semver(text, key):
    assert parse_semver(text) == key


@pytest.mark.parametrize(
    "text", ["", "v", "1.", "1.2.3.", "01.0.0", "1.02", "1.0.0-01", "1.0.0-", "1.0.0+", "V1.0.0",
             "1.0.0-a..b", "١.٢.٣", " 1.0.0", "1.0.0\n", None, 1]
)  # fmt: skip
def test_parse_semver_rejects(text):
    assert parse_semver(text) is None


def test_semver_precedence_chain():
    chain = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
             "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1", "2"]  # fmt: skip
    keys = [parse_semver(v) for v in chain]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1970-01-01", 0),
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T01:00:00+01:00", 0),
        ("1969-12-31T19:00:00-05:00", 0),
        ("2000-02-29T12:30:15z", 951827415),
        ("2024-06-01t12:00:00", 1717243200),
        (1717243200, 1717243200),
        (1.5, 1.5),
    ],
)
def test_parse_instant(text, seconds):
    assert parse_instant(text) == seconds


def test_parse_instant_fraction_is_exact():
    assert parse_instant("1970-01-01T00:00:00.1Z") * 10 == 1
    assert parse_instant("2024-06-01T11:59:59.999999999Z") < 1717243200


@pytest.mark.parametrize(
    "text",
    ["1717243200", "2024-6-01", "2024-06-01T24:00:00Z", "2024-06-01T12:60:00Z", "2024-06-01T12:00:60Z",
     "2024-06-01T12:00Z", "2024-06-01 12:00:00Z", "2021-02-29", "2024-04-31", "2024-00-10",
     "2024-06-01T12:00:00+24:00", "2024-06-01Z", True, None, float("nan"), float("inf"), "", []],
)  # fmt: skip
def test_parse_instant_rejects(text):
    assert parse_instant(text) is None


# --------------------------------------------------------------------------- validation

VARIATIONS = {"on", "off"}


def valid_targeting():
    return {
        "enabled": True,
        "off_variation": "off",
        "prerequisites": [{"flag": "other", "variation": "on"}],
        "targets": [{"variation": "on", "values": ["user-1", "42"]}],
        "rules": [
            {"id": "r1", "description": "", "serve": {"variation": "on"},
             "conditions": [{"attribute": "country", "op": "in", "values": ["DE"], "negate": False}]},
            {"id": "r2", "conditions": [{"op": "in_segment", "values": ["beta"]}],
             "serve": {"rollout": {"weights": [["on", 5000], ["off", 5000]], "bucket_by": "id", "salt": "x"}}},
            {"id": "r3", "conditions": [{"attribute": "a", "op": "exists"}], "serve": {"experiment": "exp"}},
            {"id": "r4", "conditions": [
                {"attribute": "v", "op": "semver_gte", "values": ["v1.2"]},
                {"attribute": "t", "op": "after", "values": ["2024-01-01T00:00:00+01:00"]},
                {"attribute": "t", "op": "before", "values": [1700000000.5]},
                {"attribute": "n", "op": "lte", "values": [3.5]},
                {"attribute": "e", "op": "matches", "values": ["@example\\.com$"]},
                {"attribute": "e", "op": "in", "values": ["a", 1, 2.5, True]},
            ], "serve": {"variation": "off"}},
        ],
        "fallthrough": {"variation": "off"},
    }  # fmt: skip


def test_validate_targeting_accepts_valid():
    assert validate_targeting(valid_targeting(), variations=VARIATIONS) == []


def edit(path, value):
    t = valid_targeting()
    *parents, last = path.split(".")
    node = t
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is DELETE:
        del node[int(last) if isinstance(node, list) else last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return t


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "error_path"),
    [
        ("enabled", DELETE, "enabled"),
        ("enabled", 1, "enabled"),
        ("off_variation", DELETE, "off_variation"),
        ("off_variation", "maybe", "off_variation"),
        ("fallthrough", DELETE, "fallthrough"),
        ("fallthrough", {}, "fallthrough"),
        ("fallthrough", {"variation": "on", "experiment": "e"}, "fallthrough"),
        ("fallthrough", {"variation": "maybe"}, "fallthrough.variation"),
        ("prerequisites.0.flag", "", "prerequisites.0.flag"),
        ("targets.0.variation", "maybe", "targets.0.variation"),
        ("targets.0.values.1", 42, "targets.0.values.1"),
        (
            "targets",
            [{"variation": "on", "values": ["a"]}, {"variation": "off", "values": ["b", "a"]}],
            "targets.1.values.1",
        ),
        ("rules.1.id", "r1", "rules.1.id"),
        ("rules.1.id", DELETE, "rules.1.id"),
        ("rules.0.conditions.0.op", "like", "rules.0.conditions.0.op"),
        ("rules.0.conditions.0.values", [], "rules.0.conditions.0.values"),
        ("rules.0.conditions.0.values", "DE", "rules.0.conditions.0.values"),
        ("rules.0.conditions.0.values", [None], "rules.0.conditions.0.values.0"),
        ("rules.0.conditions.0.values", [["DE"]], "rules.0.conditions.0.values.0"),
        ("rules.0.conditions.0.attribute", "", "rules.0.conditions.0.attribute"),
        ("rules.0.conditions.0.negate", "yes", "rules.0.conditions.0.negate"),
        (
            "rules.0.serve",
            {"rollout": {"weights": [["on", 5000], ["off", 4999]]}},
            "rules.0.serve.rollout.weights",
        ),
        (
            "rules.0.serve",
            {"rollout": {"weights": [["on", 10001], ["off", -1]]}},
            "rules.0.serve.rollout.weights.1.1",
        ),
        (
            "rules.0.serve",
            {"rollout": {"weights": [["on", 5000.0], ["off", 5000]]}},
            "rules.0.serve.rollout.weights.0.1",
        ),
        (
            "rules.0.serve",
            {"rollout": {"weights": [["on", True], ["off", 9999]]}},
            "rules.0.serve.rollout.weights.0.1",
        ),
        (
            "rules.0.serve",
            {"rollout": {"weights": [["maybe", 5000], ["off", 5000]]}},
            "rules.0.serve.rollout.weights.0.0",
        ),
        (
            "rules.0.serve",
            {"rollout": {"weights": [["on", 10000]], "bucket_by": ""}},
            "rules.0.serve.rollout.bucket_by",
        ),
        ("rules.2.conditions.0.values", ["x"], "rules.2.conditions.0.values"),
        ("rules.3.conditions.0.values", ["1.02"], "rules.3.conditions.0.values.0"),
        ("rules.3.conditions.0.values", ["1.2", "1.3"], "rules.3.conditions.0.values"),
        ("rules.3.conditions.1.values", ["1717243200"], "rules.3.conditions.1.values.0"),
        ("rules.3.conditions.1.values", ["2024-02-30"], "rules.3.conditions.1.values.0"),
        ("rules.3.conditions.2.values", [True], "rules.3.conditions.2.values.0"),
        ("rules.3.conditions.3.values", [True], "rules.3.conditions.3.values.0"),
        ("rules.3.conditions.3.values", ["3"], "rules.3.conditions.3.values.0"),
        ("rules.3.conditions.3.values", [1, 2], "rules.3.conditions.3.values"),
        ("rules.3.conditions.4.values", ["("], "rules.3.conditions.4.values.0"),
        ("rules.3.conditions.4.values", ["a" * 1001], "rules.3.conditions.4.values.0"),
        ("rules.3.conditions.4.values", [1], "rules.3.conditions.4.values.0"),
        ("rules.3.conditions.4.op", "contains", None),
        ("rules.3.conditions.4.op", "ends_with", None),
        ("rules.3.conditions.0.op", "gt", "rules.3.conditions.0.values.0"),
        ("rules.3.conditions.0.op", "starts_with", None),
    ],
)
def test_validate_targeting_errors(path, value, error_path):
    errors = validate_targeting(edit(path, value), variations=VARIATIONS)
    if error_path is None:
        assert errors == []
    else:
        assert error_path in [p for p, _ in errors], errors
        assert all(isinstance(m, str) and m for _, m in errors)


def test_validate_targeting_accepts_long_valid_pattern_and_empty_lists():
    t = valid_targeting()
    t["rules"][3]["conditions"][4]["values"] = ["a" * 1000]
    t["prerequisites"] = []
    t["targets"] = []
    assert validate_targeting(t, variations=VARIATIONS) == []
    assert validate_targeting({"enabled": False, "off_variation": "on", "fallthrough": {"variation": "on"}},
                              variations=VARIATIONS) == []  # fmt: skip


def test_validate_targeting_garbage():
    assert validate_targeting(None, variations=VARIATIONS) == [("", "must be an object")]
    errors = validate_targeting(
        {"rules": "x", "targets": 1, "prerequisites": {}}, variations=VARIATIONS
    )
    assert {"enabled", "off_variation", "fallthrough", "rules", "targets", "prerequisites"} <= {
        p for p, _ in errors
    }


def test_validate_segment_rules():
    ok = [
        [{"attribute": "plan", "op": "in", "values": ["pro"]}],
        [],
        [{"attribute": "a", "op": "exists"}],
    ]
    assert validate_segment_rules(ok) == []
    assert validate_segment_rules("x") == [("rules", "must be a list of condition lists")]
    errors = validate_segment_rules([
        [{"attribute": "plan", "op": "in", "values": ["pro"]}, {"op": "in_segment", "values": ["s"]}],
        {"attribute": "a"},
        [{"attribute": "a", "op": "gt", "values": ["1"]}],
    ])  # fmt: skip
    paths = [p for p, _ in errors]
    assert "rules.0.1.op" in paths and "rules.1" in paths and "rules.2.0.values.0" in paths


def test_compiler_uses_validation():
    t = valid_targeting()
    t["rules"][3]["conditions"][0]["values"] = ["1.02"]
    f = {"key": "f", "kind": "boolean", "variations": ONOFF, "targeting": t}
    c = compile_ruleset(ruleset(f))
    assert "rules.3.conditions.0.values.0" in c.flag("f").error


# --------------------------------------------------------------------------- purity


def test_engine_is_stdlib_only_and_never_imports_service():
    code = (
        "import sys; before = set(sys.modules); import pitcrew.evaluation; "
        "new = sorted(m.split('.')[0] for m in set(sys.modules) - before); print(' '.join(new))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    top = set(out.stdout.split())
    assert "service" not in top
    stdlib = sys.stdlib_module_names
    assert {m for m in top if m not in stdlib} <= {"pitcrew"}, top
