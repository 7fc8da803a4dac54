"""The SDK ruleset version of each environment.

Every change to what an environment's SDKs see bumps its version in the same
transaction as the change; /sdk/v1/config serves it as the ETag and rebuilds
its cached body only when it moved.
"""

from collections.abc import Iterable

import sqlalchemy as sa

from ..extensions import db
from ..models import Environment


def bump(environment_ids: Iterable[int] | None = None) -> None:
    """Bump the given environments' ruleset versions (all when None)."""
    stmt = sa.update(Environment).values(ruleset_version=Environment.ruleset_version + 1)
    if environment_ids is not None:
        ids = list(environment_ids)
        if not ids:
            return
        stmt = stmt.where(Environment.id.in_(ids))
    db.session.execute(stmt)
