"""Property tests: the engine never raises, and the compiler agrees with the validator."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pitcrew.evaluation import (
    EvaluationResult,
    InvalidRuleset,
    Reason,
    compile_ruleset,
    evaluate,
    validate_segment_rules,
    validate_targeting,
)
from pitcrew.evaluation.operators import OPS

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ATTRS = ["id", "a", "b", "org", "country"]
VARIATION_KEYS = ["on", "off", "x"]
REASONS = {
    Reason.OFF, Reason.FALLTHROUGH, Reason.TARGET_MATCH, Reason.RULE_MATCH,
    Reason.PREREQUISITE_FAILED, Reason.FLAG_NOT_FOUND, Reason.ERROR,
}  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        ["1.2.3", "v2.0.0-rc.1", "2024-06-01T12:00:00Z", "2024-06-01", "u1", "", "42", "DE"]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
contexts = st.one_of(
    json_values,
    st.dictionaries(
        st.one_of(st.sampled_from(ATTRS), st.text(max_size=4)), json_values, max_size=5
    ),
)

op_values = st.one_of(
    st.none(),
    st.lists(scalars, max_size=3),
    st.lists(
        st.sampled_from(["^u", "(", "1.0.0", "2024-01-01", "seg", "s1"]), min_size=1, max_size=2
    ),
    json_values,
)
conditions = st.one_of(
    st.fixed_dictionaries(
        {
            "attribute": st.sampled_from(ATTRS),
            "op": st.sampled_from(sorted(OPS)),
            "values": op_values,
        },
        optional={"negate": st.one_of(st.booleans(), st.none(), scalars)},
    ),
    st.fixed_dictionaries(
        {
            "op": st.just("in_segment"),
            "values": st.lists(st.sampled_from(["s1", "s2", "ghost"]), max_size=2),
        },
        optional={"negate": st.booleans()},
    ),
    json_values,
)
variation_ref = st.one_of(st.sampled_from(VARIATION_KEYS + ["nope"]), scalars)
weights = st.one_of(
    st.just([["on", 5000], ["off", 5000]]),
    st.just([["on", 0], ["x", 10000]]),
    st.lists(
        st.tuples(variation_ref, st.one_of(st.integers(-5, 10001), scalars)).map(list), max_size=3
    ),
)
serves = st.one_of(
    st.fixed_dictionaries({"variation": variation_ref}),
    st.fixed_dictionaries(
        {
            "rollout": st.fixed_dictionaries(
                {"weights": weights},
                optional={"bucket_by": st.sampled_from(ATTRS), "salt": st.text(max_size=4)},
            )
        }
    ),  # fmt: skip
    st.fixed_dictionaries({"experiment": st.sampled_from(["e1", "e2", "draft", "ghost"])}),
    json_values,
)
rules = st.fixed_dictionaries(
    {"id": st.one_of(st.sampled_from(["r1", "r2", "r3"]), scalars),
     "conditions": st.one_of(st.lists(conditions, max_size=3), json_values),
     "serve": serves},
)  # fmt: skip
# Mostly-valid content, so that evaluation gets past compilation often.
finite = st.one_of(st.integers(-100, 100), st.floats(-100, 100, allow_nan=False))
SAMPLE_STRINGS = [
    "u1",
    "u2",
    "DE",
    "FR",
    "1.2.3",
    "v2.0.0-rc.1",
    "2024-06-01T12:00:00Z",
    "2024-06-01",
]
valid_conditions = st.one_of(
    st.fixed_dictionaries(
        {
            "attribute": st.sampled_from(ATTRS),
            "op": st.just("in"),
            "values": st.lists(
                st.one_of(st.sampled_from(SAMPLE_STRINGS), finite, st.booleans()),
                min_size=1,
                max_size=3,
            ),
        },
        optional={"negate": st.booleans()},
    ),
    st.fixed_dictionaries(
        {
            "attribute": st.sampled_from(ATTRS),
            "op": st.sampled_from(["contains", "starts_with", "ends_with"]),
            "values": st.lists(
                st.sampled_from(["u", "1", "D", "E", "-", ""]), min_size=1, max_size=2
            ),
        },
        optional={"negate": st.booleans()},
    ),
    st.fixed_dictionaries(
        {
            "attribute": st.sampled_from(ATTRS),
            "op": st.just("matches"),
            "values": st.lists(
                st.sampled_from(["^u", "[0-9]$", "E", "^$"]), min_size=1, max_size=2
            ),
        },
        optional={"negate": st.booleans()},
    ),
    st.fixed_dictionaries(
        {
            "attribute": st.sampled_from(ATTRS),
            "op": st.sampled_from(["gt", "gte", "lt", "lte"]),
            "values": st.lists(finite, min_size=1, max_size=1),
        },
        optional={"negate": st.booleans()},
    ),
    st.fixed_dictionaries(
        {
            "attribute": st.sampled_from(ATTRS),
            "op": st.sampled_from(sorted(o for o in OPS if o.startswith("semver"))),
            "values": st.lists(
                st.sampled_from(["1.2.3", "v2", "2.0.0-rc.1", "0.1"]), min_size=1, max_size=1
            ),
        },
        optional={"negate": st.booleans()},
    ),
    st.fixed_dictionaries(
        {
            "attribute": st.sampled_from(ATTRS),
            "op": st.sampled_from(["before", "after"]),
            "values": st.lists(
                st.sampled_from(["2024-06-01T12:00:00+02:00", "2024-06-01", 1717243200]),
                min_size=1,
                max_size=1,
            ),
        },
        optional={"negate": st.booleans()},
    ),
    st.fixed_dictionaries(
        {"attribute": st.sampled_from(ATTRS), "op": st.just("exists")},
        optional={"negate": st.booleans()},
    ),
    st.fixed_dictionaries(
        {
            "op": st.just("in_segment"),
            "values": st.lists(st.sampled_from(["s1", "s2", "ghost"]), min_size=1, max_size=2),
        },
        optional={"negate": st.booleans()},
    ),
)
valid_serves = st.one_of(
    st.fixed_dictionaries({"variation": st.sampled_from(VARIATION_KEYS)}),
    st.fixed_dictionaries(
        {
            "rollout": st.fixed_dictionaries(
                {
                    "weights": st.sampled_from(
                        [
                            [["on", 5000], ["off", 5000]],
                            [["x", 0], ["on", 10000]],
                            [["on", 1], ["off", 9998], ["x", 1]],
                        ]
                    )
                },
                optional={"bucket_by": st.sampled_from(ATTRS), "salt": st.text(max_size=4)},
            )
        }
    ),
    st.fixed_dictionaries({"experiment": st.sampled_from(["e1", "e2", "draft", "ghost"])}),
)
valid_targetings = st.builds(
    lambda enabled, off, prereqs, units, rules, fallthrough: {
        "enabled": enabled,
        "off_variation": off,
        "prerequisites": [{"flag": f, "variation": v} for f, v in prereqs],
        "targets": [
            {"variation": v, "values": [u for u, w in units.items() if w == v]}
            for v in set(units.values())
        ],
        "rules": [
            {"id": f"r{i}", "conditions": conds, "serve": serve}
            for i, (conds, serve) in enumerate(rules)
        ],
        "fallthrough": fallthrough,
    },
    st.booleans(),
    st.sampled_from(VARIATION_KEYS),
    st.one_of(
        st.just([]),
        st.lists(
            st.tuples(
                st.sampled_from(["f0", "f1", "f2", "ghost"]), st.sampled_from(VARIATION_KEYS)
            ),
            max_size=2,
        ),
    ),
    st.dictionaries(
        st.sampled_from(["u1", "u2", "42", "x"]), st.sampled_from(VARIATION_KEYS), max_size=3
    ),
    st.lists(
        st.tuples(st.lists(valid_conditions, max_size=3), valid_serves), min_size=1, max_size=4
    ),
    valid_serves,
)
valid_contexts = st.dictionaries(
    st.sampled_from(ATTRS),
    st.one_of(
        st.sampled_from(SAMPLE_STRINGS),
        finite,
        st.booleans(),
        st.none(),
        st.lists(st.sampled_from(SAMPLE_STRINGS), max_size=2),
        st.integers(0, 50),
    ),
    max_size=5,
)
contexts = st.one_of(valid_contexts, valid_contexts, contexts)
targetings = st.one_of(
    valid_targetings,
    st.fixed_dictionaries(
        {
            "enabled": st.one_of(st.booleans(), scalars),
            "off_variation": variation_ref,
            "fallthrough": serves,
        },
        optional={
            "prerequisites": st.lists(
                st.fixed_dictionaries(
                    {
                        "flag": st.sampled_from(["f0", "f1", "f2", "ghost"]),
                        "variation": variation_ref,
                    }
                ),
                max_size=2,
            ),
            "targets": st.lists(
                st.fixed_dictionaries(
                    {
                        "variation": variation_ref,
                        "values": st.lists(st.one_of(st.text(max_size=3), scalars), max_size=3),
                    }
                ),
                max_size=2,
            ),
            "rules": st.lists(rules, max_size=3),
        },
    ),  # fmt: skip
    json_values,
)
variations = st.one_of(
    st.just([{"key": k, "value": i} for i, k in enumerate(VARIATION_KEYS)]),
    json_values,
)
flags = st.one_of(
    st.fixed_dictionaries(
        {"kind": st.just("string"), "variations": variations, "targeting": targetings},
        optional={"archived": st.booleans()},
    ),
    st.fixed_dictionaries(
        {
            "kind": st.just("string"),
            "variations": st.just([{"key": k, "value": i} for i, k in enumerate(VARIATION_KEYS)]),
            "targeting": valid_targetings,
        },
        optional={"archived": st.booleans()},
    ),
    json_values,
)
experiments = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["running", "running", "stopped", "concluded", "draft", "bogus"]),
        "variations": st.one_of(
            st.just([{"variation": "on", "weight": 5000}, {"variation": "off", "weight": 5000}]), json_values
        ),
    },
    optional={
        "traffic": st.one_of(st.integers(0, 10000), st.integers(-1, 10001), scalars),
        "unit": st.one_of(st.sampled_from(ATTRS), st.sampled_from(ATTRS), scalars),
        "salt": st.one_of(st.text(max_size=3), scalars),
        "layer": st.one_of(
            st.none(),
            st.fixed_dictionaries({"key": st.text(max_size=3), "range": st.lists(st.integers(-1, 10001), max_size=3)}),
        ),
        "released_variation": st.one_of(st.sampled_from(["on", "off"]), variation_ref),
    },
)  # fmt: skip
segments = st.one_of(
    st.fixed_dictionaries(
        {
            "included": st.lists(st.sampled_from(["u1", "u2", "42"]), max_size=2),
            "excluded": st.lists(st.sampled_from(["u1", "u2", "42"]), max_size=2),
            "rules": st.lists(
                st.lists(valid_conditions.filter(lambda c: c["op"] != "in_segment"), max_size=2),
                max_size=2,
            ),
        }
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "included": st.lists(st.one_of(st.text(max_size=3), scalars), max_size=3),
            "excluded": st.lists(st.one_of(st.text(max_size=3), scalars), max_size=3),
            "rules": st.one_of(st.lists(st.lists(conditions, max_size=2), max_size=2), json_values),
        },
    ),
    json_values,
)
rulesets = st.one_of(
    st.fixed_dictionaries(
        {
            "version": st.integers(0, 10),
            "flags": st.dictionaries(
                st.sampled_from(["f0", "f1", "f2"]), flags, min_size=1, max_size=3
            ),
            "segments": st.dictionaries(st.sampled_from(["s1", "s2"]), segments, max_size=2),
            "experiments": st.dictionaries(
                st.sampled_from(["e1", "e2", "draft"]), experiments, max_size=3
            ),
        }
    ),
    json_values,
)


def check_result(compiled, key, result, default):
    assert isinstance(result, EvaluationResult)
    assert result.reason in REASONS
    if result.reason in (Reason.ERROR, Reason.FLAG_NOT_FOUND):
        assert result.value is default and result.variation is None
        return
    flag = compiled.flag(key)
    values = {v["key"]: v["value"] for v in flag.variations}
    assert (
        result.variation in values
        and result.value == values[result.variation]
        or (
            result.value != result.value  # NaN values
        )
    )
    if result.in_experiment:
        assert result.experiment and isinstance(result.unit, str) and result.unit
    else:
        assert result.unit is None


@SETTINGS
@given(rulesets, st.lists(contexts, min_size=1, max_size=4))
def test_evaluate_never_raises(ruleset, ctxs):
    try:
        compiled = compile_ruleset(ruleset)
    except InvalidRuleset:
        return
    default = object()
    for key in ["f0", "f1", "f2", "missing"]:
        for ctx in ctxs:
            result = evaluate(compiled, key, ctx, default)
            check_result(compiled, key, result, default)


@SETTINGS
@given(targetings, st.lists(contexts, max_size=3))
def test_validator_and_compiler_agree(targeting, ctxs):
    errors = validate_targeting(targeting, variations=set(VARIATION_KEYS))
    assert isinstance(errors, list)
    assert all(isinstance(p, str) and isinstance(m, str) and m for p, m in errors)
    if isinstance(targeting, dict):
        prereqs = targeting.get("prerequisites") or []
        assume(not any(isinstance(p, dict) and p.get("flag") == "f0" for p in prereqs))
    flag = {
        "key": "f0",
        "variations": [{"key": k, "value": k} for k in VARIATION_KEYS],
        "targeting": targeting,
    }
    compiled = compile_ruleset({"version": 1, "flags": {"f0": flag}})
    # No segments or experiments exist: references to them cannot make the flag invalid.
    assert (compiled.flag("f0").error is None) == (errors == []), (
        errors,
        compiled.flag("f0").error,
    )
    for ctx in ctxs:
        check_result(compiled, "f0", evaluate(compiled, "f0", ctx, None), None)


@SETTINGS
@given(st.one_of(st.lists(st.lists(conditions, max_size=3), max_size=3), json_values))
def test_validate_segment_rules_never_raises(rules):
    errors = validate_segment_rules(rules)
    assert all(isinstance(p, str) and p.startswith("rules") for p, _ in errors)
