"""Where a unit of work ends.

Domain mutations call :func:`commit` once the change, its version bump and
its audit entry are in the session. Outside a request (CLI, worker, tests)
that commits at once. Inside an HTTP request the web layer defers it (see
``service.web.PitcrewFlask``): :func:`commit` only flushes, so constraint
violations still surface inside the domain call, and the request commits
once, after its response has been built. A response that cannot be built
therefore leaves nothing committed: a 5xx never follows a committed write.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from ..extensions import db


@dataclass
class Deferred:
    """Set by :func:`commit` while deferred: the caller has work to commit."""

    pending: bool = False


_deferred: ContextVar[Deferred | None] = ContextVar("pitcrew_deferred_commit", default=None)


def commit() -> None:
    """End the current unit of work (or, inside a request, stage it for the request's commit)."""
    state = _deferred.get()
    if state is None:
        db.session.commit()
    else:
        db.session.flush()
        state.pending = True


@contextmanager
def deferred() -> Iterator[Deferred]:
    """Within this block :func:`commit` only flushes; the caller commits when ``pending``."""
    state = Deferred()
    token = _deferred.set(state)
    try:
        yield state
    finally:
        _deferred.reset(token)
