"""Segments: reusable audiences, shared by every environment's ruleset."""

import json

import sqlalchemy as sa

from pitcrew.evaluation.validation import segment_errors

from ..extensions import db
from ..models import Environment, Flag, FlagTargeting, Segment
from . import Actor, audit, limits, ruleset_versions, unit_of_work
from .errors import Conflict, ValidationFailed
from .locking import get_by_key
from .pagination import LIKE_ESCAPE, Page, contains_pattern, paginate
from .versioning import check_version

FIELDS = ("name", "description", "tags", "included", "excluded", "rules")


def snapshot(segment: Segment) -> dict:
    return {"key": segment.key, "name": segment.name, "description": segment.description,
            "tags": segment.tags, "included": segment.included, "excluded": segment.excluded,
            "rules": segment.rules}


def to_dict(segment: Segment) -> dict:
    return {**snapshot(segment), "version": segment.version, "created_at": segment.created_at,
            "updated_at": segment.updated_at}


def to_dicts(segments: list[Segment]) -> list[dict]:
    return [to_dict(s) for s in segments]


def get(key: str, *, lock: bool = False) -> Segment:
    """The segment; with ``lock``, locked for writing until the unit of work ends (service/domain/locking.py)."""
    return get_by_key(Segment, key, lock=lock, name="Segment")


def list_segments(*, q: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
    stmt = sa.select(Segment)
    if q:
        needle = contains_pattern(q.lower())
        stmt = stmt.where(sa.or_(sa.func.lower(Segment.key).like(needle, escape=LIKE_ESCAPE),
                                 sa.func.lower(Segment.name).like(needle, escape=LIKE_ESCAPE)))
    return paginate(stmt, Segment.id, limit=limit, cursor=cursor)


def _validate(content: dict) -> None:
    errors = segment_errors(content)
    lists = {field: content.get(field) for field in ("included", "excluded", "rules")}
    size = len(json.dumps(lists, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > limits.SEGMENT_BYTES:
        errors.append(("_body", f"the segment's lists and rules are {size} bytes as JSON; at most "
                                f"{limits.SEGMENT_BYTES} (every SDK downloads them)"))
    if errors:
        details: dict[str, list[str]] = {}
        for path, message in errors:
            details.setdefault(path or "_body", []).append(message)
        raise ValidationFailed("The segment is invalid.", details)


def create(actor: Actor, data: dict) -> Segment:
    content = {"included": data.get("included", []), "excluded": data.get("excluded", []),
               "rules": data.get("rules", [])}
    _validate(content)
    if db.session.scalars(sa.select(Segment.id).where(Segment.key == data["key"])).first() is not None:
        raise Conflict(f"Segment '{data['key']}' already exists.", {"key": ["Already exists."]})
    segment = Segment(key=data["key"], name=data.get("name") or data["key"],
                      description=data.get("description", ""), tags=data.get("tags", []), **content)
    db.session.add(segment)
    db.session.flush()
    audit.record(actor, "create", "segment", segment.key, after=snapshot(segment))
    ruleset_versions.bump()
    unit_of_work.commit()
    return segment


def update(actor: Actor, key: str, changes: dict, if_match: int | None = None) -> Segment:
    segment = get(key, lock=True)
    check_version(segment.version, if_match)
    before = snapshot(segment)
    _validate({**before, **changes})
    for field in FIELDS:
        if field in changes:
            setattr(segment, field, changes[field])
    segment.version += 1
    audit.record(actor, "update", "segment", segment.key, before=before, after=snapshot(segment))
    ruleset_versions.bump()
    unit_of_work.commit()
    return segment


def flags_using(key: str) -> list[str]:
    """Keys of flags whose targeting (in any environment) has ``in_segment`` with this segment."""
    rows = db.session.execute(
        sa.select(Flag.key, FlagTargeting.targeting, Environment.key)
        .join(FlagTargeting, FlagTargeting.flag_id == Flag.id)
        .join(Environment, Environment.id == FlagTargeting.environment_id)
        .where(Flag.archived.is_(False))
    ).all()
    users = set()
    for flag_key, targeting, _env in rows:
        for rule in targeting.get("rules") or []:
            for cond in rule.get("conditions") or []:
                if cond.get("op") == "in_segment" and key in (cond.get("values") or []):
                    users.add(flag_key)
    return sorted(users)


def delete(actor: Actor, key: str, if_match: int | None = None) -> None:
    segment = get(key, lock=True)
    check_version(segment.version, if_match)
    users = flags_using(key)
    if users:
        raise Conflict(f"Segment '{key}' is used by flags: {', '.join(users)}.", {"flags": users})
    audit.record(actor, "delete", "segment", segment.key, before=snapshot(segment))
    db.session.delete(segment)
    ruleset_versions.bump()
    unit_of_work.commit()
