"""The wire contract shared by the SDK and the service (docs/api.md, docs/sdk-events.md).

One home for the constants and helpers both sides must agree on: paths,
event types and limits, experiment statuses, the bucket count, the
timestamp format and the attributes an exposure records. The service
imports them from here; nothing here imports anything but the standard
library.
"""

from __future__ import annotations

import math
import time

__all__ = [
    "BATCH_ID_KEY", "BUCKETS", "CONFIG_PATH", "EVENTS_PATH", "EXPERIMENT_STATUSES", "EXPOSURE",
    "HELD_OUT", "HOLDOUT_PREFIX", "LIVE_EXPERIMENT_STATUSES", "MAX_BATCH_BYTES", "MAX_BATCH_EVENTS", "MAX_EVALUATION_ENTRIES",
    "MAX_EVENT_KEY_LENGTH", "MAX_KEY_LENGTH", "MAX_UNIT_LENGTH", "MEASURED", "STREAM_PATH", "TRACK",
    "exposure_attributes", "iso_ts", "scalar",
]

# --------------------------------------------------------------------------- paths
CONFIG_PATH = "/sdk/v1/config"
STREAM_PATH = "/sdk/v1/stream"
EVENTS_PATH = "/sdk/v1/events"

# --------------------------------------------------------------------------- evaluation
BUCKETS = 10000  # bucket() is in [0, BUCKETS); weights and traffic are basis points of it
EXPERIMENT_STATUSES = ("draft", "running", "stopped", "concluded")
LIVE_EXPERIMENT_STATUSES = ("running", "stopped", "concluded")  # served in a ruleset
# Holdouts (docs/holdouts.md): "holdout:" + key is both the bucketing salt and the
# ``experiment`` of a holdout exposure, whose ``variation`` is HELD_OUT or MEASURED.
# Experiment keys cannot contain ":", so these never collide with an experiment.
HOLDOUT_PREFIX = "holdout:"
HELD_OUT = "held_out"  # bucket < percent * 100: served the off variation
MEASURED = "measured"  # bucket in [percent * 100, 2 * percent * 100): the comparison slice

# --------------------------------------------------------------------------- events
EXPOSURE = "exposure"
TRACK = "track"
MAX_BATCH_EVENTS = 1000  # events per POST /sdk/v1/events
MAX_BATCH_BYTES = 1024 * 1024  # JSON body per request, after decompression
MAX_UNIT_LENGTH = 256
MAX_KEY_LENGTH = 100  # experiment, variation, unit_type, flag keys in summaries
MAX_EVENT_KEY_LENGTH = 200  # a track event's name
MAX_EVALUATION_ENTRIES = 10000  # evaluation summary entries read from one batch
# Top-level key of a batch body: a UUID fixed before the first attempt and
# reused on every retry, so the service can recognise a resent batch.
BATCH_ID_KEY = "batch"


def iso_ts(t: float) -> str:
    """``2026-01-31T12:34:56.789Z`` (UTC, milliseconds) for epoch seconds ``t``."""
    ms = int(t * 1000)
    secs, ms = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z"


def scalar(value):
    """``value`` if it is a JSON scalar worth recording (string, bool, finite number), else None."""
    cls = value.__class__
    if cls is str or cls is bool or cls is int:
        return value
    if cls is float:
        return value if math.isfinite(value) else None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    return None


def exposure_attributes(experiment: dict, context) -> dict:
    """An exposure's ``attributes``: the unit type, and the experiment's dimensions as
    recorded from the context (scalars only). Used by the SDK and by the service for
    the exposures of remote evaluations."""
    attrs = {"unit_type": experiment.get("unit") or "id"}
    dims = experiment.get("dimensions")
    if dims and isinstance(dims, list):
        for name in dims:
            if name.__class__ is str and name != "unit_type":
                v = scalar(context.get(name))
                if v is not None:
                    attrs[name] = v
    return attrs
