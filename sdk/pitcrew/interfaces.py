"""The narrow interfaces between the SDK's parts (after LaunchDarkly's server SDK, whose
``ldclient.interfaces`` names a feature store, an update processor and an event processor).

The client (:class:`pitcrew.Client`) is a facade over three parts and talks to each only
through these methods and attributes, so each can be replaced or tested alone:

* :class:`DataStore` holds the current compiled ruleset (:mod:`pitcrew.store`);
* :class:`DataSource` keeps it current from the service (:mod:`pitcrew.datasource`);
* :class:`EventSink` takes exposures, track events and evaluation counts and
  delivers them (:mod:`pitcrew.events`).

They are ``typing.Protocol`` classes: implementations do not inherit from them.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["DataSource", "DataStore", "EventSink"]


@runtime_checkable
class DataStore(Protocol):
    compiled: Any  # CompiledRuleset | None: None until a ruleset was loaded
    etag: str | None
    source: str | None  # "bootstrap" | "cache" | "service"
    updated_at: float | None
    checked_at: float | None
    ready: Any  # threading.Event set once a ruleset was loaded

    @property
    def version(self) -> int | None: ...

    def apply(self, ruleset: dict, *, source: str, etag: str | None = None) -> Any:
        """Compile ``ruleset`` and swap it in; raises InvalidRuleset and keeps the old one.
        Returns None (and keeps the old one) for a service ruleset older than the service's
        ruleset held, unless the service has offered only older ones for a while."""

    def confirm(self) -> None:
        """The service answered that the ruleset held is its current one (a 304)."""

    def add_listener(self, fn) -> None: ...

    def remove_listener(self, fn) -> None: ...

    def after_fork(self) -> None: ...


@runtime_checkable
class DataSource(Protocol):
    state: str  # initializing | valid | interrupted | unauthorized | closed
    last_error: str | None
    stream_connected: bool

    def start(self) -> None: ...

    def stop(self, timeout: float) -> None: ...

    def after_fork(self) -> None: ...


@runtime_checkable
class EventSink(Protocol):
    counters: dict  # (flag, variation) -> counter bumped with next() on every evaluation

    def counter(self, key) -> Any:
        """The counter of a key not in ``counters`` yet."""

    def exposure(self, result, compiled, context) -> None: ...

    def holdout_exposure(self, holdout) -> None:
        """Record ``result.holdout`` (experiment, variation, unit, unit_type) of a holdout."""

    def track(self, event, context, value, unit_attrs) -> bool: ...

    @property
    def started(self) -> bool: ...

    def start(self) -> None: ...

    def flush(self, timeout: float | None) -> bool: ...

    def close(self, timeout: float) -> bool: ...

    def after_fork(self) -> None: ...

    def stats(self) -> dict: ...
