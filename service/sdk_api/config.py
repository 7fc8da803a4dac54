"""Ruleset delivery: GET /sdk/v1/config (ETag/304), GET /sdk/v1/stream (SSE),
POST /sdk/v1/evaluate (remote evaluation through the same engine)."""

import json
import time
import uuid

import marshmallow as ma
from flask import Response, current_app, g, request, stream_with_context
from flask.views import MethodView
from flask_smorest import Blueprint

from pitcrew.evaluation import evaluate
from pitcrew.wire import exposure_attributes, iso_ts

from .. import ingest, ruleset
from ..extensions import db
from ..schemas.common import StrictSchema

blp = Blueprint("sdk", __name__, url_prefix="/sdk/v1", description="For SDKs (SDK key auth).")


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    return header.strip() == "*" or etag in [part.strip().removeprefix("W/") for part in header.split(",")]


@blp.route("/config")
class Config(MethodView):
    @blp.response(200, ma.Schema.from_dict({}, name="Ruleset")(),
                  description="The environment's ruleset (flags, segments, experiments, layers, version).")
    @blp.alt_response(304, description="Not modified since the ETag in If-None-Match.")
    def get(self):
        """The SDK key's environment ruleset; send If-None-Match for a 304"""
        current = ruleset.current(g.environment_id, g.ruleset_version)
        headers = {"ETag": current.etag, "Cache-Control": "no-cache"}
        if _etag_matches(request.headers.get("If-None-Match"), current.etag):
            return Response(status=304, headers=headers)
        return Response(current.body, status=200, mimetype="application/json", headers=headers)


@blp.route("/stream")
class Stream(MethodView):
    @blp.alt_response(200, description="text/event-stream of `config` events carrying the new version.")
    def get(self):
        """Server-Sent Events: a `config` event with the version on connect and on every change"""
        environment_id = g.environment_id
        poll = current_app.config["STREAM_POLL_INTERVAL"]
        heartbeat = current_app.config["STREAM_HEARTBEAT"]
        db.session.remove()  # hold no connection for the life of the stream

        @stream_with_context
        def events():
            last = None
            last_sent = time.monotonic()
            while True:
                version = ruleset.current_version(environment_id)
                db.session.remove()
                if version is None:
                    yield "event: error\ndata: {\"error\": \"environment deleted\"}\n\n"
                    return
                if version != last:
                    last = version
                    last_sent = time.monotonic()
                    yield f"event: config\ndata: {json.dumps({'version': version})}\n\n"
                elif time.monotonic() - last_sent >= heartbeat:
                    last_sent = time.monotonic()
                    yield ": keepalive\n\n"
                time.sleep(poll)

        return Response(events(), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class EvaluateRequestSchema(StrictSchema):
    context = ma.fields.Dict(required=True)
    flags = ma.fields.List(ma.fields.String(), load_default=None, allow_none=True)


class EvaluationResultSchema(ma.Schema):
    value = ma.fields.Raw(allow_none=True)
    variation = ma.fields.String(allow_none=True)
    reason = ma.fields.String()
    rule_id = ma.fields.String(allow_none=True)
    experiment = ma.fields.String(allow_none=True)
    in_experiment = ma.fields.Boolean()


class EvaluateResponseSchema(ma.Schema):
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
        if exposures:
            ingest.ingest({"events": exposures}, g.environment_id)
        return {"flags": {key: result.to_dict() for key, result in results.items()}}


# Exposure ids derive from (environment, experiment, unit, variation), so
# evaluating the same unit again stores nothing new: the ingestion's
# idempotency by id is the deduplication an SDK does with its LRU.
_EXPOSURE_NAMESPACE = uuid.UUID("4f0b7c52-2b1e-4c1b-9a57-0d7e3c2a9b11")


def remote_exposures(environment_id: int, compiled, context, results) -> list[dict]:
    """Exposure events (SDK wire format) for the admitted results of a remote evaluation."""
    now = iso_ts(time.time())
    events = []
    for result in results:
        if not result.in_experiment:
            continue
        name = f"{environment_id}:{result.experiment}:{result.unit}:{result.variation}"
        events.append({
            "id": str(uuid.uuid5(_EXPOSURE_NAMESPACE, name)), "type": "exposure", "ts": now,
            "unit": result.unit, "experiment": result.experiment, "variation": result.variation,
            "attributes": exposure_attributes(compiled.experiment(result.experiment) or {}, context),
        })
    return events
