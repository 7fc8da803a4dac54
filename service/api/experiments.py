from flask import Response, stream_with_context
from flask.views import MethodView

from ..analysis.export import exposures_csv, results_csv
from ..auth import actor
from ..domain import experiments as domain
from ..extensions import Blueprint
from ..schemas.experiments import (
    ConcludeSchema,
    ExperimentPageSchema,
    ExperimentPatchSchema,
    ExperimentQuerySchema,
    ExperimentSchema,
    ResultsQuerySchema,
    ResultsSchema,
    TimeseriesQuerySchema,
    TimeseriesSchema,
)
from .common import etag, if_match, page

blp = Blueprint("experiments", __name__, url_prefix="/api/v1/experiments",
                description="Experiments: definition, lifecycle, results and exports.")


@blp.route("")
class Experiments(MethodView):
    @blp.arguments(ExperimentQuerySchema, location="query")
    @blp.response(200, ExperimentPageSchema)
    def get(self, query):
        """List experiments (filter by status, flag, environment)"""
        return page(domain.list_experiments(**query), domain.to_dicts)

    @blp.arguments(ExperimentSchema)
    @blp.response(201, ExperimentSchema)
    def post(self, data):
        """Create a draft experiment; its rule is added to the flag's targeting in the environment"""
        experiment = domain.create(actor(), data)
        return domain.to_dict(experiment), 201, etag(experiment.version)


@blp.route("/<string:key>")
class ExperimentItem(MethodView):
    @blp.response(200, ExperimentSchema)
    def get(self, key):
        """Get an experiment"""
        experiment = domain.get(key)
        return domain.to_dict(experiment), 200, etag(experiment.version)

    @blp.arguments(ExperimentPatchSchema)
    @blp.response(200, ExperimentSchema)
    def patch(self, changes, key):
        """Update an experiment (what may change depends on its status)"""
        experiment = domain.update(actor(), key, changes, if_match())
        return domain.to_dict(experiment), 200, etag(experiment.version)

    @blp.response(204)
    def delete(self, key):
        """Delete an experiment that is not running, with its exposures"""
        domain.delete(actor(), key, if_match())


@blp.route("/<string:key>/start")
class ExperimentStart(MethodView):
    @blp.response(200, ExperimentSchema)
    def post(self, key):
        """Start a draft experiment (needs a primary metric; layer ranges must not overlap)"""
        experiment = domain.start(actor(), key, if_match())
        return domain.to_dict(experiment), 200, etag(experiment.version)


@blp.route("/<string:key>/stop")
class ExperimentStop(MethodView):
    @blp.response(200, ExperimentSchema)
    def post(self, key):
        """Stop a running experiment (results keep the data up to now)"""
        experiment = domain.stop(actor(), key, if_match())
        return domain.to_dict(experiment), 200, etag(experiment.version)


@blp.route("/<string:key>/conclude")
class ExperimentConclude(MethodView):
    @blp.arguments(ConcludeSchema)
    @blp.response(200, ExperimentSchema)
    def post(self, data, key):
        """Record the decision (ship | rollback | iterate) and optionally release a variation"""
        experiment = domain.conclude(actor(), key, data, if_match())
        return domain.to_dict(experiment), 200, etag(experiment.version)


@blp.route("/<string:key>/results")
class ExperimentResults(MethodView):
    @blp.arguments(ResultsQuerySchema, location="query")
    @blp.response(200, ResultsSchema, description="JSON, or text/csv with format=csv.")
    def get(self, query, key):
        """Results per metric and variation, with SRM and health checks (format=json|csv)"""
        fmt = query.pop("format")
        document = domain.results(key, **query)
        if fmt == "csv":
            return Response(results_csv(document), mimetype="text/csv", headers={
                "Content-Disposition": f'attachment; filename="{key}-results.csv"'})
        return document


@blp.route("/<string:key>/results/timeseries")
class ExperimentResultsTimeseries(MethodView):
    @blp.arguments(TimeseriesQuerySchema, location="query")
    @blp.response(200, TimeseriesSchema)
    def get(self, query, key):
        """Daily cumulative estimates and intervals of the primary metric (or metric=), per UTC day"""
        return domain.timeseries(key, **query)


@blp.route("/<string:key>/exposures")
class ExperimentExposures(MethodView):
    @blp.response(200, description="text/csv: unit, variation, first_exposed_at, multiple_variations, "
                                   "then the experiment's dimensions.")
    def get(self, key):
        """First exposure of every unit, streamed as CSV"""
        dimensions, rows = domain.first_exposures(key)
        return Response(stream_with_context(exposures_csv(rows, dimensions)), mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{key}-exposures.csv"'})
