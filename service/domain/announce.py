"""Announcements of changes: the events webhooks deliver (docs/webhooks.md).

Domain code calls :func:`announce` inside the transaction of the change it
announces, with a type of :data:`EVENT_TYPES` and a JSON-ready ``data``:
flags (service/domain/flags.py), experiments (experiments.py, rollouts.py),
change requests, schedules, rollouts, and ``flag.stale`` (lifecycle.py, run
by the worker). Listeners added with :func:`add_listener` run in the same
transaction: the webhooks outbox (service/domain/webhooks.py) writes its
delivery rows there, so they commit or roll back with the change.
"""

from collections.abc import Callable

EVENT_TYPES = (
    "flag.created", "flag.updated", "flag.archived", "flag.stale", "targeting.updated",
    "experiment.started", "experiment.stopped", "experiment.concluded",
    "change_request.opened", "change_request.approved", "change_request.applied", "change_request.rejected",
    "schedule.applied", "schedule.failed",
    "rollout.advanced", "rollout.rolled_back", "rollout.completed",
)

Listener = Callable[[str, dict, "str | None"], None]

_listeners: list[Listener] = []


def announce(type: str, data: dict, *, environment: str | None = None) -> None:
    """Announce ``type`` with ``data`` (for environment ``environment``) to every listener."""
    for listener in list(_listeners):
        listener(type, data, environment)


def add_listener(listener: Listener) -> None:
    """Add ``listener`` (once: adding it again changes nothing)."""
    if listener not in _listeners:
        _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)
