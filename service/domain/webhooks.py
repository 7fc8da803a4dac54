"""Webhooks: subscriptions, the outbox, the delivery state machine (docs/webhooks.md).

* **Subscriptions** (:func:`create`, :func:`update`, :func:`delete`,
  :func:`rotate_secret`): a URL, event types (or ``["*"]``), environments
  (or ``None``: all), a format (``standard`` or ``slack``). The signing
  secret (``whsec_`` + base64 of 32 random bytes) is returned once, by the
  call that makes it, and stored encrypted (service/domain/secretbox.py).
* **The outbox**: :func:`_outbox` listens to every announcement
  (service/domain/announce.py) and, in the transaction of the change,
  writes one delivery row per matching enabled webhook: a change that rolls
  back leaves no delivery.
* **Delivery** (driven by the worker, which sends the HTTP request itself,
  service/webhook_sender.py): :func:`claim_next` leases one due delivery and
  commits; the request is sent outside any transaction; :func:`record`
  stores the attempt and decides what follows: done, retried after a
  backoff with jitter (:data:`RETRY_DELAYS`, over more than 24 hours), or
  failed. A ``410 Gone`` disables the webhook at once; failures without a
  success for :data:`DISABLE_AFTER` disable it too.
* **Destinations**: only ``http``/``https`` URLs whose host resolves to
  public addresses, unless :data:`settings` ``.allow_private``
  (``WEBHOOK_ALLOW_PRIVATE=1``); checked when the URL is written and again
  before every attempt, on the addresses the request then connects to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import random
import secrets
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import sqlalchemy as sa

from ..extensions import db
from ..models import AuditEntry, Environment, Webhook, WebhookAttempt, WebhookDelivery
from ..models.types import utcnow
from . import Actor, audit, limits, secretbox, unit_of_work
from .announce import EVENT_TYPES, add_listener
from .concurrency import begin_exclusive, locked
from .errors import Conflict, NotFound, ValidationFailed
from .locking import for_update
from .pagination import Page, paginate
from .versioning import check_version

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
FORMATS = ("standard", "slack")
# Seconds before each retry (Standard Webhooks' reference schedule): 8 attempts over
# about 27.6 hours; each delay is scaled by a random factor in JITTER, so the last
# attempt comes after at least 24.8 hours.
RETRY_DELAYS = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
JITTER = (0.9, 1.1)
DISABLE_AFTER = timedelta(hours=24)
EXCERPT_BYTES = 512
ATTEMPTS_SHOWN = 20
WORKER = "worker"


@dataclass
class Settings:
    """Set from the configuration by ``create_app`` (README "Configuration")."""

    allow_private: bool = False  # WEBHOOK_ALLOW_PRIVATE
    timeout: float = 10.0  # WEBHOOK_TIMEOUT: seconds for a whole attempt
    rotation_overlap: timedelta = timedelta(hours=24)  # both secrets sign for this long after a rotation
    retention: timedelta = timedelta(days=30)  # finished deliveries kept this long
    max_in_flight: int = 2  # attempts in flight per webhook, so one slow endpoint cannot take every sender

    @property
    def lease(self) -> timedelta:
        """How long a claimed delivery is reserved: three times an attempt's hard deadline."""
        return timedelta(seconds=3 * self.timeout)


settings = Settings()


# ---------------------------------------------------------------- secrets and signatures

def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret: the base64-decoded part after the prefix."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(secret bytes, id.timestamp.body)>`` (Standard Webhooks)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signatures(secrets_: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one signature per secret, space-separated."""
    return " ".join(signature(s, message_id, timestamp, body) for s in secrets_)


# ---------------------------------------------------------------- destinations

def address_problem(address: str) -> str | None:
    """Why ``address`` (an IP) is refused as a destination, or None when it is a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for test, what in ((ip.is_loopback, "loopback"), (ip.is_link_local, "link-local"),
                       (ip.is_multicast, "multicast"), (ip.is_unspecified, "unspecified"),
                       (ip.is_private, "private"), (ip.is_reserved, "reserved")):
        if test:
            return f"{ip} is a {what} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


@dataclass
class Destination:
    scheme: str
    host: str
    port: int
    target: str  # path and query
    addresses: list[str] = field(default_factory=list)


def parse_url(url: str) -> Destination:
    """The parts of a webhook URL, or ValueError saying what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@); use the signature to authenticate")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError("must not contain spaces or control characters")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), target)


def resolve(destination: Destination, *, allow_private: bool | None = None) -> Destination:
    """``destination`` with the addresses it may connect to; ValueError if none, or any is refused.

    Every address the name resolves to must be public (unless private ones
    are allowed): a name with one public and one private address is refused,
    so no answer ordering can lead the request inside."""
    allow = settings.allow_private if allow_private is None else allow_private
    try:
        infos = socket.getaddrinfo(destination.host, destination.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"host {destination.host!r} does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not allow:
        for address in addresses:
            problem = address_problem(address)
            if problem:
                raise ValueError(f"{destination.host} resolves to {problem}: private and loopback destinations "
                                 "are refused (WEBHOOK_ALLOW_PRIVATE=1 allows them)")
    if not addresses:
        raise ValueError(f"host {destination.host!r} has no address")
    destination.addresses = addresses
    return destination


def _check_url(url: str) -> str:
    try:
        resolve(parse_url(url))
    except ValueError as exc:
        raise ValidationFailed("The webhook URL is refused.", {"url": [f"The URL {exc}."]}) from None
    return url


# ---------------------------------------------------------------- reading

def get(webhook_id: int, *, lock: bool = False) -> Webhook:
    if lock:
        webhook = for_update(Webhook, Webhook.id == webhook_id)
    else:
        webhook = db.session.get(Webhook, webhook_id)
    if webhook is None:
        raise NotFound(f"Webhook {webhook_id} does not exist.")
    return webhook


def list_webhooks(*, limit: int = 50, cursor: str | None = None) -> Page:
    return paginate(sa.select(Webhook), Webhook.id, limit=limit, cursor=cursor)


def to_dict(webhook: Webhook, now: datetime | None = None) -> dict:
    now = now or utcnow()
    overlap = webhook.previous_secret_expires_at
    return {
        "id": webhook.id, "url": webhook.url, "description": webhook.description, "events": webhook.events,
        "environments": webhook.environments, "format": webhook.format, "enabled": webhook.enabled,
        "disabled_at": webhook.disabled_at, "disabled_reason": webhook.disabled_reason,
        "failing_since": webhook.failing_since,
        "previous_secret_expires_at": overlap if webhook.previous_secret and overlap and overlap > now else None,
        "created_by": webhook.created_by, "version": webhook.version,
        "created_at": webhook.created_at, "updated_at": webhook.updated_at,
    }


def _snapshot(webhook: Webhook) -> dict:
    data = to_dict(webhook)
    for key in ("disabled_at", "failing_since", "previous_secret_expires_at", "created_at", "updated_at"):
        if data[key] is not None:
            data[key] = data[key].isoformat()
    return data


# ---------------------------------------------------------------- writing subscriptions

def _validate(values: dict) -> None:
    errors: dict[str, list[str]] = {}
    events = values["events"]
    if not events:
        errors["events"] = ['Give at least one event type, or ["*"] for every type.']
    elif "*" in events and events != ["*"]:
        errors["events"] = ['"*" (every type) stands alone: give ["*"] or a list of types.']
    else:
        for i, name in enumerate(events):
            if name != "*" and name not in EVENT_TYPES:
                errors[f"events.{i}"] = [f"Unknown event type {name!r}; known: {', '.join(EVENT_TYPES)}."]
        if len(set(events)) != len(events):
            errors.setdefault("events", []).append("Each type once.")
    environments = values["environments"]
    if environments is not None:
        if not environments:
            errors["environments"] = ["Give at least one environment key, or null for every environment."]
        known = set(db.session.scalars(sa.select(Environment.key).where(Environment.key.in_(environments))))
        for i, key in enumerate(environments):
            if key not in known:
                errors[f"environments.{i}"] = [f"Unknown environment {key!r}."]
        if len(set(environments)) != len(environments):
            errors.setdefault("environments", []).append("Each environment once.")
    if values["format"] not in FORMATS:
        errors["format"] = [f"Must be one of: {', '.join(FORMATS)}."]
    if errors:
        raise ValidationFailed("The webhook is invalid.", errors)


def create(actor: Actor, data: dict) -> tuple[Webhook, str]:
    """A new webhook and its secret (returned here only; stored encrypted)."""
    values = {"url": data["url"], "description": data.get("description") or "", "events": list(data["events"]),
              "environments": None if data.get("environments") is None else list(data["environments"]),
              "format": data.get("format") or "standard", "enabled": data.get("enabled", True)}
    _validate(values)
    count = db.session.scalar(sa.select(sa.func.count()).select_from(Webhook))
    if count >= limits.WEBHOOKS:
        raise Conflict(f"At most {limits.WEBHOOKS} webhooks; delete one first.", {"webhooks": ["Limit reached."]})
    _check_url(values["url"])
    secret = new_secret()
    webhook = Webhook(**values, secret=secretbox.seal(secret), created_by=actor.name, version=1)
    db.session.add(webhook)
    db.session.flush()
    audit.record(actor, "create", "webhook", str(webhook.id), after=_snapshot(webhook))
    unit_of_work.commit()
    return webhook, secret


def update(actor: Actor, webhook_id: int, changes: dict, if_match: int | None = None) -> Webhook:
    webhook = get(webhook_id, lock=True)
    check_version(webhook.version, if_match)
    before = _snapshot(webhook)
    values = {f: changes.get(f, getattr(webhook, f))
              for f in ("url", "description", "events", "environments", "format", "enabled")}
    _validate(values)
    if values["url"] != webhook.url:
        _check_url(values["url"])
    if values["enabled"] and not webhook.enabled:  # enabling again starts a clean slate
        webhook.disabled_at = webhook.disabled_reason = webhook.failing_since = None
    elif not values["enabled"] and webhook.enabled:
        webhook.disabled_at, webhook.disabled_reason = utcnow(), f"Disabled by {actor.name}."
    for name, value in values.items():
        setattr(webhook, name, value)
    webhook.version += 1
    db.session.flush()
    audit.record(actor, "update", "webhook", str(webhook.id), before=before, after=_snapshot(webhook))
    unit_of_work.commit()
    return webhook


def delete(actor: Actor, webhook_id: int, if_match: int | None = None) -> None:
    webhook = get(webhook_id, lock=True)
    check_version(webhook.version, if_match)
    audit.record(actor, "delete", "webhook", str(webhook.id), before=_snapshot(webhook))
    db.session.delete(webhook)  # its deliveries and attempts go with it
    unit_of_work.commit()


def rotate_secret(actor: Actor, webhook_id: int, overlap: timedelta | None = None,
                  if_match: int | None = None) -> tuple[Webhook, str]:
    """A new secret (returned once); the old one keeps signing too for ``overlap`` (default 24 h)."""
    webhook = get(webhook_id, lock=True)
    check_version(webhook.version, if_match)
    overlap = settings.rotation_overlap if overlap is None else overlap
    before = _snapshot(webhook)
    secret = new_secret()
    if overlap > timedelta(0):
        webhook.previous_secret, webhook.previous_secret_expires_at = webhook.secret, utcnow() + overlap
    else:
        webhook.previous_secret = webhook.previous_secret_expires_at = None
    webhook.secret = secretbox.seal(secret)
    webhook.version += 1
    db.session.flush()
    audit.record(actor, "rotate_secret", "webhook", str(webhook.id), before=before, after=_snapshot(webhook))
    unit_of_work.commit()
    return webhook, secret


# ---------------------------------------------------------------- the outbox

def _summary(type: str, data: dict, environment: str | None) -> str:
    """One line for people (the ``slack`` format's ``text``)."""
    where = f" in {environment}" if environment else ""
    actor = data.get("actor") or data.get("author") or data.get("applied_by") or "someone"
    if type.startswith("flag.") or type == "targeting.updated":
        flag = data.get("flag")
        key = flag.get("key") if isinstance(flag, dict) else flag
        if type == "flag.stale":
            return f":broom: Flag `{key}` is potentially stale: {data.get('reason', '')}"
        verb = {"flag.created": "created", "flag.updated": "updated", "flag.archived": "archived",
                "targeting.updated": "changed the targeting of"}[type]
        return f"{actor} {verb} flag `{key}`{where}."
    if type.startswith("experiment."):
        experiment = data.get("experiment") or {}
        text = f"Experiment `{experiment.get('key')}`{where} {type.split('.', 1)[1]}"
        decision = experiment.get("decision") or {}
        if type == "experiment.concluded" and decision:
            text += f": {decision.get('outcome')}" + (f" {decision['variation']}" if decision.get("variation") else "")
        return text + f" (by {actor})."
    if type.startswith("change_request."):
        return (f"Change request {data.get('id')} on flag `{data.get('flag')}`{where} "
                f"{type.split('.', 1)[1]} ({data.get('state')}).")
    if type.startswith("schedule."):
        text = f"Scheduled change {data.get('id')} on flag `{data.get('flag')}`{where} {type.split('.', 1)[1]}"
        return text + (f": {data['failure_reason']}" if data.get("failure_reason") else ".")
    if type.startswith("rollout."):
        text = (f"Guarded rollout {data.get('id')} of flag `{data.get('flag')}`{where} "
                f"{type.split('.', 1)[1].replace('_', ' ')} at {data.get('percent')}%")
        return text + (f": {data['reason']}" if data.get("reason") else ".")
    return f"{type}{where}"


def body_for(format: str, type: str, data: dict, environment: str | None, timestamp: str) -> str:
    if format == "slack":
        payload = {"text": _summary(type, data, environment)}
    else:
        if environment is not None and "environment" not in data:
            data = {**data, "environment": environment}
        payload = {"type": type, "timestamp": timestamp, "data": data}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)


def _matches(webhook: Webhook, type: str, environment: str | None) -> bool:
    if webhook.events != ["*"] and type not in webhook.events:
        return False
    # Events of no environment (flag.created, flag.updated, flag.archived, flag.stale) go to every webhook.
    return environment is None or webhook.environments is None or environment in webhook.environments


def _outbox(type: str, data: dict, environment: str | None) -> None:
    """The announcement listener: one delivery per matching enabled webhook, in the caller's transaction."""
    webhooks = [w for w in db.session.scalars(sa.select(Webhook).where(Webhook.enabled.is_(True)))
                if _matches(w, type, environment)]
    if not webhooks:
        return
    now = utcnow()
    message_id = f"msg_{uuid.uuid4().hex}"
    timestamp = now.isoformat().replace("+00:00", "Z")
    for webhook in webhooks:
        db.session.add(WebhookDelivery(
            webhook_id=webhook.id, message_id=message_id, type=type, environment=environment,
            body=body_for(webhook.format, type, data, environment, timestamp), state="pending", attempts=0,
            next_attempt_at=now, created_at=now))


def init() -> None:
    """Plug the outbox into the announcements (idempotent; ``create_app`` calls it)."""
    add_listener(_outbox)


# ---------------------------------------------------------------- delivering (the worker)

@dataclass
class Claim:
    """A delivery leased to this worker, with what it takes to send it (no session needed)."""

    id: int
    webhook_id: int
    url: str
    message_id: str
    body: str
    secrets: list[str]
    lease_until: datetime
    manual: bool


@dataclass
class Outcome:
    """What one HTTP attempt gave: a status (any answer) or an error (no answer)."""

    status: int | None
    latency_ms: int
    response: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _due(now: datetime):
    busy = sa.orm.aliased(WebhookDelivery)
    in_flight = (sa.select(sa.func.count()).select_from(busy)
                 .where(busy.webhook_id == Webhook.id, busy.state == "pending", busy.lease_until > now)
                 .correlate(Webhook).scalar_subquery())
    return (sa.select(WebhookDelivery).join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now,
                   sa.or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until <= now),
                   Webhook.enabled.is_(True), in_flight < settings.max_in_flight)
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(1))


def claim_next(now: datetime | None = None) -> Claim | None:
    """Lease the next due delivery and commit; None when none is due.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so workers share the work;
    SQLite: one claimer at a time (``BEGIN IMMEDIATE``). The lease outlives
    an attempt's hard deadline, so only a worker that died mid-attempt
    loses its lease, and then the delivery is sent again (at least once)."""
    now = now or utcnow()
    begin_exclusive()
    delivery = db.session.scalars(locked(_due(now), skip_locked=True, of=WebhookDelivery)).first()
    if delivery is None:
        db.session.rollback()
        return None
    webhook = db.session.get(Webhook, delivery.webhook_id)
    keys = []
    try:
        keys.append(secretbox.unseal(webhook.secret))
        if webhook.previous_secret and webhook.previous_secret_expires_at and webhook.previous_secret_expires_at > now:
            keys.append(secretbox.unseal(webhook.previous_secret))
    except secretbox.SecretUnreadable as exc:
        keys = []
        problem = str(exc)
    delivery.lease_until = now + settings.lease
    claim = Claim(delivery.id, webhook.id, webhook.url, delivery.message_id, delivery.body, keys,
                  delivery.lease_until, delivery.manual)
    db.session.commit()
    if not keys:  # nothing to sign with: an attempt that fails without sending
        record(claim, Outcome(None, 0, error=problem), now)
        return None
    return claim


def _jittered(seconds: float) -> timedelta:
    return timedelta(seconds=seconds * random.uniform(*JITTER))


def record(claim: Claim, outcome: Outcome, now: datetime | None = None) -> WebhookDelivery | None:
    """Store one attempt and decide what follows (see the module docstring); commits."""
    now = now or utcnow()
    db.session.rollback()
    delivery = db.session.scalars(locked(sa.select(WebhookDelivery).where(WebhookDelivery.id == claim.id))).first()
    if delivery is None:  # the webhook was deleted meanwhile
        db.session.rollback()
        return None
    db.session.add(WebhookAttempt(delivery_id=delivery.id, attempted_at=now, status=outcome.status,
                                  latency_ms=outcome.latency_ms, response=outcome.response, error=outcome.error,
                                  manual=claim.manual))
    delivery.attempts += 1
    delivery.last_attempt_at, delivery.last_status, delivery.last_error = now, outcome.status, outcome.error
    if delivery.lease_until == claim.lease_until:
        delivery.lease_until = None  # ours; a later claimer's lease stays its own
    delivery.manual = False
    webhook = None
    if outcome.ok:
        delivery.state, delivery.succeeded_at = "succeeded", delivery.succeeded_at or now
        webhook = get(claim.webhook_id, lock=True)
        if webhook.failing_since is not None:
            webhook.failing_since = None
    elif delivery.state != "succeeded":
        if delivery.attempts > len(RETRY_DELAYS):
            delivery.state = "failed"
        else:
            delivery.state = "pending"
            delivery.next_attempt_at = now + _jittered(RETRY_DELAYS[delivery.attempts - 1])
        webhook = get(claim.webhook_id, lock=True)
        if webhook.failing_since is None:
            webhook.failing_since = now
        if webhook.enabled:
            if outcome.status == 410:
                _disable(webhook, "The endpoint answered 410 Gone.", now)
            elif now - webhook.failing_since >= DISABLE_AFTER:
                _disable(webhook, f"Every attempt failed since {webhook.failing_since.isoformat()} "
                                  f"(more than {DISABLE_AFTER.total_seconds() / 3600:.0f} hours).", now)
    db.session.commit()
    return delivery


def _disable(webhook: Webhook, reason: str, now: datetime) -> None:
    before = _snapshot(webhook)
    webhook.enabled, webhook.disabled_at, webhook.disabled_reason = False, now, reason
    webhook.version += 1
    db.session.flush()
    audit.record(Actor(WORKER, comment=reason), "disable", "webhook", str(webhook.id), before=before,
                 after=_snapshot(webhook))


def retry(actor: Actor, webhook_id: int, delivery_id: int, now: datetime | None = None) -> WebhookDelivery:
    """Send a delivery again as soon as a worker can (a manual redelivery: one more attempt)."""
    now = now or utcnow()
    webhook = get(webhook_id)
    delivery = db.session.scalars(locked(sa.select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == webhook.id))).first()
    if delivery is None:
        raise NotFound(f"Webhook {webhook_id} has no delivery {delivery_id}.")
    if not webhook.enabled:
        raise Conflict(f"Webhook {webhook_id} is disabled; enable it first (PATCH enabled: true).",
                       {"enabled": ["Disabled."]})
    if delivery.state == "pending" and delivery.lease_until is not None and delivery.lease_until > now:
        raise Conflict(f"Delivery {delivery_id} is being sent right now.", {"state": ["In flight."]})
    before = delivery_snapshot(delivery)
    delivery.state, delivery.manual, delivery.next_attempt_at, delivery.lease_until = "pending", True, now, None
    db.session.flush()
    audit.record(actor, "retry", "webhook", str(webhook.id), before=before, after=delivery_snapshot(delivery))
    unit_of_work.commit()
    return delivery


# ---------------------------------------------------------------- the delivery log

def delivery_snapshot(delivery: WebhookDelivery) -> dict:
    return {"delivery": delivery.id, "message_id": delivery.message_id, "type": delivery.type,
            "state": delivery.state, "attempts": delivery.attempts}


def list_deliveries(webhook_id: int, *, state: str | None = None, limit: int = 50,
                    cursor: str | None = None) -> Page:
    """Deliveries newest first, each with its latest attempts (one query for all of them)."""
    webhook = get(webhook_id)
    stmt = sa.select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook.id)
    if state:
        stmt = stmt.where(WebhookDelivery.state == state)
    page = paginate(stmt, WebhookDelivery.id, limit=limit, cursor=cursor, descending=True)
    attempts: dict[int, list] = {d.id: [] for d in page.items}
    if attempts:
        ranked = (sa.select(WebhookAttempt, sa.func.row_number().over(
            partition_by=WebhookAttempt.delivery_id, order_by=WebhookAttempt.id.desc()).label("n"))
            .where(WebhookAttempt.delivery_id.in_(list(attempts))).subquery())
        alias = sa.orm.aliased(WebhookAttempt, ranked)
        for attempt in db.session.scalars(sa.select(alias).where(ranked.c.n <= ATTEMPTS_SHOWN)
                                          .order_by(ranked.c.delivery_id, ranked.c.id.desc())):
            attempts[attempt.delivery_id].append(attempt)
    page.items = [delivery_to_dict(d, attempts[d.id]) for d in page.items]
    return page


def get_delivery(webhook_id: int, delivery_id: int) -> dict:
    delivery = db.session.scalars(sa.select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == webhook_id)).first()
    if delivery is None:
        raise NotFound(f"Webhook {webhook_id} has no delivery {delivery_id}.")
    attempts = list(db.session.scalars(sa.select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery.id)
                                       .order_by(WebhookAttempt.id.desc()).limit(ATTEMPTS_SHOWN)))
    return delivery_to_dict(delivery, attempts)


def delivery_to_dict(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict:
    latest = attempts[0] if attempts else None
    try:
        payload = json.loads(delivery.body)
    except ValueError:
        payload = None
    return {
        "id": delivery.id, "message_id": delivery.message_id, "type": delivery.type,
        "environment": delivery.environment, "state": delivery.state, "attempt_count": delivery.attempts,
        "next_attempt_at": delivery.next_attempt_at if delivery.state == "pending" else None,
        "created_at": delivery.created_at, "last_attempt_at": delivery.last_attempt_at,
        "succeeded_at": delivery.succeeded_at, "status": delivery.last_status,
        "latency_ms": latest.latency_ms if latest else None, "response": latest.response if latest else None,
        "error": delivery.last_error, "payload": payload,
        "attempts": [{"id": a.id, "attempted_at": a.attempted_at, "status": a.status, "latency_ms": a.latency_ms,
                      "response": a.response, "error": a.error, "manual": a.manual} for a in attempts],
    }


def prune(now: datetime | None = None) -> int:
    """Delete finished deliveries (and their attempts) older than the retention; commits."""
    now = now or utcnow()
    cutoff = now - settings.retention
    old = sa.select(WebhookDelivery.id).where(WebhookDelivery.state.in_(("succeeded", "failed")),
                                              WebhookDelivery.created_at < cutoff)
    db.session.execute(sa.delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(old)))
    result = db.session.execute(sa.delete(WebhookDelivery).where(WebhookDelivery.id.in_(old)))
    db.session.commit()
    return result.rowcount or 0


def queue_stats(now: datetime) -> tuple[int, int, float]:
    """(due deliveries, pending deliveries, lag seconds of the oldest due) for /metrics."""
    due, pending, oldest = db.session.execute(sa.select(
        sa.func.count().filter(WebhookDelivery.next_attempt_at <= now), sa.func.count(),
        sa.func.min(WebhookDelivery.next_attempt_at)).where(WebhookDelivery.state == "pending")).one()
    lag = max(0.0, (now - oldest).total_seconds()) if due and oldest is not None else 0.0
    return int(due or 0), int(pending or 0), lag


def recent_audit(webhook_id: int, limit: int = 20) -> list[AuditEntry]:
    return list(db.session.scalars(sa.select(AuditEntry).where(
        AuditEntry.resource_type == "webhook", AuditEntry.resource_key == str(webhook_id))
        .order_by(AuditEntry.id.desc()).limit(limit)))
