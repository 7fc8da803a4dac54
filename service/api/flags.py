from flask.views import MethodView

from ..auth import actor
from ..domain import flags as domain
from ..extensions import Blueprint
from ..schemas.common import PageQuerySchema
from ..schemas.flags import (
    EvaluationsQuerySchema,
    FlagEvaluationsSchema,
    FlagHistoryPageSchema,
    FlagPageSchema,
    FlagPatchSchema,
    FlagQuerySchema,
    FlagSchema,
    RollbackSchema,
    TargetingPatchSchema,
    TargetingSchema,
)
from .common import etag, if_match, page

blp = Blueprint("flags", __name__, url_prefix="/api/v1/flags",
                description="Feature flags, their targeting per environment, history and rollback.")


@blp.route("")
class Flags(MethodView):
    @blp.arguments(FlagQuerySchema, location="query")
    @blp.response(200, FlagPageSchema)
    def get(self, query):
        """List flags (archived ones only with archived=true; lifecycle= filters on the stage)"""
        return page(domain.list_flags(**query), domain.to_dicts)

    @blp.arguments(FlagSchema)
    @blp.response(201, FlagSchema)
    def post(self, data):
        """Create a flag (targeting starts off in every environment)"""
        flag = domain.create(actor(), data)
        return domain.to_dict(flag), 201, etag(flag.version)


@blp.route("/<string:key>")
class FlagItem(MethodView):
    @blp.response(200, FlagSchema)
    def get(self, key):
        """Get a flag with its targeting in every environment"""
        flag = domain.get(key)
        return domain.to_dict(flag), 200, etag(flag.version)

    @blp.arguments(FlagPatchSchema)
    @blp.response(200, FlagSchema)
    def patch(self, changes, key):
        """Update a flag's fields"""
        flag = domain.update(actor(), key, changes, if_match())
        return domain.to_dict(flag), 200, etag(flag.version)

    @blp.response(200, FlagSchema)
    def delete(self, key):
        """Archive a flag (it leaves every SDK ruleset)"""
        flag = domain.archive(actor(), key, if_match())
        return domain.to_dict(flag), 200, etag(flag.version)


@blp.route("/<string:key>/environments/<string:env>")
class FlagTargeting(MethodView):
    @blp.response(200, TargetingSchema)
    def get(self, key, env):
        """Get the flag's targeting in an environment"""
        flag, targeting = domain.get_targeting(key, env)
        return targeting, 200, etag(flag.version)

    @blp.arguments(TargetingSchema)
    @blp.response(200, TargetingSchema)
    def put(self, targeting, key, env):
        """Replace the flag's targeting in an environment"""
        flag, stored = domain.put_targeting(actor(), key, env, targeting, if_match())
        return stored, 200, etag(flag.version)

    @blp.arguments(TargetingPatchSchema)
    @blp.response(200, TargetingSchema)
    def patch(self, changes, key, env):
        """Replace some top-level fields of the targeting (e.g. {"enabled": true})"""
        flag, stored = domain.patch_targeting(actor(), key, env, changes, if_match())
        return stored, 200, etag(flag.version)


@blp.route("/<string:key>/evaluations")
class FlagEvaluations(MethodView):
    @blp.arguments(EvaluationsQuerySchema, location="query")
    @blp.response(200, FlagEvaluationsSchema)
    def get(self, query, key):
        """Per environment: first and last evaluation, and daily evaluation counts (SDK summaries and
        remote evaluations)"""
        return domain.evaluations(key, days=query["days"])


@blp.route("/<string:key>/history")
class FlagHistory(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, FlagHistoryPageSchema)
    def get(self, query, key):
        """Every version of the flag, newest first, with actor, time and diff"""
        return page(domain.history(key, **query))


@blp.route("/<string:key>/rollback")
class FlagRollback(MethodView):
    @blp.arguments(RollbackSchema)
    @blp.response(200, FlagSchema)
    def post(self, data, key):
        """Write a new version equal to an earlier version's content"""
        flag = domain.rollback(actor(), key, data["version"], if_match())
        return domain.to_dict(flag), 200, etag(flag.version)
