"""Change requests, scheduled changes and guarded rollouts (docs/process.md)."""

from datetime import UTC

import marshmallow as ma

from ..domain.change_requests import EXPERIMENT_ACTIONS
from ..models.process import CHANGE_REQUEST_STATES, ROLLOUT_STATES, SCHEDULE_STATES
from .common import BaseSchema, PageQuerySchema, StrictSchema, page_schema
from .experiments import DecisionSchema
from .flags import DiffEntrySchema, RollbackSchema, TargetingPatchSchema, TargetingSchema

MAX_COMMENT = 5000


def _comment(**kwargs):
    return ma.fields.String(validate=ma.validate.Length(max=MAX_COMMENT), **kwargs)


def _when(**kwargs):
    return ma.fields.AwareDateTime(default_timezone=UTC, **kwargs)


# ---------------------------------------------------------------- change requests

class ExperimentActionSchema(StrictSchema):
    key = ma.fields.String(required=True, metadata={"description": "The experiment."})
    action = ma.fields.String(required=True, validate=ma.validate.OneOf(EXPERIMENT_ACTIONS))
    decision = ma.fields.Nested(DecisionSchema, metadata={"description": "conclude only (required there)."})
    released_variation = ma.fields.String(allow_none=True, metadata={"description": "conclude only."})


class ChangeRequestCreateSchema(StrictSchema):
    flag = ma.fields.String(metadata={"description": "Required, except for an experiment action (its flag)."})
    environment = ma.fields.String(metadata={
        "description": "Required, except for an experiment action (its environment)."})
    targeting = ma.fields.Nested(TargetingSchema, metadata={"description": "The whole new targeting."})
    patch = ma.fields.Nested(TargetingPatchSchema, metadata={
        "description": "Top-level targeting fields that replace the live ones when applied."})
    rollout = ma.fields.Nested("GuardedRolloutCreateSchema", metadata={
        "description": "A guarded rollout to start when applied (body of POST .../rollouts)."})
    experiment = ma.fields.Nested(ExperimentActionSchema, metadata={
        "description": "Start, stop or conclude an experiment when applied."})
    rollback = ma.fields.Nested(RollbackSchema, metadata={
        "description": "Restore the environment's targeting of an earlier flag version (stored as targeting)."})
    comment = _comment(load_default="")


class ChangeRequestPatchSchema(StrictSchema):
    targeting = ma.fields.Nested(TargetingSchema)
    patch = ma.fields.Nested(TargetingPatchSchema)
    rollout = ma.fields.Nested("GuardedRolloutCreateSchema")
    experiment = ma.fields.Nested(ExperimentActionSchema)
    comment = _comment()


class ReviewSchema(StrictSchema):
    decision = ma.fields.String(required=True, validate=ma.validate.OneOf(("approve", "reject")))
    comment = _comment(load_default="")
    revision = ma.fields.Integer(load_default=None, validate=ma.validate.Range(min=1, max=2**31 - 1), metadata={
        "description": "The revision you reviewed: refused (409) if the request was edited since."})


class ApplySchema(StrictSchema):
    at = _when(load_default=None, metadata={"description": "Apply at this time (the request is scheduled)."})
    bypass = ma.fields.Boolean(load_default=False, metadata={
        "description": "Admins only: apply without the required approvals (audited as a bypass)."})


class ReviewEntrySchema(BaseSchema):
    reviewer = ma.fields.String()
    decision = ma.fields.String()
    comment = ma.fields.String()
    revision = ma.fields.Integer()
    created_at = ma.fields.DateTime()


class ChangeRequestSchema(BaseSchema):
    id = ma.fields.Integer()
    flag = ma.fields.String()
    environment = ma.fields.String()
    state = ma.fields.String(metadata={"description": ", ".join(CHANGE_REQUEST_STATES)})
    author = ma.fields.String()
    comment = ma.fields.String()
    targeting = ma.fields.Dict(allow_none=True)
    patch = ma.fields.Dict(allow_none=True)
    rollout = ma.fields.Dict(allow_none=True)
    experiment = ma.fields.Dict(allow_none=True, metadata={
        "description": "An experiment action: {key, action, decision, released_variation}."})
    rollback_version = ma.fields.Integer(allow_none=True, metadata={
        "description": "The flag version whose targeting `targeting` restores (a rollback proposal)."})
    base_version = ma.fields.Integer(metadata={
        "description": "The flag version the request is based on (an experiment action: the experiment's)."})
    flag_version = ma.fields.Integer(metadata={"description": "The flag's version now."})
    experiment_version = ma.fields.Integer(allow_none=True, metadata={
        "description": "An experiment action: the experiment's version now (null once deleted)."})
    conflict = ma.fields.Boolean(metadata={"description": "The base changed since base_version (apply gets 409)."})
    revision = ma.fields.Integer()
    approvals = ma.fields.Integer()
    approvals_required = ma.fields.Integer()
    approved_by = ma.fields.List(ma.fields.String())
    reviews = ma.fields.List(ma.fields.Nested(ReviewEntrySchema))
    bypass = ma.fields.Boolean()
    at = ma.fields.DateTime(allow_none=True)
    applied_at = ma.fields.DateTime(allow_none=True)
    applied_by = ma.fields.String(allow_none=True)
    applied_version = ma.fields.Integer(allow_none=True)
    closed_by = ma.fields.String(allow_none=True)
    failure_reason = ma.fields.String(allow_none=True)
    live = ma.fields.Dict(metadata={"description": "The environment's live targeting."})
    proposed = ma.fields.Dict(metadata={"description": "The targeting if the request were applied now."})
    diff = ma.fields.List(ma.fields.Nested(DiffEntrySchema), metadata={"description": "live -> proposed"})
    version = ma.fields.Integer()
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()


class ChangeRequestQuerySchema(PageQuerySchema):
    flag = ma.fields.String(load_default=None)
    experiment = ma.fields.String(load_default=None, metadata={"description": "Requests acting on this experiment."})
    environment = ma.fields.String(load_default=None)
    state = ma.fields.String(load_default=None, validate=ma.validate.OneOf(CHANGE_REQUEST_STATES))


ChangeRequestPageSchema = page_schema(ChangeRequestSchema, "ChangeRequestPage")


# ---------------------------------------------------------------- scheduled changes

class ScheduleCreateSchema(StrictSchema):
    at = _when(required=True)
    patch = ma.fields.Nested(TargetingPatchSchema, required=True)
    comment = _comment(load_default="")


class ScheduleSchema(BaseSchema):
    id = ma.fields.Integer()
    flag = ma.fields.String()
    environment = ma.fields.String()
    at = ma.fields.DateTime()
    state = ma.fields.String(metadata={"description": ", ".join(SCHEDULE_STATES)})
    kind = ma.fields.String(metadata={"description": "patch | change_request"})
    patch = ma.fields.Dict(allow_none=True)
    targeting = ma.fields.Dict(allow_none=True)
    change_request = ma.fields.Integer(allow_none=True)
    author = ma.fields.String()
    comment = ma.fields.String()
    applied_at = ma.fields.DateTime(allow_none=True)
    applied_version = ma.fields.Integer(allow_none=True)
    failure_reason = ma.fields.String(allow_none=True)
    version = ma.fields.Integer()
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()


class ScheduleQuerySchema(PageQuerySchema):
    state = ma.fields.String(load_default=None, validate=ma.validate.OneOf(SCHEDULE_STATES))


class FlagScheduleQuerySchema(ScheduleQuerySchema):
    environment = ma.fields.String(load_default=None)


SchedulePageSchema = page_schema(ScheduleSchema, "SchedulePage")


# ---------------------------------------------------------------- guarded rollouts

class StepSchema(StrictSchema):
    percent = ma.fields.Float(required=True, validate=ma.validate.Range(min=0, max=100, min_inclusive=False))
    hold_hours = ma.fields.Float(required=True, validate=ma.validate.Range(min=0, max=24 * 366))


class GuardedRolloutCreateSchema(StrictSchema):
    variation = ma.fields.String(required=True, metadata={"description": "The variation rolled out."})
    from_variation = ma.fields.String(required=True, metadata={
        "description": "The variation the fallthrough serves now (restored on rollback)."})
    steps = ma.fields.List(ma.fields.Nested(StepSchema), required=True, metadata={
        "description": "Increasing percents ending with 100 (hold 0); each held hold_hours before the next."})
    guardrails = ma.fields.List(ma.fields.String(), load_default=list, validate=ma.validate.Length(max=20),
                                metadata={"description": "Metric keys watched for harm."})
    alpha = ma.fields.Float(load_default=0.05, validate=ma.validate.Range(min=0, max=0.5, min_inclusive=False),
                            metadata={"description": "False-rollback rate bound (split over the guardrails)."})
    comment = _comment(load_default="")


class GuardedRolloutCheckSchema(BaseSchema):
    id = ma.fields.Integer()
    checked_at = ma.fields.DateTime()
    step = ma.fields.Integer()
    percent = ma.fields.Float()
    decision = ma.fields.String(metadata={"description": "hold | advance | complete | rollback"})
    units = ma.fields.Dict()
    metrics = ma.fields.List(ma.fields.Dict(), metadata={
        "description": "Per guardrail: units, values, estimate (absolute lift), ci, p_value, harm."})


class GuardedRolloutSchema(BaseSchema):
    id = ma.fields.Integer()
    flag = ma.fields.String()
    environment = ma.fields.String()
    state = ma.fields.String(metadata={"description": ", ".join(ROLLOUT_STATES)})
    variation = ma.fields.String()
    from_variation = ma.fields.String()
    steps = ma.fields.List(ma.fields.Dict())
    guardrails = ma.fields.List(ma.fields.String())
    alpha = ma.fields.Float()
    step = ma.fields.Integer(metadata={"description": "Index of the current step."})
    percent = ma.fields.Float(metadata={"description": "Share of the fallthrough's units served variation."})
    step_started_at = ma.fields.DateTime()
    step_ends_at = ma.fields.DateTime(allow_none=True)
    next_check_at = ma.fields.DateTime(allow_none=True)
    last_checked_at = ma.fields.DateTime(allow_none=True)
    experiment = ma.fields.String(allow_none=True, metadata={
        "description": "The rollout's own experiment (its results are the guardrail numbers)."})
    rule_id = ma.fields.String()
    reason = ma.fields.String(allow_none=True)
    author = ma.fields.String()
    comment = ma.fields.String()
    latest_check = ma.fields.Nested(GuardedRolloutCheckSchema, allow_none=True)
    finished_at = ma.fields.DateTime(allow_none=True)
    version = ma.fields.Integer()
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()


class GuardedRolloutQuerySchema(PageQuerySchema):
    state = ma.fields.String(load_default=None, validate=ma.validate.OneOf(ROLLOUT_STATES))


class FlagGuardedRolloutQuerySchema(GuardedRolloutQuerySchema):
    environment = ma.fields.String(load_default=None)


GuardedRolloutPageSchema = page_schema(GuardedRolloutSchema, "GuardedRolloutPage")
GuardedRolloutCheckPageSchema = page_schema(GuardedRolloutCheckSchema, "GuardedRolloutCheckPage")
