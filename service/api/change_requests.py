from flask import g
from flask.views import MethodView

from ..auth import actor
from ..domain import change_requests as domain
from ..extensions import Blueprint
from ..schemas.process import (
    ApplySchema,
    ChangeRequestCreateSchema,
    ChangeRequestPageSchema,
    ChangeRequestPatchSchema,
    ChangeRequestQuerySchema,
    ChangeRequestSchema,
    ReviewSchema,
)
from .common import etag, if_match, page

blp = Blueprint("change_requests", __name__, url_prefix="/api/v1/change-requests",
                description="Reviewed changes in protected environments (docs/process.md).")


def is_admin() -> bool:
    return g.token.role == "admin"


def _one(request, status: int = 200):
    return domain.to_dict(request), status, etag(request.version)


@blp.route("")
class ChangeRequests(MethodView):
    @blp.arguments(ChangeRequestQuerySchema, location="query")
    @blp.response(200, ChangeRequestPageSchema)
    def get(self, query):
        """List change requests, newest first (filter by flag, environment, state)"""
        return page(domain.list_requests(**query), domain.to_dicts)

    @blp.arguments(ChangeRequestCreateSchema)
    @blp.response(201, ChangeRequestSchema)
    def post(self, data):
        """Open a change request: a targeting, a patch, a rollback, a guarded rollout or an experiment action"""
        return _one(domain.create(actor(), data), 201)


@blp.route("/<int:request_id>")
class ChangeRequestItem(MethodView):
    @blp.response(200, ChangeRequestSchema)
    def get(self, request_id):
        """Get a change request with its reviews and its diff against the live targeting"""
        return _one(domain.get(request_id))

    @blp.arguments(ChangeRequestPatchSchema)
    @blp.response(200, ChangeRequestSchema)
    def patch(self, changes, request_id):
        """Edit a change request (author or admin): approvals reset to zero, re-based on the live flag"""
        return _one(domain.update(actor(), request_id, changes, admin=is_admin(), if_match=if_match()))


@blp.route("/<int:request_id>/reviews")
class ChangeRequestReviews(MethodView):
    @blp.arguments(ReviewSchema)
    @blp.response(201, ChangeRequestSchema)
    def post(self, data, request_id):
        """Approve or reject (not the author; each reviewer counts once; `revision`: the one you read)"""
        return _one(domain.review(actor(), request_id, data["decision"], data["comment"],
                                  revision=data["revision"]), 201)


@blp.route("/<int:request_id>/apply")
class ChangeRequestApply(MethodView):
    @blp.arguments(ApplySchema, required=False)
    @blp.response(200, ChangeRequestSchema)
    def post(self, data, request_id):
        """Apply now, or at `at` (needs the approvals; 409 if the flag changed since the request's base)"""
        return _one(domain.apply(actor(), request_id, at=data.get("at"), bypass=data.get("bypass", False),
                                 admin=is_admin(), if_match=if_match()))


@blp.route("/<int:request_id>/cancel")
class ChangeRequestCancel(MethodView):
    @blp.response(200, ChangeRequestSchema)
    def post(self, request_id):
        """Cancel an open, approved or scheduled request (author or admin)"""
        return _one(domain.cancel(actor(), request_id, admin=is_admin(), if_match=if_match()))
