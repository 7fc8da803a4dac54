from flask.views import MethodView

from ..auth import actor
from ..domain import segments as domain
from ..extensions import Blueprint
from ..schemas.segments import (
    SegmentPageSchema,
    SegmentPatchSchema,
    SegmentQuerySchema,
    SegmentSchema,
)
from .common import etag, if_match, page

blp = Blueprint("segments", __name__, url_prefix="/api/v1/segments", description="Reusable audiences.")


@blp.route("")
class Segments(MethodView):
    @blp.arguments(SegmentQuerySchema, location="query")
    @blp.response(200, SegmentPageSchema)
    def get(self, query):
        """List segments"""
        return page(domain.list_segments(**query), domain.to_dicts)

    @blp.arguments(SegmentSchema)
    @blp.response(201, SegmentSchema)
    def post(self, data):
        """Create a segment"""
        segment = domain.create(actor(), data)
        return domain.to_dict(segment), 201, etag(segment.version)


@blp.route("/<string:key>")
class SegmentItem(MethodView):
    @blp.response(200, SegmentSchema)
    def get(self, key):
        """Get a segment"""
        segment = domain.get(key)
        return domain.to_dict(segment), 200, etag(segment.version)

    @blp.arguments(SegmentPatchSchema)
    @blp.response(200, SegmentSchema)
    def patch(self, changes, key):
        """Update a segment"""
        segment = domain.update(actor(), key, changes, if_match())
        return domain.to_dict(segment), 200, etag(segment.version)

    @blp.response(204)
    def delete(self, key):
        """Delete a segment (409 naming the flags that still use it)"""
        domain.delete(actor(), key, if_match())
