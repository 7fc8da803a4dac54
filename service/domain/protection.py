"""Protected environments: direct writes to their targeting need a change request.

An environment with ``approvals_required > 0`` is protected. The write paths
that change what its SDKs serve call one guard at their top:

* :func:`guard_targeting` in PUT/PATCH targeting,
* :func:`guard_rollback` in a flag rollback (only when the rollback would
  change a protected environment's targeting),
* :func:`guard_experiment` in experiment start/stop/conclude (and in update
  and delete: those change serving when they move traffic or a released
  variation, and the experiment of a running guarded rollout is managed by
  the rollout alone).

A change request proposes each of these (service/domain/change_requests.py:
a targeting, a patch, a rollback's restored targeting, an experiment action).

Each raises :class:`ChangeRequestRequired` (409 ``change_request_required``)
unless the caller runs inside :func:`sanctioned`: the change-request apply,
the worker's scheduled changes and the guarded rollouts, which carry their
own approval.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import sqlalchemy as sa

from ..extensions import db
from ..models import Environment, Experiment, Flag, FlagTargeting, FlagVersion, Rollout
from .errors import Conflict
from .targeting import default_targeting

_sanctioned: ContextVar[bool] = ContextVar("pitcrew_sanctioned_write", default=False)


class ChangeRequestRequired(Conflict):
    code = "change_request_required"


@contextmanager
def sanctioned() -> Iterator[None]:
    """Within this block the guards let writes to protected environments through."""
    token = _sanctioned.set(True)
    try:
        yield
    finally:
        _sanctioned.reset(token)


def is_sanctioned() -> bool:
    return _sanctioned.get()


def _refuse(environment: Environment, what: str) -> ChangeRequestRequired:
    return ChangeRequestRequired(
        f"Environment '{environment.key}' requires {environment.approvals_required} approval(s): {what} "
        "goes through a change request (POST /api/v1/change-requests).",
        {"environment": [f"'{environment.key}' is protected (approvals_required = "
                         f"{environment.approvals_required})."]})


def guard_targeting(environment: Environment) -> None:
    """Refuse a direct targeting write to a protected environment."""
    if environment.approvals_required > 0 and not is_sanctioned():
        raise _refuse(environment, "changing targeting")


def rollback_changes(flag: Flag, version: int) -> list[tuple[Environment, dict]]:
    """The protected environments whose targeting a rollback to ``version`` would change,
    each with the targeting it would restore (empty for an unknown version)."""
    protected = list(db.session.scalars(sa.select(Environment).where(Environment.approvals_required > 0)
                                        .order_by(Environment.id)))
    if not protected:
        return []
    target = db.session.scalar(sa.select(FlagVersion.snapshot).where(
        FlagVersion.flag_id == flag.id, FlagVersion.version == version))
    if target is None:
        return []
    live = dict(db.session.execute(sa.select(FlagTargeting.environment_id, FlagTargeting.targeting)
                                   .where(FlagTargeting.flag_id == flag.id)).all())
    changes = []
    for environment in protected:
        restored = (target.get("environments") or {}).get(environment.key)
        current = live.get(environment.id) or default_targeting(flag.variations)
        if restored is not None and restored != current:
            changes.append((environment, restored))
    return changes


def guard_rollback(flag: Flag, version: int) -> None:
    """Refuse a rollback that would change a protected environment's targeting.

    An unknown version passes: the rollback itself reports it. The refused
    part can be proposed: a change request ``{flag, environment, rollback:
    {version}}`` restores that environment's targeting of the version."""
    if is_sanctioned():
        return
    changes = rollback_changes(flag, version)
    if changes:
        raise _refuse(changes[0][0], f"a rollback that changes its targeting (to version {version}; propose it "
                                     f"with rollback: {{version: {version}}})")


def rollout_of(experiment: Experiment) -> Rollout | None:
    return db.session.scalars(sa.select(Rollout).where(Rollout.experiment_id == experiment.id)).first()


def guard_rollout_experiment(experiment: Experiment) -> None:
    """Refuse (409) any write to the experiment of a running guarded rollout (it would fight the rollout)."""
    rollout = rollout_of(experiment)
    if rollout is not None and rollout.state == "running":
        raise Conflict(f"Experiment '{experiment.key}' belongs to guarded rollout {rollout.id}; "
                       "the rollout manages it (cancel the rollout instead).",
                       {"experiment": [f"Managed by rollout {rollout.id}."]})


SERVING_FIELDS = ("traffic", "released_variation")


def guard_experiment(experiment: Experiment, action: str, changes: dict | None = None) -> None:
    """Refuse experiment lifecycle writes in a protected environment, and any
    write to the experiment of a running guarded rollout (it would fight the rollout).

    ``action`` is start | stop | conclude | update | delete; an update is
    guarded only when it changes serving (traffic, released_variation). A running
    rollout's experiment is refused even to a sanctioned write (an applied change
    request): only the rollout itself moves it."""
    guard_rollout_experiment(experiment)
    if is_sanctioned():
        return
    environment = db.session.get(Environment, experiment.environment_id)
    if environment is None or environment.approvals_required <= 0:
        return
    if action == "update":
        if not any(f in (changes or {}) and changes[f] != getattr(experiment, f) for f in SERVING_FIELDS):
            return
    elif action == "delete":
        visible = experiment.status == "running" or experiment.released_variation is not None
        if not visible:
            return
    raise _refuse(environment, f"experiment {action}")
