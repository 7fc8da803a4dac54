import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from ..extensions import db
from ..models import Environment
from . import Actor, audit, unit_of_work
from .errors import Conflict, ValidationFailed
from .locking import get_by_key
from .pagination import Page, paginate
from .versioning import check_version

DEFAULT_ENVIRONMENTS = (("development", "Development"), ("staging", "Staging"), ("production", "Production"))
FIELDS = ("name", "description", "approvals_required")


def snapshot(env: Environment) -> dict:
    return {"key": env.key, "name": env.name, "description": env.description,
            "approvals_required": env.approvals_required, "protected": env.protected, "version": env.version}


def _approvals(data: dict, current: int) -> int:
    """``approvals_required`` from a write; ``protected`` is its older boolean alias
    (true = at least one approval, false = none)."""
    approvals = data.get("approvals_required", current)
    if "protected" in data:
        if "approvals_required" in data and data["protected"] != (approvals > 0):
            raise ValidationFailed("protected and approvals_required disagree.", {"protected": [
                "protected is true exactly when approvals_required > 0; send approvals_required alone."]})
        if "approvals_required" not in data:
            approvals = max(current, 1) if data["protected"] else 0
    return approvals


def get(key: str, *, lock: bool = False) -> Environment:
    """The environment; with ``lock``, locked for writing until the unit of work ends (service/domain/locking.py)."""
    return get_by_key(Environment, key, lock=lock, name="Environment")


def list_environments(*, limit: int = 50, cursor: str | None = None) -> Page:
    """A page of environments, each with its SDK keys (loaded with the page)."""
    stmt = sa.select(Environment).options(selectinload(Environment.sdk_keys))
    return paginate(stmt, Environment.id, limit=limit, cursor=cursor)


def create(actor: Actor, data: dict) -> Environment:
    if db.session.scalars(sa.select(Environment.id).where(Environment.key == data["key"])).first():
        raise Conflict(f"Environment '{data['key']}' already exists.", {"key": ["Already exists."]})
    env = Environment(key=data["key"], name=data.get("name") or data["key"],
                      description=data.get("description", ""), approvals_required=_approvals(data, 0))
    db.session.add(env)
    db.session.flush()
    audit.record(actor, "create", "environment", env.key, environment=env.key, after=snapshot(env))
    unit_of_work.commit()
    return env


def update(actor: Actor, key: str, changes: dict, if_match: int | None = None) -> Environment:
    env = get(key, lock=True)
    check_version(env.version, if_match)
    before = snapshot(env)
    changes = {**changes, "approvals_required": _approvals(changes, env.approvals_required)}
    for field in FIELDS:
        if field in changes:
            setattr(env, field, changes[field])
    env.version += 1
    audit.record(actor, "update", "environment", env.key, environment=env.key,
                 before=before, after=snapshot(env))
    unit_of_work.commit()
    return env


def delete(actor: Actor, key: str, if_match: int | None = None) -> None:
    env = get(key, lock=True)
    check_version(env.version, if_match)
    audit.record(actor, "delete", "environment", env.key, environment=env.key, before=snapshot(env))
    db.session.delete(env)
    unit_of_work.commit()


def ensure_defaults() -> list[Environment]:
    """Create the standard environments when the database has none at all.

    The initial migration seeds the same list; this serves tests that empty
    the database between cases."""
    if db.session.scalars(sa.select(Environment.id).limit(1)).first() is not None:
        return []
    created = []
    for key, name in DEFAULT_ENVIRONMENTS:
        env = Environment(key=key, name=name, description="")
        db.session.add(env)
        created.append(env)
    unit_of_work.commit()
    return created
