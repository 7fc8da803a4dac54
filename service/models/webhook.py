"""Webhooks: subscriptions, their outbox of deliveries, and each delivery's attempts (docs/webhooks.md)."""

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import VERSIONED, JSONType, UTCDateTime, utcnow

DELIVERY_STATES = ("pending", "succeeded", "failed")
FORMATS = ("standard", "slack")


class Webhook(db.Model):
    """A subscription: which events (types, environments) go to which URL.

    ``secret`` (and ``previous_secret`` during a rotation's overlap) are
    stored encrypted under the server secret (service/domain/secretbox.py)."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(sa.String(2048))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    events: Mapped[list] = mapped_column(JSONType)  # event types, or ["*"]
    environments: Mapped[list | None] = mapped_column(JSONType)  # environment keys, or None: all
    format: Mapped[str] = mapped_column(sa.String(20), default="standard")
    enabled: Mapped[bool] = mapped_column(default=True)
    secret: Mapped[str] = mapped_column(sa.Text)
    previous_secret: Mapped[str | None] = mapped_column(sa.Text)
    previous_secret_expires_at: Mapped[object | None] = mapped_column(UTCDateTime)
    # First failed attempt since the last success (a day of failures disables the webhook).
    failing_since: Mapped[object | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[object | None] = mapped_column(UTCDateTime)
    disabled_reason: Mapped[str | None] = mapped_column(sa.Text)
    created_by: Mapped[str] = mapped_column(sa.String(200))
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __mapper_args__ = VERSIONED(version)


class WebhookDelivery(db.Model):
    """One message for one webhook: the outbox row, written in the transaction of the change.

    ``body`` is the exact JSON sent (the same bytes on every attempt, so
    every attempt's signature covers the same content). A delivery is
    claimed by a worker with a lease (``lease_until``) and sent outside any
    transaction; a worker that dies mid-send leaves the lease to expire and
    another worker sends it again (at least once; receivers deduplicate by
    ``webhook-id``, which is ``message_id``)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (sa.UniqueConstraint("webhook_id", "message_id"),
                      sa.Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
                      sa.Index("ix_webhook_deliveries_webhook", "webhook_id", "id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    webhook_id: Mapped[int] = mapped_column(sa.ForeignKey("webhooks.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(sa.String(64))
    type: Mapped[str] = mapped_column(sa.String(100))
    environment: Mapped[str | None] = mapped_column(sa.String(100))
    body: Mapped[str] = mapped_column(sa.Text)
    state: Mapped[str] = mapped_column(sa.String(20), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[object | None] = mapped_column(UTCDateTime)
    manual: Mapped[bool] = mapped_column(default=False)  # the next attempt is a manual redelivery
    last_attempt_at: Mapped[object | None] = mapped_column(UTCDateTime)
    succeeded_at: Mapped[object | None] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)


class WebhookAttempt(db.Model):
    """One HTTP attempt of a delivery: status (or error), latency, the response's first bytes."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (sa.Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    attempted_at: Mapped[object] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[int | None] = mapped_column()
    latency_ms: Mapped[int] = mapped_column(default=0)
    response: Mapped[str] = mapped_column(sa.Text, default="")
    error: Mapped[str | None] = mapped_column(sa.Text)
    manual: Mapped[bool] = mapped_column(default=False)
