"""GET /api/v1/insights: the programme's KPIs with monthly series (docs/lifecycle.md)."""

from flask.views import MethodView

from ..domain import insights as domain
from ..extensions import Blueprint
from ..schemas.insights import InsightsQuerySchema, InsightsSchema

blp = Blueprint("insights", __name__, url_prefix="/api/v1/insights",
                description="Programme insights: experiments, releases, decisions, hygiene.")


@blp.route("")
class Insights(MethodView):
    @blp.arguments(InsightsQuerySchema, location="query")
    @blp.response(200, InsightsSchema)
    def get(self, query):
        """KPIs over a period (default: production, the last 90 days), each with a monthly series"""
        return domain.insights(environment=query["environment"], start=query["start"], end=query["end"])
