"""Scheduled changes and guarded rollouts of a flag in an environment."""

from flask.views import MethodView

from ..auth import actor
from ..domain import rollouts as rollout_domain
from ..domain import schedules as schedule_domain
from ..extensions import Blueprint
from ..schemas.common import PageQuerySchema
from ..schemas.process import (
    FlagGuardedRolloutQuerySchema,
    FlagScheduleQuerySchema,
    GuardedRolloutCheckPageSchema,
    GuardedRolloutCreateSchema,
    GuardedRolloutPageSchema,
    GuardedRolloutQuerySchema,
    GuardedRolloutSchema,
    ScheduleCreateSchema,
    SchedulePageSchema,
    ScheduleQuerySchema,
    ScheduleSchema,
)
from .common import etag, if_match, page

blp = Blueprint("flag_process", __name__, url_prefix="/api/v1/flags",
                description="Scheduled changes and guarded rollouts (docs/process.md).")


@blp.route("/<string:key>/schedules")
class FlagSchedules(MethodView):
    @blp.arguments(FlagScheduleQuerySchema, location="query")
    @blp.response(200, SchedulePageSchema)
    def get(self, query, key):
        """The flag's scheduled changes in every environment, newest first"""
        environment = query.pop("environment")
        items = schedule_domain.list_for_flag(key, environment, **query)
        return page(items, schedule_domain.to_dicts)


@blp.route("/<string:key>/environments/<string:env>/schedules")
class Schedules(MethodView):
    @blp.arguments(ScheduleQuerySchema, location="query")
    @blp.response(200, SchedulePageSchema)
    def get(self, query, key, env):
        """The flag's scheduled changes in the environment, newest first"""
        return page(schedule_domain.list_for_flag(key, env, **query), schedule_domain.to_dicts)

    @blp.arguments(ScheduleCreateSchema)
    @blp.response(201, ScheduleSchema)
    def post(self, data, key, env):
        """Schedule a targeting patch for a time (protected environments: use a change request)"""
        item = schedule_domain.create(actor(), key, env, data)
        return schedule_domain.to_dict(item), 201, etag(item.version)


@blp.route("/<string:key>/environments/<string:env>/schedules/<int:schedule_id>")
class ScheduleItem(MethodView):
    @blp.response(200, ScheduleSchema)
    def get(self, key, env, schedule_id):
        """Get a scheduled change"""
        item = schedule_domain.get(key, env, schedule_id)
        return schedule_domain.to_dict(item), 200, etag(item.version)


@blp.route("/<string:key>/environments/<string:env>/schedules/<int:schedule_id>/cancel")
class ScheduleCancel(MethodView):
    @blp.response(200, ScheduleSchema)
    def post(self, key, env, schedule_id):
        """Cancel a pending scheduled change (a scheduled change request goes back to approved)"""
        item = schedule_domain.cancel(actor(), key, env, schedule_id, if_match())
        return schedule_domain.to_dict(item), 200, etag(item.version)


@blp.route("/<string:key>/rollouts")
class FlagRollouts(MethodView):
    @blp.arguments(FlagGuardedRolloutQuerySchema, location="query")
    @blp.response(200, GuardedRolloutPageSchema)
    def get(self, query, key):
        """The flag's guarded rollouts in every environment, newest first"""
        environment = query.pop("environment")
        items = rollout_domain.list_for_flag(key, environment, **query)
        return page(items, rollout_domain.to_dicts)


@blp.route("/<string:key>/environments/<string:env>/rollouts")
class Rollouts(MethodView):
    @blp.arguments(GuardedRolloutQuerySchema, location="query")
    @blp.response(200, GuardedRolloutPageSchema)
    def get(self, query, key, env):
        """The flag's guarded rollouts in the environment, newest first"""
        return page(rollout_domain.list_for_flag(key, env, **query), rollout_domain.to_dicts)

    @blp.arguments(GuardedRolloutCreateSchema)
    @blp.response(201, GuardedRolloutSchema)
    def post(self, data, key, env):
        """Start a guarded rollout of the fallthrough from from_variation to variation"""
        rollout = rollout_domain.create(actor(), key, env, data)
        return rollout_domain.to_dict(rollout), 201, etag(rollout.version)


@blp.route("/<string:key>/environments/<string:env>/rollouts/<int:rollout_id>")
class RolloutItem(MethodView):
    @blp.response(200, GuardedRolloutSchema)
    def get(self, key, env, rollout_id):
        """Get a guarded rollout: step, percent, state, the latest guardrail check, the reason it ended"""
        rollout = rollout_domain.get(key, env, rollout_id)
        return rollout_domain.to_dict(rollout), 200, etag(rollout.version)


@blp.route("/<string:key>/environments/<string:env>/rollouts/<int:rollout_id>/checks")
class RolloutChecks(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, GuardedRolloutCheckPageSchema)
    def get(self, query, key, env, rollout_id):
        """Every guardrail check of the rollout, newest first (the numbers behind each decision)"""
        checks = rollout_domain.list_checks(key, env, rollout_id, **query)
        return page(checks, rollout_domain.checks_to_dicts)


@blp.route("/<string:key>/environments/<string:env>/rollouts/<int:rollout_id>/cancel")
class RolloutCancel(MethodView):
    @blp.response(200, GuardedRolloutSchema)
    def post(self, key, env, rollout_id):
        """Stop a running rollout and serve from_variation again"""
        rollout = rollout_domain.cancel(actor(), key, env, rollout_id, if_match())
        return rollout_domain.to_dict(rollout), 200, etag(rollout.version)
