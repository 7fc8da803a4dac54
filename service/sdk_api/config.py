"""Ruleset delivery: GET /sdk/v1/config (ETag/304), GET /sdk/v1/stream (SSE),
POST /sdk/v1/evaluate (remote evaluation through the same engine).

Under gunicorn the service's asynchronous front (service/asgi.py) answers
``/config`` and ``/stream`` for known SDK keys from memory, before Flask
sees them; these views answer the rest (unknown or refused credentials, a
process that has not synced yet) and document the routes. All of them
write their ETags, SSE frames and bodies with :mod:`pitcrew_edge.protocol`,
which the edge uses too (docs/delivery.md); werkzeug parses
``If-None-Match`` here (weak tags and ``*`` match, as at the edge).
"""

import time

import marshmallow as ma
from flask import Response, current_app, g, request
from flask.views import MethodView
from werkzeug.http import unquote_etag

from pitcrew.evaluation import evaluate
from pitcrew.wire import exposure_attributes, iso_ts
from pitcrew_edge import protocol

from .. import ingest, ruleset
from ..errors import ApiError
from ..extensions import Blueprint
from ..schemas.common import BaseSchema, StrictSchema

blp = Blueprint("sdk", __name__, url_prefix="/sdk/v1", description="For SDKs (SDK key auth).")


@blp.route("/config")
class Config(MethodView):
    @blp.response(200, ma.Schema.from_dict({}, name="Ruleset")(),
                  description="The environment's ruleset (flags, segments, experiments, layers, version).")
    @blp.alt_response(304, description="Not modified since the ETag in If-None-Match.")
    def get(self):
        """The SDK key's environment ruleset; send If-None-Match for a 304"""
        current = ruleset.current(g.environment_id, g.ruleset_version)
        headers = {"ETag": current.etag, "Cache-Control": "no-cache"}
        if request.if_none_match.contains_weak(unquote_etag(current.etag)[0]):
            return Response(status=304, headers=headers)
        return Response(current.body, status=200, mimetype="application/json", headers=headers)


@blp.route("/stream")
class Stream(MethodView):
    @blp.alt_response(200, description="text/event-stream of `config` events carrying the new version.")
    @blp.alt_response(503, description="This process cannot hold the stream now: poll and retry after Retry-After.")
    def get(self):
        """Server-Sent Events: a `config` event with the version on connect and on every change

        Streams are held on the event loop of the service's asynchronous
        worker (service/asgi.py), never on a request thread. This view is
        reached only when that worker could not take the stream (a key
        created a moment ago, a process still starting, or a plain WSGI
        server): the SDK then polls /config and retries the stream.
        """
        raise ApiError(503, "unavailable", "This process cannot hold a stream right now; "
                       "poll /sdk/v1/config and retry the stream.", headers={"Retry-After": "1"})


class EvaluateRequestSchema(StrictSchema):
    context = ma.fields.Dict(required=True)
    flags = ma.fields.List(ma.fields.String(), load_default=None, allow_none=True)


class EvaluationResultSchema(BaseSchema):
    value = ma.fields.Raw(allow_none=True)
    variation = ma.fields.String(allow_none=True)
    reason = ma.fields.String()
    rule_id = ma.fields.String(allow_none=True)
    experiment = ma.fields.String(allow_none=True)
    in_experiment = ma.fields.Boolean()


class EvaluateResponseSchema(BaseSchema):
    flags = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Nested(EvaluationResultSchema))


@blp.route("/evaluate")
class Evaluate(MethodView):
    @blp.arguments(EvaluateRequestSchema)
    @blp.response(200, EvaluateResponseSchema)
    def post(self, data):
        """Evaluate all (or the listed) flags for a context, server-side"""
        current = ruleset.current(g.environment_id)
        compiled = current.compiled
        keys = data["flags"] if data["flags"] is not None else list(compiled.flag_keys)
        results = {key: evaluate(compiled, key, data["context"], None) for key in keys}
        exposures = remote_exposures(g.environment_id, compiled, data["context"], results.values())
        # Exposures and the evaluation counts (flag lifecycle, docs/lifecycle.md) in one transaction.
        ingest.ingest({"events": exposures}, g.environment_id, remote=results)
        # The edge writes the same bytes with the same function (docs/delivery.md).
        return Response(protocol.evaluate_body(results), mimetype="application/json")


# Exposure ids derive from (environment, experiment, unit, variation), so
# evaluating the same unit again stores nothing new: the ingestion's
# idempotency by id is the deduplication an SDK does with its LRU. They are
# an HMAC under the server's secret, so nobody can pre-empt them.


def remote_exposures(environment_id: int, compiled, context, results) -> list[dict]:
    """Exposure events (SDK wire format) for the admitted results of a remote evaluation,
    and the holdout exposures of units held out or measured (docs/holdouts.md)."""
    now = iso_ts(time.time())
    events = []
    secret = current_app.config["SECRET_KEY"]
    for result in results:
        if result.holdout is not None:
            experiment, variation, unit, unit_type = result.holdout
            events.append({
                "id": ingest.server_event_id(secret, environment_id, experiment, unit, variation),
                "type": "exposure", "ts": now, "unit": unit, "experiment": experiment, "variation": variation,
                "attributes": {"unit_type": unit_type},
            })
        if not result.in_experiment:
            continue
        event_id = ingest.server_event_id(secret, environment_id, result.experiment, result.unit,
                                          result.variation)
        events.append({
            "id": event_id, "type": "exposure", "ts": now,
            "unit": result.unit, "experiment": result.experiment, "variation": result.variation,
            "attributes": exposure_attributes(compiled.experiment(result.experiment) or {}, context),
        })
    return events
