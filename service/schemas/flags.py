import marshmallow as ma

from ..domain import limits
from ..domain.flags import KINDS, TYPES
from ..domain.lifecycle import STAGES
from .common import (
    BaseSchema,
    Key,
    PageQuerySchema,
    StrictBoolean,
    StrictSchema,
    Tags,
    Text,
    at_most,
    page_schema,
)

_OPS = ("in, contains, starts_with, ends_with, matches, gt, gte, lt, lte, semver_eq, semver_gt, semver_gte, "
        "semver_lt, semver_lte, before, after, exists, in_segment")


def _short_strings(value) -> None:
    if isinstance(value, str) and len(value) > limits.CONDITION_STRING_CHARS:
        raise ma.ValidationError(f"Strings in values are at most {limits.CONDITION_STRING_CHARS} characters.")


class VariationSchema(StrictSchema):
    key = Key(required=True)
    value = ma.fields.Raw(required=True, allow_none=True, metadata={"description": "Must match the flag's kind."})
    description = Text(limits.DESCRIPTION_CHARS, load_default="")


class ConditionSchema(StrictSchema):
    """Stored and returned exactly as written: ``values`` and ``negate`` stay absent when absent."""

    attribute = Text(limits.ATTRIBUTE_CHARS, min_chars=1,
                     metadata={"description": "Context attribute (not used by in_segment)."})
    op = ma.fields.String(required=True, validate=ma.validate.Length(max=50), metadata={"description": _OPS})
    values = ma.fields.List(ma.fields.Raw(allow_none=True, validate=_short_strings),
                            validate=at_most(limits.VALUES_PER_CONDITION, "values per condition"),
                            metadata={"description": "Non-empty for every op but exists (absent or [])."})
    negate = StrictBoolean(metadata={"description": "Inverts the condition (absent: false)."})


_WEIGHTS_SHAPE = 'Must be [[variation, basis_points], ...] summing to 10000, e.g. [["on", 2500], ["off", 7500]].'


class RolloutSchema(StrictSchema):
    weights = ma.fields.List(
        ma.fields.List(ma.fields.Raw(), error_messages={"invalid": _WEIGHTS_SHAPE}), required=True,
        validate=at_most(limits.VARIATIONS, "weights"), error_messages={"invalid": _WEIGHTS_SHAPE},
        metadata={"description": "[[variation_key, basis_points], ...] summing to 10000"})
    bucket_by = Text(limits.ATTRIBUTE_CHARS, min_chars=1)
    salt = Text(limits.SALT_CHARS)


class ServeSchema(StrictSchema):
    variation = Text(limits.KEY_CHARS)
    rollout = ma.fields.Nested(RolloutSchema)
    experiment = Text(limits.KEY_CHARS)


class PrerequisiteSchema(StrictSchema):
    flag = Text(limits.KEY_CHARS, required=True)
    variation = Text(limits.KEY_CHARS, required=True)


class TargetSchema(StrictSchema):
    variation = Text(limits.KEY_CHARS, required=True)
    values = ma.fields.List(Text(limits.UNIT_CHARS), required=True,
                            validate=at_most(limits.TARGETS_PER_FLAG, "unit ids per flag and environment"))


class RuleSchema(StrictSchema):
    id = Text(limits.RULE_ID_CHARS, min_chars=1, required=True)
    description = Text(limits.RULE_DESCRIPTION_CHARS, load_default="")
    conditions = ma.fields.List(ma.fields.Nested(ConditionSchema), load_default=list,
                                validate=at_most(limits.CONDITIONS_PER_RULE, "conditions per rule"))
    serve = ma.fields.Nested(ServeSchema, required=True)


class TargetingSchema(StrictSchema):
    enabled = StrictBoolean(required=True)
    off_variation = Text(limits.KEY_CHARS, required=True)
    holdout = Text(limits.HOLDOUT_KEY_CHARS, min_chars=1, allow_none=True, metadata={"description": (
        "Key of a holdout of this environment (docs/holdouts.md): its held-out units get off_variation "
        "(reason HOLDOUT) after individual targets, before rules. Absent or null: none.")})
    prerequisites = ma.fields.List(ma.fields.Nested(PrerequisiteSchema), load_default=list,
                                   validate=at_most(limits.PREREQUISITES, "prerequisites"))
    targets = ma.fields.List(ma.fields.Nested(TargetSchema), load_default=list,
                             validate=at_most(limits.VARIATIONS, "target lists"))
    rules = ma.fields.List(ma.fields.Nested(RuleSchema), load_default=list,
                           validate=at_most(limits.RULES_PER_FLAG, "rules per flag and environment"))
    fallthrough = ma.fields.Nested(ServeSchema, required=True)


class TargetingPatchSchema(TargetingSchema):
    """PATCH: the given top-level fields replace the current ones."""

    class Meta:
        unknown = ma.RAISE

    def __init__(self, *args, **kwargs):
        super().__init__(*args, partial=True, **kwargs)


_VARIATIONS = ma.validate.Length(min=1, max=limits.VARIATIONS,
                                 error=f"A flag has 1 to {limits.VARIATIONS} variations.")


class FlagSchema(StrictSchema):
    key = Key(required=True)
    name = Text(limits.NAME_CHARS, min_chars=1)
    description = Text(limits.DESCRIPTION_CHARS, load_default="")
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(KINDS))
    type = ma.fields.String(load_default="release", validate=ma.validate.OneOf(TYPES), metadata={
        "description": "Expected lifetime (docs/lifecycle.md): release and experiment 40 days, operational 7, "
                       "kill-switch and permission never."})
    variations = ma.fields.List(ma.fields.Nested(VariationSchema), required=True, validate=_VARIATIONS)
    tags = Tags(load_default=list)
    owner = Text(limits.OWNER_CHARS, load_default=None, allow_none=True)
    temporary = StrictBoolean(load_default=True)
    archived = ma.fields.Boolean(dump_only=True)
    version = ma.fields.Integer(dump_only=True)
    environments = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Nested(TargetingSchema), dump_only=True)
    created_at = ma.fields.DateTime(dump_only=True)
    updated_at = ma.fields.DateTime(dump_only=True)
    lifecycle = ma.fields.String(dump_only=True, metadata={"description": "Stage: " + ", ".join(STAGES)})
    lifecycle_reason = ma.fields.String(dump_only=True)
    last_evaluated_at = ma.fields.DateTime(dump_only=True, allow_none=True,
                                           metadata={"description": "Last evaluation in any environment."})


class FlagPatchSchema(StrictSchema):
    name = Text(limits.NAME_CHARS, min_chars=1)
    description = Text(limits.DESCRIPTION_CHARS)
    variations = ma.fields.List(ma.fields.Nested(VariationSchema), validate=_VARIATIONS)
    tags = Tags()
    owner = Text(limits.OWNER_CHARS, allow_none=True)
    type = ma.fields.String(validate=ma.validate.OneOf(TYPES))
    temporary = StrictBoolean()
    archived = StrictBoolean(metadata={"description": "false restores an archived flag"})


class FlagQuerySchema(PageQuerySchema):
    tag = ma.fields.String(load_default=None)
    owner = ma.fields.String(load_default=None)
    archived = ma.fields.Boolean(load_default=None)
    q = ma.fields.String(load_default=None, metadata={"description": "Text in key, name or description."})
    type = ma.fields.String(load_default=None, validate=ma.validate.OneOf(TYPES))
    lifecycle = ma.fields.String(load_default=None, validate=ma.validate.OneOf(STAGES), metadata={
        "description": "Only flags in this lifecycle stage (docs/lifecycle.md)."})


class RollbackSchema(StrictSchema):
    version = ma.fields.Integer(required=True, validate=ma.validate.Range(min=1, max=2**31 - 1))


class DiffEntrySchema(BaseSchema):
    path = ma.fields.String()
    op = ma.fields.String()
    before = ma.fields.Raw(allow_none=True)
    after = ma.fields.Raw(allow_none=True)


class FlagVersionSchema(BaseSchema):
    version = ma.fields.Integer()
    action = ma.fields.String()
    actor = ma.fields.String()
    comment = ma.fields.String(allow_none=True)
    created_at = ma.fields.DateTime()
    snapshot = ma.fields.Dict()
    diff = ma.fields.List(ma.fields.Nested(DiffEntrySchema))


FlagPageSchema = page_schema(FlagSchema, "FlagPage")
FlagHistoryPageSchema = page_schema(FlagVersionSchema, "FlagHistoryPage")


class EvaluationDaySchema(BaseSchema):
    day = ma.fields.String()
    count = ma.fields.Integer()
    variations = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())


class EnvironmentEvaluationsSchema(BaseSchema):
    first_evaluated_at = ma.fields.DateTime(allow_none=True)
    last_evaluated_at = ma.fields.DateTime(allow_none=True)
    days = ma.fields.List(ma.fields.Nested(EvaluationDaySchema))


class FlagEvaluationsSchema(BaseSchema):
    flag = ma.fields.String()
    days = ma.fields.Integer()
    environments = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Nested(EnvironmentEvaluationsSchema))


class EvaluationsQuerySchema(StrictSchema):
    days = ma.fields.Integer(load_default=30, validate=ma.validate.Range(min=1, max=400))
