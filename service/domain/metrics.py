"""Metrics: what an experiment measures, defined over track events.

Per unit (docs/analysis.md), counting only the unit's events after its first
exposure and inside the metric's window:

* ``conversion``: 1 if the unit has at least one ``event``, else 0;
* ``count``: the number of ``event`` events;
* ``mean``: the sum of the events' ``value`` (an event without a value
  counts 1, so a mean metric on value-less events equals a count);
* ``ratio``: numerator = the sum of ``event`` values (value-less events
  count 1), denominator = the number of ``denominator`` events; the metric
  is sum(numerators) / sum(denominators) over the units of a variation.

``winsorize`` (a quantile in (0, 1), e.g. 0.99) caps each unit's value at
that quantile of all exposed units' values (not for conversion metrics).
"""

import sqlalchemy as sa

from ..extensions import db
from ..models import Experiment, Metric
from . import Actor, audit, unit_of_work
from .errors import Conflict, ValidationFailed
from .locking import get_by_key
from .pagination import Page, paginate_tagged
from .versioning import check_version

TYPES = ("conversion", "mean", "count", "ratio")
DIRECTIONS = ("increase", "decrease")
FIELDS = ("name", "description", "event", "type", "denominator", "direction", "window_hours", "winsorize", "tags")


def snapshot(metric: Metric) -> dict:
    return {"key": metric.key, "version": metric.version, **{f: getattr(metric, f) for f in FIELDS}}


def get(key: str, *, lock: bool = False) -> Metric:
    """The metric; with ``lock``, locked for writing until the unit of work ends (service/domain/locking.py)."""
    return get_by_key(Metric, key, lock=lock, name="Metric")


def get_many(keys) -> dict[str, Metric]:
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    return {m.key: m for m in db.session.scalars(sa.select(Metric).where(Metric.key.in_(keys)))}


def list_metrics(*, tag: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
    return paginate_tagged(sa.select(Metric), Metric.id, Metric.tags, tag, limit=limit, cursor=cursor)


def _check(values: dict) -> None:
    errors: dict[str, list[str]] = {}
    if values["type"] == "ratio":
        if not values.get("denominator"):
            errors["denominator"] = ["Ratio metrics need a denominator event."]
    elif values.get("denominator"):
        errors["denominator"] = ["Only ratio metrics have a denominator."]
    if values["type"] == "conversion" and values.get("winsorize") is not None:
        errors["winsorize"] = ["Conversion metrics are 0/1 per unit and are not winsorized."]
    if errors:
        raise ValidationFailed("The metric is invalid.", errors)


def create(actor: Actor, data: dict) -> Metric:
    values = {f: data.get(f) for f in FIELDS}
    values["name"] = values["name"] or data["key"]
    values["description"] = values["description"] or ""
    values["direction"] = values["direction"] or "increase"
    values["tags"] = values["tags"] or []
    _check(values)
    if db.session.scalars(sa.select(Metric.id).where(Metric.key == data["key"])).first() is not None:
        raise Conflict(f"Metric '{data['key']}' already exists.", {"key": ["Already exists."]})
    metric = Metric(key=data["key"], version=1, **values)
    db.session.add(metric)
    db.session.flush()
    audit.record(actor, "create", "metric", metric.key, after=snapshot(metric))
    unit_of_work.commit()
    return metric


def update(actor: Actor, key: str, changes: dict, if_match: int | None = None) -> Metric:
    metric = get(key, lock=True)
    check_version(metric.version, if_match)
    before = snapshot(metric)
    values = {f: changes.get(f, getattr(metric, f)) for f in FIELDS}
    if "type" in changes and changes["type"] != "ratio" and "denominator" not in changes:
        values["denominator"] = None  # leaving ratio drops the denominator
    _check(values)
    for field, value in values.items():
        setattr(metric, field, value)
    metric.version += 1
    audit.record(actor, "update", "metric", metric.key, before=before, after=snapshot(metric))
    unit_of_work.commit()
    return metric


def experiments_using(key: str) -> list[str]:
    experiments = db.session.scalars(sa.select(Experiment).order_by(Experiment.id))
    return [e.key for e in experiments
            if key == e.primary_metric or key in (e.secondary_metrics or [])
            or key in (e.guardrail_metrics or [])]


def delete(actor: Actor, key: str, if_match: int | None = None) -> None:
    metric = get(key, lock=True)
    check_version(metric.version, if_match)
    used = experiments_using(key)
    if used:
        raise Conflict(f"Metric '{key}' is used by experiments: {', '.join(used)}.",
                       {"key": [f"Used by {', '.join(used)}; remove it from them first."]})
    audit.record(actor, "delete", "metric", metric.key, before=snapshot(metric))
    db.session.delete(metric)
    unit_of_work.commit()
