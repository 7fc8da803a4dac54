import marshmallow as ma

from ..domain import limits
from .common import Key, PageQuerySchema, StrictSchema, Tags, Text, at_most, page_schema
from .flags import ConditionSchema


class SegmentSchema(StrictSchema):
    key = Key(required=True)
    name = Text(limits.NAME_CHARS, min_chars=1)
    description = Text(limits.DESCRIPTION_CHARS, load_default="")
    tags = Tags(load_default=list)
    included = ma.fields.List(Text(limits.UNIT_CHARS), load_default=list,
                              validate=at_most(limits.SEGMENT_UNITS, "unit ids"))
    excluded = ma.fields.List(Text(limits.UNIT_CHARS), load_default=list,
                              validate=at_most(limits.SEGMENT_UNITS, "unit ids"))
    rules = ma.fields.List(
        ma.fields.List(ma.fields.Nested(ConditionSchema),
                       validate=at_most(limits.CONDITIONS_PER_RULE, "conditions per rule")),
        load_default=list, validate=at_most(limits.SEGMENT_RULES, "rules per segment"),
        metadata={"description": "A list of condition lists: any rule whose conditions all match."})
    version = ma.fields.Integer(dump_only=True)
    created_at = ma.fields.DateTime(dump_only=True)
    updated_at = ma.fields.DateTime(dump_only=True)


class SegmentPatchSchema(StrictSchema):
    name = Text(limits.NAME_CHARS, min_chars=1)
    description = Text(limits.DESCRIPTION_CHARS)
    tags = Tags()
    included = ma.fields.List(Text(limits.UNIT_CHARS), validate=at_most(limits.SEGMENT_UNITS, "unit ids"))
    excluded = ma.fields.List(Text(limits.UNIT_CHARS), validate=at_most(limits.SEGMENT_UNITS, "unit ids"))
    rules = ma.fields.List(
        ma.fields.List(ma.fields.Nested(ConditionSchema),
                       validate=at_most(limits.CONDITIONS_PER_RULE, "conditions per rule")),
        validate=at_most(limits.SEGMENT_RULES, "rules per segment"),
        metadata={"description": "A list of condition lists: any rule whose conditions all match."})


class SegmentQuerySchema(PageQuerySchema):
    q = ma.fields.String(load_default=None, validate=ma.validate.Length(max=limits.NAME_CHARS),
                         metadata={"description": "Text in key or name."})


SegmentPageSchema = page_schema(SegmentSchema, "SegmentPage")
