"""/sdk/v1 blueprints, for SDK keys only: config, stream, evaluate, events."""

from . import config, events

BLUEPRINTS = [config.blp, events.blp]
