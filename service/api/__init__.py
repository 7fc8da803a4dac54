"""/api/v1 blueprints: parse with a schema, call one domain function, serialise."""

from . import (
              audit,
              environments,
              experiments,
              flags,
              flags_as_code,
              metrics,
              segments,
              tokens,
              tools,
)

BLUEPRINTS = [environments.blp, flags.blp, segments.blp, metrics.blp, experiments.blp, tools.blp, tokens.blp,
              audit.blp, flags_as_code.blp]
