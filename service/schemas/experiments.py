import marshmallow as ma

from ..analysis.settings import CORRECTIONS, ENGINES
from ..domain import limits
from ..domain.experiments import OUTCOMES, TOTAL_WEIGHT
from ..domain.targeting import FALLTHROUGH, POSITIONS
from ..models import STATUSES
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

_BPS = ma.validate.Range(min=0, max=TOTAL_WEIGHT)
_NAME = ma.validate.Length(min=1, max=limits.KEY_CHARS)
# Attribute names usable as a JSON path on every database (no quotes, backslashes or control characters).
_ATTRIBUTE = ma.validate.Regexp(r'\A[^"\\\x00-\x1f]{1,100}\Z',
                                error="1 to 100 characters, without quotes, backslashes or control characters.")


class ArmSchema(StrictSchema):
    variation = ma.fields.String(required=True, validate=_NAME, metadata={"description": "A flag variation key."})
    weight = ma.fields.Integer(required=True, strict=True, validate=_BPS, metadata={"description": "Basis points."})


class LayerSchema(StrictSchema):
    key = Key(required=True)
    range = ma.fields.List(ma.fields.Integer(strict=True, validate=_BPS), required=True,
                           validate=ma.validate.Length(equal=2),
                           metadata={"description": "[start, end) in basis points of the layer's buckets."})


class Position(ma.fields.Field):
    """In a request, where the experiment's new rule goes: ``first`` or ``last``. In a response, the
    index of the rule that serves the experiment (how many rules are evaluated before it)."""

    default_error_messages = {"invalid": "Must be 'first' or 'last'."}

    def _deserialize(self, value, attr, data, **kwargs):
        if value in POSITIONS:
            return value
        raise self.make_error("invalid")


class AudienceSchema(StrictSchema):
    """Which units an experiment takes: the rule of the flag's targeting that serves it."""

    rule_id = Text(limits.RULE_ID_CHARS, min_chars=1, metadata={"description": (
        "Request: run the experiment on this existing rule's audience (its rule goes right before "
        f"it, with the same conditions), or '{FALLTHROUGH}' (after every rule). Response: the rule "
        f"that serves the experiment, or '{FALLTHROUGH}'.")})
    position = Position(metadata={"description": (
        "Request: 'first' (a rule before every rule: everyone but individual targets) or 'last' "
        "(the default: after every rule, so existing targeting keeps precedence). Response: the "
        "index of the experiment's rule."), "example": "last"})
    preceded_by = ma.fields.List(ma.fields.String(), dump_only=True, metadata={
        "description": "Ids of the rules evaluated before the experiment's: units they match never "
                       "enter it."})

    @ma.validates_schema
    def _one_of(self, data, **kwargs):
        if ("rule_id" in data) == ("position" in data):
            raise ma.ValidationError("Give rule_id (an existing rule's id, or 'fallthrough') or "
                                     "position ('first' or 'last'), not both and not neither.")


class AnalysisSchema(StrictSchema):
    engine = ma.fields.String(validate=ma.validate.OneOf(ENGINES))
    alpha = ma.fields.Float(validate=ma.validate.Range(min=0, max=0.5, min_inclusive=False))
    sequential = StrictBoolean()
    sequential_n = ma.fields.Integer(validate=ma.validate.Range(min=1),
                                     metadata={"description": "Tuning N* of the confidence sequences."})
    cuped = StrictBoolean()
    cuped_days = ma.fields.Integer(validate=ma.validate.Range(min=1, max=365),
                                   metadata={"description": "Length of the pre-exposure window."})
    correction = ma.fields.String(allow_none=True, validate=ma.validate.OneOf(CORRECTIONS))
    prior_mean = ma.fields.Float(allow_none=True, metadata={"description": "Bayesian: normal prior on the "
                                                                           "relative lift (mean)."})
    prior_variance = ma.fields.Float(allow_none=True, validate=ma.validate.Range(min=0, min_inclusive=False),
                                     metadata={"description": "Bayesian: prior variance; null = flat prior."})
    target_mde = ma.fields.Float(validate=ma.validate.Range(min=0, max=10, min_inclusive=False), metadata={
        "description": "Relative lift the test should detect (0.05 = 5 %): the results' power block."})
    chance_to_win = ma.fields.Float(validate=ma.validate.Range(min=0.5, max=1, min_inclusive=False,
                                                               max_inclusive=False), metadata={
        "description": "Bayesian: chance to beat control that makes a winner (1 - it: a loser)."})


class DecisionSchema(StrictSchema):
    outcome = ma.fields.String(required=True, validate=ma.validate.OneOf(OUTCOMES))
    variation = ma.fields.String(load_default=None, allow_none=True)
    summary = Text(limits.LONG_TEXT_CHARS, load_default="")


_METRIC_LIST = ma.fields.List(Key(), validate=at_most(limits.EXPERIMENT_METRICS, "metrics"))
_DIMENSIONS = ma.fields.List(ma.fields.String(validate=_ATTRIBUTE),
                             validate=at_most(limits.EXPERIMENT_DIMENSIONS, "dimensions"),
                             metadata={"description": "Context attributes recorded with exposures."})


class ExperimentSchema(StrictSchema):
    key = Key(required=True)
    name = Text(limits.NAME_CHARS, min_chars=1)
    hypothesis = Text(limits.LONG_TEXT_CHARS, load_default="")
    owner = Text(limits.OWNER_CHARS, load_default=None, allow_none=True)
    tags = Tags(load_default=list)
    flag = Key(required=True)
    environment = Key(required=True)
    variations = ma.fields.List(ma.fields.Nested(ArmSchema), validate=at_most(limits.EXPERIMENT_VARIATIONS, "variations"),
                                metadata={"description": "Default: every flag variation, equal weights."})
    control = ma.fields.String(validate=_NAME, metadata={"description": (
        "Default: the flag's off_variation in the environment when it is one of the variations "
        "(what users get today), else the first variation.")})
    traffic = ma.fields.Integer(load_default=TOTAL_WEIGHT, strict=True, validate=_BPS,
                                metadata={"description": "Basis points of eligible units that enter."})
    unit = ma.fields.String(load_default="id", validate=_NAME,
                            metadata={"description": "Context attribute to randomise on."})
    layer = ma.fields.Nested(LayerSchema, load_default=None, allow_none=True)
    salt = Text(limits.SALT_CHARS, min_chars=1,
                            metadata={"description": "Default: the experiment key."})
    audience = ma.fields.Nested(AudienceSchema, allow_none=True, metadata={"description": (
        "Request (create only): where the experiment's rule goes; default "
        "{\"position\": \"last\"}. Response: the rule serving it, from the flag's targeting now "
        "(null: no rule serves it).")})
    primary_metric = Key(load_default=None, allow_none=True)
    secondary_metrics = _METRIC_LIST
    guardrail_metrics = _METRIC_LIST
    dimensions = _DIMENSIONS
    analysis = ma.fields.Nested(AnalysisSchema)
    status = ma.fields.String(dump_only=True, metadata={"description": " -> ".join(STATUSES)})
    started_at = ma.fields.DateTime(dump_only=True, allow_none=True)
    stopped_at = ma.fields.DateTime(dump_only=True, allow_none=True)
    concluded_at = ma.fields.DateTime(dump_only=True, allow_none=True)
    released_variation = ma.fields.String(dump_only=True, allow_none=True)
    decision = ma.fields.Nested(DecisionSchema, dump_only=True, allow_none=True)
    version = ma.fields.Integer(dump_only=True)
    created_at = ma.fields.DateTime(dump_only=True)
    updated_at = ma.fields.DateTime(dump_only=True)


class ExperimentPatchSchema(StrictSchema):
    name = Text(limits.NAME_CHARS, min_chars=1)
    hypothesis = Text(limits.LONG_TEXT_CHARS)
    owner = Text(limits.OWNER_CHARS, allow_none=True)
    tags = Tags()
    variations = ma.fields.List(ma.fields.Nested(ArmSchema), validate=at_most(limits.EXPERIMENT_VARIATIONS, "variations"))
    control = ma.fields.String(validate=_NAME)
    traffic = ma.fields.Integer(strict=True, validate=_BPS)
    unit = ma.fields.String(validate=_NAME)
    layer = ma.fields.Nested(LayerSchema, allow_none=True)
    salt = Text(limits.SALT_CHARS, min_chars=1)
    primary_metric = Key(allow_none=True)
    secondary_metrics = _METRIC_LIST
    guardrail_metrics = _METRIC_LIST
    dimensions = _DIMENSIONS
    analysis = ma.fields.Nested(AnalysisSchema, metadata={"description": "Given settings replace the current ones."})
    released_variation = ma.fields.String(allow_none=True, validate=_NAME, metadata={
        "description": "Stopped or concluded experiments: serve this variation to every unit the rule matches."})


class ConcludeSchema(StrictSchema):
    decision = ma.fields.Nested(DecisionSchema, required=True)
    released_variation = ma.fields.String(allow_none=True, validate=_NAME)


class ExperimentQuerySchema(PageQuerySchema):
    status = ma.fields.String(load_default=None, validate=ma.validate.OneOf(STATUSES))
    flag = ma.fields.String(load_default=None)
    environment = ma.fields.String(load_default=None)


class ResultsQuerySchema(StrictSchema):
    format = ma.fields.String(load_default="json", validate=ma.validate.OneOf(["json", "csv"]))
    dimension = ma.fields.String(load_default=None, validate=_ATTRIBUTE,
                                 metadata={"description": "Also break results down by this exposure attribute."})
    metric = ma.fields.String(load_default=None, metadata={"description": "Only this metric."})
    engine = ma.fields.String(validate=ma.validate.OneOf(ENGINES))
    sequential = ma.fields.Boolean()
    cuped = ma.fields.Boolean()
    alpha = ma.fields.Float(validate=ma.validate.Range(min=0, max=0.5, min_inclusive=False))
    correction = ma.fields.String(validate=ma.validate.OneOf((*CORRECTIONS, "none")))


class TimeseriesQuerySchema(StrictSchema):
    metric = ma.fields.String(load_default=None, metadata={"description": "Default: the primary metric."})
    engine = ma.fields.String(validate=ma.validate.OneOf(ENGINES))
    sequential = ma.fields.Boolean()
    alpha = ma.fields.Float(validate=ma.validate.Range(min=0, max=0.5, min_inclusive=False))


VERDICTS = ("winner", "loser", "inconclusive", "not_enough_data")


class TestSchema(BaseSchema):
    estimate = ma.fields.Float()
    ci = ma.fields.List(ma.fields.Float())
    p_value = ma.fields.Float(allow_none=True)


class VariationResultSchema(BaseSchema):
    variation = ma.fields.String()
    units = ma.fields.Integer()
    value = ma.fields.Float(allow_none=True)
    stddev = ma.fields.Float(allow_none=True)
    absolute = ma.fields.Nested(TestSchema, allow_none=True)
    relative = ma.fields.Nested(TestSchema, allow_none=True)
    p_value_adjusted = ma.fields.Float(allow_none=True)
    chance_to_beat_control = ma.fields.Float(allow_none=True)
    risk = ma.fields.Float(allow_none=True)
    verdict = ma.fields.String(allow_none=True, metadata={"description": " | ".join(VERDICTS) + "; null for control"})


class DimensionValueSchema(BaseSchema):
    name = ma.fields.String()
    value = ma.fields.String(allow_none=True)


class MetricResultSchema(BaseSchema):
    metric = ma.fields.String()
    type = ma.fields.String()
    dimension = ma.fields.Nested(DimensionValueSchema, allow_none=True)
    verdict = ma.fields.String(metadata={"description": " | ".join(VERDICTS)})
    variations = ma.fields.List(ma.fields.Nested(VariationResultSchema))


class SrmSchema(BaseSchema):
    p_value = ma.fields.Float()
    flagged = ma.fields.Boolean()


class HealthCheckSchema(BaseSchema):
    check = ma.fields.String()
    status = ma.fields.String(metadata={"description": "ok | warning | failed"})
    message = ma.fields.String()


class PowerSchema(BaseSchema):
    metric = ma.fields.String()
    target_mde = ma.fields.Float(metadata={"description": "Relative change to detect (analysis.target_mde)."})
    relative = ma.fields.Boolean()
    target_power = ma.fields.Float()
    alpha = ma.fields.Float(metadata={"description": "Per comparison (split over treatments with a correction)."})
    power = ma.fields.Float(allow_none=True, metadata={"description": "Power now for target_mde."})
    mde_now = ma.fields.Float(allow_none=True, metadata={"description": "Relative change detectable now at "
                                                                        "target_power."})
    units_per_variation_needed = ma.fields.Integer(allow_none=True)
    units_needed = ma.fields.Integer(allow_none=True, metadata={"description": "Total, at the design's weights."})
    units_still_needed = ma.fields.Integer(allow_none=True)


class ResultsSchema(BaseSchema):
    experiment = ma.fields.String()
    status = ma.fields.String()
    computed_at = ma.fields.String()
    control = ma.fields.String()
    primary_metric = ma.fields.String(allow_none=True)
    engine = ma.fields.String()
    sequential = ma.fields.Boolean()
    cuped = ma.fields.Boolean()
    alpha = ma.fields.Float()
    correction = ma.fields.String(allow_none=True)
    units = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())
    multiple_exposures = ma.fields.Integer()
    srm = ma.fields.Nested(SrmSchema)
    power = ma.fields.Nested(PowerSchema, allow_none=True)
    health = ma.fields.List(ma.fields.Nested(HealthCheckSchema))
    metrics = ma.fields.List(ma.fields.Nested(MetricResultSchema))


class TimeseriesVariationSchema(BaseSchema):
    variation = ma.fields.String()
    units = ma.fields.Integer()
    value = ma.fields.Float(allow_none=True)
    absolute = ma.fields.Nested(TestSchema, allow_none=True)
    relative = ma.fields.Nested(TestSchema, allow_none=True)
    chance_to_beat_control = ma.fields.Float(allow_none=True)


class TimeseriesPointSchema(BaseSchema):
    date = ma.fields.String(metadata={"description": "UTC day (YYYY-MM-DD); cumulative up to its end."})
    units = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())
    variations = ma.fields.List(ma.fields.Nested(TimeseriesVariationSchema))


class TimeseriesSchema(BaseSchema):
    experiment = ma.fields.String()
    metric = ma.fields.String()
    type = ma.fields.String()
    computed_at = ma.fields.String()
    engine = ma.fields.String()
    sequential = ma.fields.Boolean()
    alpha = ma.fields.Float()
    control = ma.fields.String()
    days = ma.fields.List(ma.fields.Nested(TimeseriesPointSchema))


ExperimentPageSchema = page_schema(ExperimentSchema, "ExperimentPage")


class SampleSizeSchema(StrictSchema):
    baseline = ma.fields.Float(required=True, metadata={
        "description": "Control conversion rate in (0, 1), or the control mean when stddev is given."})
    stddev = ma.fields.Float(load_default=None, allow_none=True, validate=ma.validate.Range(min=0, min_inclusive=False),
                             metadata={"description": "Per-unit standard deviation of a mean metric."})
    mde = ma.fields.Float(load_default=None, allow_none=True, validate=ma.validate.Range(min=0, min_inclusive=False),
                          metadata={"description": "Minimum detectable effect; relative unless relative=false."})
    units_per_variation = ma.fields.Integer(load_default=None, allow_none=True, validate=ma.validate.Range(min=2),
                                            metadata={"description": "Compute the MDE for this many units."})
    relative = StrictBoolean(load_default=True)
    alpha = ma.fields.Float(load_default=0.05, validate=ma.validate.Range(min=0, max=0.5, min_inclusive=False))
    power = ma.fields.Float(load_default=0.8, validate=ma.validate.Range(min=0, max=1, min_inclusive=False,
                                                                        max_inclusive=False))
    variations = ma.fields.Integer(load_default=2, validate=ma.validate.Range(min=2, max=20),
                                   metadata={"description": "Variations including control, equal weights."})


class SampleSizeResultSchema(SampleSizeSchema):
    class Meta:
        unknown = ma.EXCLUDE

    per_variation = ma.fields.Integer(metadata={"description": "Units per variation for mde at power."})
    total = ma.fields.Integer()
    alpha_per_comparison = ma.fields.Float()
    minimum_detectable_effect = ma.fields.Float(metadata={"description": "For units_per_variation, same scale "
                                                                         "as mde."})
    achieved_power = ma.fields.Float(metadata={"description": "Power of mde at units_per_variation."})
