"""/api/v1 blueprints: parse with a schema, call one domain function, serialise."""

from . import audit, environments, tokens

BLUEPRINTS = [environments.blp, tokens.blp, audit.blp]
