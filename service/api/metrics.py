from flask.views import MethodView

from ..auth import actor
from ..domain import metrics as domain
from ..extensions import Blueprint
from ..schemas.metrics import MetricPageSchema, MetricPatchSchema, MetricQuerySchema, MetricSchema
from .common import etag, if_match, page

blp = Blueprint("metrics", __name__, url_prefix="/api/v1/metrics",
                description="Metrics: what experiments measure, defined over track events.")


@blp.route("")
class Metrics(MethodView):
    @blp.arguments(MetricQuerySchema, location="query")
    @blp.response(200, MetricPageSchema)
    def get(self, query):
        """List metrics"""
        return page(domain.list_metrics(**query))

    @blp.arguments(MetricSchema)
    @blp.response(201, MetricSchema)
    def post(self, data):
        """Create a metric"""
        metric = domain.create(actor(), data)
        return metric, 201, etag(metric.version)


@blp.route("/<string:key>")
class MetricItem(MethodView):
    @blp.response(200, MetricSchema)
    def get(self, key):
        """Get a metric"""
        metric = domain.get(key)
        return metric, 200, etag(metric.version)

    @blp.arguments(MetricPatchSchema)
    @blp.response(200, MetricSchema)
    def patch(self, changes, key):
        """Update a metric (results of experiments using it are computed with the new definition)"""
        metric = domain.update(actor(), key, changes, if_match())
        return metric, 200, etag(metric.version)

    @blp.response(204)
    def delete(self, key):
        """Delete a metric that no experiment uses"""
        domain.delete(actor(), key, if_match())
