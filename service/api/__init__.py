"""/api/v1 blueprints: parse with a schema, call one domain function, serialise."""

from . import audit, environments, flags, segments, tokens

BLUEPRINTS = [environments.blp, flags.blp, segments.blp, tokens.blp, audit.blp]
