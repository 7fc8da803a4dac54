"""Console pages, one module per area; importing them registers their routes and nav entries."""

from . import (  # noqa: F401
    audit,
    change_requests,
    environments,
    experiments,
    flags,
    flags_as_code,
    holdouts,
    home,
    lifecycle,
    metrics,
    rollouts,
    schedules,
    segments,
    tokens,
    tools,
    webhooks,
)
