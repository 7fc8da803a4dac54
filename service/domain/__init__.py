"""Domain rules: validation beyond schemas, versioning, history, lifecycle, audit.

Nothing here imports Flask. Each mutation validates, changes the models,
writes its audit entry and commits once, so the entry and the change land
together or not at all.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    """Who is making a change, for the audit log."""

    name: str
    request_id: str | None = None
    comment: str | None = None


SYSTEM = Actor(name="system")
