"""The document of one environment, read from the database."""

import sqlalchemy as sa

from ..domain import environments as environment_domain
from ..domain import flags as flag_domain
from ..domain import holdouts as holdout_domain
from ..domain import metrics as metric_domain
from ..domain import segments as segment_domain
from ..extensions import db
from ..models import Flag, Holdout, Metric, Segment
from .document import (
    canonical_document,
    canonical_flag,
    canonical_holdout,
    canonical_metric,
    canonical_segment,
)


def flag_entry(flag: Flag, environment) -> dict:
    """A flag as the document holds it: its fields and its targeting in ``environment``."""
    return canonical_flag({
        "key": flag.key, "name": flag.name, "description": flag.description, "kind": flag.kind,
        "type": flag.type, "variations": flag.variations, "tags": flag.tags, "owner": flag.owner,
        "temporary": flag.temporary, "targeting": flag_domain.targeting_for(flag, environment),
    })


def segment_entry(segment: Segment) -> dict:
    return canonical_segment(segment_domain.snapshot(segment))


def metric_entry(metric: Metric) -> dict:
    return canonical_metric(metric_domain.snapshot(metric))


def holdout_entry(holdout: Holdout) -> dict:
    return canonical_holdout(holdout_domain.snapshot(holdout))


def export_document(environment_key: str) -> dict:
    """Every live flag (with its targeting in the environment), every segment and metric,
    and the environment's holdouts."""
    environment = environment_domain.get(environment_key)
    flags = db.session.scalars(sa.select(Flag).where(Flag.archived.is_(False)))
    return canonical_document(
        environment.key,
        [flag_entry(f, environment) for f in flags],
        [segment_entry(s) for s in db.session.scalars(sa.select(Segment))],
        [metric_entry(m) for m in db.session.scalars(sa.select(Metric))],
        [holdout_entry(h) for h in db.session.scalars(sa.select(Holdout).where(
            Holdout.environment_id == environment.id))],
    )
