"""Holdouts (docs/holdouts.md): the resource and its results."""

import marshmallow as ma

from ..analysis.settings import CORRECTIONS, ENGINES
from ..domain import limits
from .common import (
    KEY_MESSAGE,
    KEY_PATTERN,
    BaseSchema,
    Key,
    PageQuerySchema,
    StrictSchema,
    Text,
    page_schema,
)
from .experiments import HealthCheckSchema, MetricResultSchema, SrmSchema

_PERCENT = ma.validate.Range(min=limits.HOLDOUT_MIN_PERCENT, max=limits.HOLDOUT_MAX_PERCENT,
                             error=f"Must be from {limits.HOLDOUT_MIN_PERCENT} to {limits.HOLDOUT_MAX_PERCENT} "
                                   "(percent of the environment's units).")
_HOLDOUT_KEY = ma.validate.Length(max=limits.HOLDOUT_KEY_CHARS,
                                  error=f"At most {limits.HOLDOUT_KEY_CHARS} characters (\"holdout:\" + key is "
                                        "the exposures' experiment key).")


class StrictFloat(ma.fields.Float):
    """A JSON number, nothing else (no "5" strings, no booleans)."""

    default_error_messages = {"invalid": "Must be a number."}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class HoldoutSchema(StrictSchema):
    key = ma.fields.String(required=True, validate=[ma.validate.Regexp(KEY_PATTERN, error=KEY_MESSAGE), _HOLDOUT_KEY])
    environment = Key(required=True, metadata={"description": "The environment whose flags may name it."})
    name = Text(limits.NAME_CHARS, min_chars=1)
    description = Text(limits.DESCRIPTION_CHARS, load_default="")
    percent = StrictFloat(required=True, validate=_PERCENT, metadata={
        "description": "Share of the units held out, 0.5 to 10, at most two decimals. An equal share "
                       "next to it is the measured slice."})
    unit = Text(limits.ATTRIBUTE_CHARS, min_chars=1, load_default="id", metadata={
        "description": "Context attribute whose value is bucketed (default id)."})
    flags = ma.fields.List(ma.fields.String(), dump_only=True, metadata={
        "description": "Flags whose targeting in the environment names the holdout."})
    experiments = ma.fields.List(ma.fields.String(), dump_only=True, metadata={
        "description": "Experiments on those flags in the environment: they inherit the holdout."})
    version = ma.fields.Integer(dump_only=True)
    created_at = ma.fields.DateTime(dump_only=True)
    updated_at = ma.fields.DateTime(dump_only=True)


class HoldoutPatchSchema(StrictSchema):
    name = Text(limits.NAME_CHARS, min_chars=1)
    description = Text(limits.DESCRIPTION_CHARS)
    percent = StrictFloat(validate=_PERCENT, metadata={
        "description": "Only while no flag names the holdout and before it recorded any unit."})
    unit = Text(limits.ATTRIBUTE_CHARS, min_chars=1, metadata={
        "description": "Only while no flag names the holdout and before it recorded any unit."})


class HoldoutQuerySchema(PageQuerySchema):
    environment = ma.fields.String(load_default=None, validate=ma.validate.Length(max=limits.KEY_CHARS))


class HoldoutResultsQuerySchema(StrictSchema):
    metric = ma.fields.List(ma.fields.String(validate=ma.validate.Length(min=1, max=20 * limits.KEY_CHARS)),
                            required=True, error_messages={"required": (
                                "Required: one or more metric keys (metric=a&metric=b, or metric=a,b).")},
                            metadata={
                                "description": "Metric keys: repeat the parameter (metric=a&metric=b) or "
                                               "separate them with commas (metric=a,b)."})
    format = ma.fields.String(load_default="json", validate=ma.validate.OneOf(["json", "csv"]))
    engine = ma.fields.String(validate=ma.validate.OneOf(ENGINES))
    sequential = ma.fields.Boolean()
    cuped = ma.fields.Boolean()
    alpha = ma.fields.Float(validate=ma.validate.Range(min=0, max=0.5, min_inclusive=False))
    correction = ma.fields.String(validate=ma.validate.OneOf(CORRECTIONS + ("none",)))

    @ma.post_load
    def split_metrics(self, data, **kwargs):
        data["metric"] = [k.strip() for item in data["metric"] for k in item.split(",") if k.strip()]
        return data


class HoldoutResultsSchema(BaseSchema):
    holdout = ma.fields.String()
    environment = ma.fields.String()
    percent = ma.fields.Float()
    unit = ma.fields.String()
    computed_at = ma.fields.String()
    control = ma.fields.String(metadata={"description": "held_out: the lift is measured minus held out."})
    engine = ma.fields.String()
    sequential = ma.fields.Boolean()
    cuped = ma.fields.Boolean()
    alpha = ma.fields.Float()
    correction = ma.fields.String(allow_none=True)
    units = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer(),
                           metadata={"description": "{held_out: n, measured: n}"})
    multiple_exposures = ma.fields.Integer()
    srm = ma.fields.Nested(SrmSchema)
    health = ma.fields.List(ma.fields.Nested(HealthCheckSchema))
    metrics = ma.fields.List(ma.fields.Nested(MetricResultSchema))


HoldoutPageSchema = page_schema(HoldoutSchema, "HoldoutPage")
