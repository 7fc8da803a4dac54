import marshmallow as ma

from ..domain import limits
from ..domain.metrics import DIRECTIONS, TYPES
from .common import Key, PageQuerySchema, StrictSchema, Tags, Text, page_schema

_EVENT = ma.validate.Length(min=1, max=limits.EVENT_KEY_CHARS)


class MetricSchema(StrictSchema):
    key = Key(required=True)
    name = Text(limits.NAME_CHARS, min_chars=1)
    description = Text(limits.DESCRIPTION_CHARS, load_default="")
    event = ma.fields.String(required=True, validate=_EVENT, metadata={"description": "Track event key."})
    type = ma.fields.String(required=True, validate=ma.validate.OneOf(TYPES), metadata={"description": (
        "conversion: share of units with >= 1 event; count: events per unit; mean: per-unit sum of event "
        "values (an event without a value counts 1) per unit; ratio: sum of event values / number of "
        "denominator events.")})
    denominator = ma.fields.String(load_default=None, allow_none=True, validate=_EVENT,
                                   metadata={"description": "Ratio metrics: the denominator's track event key."})
    direction = ma.fields.String(load_default="increase", validate=ma.validate.OneOf(DIRECTIONS),
                                 metadata={"description": "Which way is better."})
    window_hours = ma.fields.Float(load_default=None, allow_none=True,
                                   validate=ma.validate.Range(min=0, min_inclusive=False, max=24 * 366),
                                   metadata={"description": "Count events this many hours after the unit's first "
                                                            "exposure; null = until the experiment ends."})
    winsorize = ma.fields.Float(load_default=None, allow_none=True,
                                validate=ma.validate.Range(min=0, max=1, min_inclusive=False, max_inclusive=False),
                                metadata={"description": "Cap per-unit values at this quantile of all units' "
                                                         "values, e.g. 0.99 (not for conversion metrics)."})
    tags = Tags(load_default=list)
    version = ma.fields.Integer(dump_only=True)
    created_at = ma.fields.DateTime(dump_only=True)
    updated_at = ma.fields.DateTime(dump_only=True)


class MetricPatchSchema(StrictSchema):
    name = Text(limits.NAME_CHARS, min_chars=1)
    description = Text(limits.DESCRIPTION_CHARS)
    event = ma.fields.String(validate=_EVENT)
    type = ma.fields.String(validate=ma.validate.OneOf(TYPES))
    denominator = ma.fields.String(allow_none=True, validate=_EVENT)
    direction = ma.fields.String(validate=ma.validate.OneOf(DIRECTIONS))
    window_hours = ma.fields.Float(allow_none=True, validate=ma.validate.Range(min=0, min_inclusive=False, max=24 * 366))
    winsorize = ma.fields.Float(allow_none=True, validate=ma.validate.Range(min=0, max=1, min_inclusive=False,
                                                                            max_inclusive=False))
    tags = Tags()


class MetricQuerySchema(PageQuerySchema):
    tag = ma.fields.String(load_default=None)


MetricPageSchema = page_schema(MetricSchema, "MetricPage")
