"""evaluate(compiled, flag_key, context, default) -> EvaluationResult (docs/evaluation.md).

The per-flag logic (prerequisites, targets, rules, fallthrough) is compiled into
a closure by :mod:`pitcrew.evaluation.compiler`; this module holds the result type
and the entry point, which never raises.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["EvaluationResult", "Reason", "evaluate"]


class Reason:
    """Reason codes of an :class:`EvaluationResult` (string constants)."""

    OFF = "OFF"
    FALLTHROUGH = "FALLTHROUGH"
    TARGET_MATCH = "TARGET_MATCH"
    RULE_MATCH = "RULE_MATCH"
    PREREQUISITE_FAILED = "PREREQUISITE_FAILED"
    HOLDOUT = "HOLDOUT"  # the unit is held out by the flag's holdout: off_variation
    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    ERROR = "ERROR"
    # Produced by the SDK client, never by the evaluator.
    CLIENT_NOT_READY = "CLIENT_NOT_READY"
    WRONG_TYPE = "WRONG_TYPE"


class EvaluationResult:
    """The outcome of one evaluation.

    Immutable by convention: results of constant serves (OFF, a target, a
    fixed variation, a rollout's variation, a released experiment) are built
    once at compile time and shared by every call, and ``value`` is the
    ruleset's own JSON value. Never mutate a result or its ``value``; build a
    new one instead.

    ``unit`` is the unit string used for experiment assignment when
    ``in_experiment`` is true, else None. ``holdout`` is None, or the holdout
    exposure this evaluation makes when the flag's holdout step ran for a unit
    that is held out or in the measured slice: a tuple ``(experiment,
    variation, unit, unit_type)`` = ``("holdout:<key>", "held_out" | "measured",
    unit, the holdout's unit attribute)`` (docs/holdouts.md). Neither is part
    of :meth:`to_dict`.
    """

    __slots__ = ("value", "variation", "reason", "rule_id", "experiment", "in_experiment", "unit", "holdout")

    def __init__(
        self,
        value,
        variation: str | None,
        reason: str,
        rule_id: str | None = None,
        experiment: str | None = None,
        in_experiment: bool = False,
        unit: str | None = None,
        holdout: tuple | None = None,
    ):
        self.value = value
        self.variation = variation
        self.reason = reason
        self.rule_id = rule_id
        self.experiment = experiment
        self.in_experiment = in_experiment
        self.unit = unit
        self.holdout = holdout

    def to_dict(self) -> dict:
        return {
            "value": self.value,
            "variation": self.variation,
            "reason": self.reason,
            "rule_id": self.rule_id,
            "experiment": self.experiment,
            "in_experiment": self.in_experiment,
        }

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.to_dict() == other.to_dict() and self.unit == other.unit and self.holdout == other.holdout

    __hash__ = None  # values may be unhashable JSON

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"EvaluationResult({fields})"


_ERROR = Reason.ERROR
_NOT_FOUND = Reason.FLAG_NOT_FOUND


def evaluate(compiled, flag_key, context, default) -> EvaluationResult:
    """Evaluate ``flag_key`` for ``context`` against a compiled ruleset.

    Never raises: an unknown or archived flag gives ``default`` with reason
    FLAG_NOT_FOUND; a context that is not an object, a flag whose content did
    not compile, or any internal error gives ``default`` with reason ERROR.
    """
    try:
        flag = compiled._flags.get(flag_key)
        if flag is None:
            return EvaluationResult(default, None, _NOT_FOUND)
        if context.__class__ is not dict and not isinstance(context, Mapping):
            return EvaluationResult(default, None, _ERROR)
        result = flag._run(context)
        if result is None:  # the flag's content did not compile
            return EvaluationResult(default, None, _ERROR)
        return result
    except Exception:
        return EvaluationResult(default, None, _ERROR)
