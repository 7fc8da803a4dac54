"""Console pages, one module per area; importing them registers their routes and nav entries."""

from . import audit, environments, experiments, flags, home, metrics, segments, tokens, tools  # noqa: F401
