"""The SDK's event pipeline, in parts (docs/sdk-events.md):

* :mod:`~pitcrew.events.summary`: evaluation counts per (flag, variation);
* :mod:`~pitcrew.events.dedup`: one exposure per (experiment, unit, variation);
* :mod:`~pitcrew.events.queue`: the bounded in-memory queue callers append to;
* :mod:`~pitcrew.events.batching`: request bodies with fixed ids, gzipped;
* :mod:`~pitcrew.events.spool`: the optional crash-safe spool on disk;
* :mod:`~pitcrew.events.delivery`: the senders, their retry gate and 413 splits;
* :mod:`~pitcrew.events.processor`: the producer API and the events thread that
  ties them together.
"""

from .delivery import MAX_IN_FLIGHT
from .processor import FLUSH_AT, EventProcessor

__all__ = ["FLUSH_AT", "MAX_IN_FLIGHT", "EventProcessor"]
