"""Console pages, one module per area; importing them registers their routes and nav entries."""

from . import (  # noqa: F401
    audit,
    environments,
    experiments,
    flags,
    home,
    lifecycle,
    metrics,
    segments,
    tokens,
    tools,
    webhooks,
)
