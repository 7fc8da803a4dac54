from datetime import datetime

import sqlalchemy as sa

from ..extensions import db
from ..models import AuditEntry
from . import Actor
from .pagination import Page, paginate


def record(actor: Actor, action: str, resource_type: str, resource_key: str, *,
           before: dict | None = None, after: dict | None = None,
           environment: str | None = None) -> AuditEntry:
    """Add an audit entry to the current transaction (the caller commits)."""
    entry = AuditEntry(
        actor=actor.name, action=action, resource_type=resource_type, resource_key=resource_key,
        environment=environment, before=before, after=after, comment=actor.comment,
        request_id=actor.request_id,
    )
    db.session.add(entry)
    return entry


def json_ready(data: dict) -> dict:
    """``data`` as an audit entry stores it: its datetimes as ISO 8601 strings."""
    return {key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in data.items()}


def list_entries(*, resource_type: str | None = None, resource_key: str | None = None,
                 actor: str | None = None, environment: str | None = None,
                 since: datetime | None = None, until: datetime | None = None,
                 limit: int = 50, cursor: str | None = None) -> Page:
    stmt = sa.select(AuditEntry)
    if resource_type:
        stmt = stmt.where(AuditEntry.resource_type == resource_type)
    if resource_key:
        stmt = stmt.where(AuditEntry.resource_key == resource_key)
    if actor:
        stmt = stmt.where(AuditEntry.actor == actor)
    if environment:
        stmt = stmt.where(AuditEntry.environment == environment)
    if since:
        stmt = stmt.where(AuditEntry.created_at >= since)
    if until:
        stmt = stmt.where(AuditEntry.created_at < until)
    return paginate(stmt, AuditEntry.id, limit=limit, cursor=cursor, descending=True)
