"""/api/v1/webhooks: subscriptions, secret rotation, the delivery log, redelivery (admin only)."""

from datetime import timedelta

from flask.views import MethodView

from ..auth import actor, requires
from ..domain import webhooks as domain
from ..extensions import Blueprint
from ..schemas.common import PageQuerySchema
from ..schemas.webhooks import (
    DeliveryPageSchema,
    DeliveryQuerySchema,
    DeliverySchema,
    RotateSecretSchema,
    WebhookCreatedSchema,
    WebhookPageSchema,
    WebhookPatchSchema,
    WebhookSchema,
)
from .common import etag, if_match, page

blp = Blueprint("webhooks", __name__, url_prefix="/api/v1/webhooks",
                description="Webhooks: signed HTTP notifications of changes (admin only; docs/webhooks.md).")


@blp.route("")
class Webhooks(MethodView):
    @requires("admin")
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, WebhookPageSchema)
    def get(self, query):
        """List webhooks (never their secrets)"""
        result = domain.list_webhooks(**query)
        return {"items": [domain.to_dict(w) for w in result.items], "next_cursor": result.next_cursor}

    @requires("admin")
    @blp.arguments(WebhookSchema)
    @blp.response(201, WebhookCreatedSchema)
    def post(self, data):
        """Create a webhook; its signing secret is shown only in this response"""
        webhook, secret = domain.create(actor(), data)
        return {**domain.to_dict(webhook), "secret": secret}, 201, etag(webhook.version)


@blp.route("/<int:webhook_id>")
class WebhookItem(MethodView):
    @requires("admin")
    @blp.response(200, WebhookSchema)
    def get(self, webhook_id):
        """Get a webhook"""
        webhook = domain.get(webhook_id)
        return domain.to_dict(webhook), 200, etag(webhook.version)

    @requires("admin")
    @blp.arguments(WebhookPatchSchema)
    @blp.response(200, WebhookSchema)
    def patch(self, changes, webhook_id):
        """Change a webhook (enabled: true re-enables a disabled one)"""
        webhook = domain.update(actor(), webhook_id, changes, if_match())
        return domain.to_dict(webhook), 200, etag(webhook.version)

    @requires("admin")
    @blp.response(204)
    def delete(self, webhook_id):
        """Delete a webhook and its delivery log"""
        domain.delete(actor(), webhook_id, if_match())


@blp.route("/<int:webhook_id>/rotate-secret")
class RotateSecret(MethodView):
    @requires("admin")
    @blp.arguments(RotateSecretSchema)
    @blp.response(200, WebhookCreatedSchema)
    def post(self, data, webhook_id):
        """Replace the signing secret (shown only in this response); the old one also signs during the overlap"""
        hours = data.get("overlap_hours")
        webhook, secret = domain.rotate_secret(actor(), webhook_id, None if hours is None else timedelta(hours=hours),
                                               if_match())
        return {**domain.to_dict(webhook), "secret": secret}, 200, etag(webhook.version)


@blp.route("/<int:webhook_id>/deliveries")
class Deliveries(MethodView):
    @requires("admin")
    @blp.arguments(DeliveryQuerySchema, location="query")
    @blp.response(200, DeliveryPageSchema)
    def get(self, query, webhook_id):
        """The delivery log, newest first: state, attempts with status, latency and the answer's first bytes"""
        return page(domain.list_deliveries(webhook_id, **query))


@blp.route("/<int:webhook_id>/deliveries/<int:delivery_id>")
class DeliveryItem(MethodView):
    @requires("admin")
    @blp.response(200, DeliverySchema)
    def get(self, webhook_id, delivery_id):
        """One delivery with its attempts"""
        return domain.get_delivery(webhook_id, delivery_id)


@blp.route("/<int:webhook_id>/deliveries/<int:delivery_id>/retry")
class RetryDelivery(MethodView):
    @requires("admin")
    @blp.response(202, DeliverySchema)
    def post(self, webhook_id, delivery_id):
        """Send a delivery again (the worker makes one more attempt as soon as it can)"""
        delivery = domain.retry(actor(), webhook_id, delivery_id)
        return domain.get_delivery(webhook_id, delivery.id), 202
