"""Announcements of process events (change requests, schedules, rollouts).

Domain code calls :func:`announce` inside the transaction of the change it
announces, with a type such as ``change_request.applied``,
``schedule.failed`` or ``rollout.rolled_back`` and a JSON-ready ``data``.
The webhooks outbox plugs in here (docs/process.md): a listener added with
:func:`add_listener` runs in the same transaction, so a delivery row it
writes commits or rolls back with the change. Until then nothing is
delivered (the change's own audit entry records it).
"""

from collections.abc import Callable

Listener = Callable[[str, dict, "str | None"], None]

_listeners: list[Listener] = []


def announce(type: str, data: dict, *, environment: str | None = None) -> None:
    """Announce ``type`` with ``data`` (for environment ``environment``) to every listener."""
    for listener in list(_listeners):
        listener(type, data, environment)


def add_listener(listener: Listener) -> None:
    _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)
