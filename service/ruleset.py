"""Each environment's SDK ruleset: built from the database, cached per process.

The cache is keyed by the environment's ``ruleset_version``, which every
relevant write bumps in its own transaction. The body is rebuilt (and
compiled, for remote evaluation) only when the version moved. The
service's delivery watcher (service/delivery.py) builds each new version as
soon as it learns of it, so SDK requests find it here already.
"""

import json
import threading
from dataclasses import dataclass, field

import sqlalchemy as sa

from pitcrew.evaluation import CompiledRuleset, compile_ruleset
from pitcrew_edge import protocol

from .domain.holdouts import ruleset_entries as holdout_entries
from .domain.targeting import default_targeting
from .extensions import db
from .models import Environment, Experiment, Flag, FlagTargeting, Segment


@dataclass
class Ruleset:
    environment_id: int
    version: int
    body: bytes
    _compiled: CompiledRuleset | None = field(default=None, repr=False)

    @property
    def etag(self) -> str:
        return protocol.etag(self.version)

    @property
    def compiled(self) -> CompiledRuleset:
        if self._compiled is None:
            self._compiled = compile_ruleset(json.loads(self.body))
        return self._compiled


class EnvironmentGone(LookupError):
    """The environment was deleted while its ruleset was being built."""


_cache: dict[int, Ruleset] = {}
_build_lock = threading.Lock()


def current_version(environment_id: int) -> int | None:
    return db.session.scalar(sa.select(Environment.ruleset_version).where(Environment.id == environment_id))


def current(environment_id: int, version: int | None = None) -> Ruleset:
    """The cached ruleset at ``version`` (read from the database when not given)."""
    if version is None:
        version = current_version(environment_id)
    cached = _cache.get(environment_id)
    if cached is not None and cached.version == version:
        return cached
    with _build_lock:  # one build per change, not one per concurrent request
        cached = _cache.get(environment_id)
        if cached is not None and cached.version == version:
            return cached
        body = json.dumps(build(environment_id, version), separators=(",", ":")).encode()
        ruleset = Ruleset(environment_id, version, body)
        _cache[environment_id] = ruleset
        return ruleset


def build(environment_id: int, version: int) -> dict:
    """The ruleset document SDKs compile: flags with this environment's targeting,
    segments, running and released experiments, their layers, and the holdouts."""
    environment = db.session.get(Environment, environment_id)
    if environment is None:
        raise EnvironmentGone(environment_id)
    targeting = dict(db.session.execute(
        sa.select(FlagTargeting.flag_id, FlagTargeting.targeting)
        .where(FlagTargeting.environment_id == environment_id)).all())
    flags = {}
    for flag in db.session.scalars(sa.select(Flag).where(Flag.archived.is_(False)).order_by(Flag.id)):
        flags[flag.key] = {
            "key": flag.key, "kind": flag.kind, "version": flag.version,
            "variations": [{"key": v["key"], "value": v["value"]} for v in flag.variations],
            "targeting": targeting.get(flag.id) or default_targeting(flag.variations),
        }
    segments = {
        s.key: {"key": s.key, "included": s.included, "excluded": s.excluded, "rules": s.rules}
        for s in db.session.scalars(sa.select(Segment).order_by(Segment.id))
    }
    experiments, layers = {}, {}
    rows = db.session.execute(
        sa.select(Experiment, Flag.key).join(Flag, Flag.id == Experiment.flag_id)
        .where(Experiment.environment_id == environment_id, Flag.archived.is_(False),
               sa.or_(Experiment.status == "running",
                      sa.and_(Experiment.status.in_(("stopped", "concluded")),
                              Experiment.released_variation.is_not(None))))
        .order_by(Experiment.id)
    ).all()
    for experiment, flag_key in rows:
        experiments[experiment.key] = {
            "key": experiment.key, "flag": flag_key, "status": experiment.status,
            "variations": experiment.variations, "control": experiment.control,
            "traffic": experiment.traffic, "unit": experiment.unit, "salt": experiment.salt,
            "layer": experiment.layer, "released_variation": experiment.released_variation,
            "dimensions": experiment.dimensions or [],
        }
        if experiment.layer:
            layers.setdefault(experiment.layer["key"], []).append(
                {"experiment": experiment.key, "range": experiment.layer["range"]})
    return {"version": version, "environment": environment.key, "flags": flags, "segments": segments,
            "experiments": experiments, "layers": layers, "holdouts": holdout_entries(environment_id)}
