"""Runs the language-neutral conformance cases in tests/spec/evaluation.json."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import pytest

from pitcrew.evaluation import Reason, bucket, compile_ruleset, evaluate
from pitcrew.evaluation.operators import OPS

CONFORMANCE_FILE = Path(__file__).resolve().parents[1] / "spec" / "evaluation.json"
DOC = json.loads(CONFORMANCE_FILE.read_text(encoding="utf-8"))
CASES = DOC["cases"]

# The vectors printed in docs/evaluation.md, restated here on purpose.
DOC_VECTORS = [
    ("new-checkout", "user-1", 9783),
    ("new-checkout", "user-2", 6026),
    ("checkout-redesign", "42", 4923),
    ("checkout-redesign:traffic", "42", 4160),
    ("layer:checkout", "user-1", 5659),
    ("ünïcode", "ユーザー", 2021),
]


def independent_bucket(salt: str, unit: str) -> int:
    """The formula of docs/evaluation.md written differently from the engine: hex digest, floor division."""
    hex16 = hashlib.sha256(f"{salt}.{unit}".encode()).hexdigest()[:16]
    return int(hex16, 16) * 10000 // 2**64


def canonical(value) -> str:
    """JSON text, so that True != 1 and 1.0 != 1 when comparing results."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


@cache
def compiled_ref(name: str):
    return compile_ruleset(DOC["rulesets"][name])


@pytest.mark.parametrize(("salt", "unit", "expected"), DOC_VECTORS)
def test_spec_bucketing_vectors(salt, unit, expected):
    assert bucket(salt, unit) == expected
    assert independent_bucket(salt, unit) == expected


@pytest.mark.parametrize("vector", DOC["bucketing"], ids=lambda v: f"{v['salt']}.{v['unit'][:20]}")
def test_bucketing_file(vector):
    assert independent_bucket(vector["salt"], vector["unit"]) == vector["bucket"]
    assert bucket(vector["salt"], vector["unit"]) == vector["bucket"]


def test_file_contains_spec_vectors():
    pinned = {(v["salt"], v["unit"]): v["bucket"] for v in DOC["bucketing"]}
    for salt, unit, expected in DOC_VECTORS:
        assert pinned[(salt, unit)] == expected


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case):
    for b in case.get("buckets", ()):
        assert independent_bucket(b["salt"], b["unit"]) == b["bucket"], "annotation is wrong"
        assert bucket(b["salt"], b["unit"]) == b["bucket"]
    if "ruleset" in case:
        compiled = compile_ruleset(case["ruleset"])
    else:
        compiled = compiled_ref(case["ruleset_ref"])
    result = evaluate(compiled, case["flag"], case["context"], case["default"])
    assert canonical(result.to_dict()) == canonical(case["expected"])
    if result.in_experiment:
        assert isinstance(result.unit, str) and result.unit
    else:
        assert result.unit is None
    exposure = case.get("holdout_exposure")
    if exposure is None:
        assert result.holdout is None
    else:
        assert result.holdout == (exposure["experiment"], exposure["variation"], exposure["unit"],
                                  exposure["unit_type"])


def test_cases_cover_every_reason_and_op():
    reasons = {c["expected"]["reason"] for c in CASES}
    evaluator_reasons = {
        Reason.OFF, Reason.FALLTHROUGH, Reason.TARGET_MATCH, Reason.RULE_MATCH,
        Reason.PREREQUISITE_FAILED, Reason.FLAG_NOT_FOUND, Reason.ERROR, Reason.HOLDOUT,
    }  # fmt: skip
    assert evaluator_reasons <= reasons
    ops = set()
    for rs in DOC["rulesets"].values():
        for f in rs["flags"].values():
            for rule in (f.get("targeting") or {}).get("rules", []):
                ops.update(c["op"] for c in rule["conditions"])
    assert OPS <= ops


def test_holdout_cases_cover_the_step():
    """Held out, measured and neither; both percent bounds; a unit that is not a string."""
    cases = [c for c in CASES if c.get("ruleset_ref") == "holdouts"]
    groups = {(c.get("holdout_exposure") or {}).get("variation") for c in cases}
    assert groups == {"held_out", "measured", None}
    percents = {h["percent"] for h in DOC["rulesets"]["holdouts"]["holdouts"].values()}
    assert {0.5, 10} <= percents
    assert any(isinstance(c["context"].get("id"), int) and not isinstance(c["context"]["id"], bool) for c in cases)
    salts = {v["salt"] for v in DOC["bucketing"]}
    assert any(s.startswith("holdout:") for s in salts)


def test_case_names_unique():
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
