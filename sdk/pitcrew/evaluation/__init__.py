"""Pitcrew's flag evaluation engine (docs/evaluation.md): pure Python, stdlib only, no I/O.

    compiled = compile_ruleset(ruleset_json)          # once per ruleset version
    result = evaluate(compiled, "new-checkout", {"id": "user-1"}, False)

The service and the SDK both use this one implementation.
"""

from .bucketing import bucket
from .compiler import CompiledFlag, CompiledRuleset, InvalidRuleset, compile_ruleset
from .evaluator import EvaluationResult, Reason, evaluate
from .validation import validate_segment_rules, validate_targeting

__all__ = [
    "CompiledFlag",
    "CompiledRuleset",
    "EvaluationResult",
    "InvalidRuleset",
    "Reason",
    "bucket",
    "compile_ruleset",
    "evaluate",
    "validate_segment_rules",
    "validate_targeting",
]
