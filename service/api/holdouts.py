from flask import Response
from flask.views import MethodView

from ..analysis.export import results_csv
from ..auth import actor
from ..domain import holdouts as domain
from ..extensions import Blueprint
from ..schemas.holdouts import (
    HoldoutPageSchema,
    HoldoutPatchSchema,
    HoldoutQuerySchema,
    HoldoutResultsQuerySchema,
    HoldoutResultsSchema,
    HoldoutSchema,
)
from .common import etag, if_match

blp = Blueprint("holdouts", __name__, url_prefix="/api/v1/holdouts",
                description="Holdouts: a share of an environment's units kept on the off variation of the flags "
                            "that name it, and their cumulative results (docs/holdouts.md).")


@blp.route("")
class Holdouts(MethodView):
    @blp.arguments(HoldoutQuerySchema, location="query")
    @blp.response(200, HoldoutPageSchema)
    def get(self, query):
        """List holdouts (filter by environment)"""
        result = domain.list_holdouts(**query)
        return {"items": domain.to_dicts(result.items), "next_cursor": result.next_cursor}

    @blp.arguments(HoldoutSchema)
    @blp.response(201, HoldoutSchema)
    def post(self, data):
        """Create a holdout in an environment"""
        holdout = domain.create(actor(), data)
        return domain.to_dict(holdout), 201, etag(holdout.version)


@blp.route("/<string:key>")
class HoldoutItem(MethodView):
    @blp.response(200, HoldoutSchema)
    def get(self, key):
        """Get a holdout, with the flags and experiments that join it"""
        holdout = domain.get(key)
        return domain.to_dict(holdout), 200, etag(holdout.version)

    @blp.arguments(HoldoutPatchSchema)
    @blp.response(200, HoldoutSchema)
    def patch(self, changes, key):
        """Update a holdout (percent and unit only while no flag names it and it has recorded no unit)"""
        holdout = domain.update(actor(), key, changes, if_match())
        return domain.to_dict(holdout), 200, etag(holdout.version)

    @blp.response(204)
    def delete(self, key):
        """Delete a holdout and its recorded units (409 naming the flags that still name it)"""
        domain.delete(actor(), key, if_match())


@blp.route("/<string:key>/results")
class HoldoutResults(MethodView):
    @blp.arguments(HoldoutResultsQuerySchema, location="query")
    @blp.response(200, HoldoutResultsSchema, description="JSON, or text/csv with format=csv.")
    def get(self, query, key):
        """Held-out units against the measured slice on the chosen metrics (section 6 methods)"""
        fmt = query.pop("format")
        document = domain.results(key, metrics=query.pop("metric"), **query)
        if fmt == "csv":
            return Response(results_csv(document), mimetype="text/csv", headers={
                "Content-Disposition": f'attachment; filename="holdout-{key}-results.csv"'})
        return document
