import marshmallow as ma

from .common import Key, PageQuerySchema, StrictSchema, page_schema
from .flags import ConditionSchema


class SegmentSchema(StrictSchema):
    key = Key(required=True)
    name = ma.fields.String(validate=ma.validate.Length(min=1, max=200))
    description = ma.fields.String(load_default="", validate=ma.validate.Length(max=5000))
    tags = ma.fields.List(ma.fields.String(), load_default=list)
    included = ma.fields.List(ma.fields.String(), load_default=list)
    excluded = ma.fields.List(ma.fields.String(), load_default=list)
    rules = ma.fields.List(ma.fields.List(ma.fields.Nested(ConditionSchema)), load_default=list,
                           metadata={"description": "A list of condition lists: any rule whose conditions all match."})
    version = ma.fields.Integer(dump_only=True)
    created_at = ma.fields.DateTime(dump_only=True)
    updated_at = ma.fields.DateTime(dump_only=True)


class SegmentPatchSchema(StrictSchema):
    name = ma.fields.String(validate=ma.validate.Length(min=1, max=200))
    description = ma.fields.String(validate=ma.validate.Length(max=5000))
    tags = ma.fields.List(ma.fields.String())
    included = ma.fields.List(ma.fields.String())
    excluded = ma.fields.List(ma.fields.String())
    rules = ma.fields.List(ma.fields.List(ma.fields.Nested(ConditionSchema)))


class SegmentQuerySchema(PageQuerySchema):
    q = ma.fields.String(load_default=None)


SegmentPageSchema = page_schema(SegmentSchema, "SegmentPage")
