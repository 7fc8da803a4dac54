"""Webhook subscriptions, their deliveries and attempts (docs/webhooks.md)."""

import marshmallow as ma

from ..domain import limits
from ..domain.announce import EVENT_TYPES
from ..domain.webhooks import FORMATS
from ..models.webhook import DELIVERY_STATES
from .common import (
    BaseSchema,
    Key,
    PageQuerySchema,
    StrictBoolean,
    StrictSchema,
    Text,
    at_most,
    page_schema,
)

_EVENTS = ("Event types (" + ", ".join(EVENT_TYPES) + '), or ["*"] for every type.')


class WebhookSchema(StrictSchema):
    id = ma.fields.Integer(dump_only=True)
    url = Text(limits.URL_CHARS, min_chars=1, required=True, metadata={
        "description": "http(s) URL; loopback and private destinations are refused unless WEBHOOK_ALLOW_PRIVATE=1."})
    description = Text(limits.DESCRIPTION_CHARS, load_default="")
    events = ma.fields.List(Text(100, min_chars=1), required=True, validate=at_most(len(EVENT_TYPES), "event types"),
                            metadata={"description": _EVENTS})
    environments = ma.fields.List(Key(), load_default=None, allow_none=True, validate=at_most(100, "environments"),
                                  metadata={"description": "Environment keys, or null for every environment."})
    format = ma.fields.String(load_default="standard", validate=ma.validate.OneOf(FORMATS), metadata={
        "description": "standard: {type, timestamp, data}; slack: {text} (a Slack incoming webhook)."})
    enabled = StrictBoolean(load_default=True)
    disabled_at = ma.fields.DateTime(dump_only=True, allow_none=True)
    disabled_reason = ma.fields.String(dump_only=True, allow_none=True)
    failing_since = ma.fields.DateTime(dump_only=True, allow_none=True)
    previous_secret_expires_at = ma.fields.DateTime(dump_only=True, allow_none=True, metadata={
        "description": "After a rotation, until when the previous secret also signs."})
    created_by = ma.fields.String(dump_only=True)
    version = ma.fields.Integer(dump_only=True)
    created_at = ma.fields.DateTime(dump_only=True)
    updated_at = ma.fields.DateTime(dump_only=True)


class WebhookCreatedSchema(WebhookSchema):
    secret = ma.fields.String(dump_only=True, metadata={
        "description": "whsec_ + base64 of 32 random bytes: the signing secret, shown only in this response."})


class WebhookPatchSchema(StrictSchema):
    url = Text(limits.URL_CHARS, min_chars=1)
    description = Text(limits.DESCRIPTION_CHARS)
    events = ma.fields.List(Text(100, min_chars=1), validate=at_most(len(EVENT_TYPES), "event types"))
    environments = ma.fields.List(Key(), allow_none=True, validate=at_most(100, "environments"))
    format = ma.fields.String(validate=ma.validate.OneOf(FORMATS))
    enabled = StrictBoolean(metadata={"description": "true re-enables a disabled webhook"})


class RotateSecretSchema(StrictSchema):
    overlap_hours = ma.fields.Float(load_default=None, allow_none=True, validate=ma.validate.Range(min=0, max=168),
                                    metadata={"description": "How long the previous secret keeps signing too "
                                                             "(default WEBHOOK_ROTATION_OVERLAP_HOURS, 24)."})


class AttemptSchema(BaseSchema):
    id = ma.fields.Integer()
    attempted_at = ma.fields.DateTime()
    status = ma.fields.Integer(allow_none=True, metadata={"description": "HTTP status; null: no answer (see error)."})
    latency_ms = ma.fields.Integer()
    response = ma.fields.String(metadata={"description": "The answer's first 512 bytes."})
    error = ma.fields.String(allow_none=True)
    manual = ma.fields.Boolean()


class DeliverySchema(BaseSchema):
    id = ma.fields.Integer()
    message_id = ma.fields.String(metadata={"description": "The webhook-id header (the same on every attempt)."})
    type = ma.fields.String()
    environment = ma.fields.String(allow_none=True)
    state = ma.fields.String(metadata={"description": ", ".join(DELIVERY_STATES)})
    attempt_count = ma.fields.Integer()
    next_attempt_at = ma.fields.DateTime(allow_none=True)
    created_at = ma.fields.DateTime()
    last_attempt_at = ma.fields.DateTime(allow_none=True)
    succeeded_at = ma.fields.DateTime(allow_none=True)
    status = ma.fields.Integer(allow_none=True, metadata={"description": "The last attempt's HTTP status."})
    latency_ms = ma.fields.Integer(allow_none=True)
    response = ma.fields.String(allow_none=True)
    error = ma.fields.String(allow_none=True)
    payload = ma.fields.Raw(allow_none=True, metadata={"description": "The body sent."})
    attempts = ma.fields.List(ma.fields.Nested(AttemptSchema), metadata={"description": "Latest 20, newest first."})


class DeliveryQuerySchema(PageQuerySchema):
    state = ma.fields.String(load_default=None, validate=ma.validate.OneOf(DELIVERY_STATES))


WebhookPageSchema = page_schema(WebhookSchema, "WebhookPage")
DeliveryPageSchema = page_schema(DeliverySchema, "WebhookDeliveryPage")
