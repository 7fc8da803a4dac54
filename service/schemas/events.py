"""Shapes of ``POST /sdk/v1/events`` for the OpenAPI document.

The handler does not validate with these (marshmallow per event would be the
bottleneck of ingestion); ``service/ingest.py`` checks each event by hand.
"""

import marshmallow as ma

from .common import BaseSchema


class EventSchema(BaseSchema):
    id = ma.fields.UUID(required=True, metadata={"description": "Client-generated id; replays are deduplicated by it."})
    type = ma.fields.String(required=True, validate=ma.validate.OneOf(["exposure", "track"]))
    ts = ma.fields.String(required=True, metadata={
        "description": "ISO 8601 timestamp, UTC 'Z' or an offset (no offset = UTC); at most 1 hour in the future.",
        "example": "2024-05-01T12:00:00Z"})
    unit = ma.fields.String(required=True, metadata={"description": "The unit id (context attribute value)."})
    experiment = ma.fields.String(metadata={"description": "Exposures: the experiment key."})
    variation = ma.fields.String(metadata={"description": "Exposures: the flag variation key served."})
    event = ma.fields.String(metadata={"description": "Track events: the event key."})
    value = ma.fields.Float(allow_none=True, metadata={"description": "Track events: optional numeric value."})
    attributes = ma.fields.Dict(allow_none=True, metadata={
        "description": "unit_type (the context attribute the unit came from, default 'id') and, "
                       "for exposures, the experiment's dimension values."})


class EvaluationCountSchema(BaseSchema):
    flag = ma.fields.String(required=True)
    variation = ma.fields.String(allow_none=True)
    count = ma.fields.Integer(required=True)
    start = ma.fields.String()
    end = ma.fields.String()


class EventBatchSchema(BaseSchema):
    batch = ma.fields.String(metadata={
        "description": "The batch's id (a UUID fixed before the first attempt and reused on retries): a retried "
                       "batch's evaluations count once (docs/lifecycle.md). Without it, they count every time."})
    events = ma.fields.List(ma.fields.Nested(EventSchema), metadata={"description": "At most 1000 events."})
    evaluations = ma.fields.List(ma.fields.Nested(EvaluationCountSchema), metadata={
        "description": "Per-flag evaluation counts since the last batch (validated leniently)."})


class RejectedEventSchema(BaseSchema):
    index = ma.fields.Integer(required=True)
    error = ma.fields.String(required=True)


class EventsAcceptedSchema(BaseSchema):
    accepted = ma.fields.Integer(required=True, metadata={"description": "Events stored by this request."})
    duplicates = ma.fields.Integer(required=True, metadata={"description": "Valid events already stored before."})
    rejected = ma.fields.List(ma.fields.Nested(RejectedEventSchema), required=True)
