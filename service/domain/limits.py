"""Every size limit of the service, in one place (documented in docs/operations.md).

A write over a limit is refused with 400 ``validation_error`` naming the
field and the limit; nothing is stored. The numbers follow what comparable
services document (Unleash: 250 values per constraint, 30 constraints per
strategy; LaunchDarkly: list-based segments of up to 15,000 targets), with
room for real use and a bound on what one write can cost: every ruleset is
sent to every SDK, so the largest targeting is also the largest download.
Limits that SDKs must know too (keys, units, event batches) are the wire
contract's (pitcrew.wire) and only named here.
"""

from pitcrew import wire

# --- request bodies
# Bodies larger than this get 413 (also settable: MAX_CONTENT_LENGTH).
MAX_BODY_BYTES = 2 * 1024 * 1024
# JSON nested deeper than this is refused as malformed (the parsers and the
# JSON columns recurse; Python's own limit is about 1000).
MAX_JSON_DEPTH = 64

# --- text
KEY_CHARS = wire.MAX_KEY_LENGTH  # flag, segment, metric, experiment, environment and variation keys
NAME_CHARS = 200
DESCRIPTION_CHARS = 5000
LONG_TEXT_CHARS = 10000  # experiment hypotheses and decision summaries
OWNER_CHARS = 200
TAG_CHARS = 100
ATTRIBUTE_CHARS = 100  # context attribute names (conditions, bucket_by, units, dimensions)
SALT_CHARS = 200
UNIT_CHARS = wire.MAX_UNIT_LENGTH  # unit ids: targets, segment lists, events
CONDITION_STRING_CHARS = 1000  # each string in a condition's values (also the longest regex)
RULE_ID_CHARS = 100
RULE_DESCRIPTION_CHARS = 1000
COMMENT_CHARS = 1000  # X-Pitcrew-Comment, stored with the audit entry

# --- lists
TAGS = 50
VARIATIONS = 100
VALUES_PER_CONDITION = 1000
CONDITIONS_PER_RULE = 30
RULES_PER_FLAG = 200  # per environment
PREREQUISITES = 20
TARGETS_PER_FLAG = 10000  # unit ids over all target lists of one environment's targeting
TARGETING_BYTES = 256 * 1024  # one environment's targeting, as compact JSON
SEGMENT_UNITS = 15000  # included, and separately excluded
SEGMENT_RULES = 100
SEGMENT_BYTES = 1024 * 1024  # a whole segment (lists and rules), as compact JSON
EXPERIMENT_METRICS = 50  # secondary, and separately guardrail
EXPERIMENT_DIMENSIONS = 20
EXPERIMENT_VARIATIONS = 20

# --- holdouts (docs/holdouts.md)
# "holdout:" + key is the exposures' experiment column (KEY_CHARS wide).
HOLDOUT_KEY_CHARS = KEY_CHARS - len(wire.HOLDOUT_PREFIX)
HOLDOUT_MIN_PERCENT = 0.5
HOLDOUT_MAX_PERCENT = 10
HOLDOUT_RESULT_METRICS = 50  # metrics in one results request

# --- events (POST /sdk/v1/events)
EVENTS_PER_BATCH = wire.MAX_BATCH_EVENTS
EVENT_BATCH_BYTES = wire.MAX_BATCH_BYTES  # after decompression
EVENT_KEY_CHARS = wire.MAX_EVENT_KEY_LENGTH  # track event keys

# --- webhooks (docs/webhooks.md)
WEBHOOKS = 100  # every announcement is written once per matching webhook
URL_CHARS = 2048

# --- lists of resources
PAGE_SIZE = 500  # ?limit= at most
