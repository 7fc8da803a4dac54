import marshmallow as ma

from ..domain.flags import KINDS
from .common import Key, PageQuerySchema, StrictSchema, page_schema


class VariationSchema(StrictSchema):
    key = Key(required=True)
    value = ma.fields.Raw(required=True, allow_none=True, metadata={"description": "Must match the flag's kind."})
    description = ma.fields.String(load_default="")


class ConditionSchema(StrictSchema):
    attribute = ma.fields.String(metadata={"description": "Context attribute (not used by in_segment)."})
    op = ma.fields.String(required=True, metadata={"description": "in, contains, starts_with, ends_with, matches, "
                          "gt, gte, lt, lte, semver_eq, semver_gt, semver_gte, semver_lt, semver_lte, before, "
                          "after, exists, in_segment"})
    values = ma.fields.List(ma.fields.Raw(allow_none=True))
    negate = ma.fields.Boolean(load_default=False)


class RolloutSchema(StrictSchema):
    weights = ma.fields.List(ma.fields.List(ma.fields.Raw()), required=True,
                             metadata={"description": "[[variation_key, basis_points], ...] summing to 10000"})
    bucket_by = ma.fields.String()
    salt = ma.fields.String()


class ServeSchema(StrictSchema):
    variation = ma.fields.String()
    rollout = ma.fields.Nested(RolloutSchema)
    experiment = ma.fields.String()


class PrerequisiteSchema(StrictSchema):
    flag = ma.fields.String(required=True)
    variation = ma.fields.String(required=True)


class TargetSchema(StrictSchema):
    variation = ma.fields.String(required=True)
    values = ma.fields.List(ma.fields.String(), required=True)


class RuleSchema(StrictSchema):
    id = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=100))
    description = ma.fields.String(load_default="")
    conditions = ma.fields.List(ma.fields.Nested(ConditionSchema), load_default=list)
    serve = ma.fields.Nested(ServeSchema, required=True)


class TargetingSchema(StrictSchema):
    enabled = ma.fields.Boolean(required=True)
    off_variation = ma.fields.String(required=True)
    prerequisites = ma.fields.List(ma.fields.Nested(PrerequisiteSchema), load_default=list)
    targets = ma.fields.List(ma.fields.Nested(TargetSchema), load_default=list)
    rules = ma.fields.List(ma.fields.Nested(RuleSchema), load_default=list)
    fallthrough = ma.fields.Nested(ServeSchema, required=True)


class TargetingPatchSchema(TargetingSchema):
    """PATCH: the given top-level fields replace the current ones."""

    class Meta:
        unknown = ma.RAISE

    def __init__(self, *args, **kwargs):
        super().__init__(*args, partial=True, **kwargs)


class FlagSchema(StrictSchema):
    key = Key(required=True)
    name = ma.fields.String(validate=ma.validate.Length(min=1, max=200))
    description = ma.fields.String(load_default="", validate=ma.validate.Length(max=5000))
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(KINDS))
    variations = ma.fields.List(ma.fields.Nested(VariationSchema), required=True,
                                validate=ma.validate.Length(min=1, max=100))
    tags = ma.fields.List(ma.fields.String(validate=ma.validate.Length(min=1, max=100)), load_default=list)
    owner = ma.fields.String(load_default=None, allow_none=True)
    temporary = ma.fields.Boolean(load_default=True)
    archived = ma.fields.Boolean(dump_only=True)
    version = ma.fields.Integer(dump_only=True)
    environments = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Nested(TargetingSchema), dump_only=True)
    created_at = ma.fields.DateTime(dump_only=True)
    updated_at = ma.fields.DateTime(dump_only=True)


class FlagPatchSchema(StrictSchema):
    name = ma.fields.String(validate=ma.validate.Length(min=1, max=200))
    description = ma.fields.String(validate=ma.validate.Length(max=5000))
    variations = ma.fields.List(ma.fields.Nested(VariationSchema), validate=ma.validate.Length(min=1, max=100))
    tags = ma.fields.List(ma.fields.String(validate=ma.validate.Length(min=1, max=100)))
    owner = ma.fields.String(allow_none=True)
    temporary = ma.fields.Boolean()
    archived = ma.fields.Boolean(metadata={"description": "false restores an archived flag"})


class FlagQuerySchema(PageQuerySchema):
    tag = ma.fields.String(load_default=None)
    owner = ma.fields.String(load_default=None)
    archived = ma.fields.Boolean(load_default=None)
    q = ma.fields.String(load_default=None, metadata={"description": "Text in key, name or description."})


class RollbackSchema(StrictSchema):
    version = ma.fields.Integer(required=True, validate=ma.validate.Range(min=1, max=2**31 - 1))


class DiffEntrySchema(ma.Schema):
    path = ma.fields.String()
    op = ma.fields.String()
    before = ma.fields.Raw(allow_none=True)
    after = ma.fields.Raw(allow_none=True)


class FlagVersionSchema(ma.Schema):
    version = ma.fields.Integer()
    action = ma.fields.String()
    actor = ma.fields.String()
    comment = ma.fields.String(allow_none=True)
    created_at = ma.fields.DateTime()
    snapshot = ma.fields.Dict()
    diff = ma.fields.List(ma.fields.Nested(DiffEntrySchema))


FlagPageSchema = page_schema(FlagSchema, "FlagPage")
FlagHistoryPageSchema = page_schema(FlagVersionSchema, "FlagHistoryPage")
