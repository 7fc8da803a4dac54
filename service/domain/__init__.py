"""Domain rules: validation beyond schemas, versioning, history, lifecycle, audit.

No HTTP here: no requests, responses or status codes (the handlers in
``service/api`` and ``service/console`` translate). The domain does use
Flask-SQLAlchemy's ``db.session``, so it runs inside a Flask application
context: a request, the CLI, the worker, a test. Each mutation validates,
changes the models, writes its audit entry and ends its unit of work once
(``unit_of_work.commit``), so the entry and the change land together or not
at all.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    """Who is making a change, for the audit log."""

    name: str
    request_id: str | None = None
    comment: str | None = None


SYSTEM = Actor(name="system")
