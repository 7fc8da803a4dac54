from flask.views import MethodView

from ..domain import audit as domain
from ..extensions import Blueprint
from ..schemas.audit import AuditPageSchema, AuditQuerySchema
from .common import page

blp = Blueprint("audit", __name__, url_prefix="/api/v1/audit", description="Who changed what, when.")


@blp.route("")
class Audit(MethodView):
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, AuditPageSchema)
    def get(self, query):
        """List audit entries, newest first (filter by resource, actor, environment, time)"""
        return page(domain.list_entries(**query))
