"""Flags as code over HTTP: ``GET /api/v1/export`` and ``POST /api/v1/import``."""

from flask import Response, request
from flask.views import MethodView

from ..auth import actor
from ..content import accepts, refuse_unstorable
from ..extensions import Blueprint
from ..flags_as_code.apply import apply
from ..flags_as_code.document import MEDIA_TYPES, YAML_MEDIA_TYPES, dump, parse
from ..flags_as_code.export import export_document
from ..schemas.documents import ExportQuerySchema, ImportQuerySchema, ImportResultSchema

blp = Blueprint("flags_as_code", __name__, url_prefix="/api/v1",
                description="Flags as code: an environment's flags, segments and metrics as one document.")

_DOCUMENT = {"schema": {"type": "object", "description": "The flags-as-code document (docs/flags-as-code.md)."}}


@blp.route("/export")
class Export(MethodView):
    @blp.arguments(ExportQuerySchema, location="query")
    @blp.doc(responses={"200": {"description": "The document",
                                "content": {MEDIA_TYPES["yaml"]: _DOCUMENT, MEDIA_TYPES["json"]: _DOCUMENT}}})
    def get(self, query):
        """Export an environment's flags, segments and metrics (YAML by default)"""
        document = export_document(query["environment"])
        fmt = query["format"]
        return Response(dump(document, fmt), mimetype=MEDIA_TYPES[fmt])


@blp.route("/import")
class Import(MethodView):
    @accepts("application/json", *sorted(YAML_MEDIA_TYPES))
    @blp.arguments(ImportQuerySchema, location="query")
    @blp.response(200, ImportResultSchema)
    @blp.doc(requestBody={"required": True, "content": {MEDIA_TYPES["yaml"]: _DOCUMENT,
                                                         MEDIA_TYPES["json"]: _DOCUMENT}})
    def post(self, query):
        """Apply a document in one transaction, or return its diff with dry_run=true"""
        fmt = "yaml" if request.mimetype in YAML_MEDIA_TYPES else "json"
        raw = parse(request.get_data(cache=False), fmt)
        refuse_unstorable(raw)
        return apply(actor(), raw, dry_run=query["dry_run"])
