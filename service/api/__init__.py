"""/api/v1 blueprints: parse with a schema, call one domain function, serialise."""

from . import (
              audit,
              change_requests,
              environments,
              experiments,
              flags,
              flags_as_code,
              holdouts,
              insights,
              metrics,
              process,
              segments,
              tokens,
              tools,
              webhooks,
)

BLUEPRINTS = [environments.blp, flags.blp, segments.blp, metrics.blp, experiments.blp, tools.blp, tokens.blp,
              audit.blp, change_requests.blp, process.blp, flags_as_code.blp, webhooks.blp, insights.blp,
              holdouts.blp]
