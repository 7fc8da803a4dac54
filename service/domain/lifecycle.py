"""Flag lifecycle: stages computed from evaluations and targeting history (docs/lifecycle.md).

Inputs, all kept by the service as it runs:

* ``flag_usage``: per environment, when SDK summaries or remote
  evaluations last (and first) reported the flag (service/ingest.py);
* ``targeting_changes``: every change of a flag's targeting per
  environment, with what it serves afterwards (service/domain/flags.py);
* the flag's ``type``, ``temporary`` and ``created_at``, and which flags
  other flags name as prerequisites.

Conditions, each computed on its own (``now`` is injectable):

* ``new``: never evaluated in any environment;
* ``launched``: in production the targeting serves one variation to
  everyone and has not changed for >= 7 days (since: that change + 7 d);
* ``inactive``: evaluated once, but not in any environment for >= 7 days
  (since: the last evaluation + 7 d);
* ``potentially_stale``: temporary, and older than its type's lifetime;
* ``ready_to_archive``: temporary, not a prerequisite of a live flag, and
  launched or inactive for >= 30 days (since the condition began);
* ``active``: none of the above.

A flag shows one stage, the first that holds in :data:`PRECEDENCE`: the
most actionable first (archive it, then review it), then what the data says.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from ..extensions import db
from ..models import (
    Environment,
    Flag,
    FlagEvaluation,
    FlagStaleNotice,
    FlagTargeting,
    FlagUsage,
    TargetingChange,
)
from ..models.types import utcnow
from . import unit_of_work
from .announce import announce
from .pagination import LIKE_ESCAPE, Page, contains_pattern, decode_cursor, encode_cursor
from .serving import LIFETIMES, single_variation

STAGES = ("new", "active", "launched", "inactive", "potentially_stale", "ready_to_archive")
PRECEDENCE = ("ready_to_archive", "potentially_stale", "new", "inactive", "launched", "active")
PRODUCTION = "production"
LAUNCHED_AFTER = timedelta(days=7)
INACTIVE_AFTER = timedelta(days=7)
ARCHIVE_AFTER = timedelta(days=30)
CHUNK = 500
log = logging.getLogger("pitcrew.lifecycle")


@dataclass
class Lifecycle:
    stage: str
    reason: str
    last_evaluated_at: datetime | None
    conditions: dict[str, str] = field(default_factory=dict)  # condition -> why it holds


def _days(delta: timedelta) -> int:
    return int(delta.total_seconds() // 86400)


def _date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


# ---------------------------------------------------------------- inputs, in bulk

def usage(flag_keys: Iterable[str]) -> dict[str, tuple[datetime, datetime]]:
    """{flag key: (first evaluated, last evaluated)} over every environment."""
    keys = list(flag_keys)
    if not keys:
        return {}
    rows = db.session.execute(
        sa.select(FlagUsage.flag, sa.func.min(FlagUsage.first_evaluated_at), sa.func.max(FlagUsage.last_evaluated_at))
        .where(FlagUsage.flag.in_(keys)).group_by(FlagUsage.flag)).all()
    return {key: (first, last) for key, first, last in rows}


def _production() -> Environment | None:
    return db.session.scalars(sa.select(Environment).where(Environment.key == PRODUCTION)).first()


def _production_state(flags: list[Flag], environment: Environment | None) -> dict[int, tuple[str | None, datetime]]:
    """{flag id: (the variation production serves everyone or None, since when unchanged)}."""
    if environment is None or not flags:
        return {}
    ids = [f.id for f in flags]
    targeting = dict(db.session.execute(
        sa.select(FlagTargeting.flag_id, FlagTargeting.targeting)
        .where(FlagTargeting.environment_id == environment.id, FlagTargeting.flag_id.in_(ids))).all())
    changed = dict(db.session.execute(
        sa.select(TargetingChange.flag_id, sa.func.max(TargetingChange.changed_at))
        .where(TargetingChange.environment_id == environment.id, TargetingChange.flag_id.in_(ids))
        .group_by(TargetingChange.flag_id)).all())
    state = {}
    for flag in flags:
        stored = targeting.get(flag.id)
        # Never configured: off, serving its off variation to everyone since the flag exists.
        serves = single_variation(stored) if stored is not None else "off variation"
        state[flag.id] = (serves, changed.get(flag.id) or flag.created_at)
    return state


def prerequisite_keys(among: Iterable[str] | None = None) -> set[str]:
    """Keys of flags that some live flag names as a prerequisite (in any environment), of ``among`` if given.

    Narrowed in SQL by the JSON text (``"flag"`` occurs only in prerequisites;
    for a few flags, their quoted keys), the exact test in Python."""
    text = sa.cast(FlagTargeting.targeting, sa.Text)
    keys = None if among is None else set(among)
    if keys is not None and len(keys) <= 20:
        narrow = sa.or_(*(text.like(contains_pattern(f'"{key}"'), escape=LIKE_ESCAPE) for key in keys))
    else:
        narrow = text.like('%"flag"%')
    rows = db.session.execute(sa.select(FlagTargeting.targeting).join(Flag, Flag.id == FlagTargeting.flag_id)
                              .where(Flag.archived.is_(False), narrow)).scalars()
    found = {p.get("flag") for targeting in rows for p in (targeting.get("prerequisites") or [])
             if isinstance(p, dict)}
    return found if keys is None else found & keys


# ---------------------------------------------------------------- the stages

def compute(flags: list[Flag], now: datetime | None = None) -> dict[int, Lifecycle]:
    """The lifecycle of each flag, from a few bulk queries (no query per flag)."""
    now = now or utcnow()
    flags = list(flags)
    if not flags:
        return {}
    used = usage(f.key for f in flags)
    production = _production()
    state = _production_state(flags, production)
    prerequisites = prerequisite_keys(f.key for f in flags)
    return {flag.id: _lifecycle(flag, used.get(flag.key), state.get(flag.id), flag.key in prerequisites, now)
            for flag in flags}


def _lifecycle(flag: Flag, used, production, is_prerequisite: bool, now: datetime) -> Lifecycle:
    conditions: dict[str, str] = {}
    since: dict[str, datetime] = {}
    last = used[1] if used else None
    if last is None:
        conditions["new"] = "Never evaluated in any environment."
    elif now - last >= INACTIVE_AFTER:
        since["inactive"] = last + INACTIVE_AFTER
        conditions["inactive"] = f"No evaluations in any environment for {_days(now - last)} days (last {_date(last)})."
    if production is not None:
        serves, unchanged_since = production
        if serves is not None and now - unchanged_since >= LAUNCHED_AFTER:
            since["launched"] = unchanged_since + LAUNCHED_AFTER
            what = "its off variation" if serves == "off variation" else f"'{serves}'"
            conditions["launched"] = (f"Serves {what} to everyone in production, unchanged for "
                                      f"{_days(now - unchanged_since)} days (since {_date(unchanged_since)}).")
    lifetime = LIFETIMES.get(flag.type)
    if flag.temporary and lifetime is not None and now - flag.created_at >= lifetime:
        conditions["potentially_stale"] = (
            f"Temporary {flag.type} flag created {_days(now - flag.created_at)} days ago "
            f"(expected lifetime {_days(lifetime)} days).")
    if flag.temporary and not is_prerequisite:
        for stage in ("launched", "inactive"):
            if stage in since and now - since[stage] >= ARCHIVE_AFTER:
                conditions["ready_to_archive"] = (f"{stage.capitalize()} for {_days(now - since[stage])} days, "
                                                  f"temporary, and no flag needs it: "
                                                  + conditions[stage][0].lower() + conditions[stage][1:])
                break
    if not conditions:
        conditions["active"] = (f"Evaluated {_date(last)}." if last else "In use.")
    stage = next(s for s in PRECEDENCE if s in conditions or s == "active")
    reason = conditions.get(stage) or "Evaluated recently; not launched in production."
    return Lifecycle(stage, reason, last, conditions)


def of(flag: Flag, now: datetime | None = None) -> Lifecycle:
    return compute([flag], now)[flag.id]


def filter_page(stmt, stage: str, *, limit: int, cursor: str | None, now: datetime | None = None) -> Page:
    """One page of the flags of ``stmt`` (a SELECT of Flag) whose stage is ``stage``, by id.

    Stages depend on data outside the flags table, so they are computed
    chunk by chunk (:data:`CHUNK` flags, a few queries each) until the page is full."""
    now = now or utcnow()
    after = decode_cursor(cursor) if cursor else 0
    found: list[Flag] = []
    for chunk in _in_chunks(stmt, after):
        stages = compute(chunk, now)
        found += [flag for flag in chunk if stages[flag.id].stage == stage]
        if len(found) > limit:
            break
    more = len(found) > limit
    found = found[:limit]
    return Page(found, encode_cursor(found[-1].id) if more and found else None)


def _in_chunks(stmt, after: int = 0):
    """The flags of ``stmt`` (a SELECT of Flag) with ids above ``after``, CHUNK at a time in id
    order, so memory stays bounded however many there are."""
    while True:
        chunk = list(db.session.scalars(stmt.where(Flag.id > after).order_by(Flag.id).limit(CHUNK)))
        if chunk:
            yield chunk
        if len(chunk) < CHUNK:
            return
        after = chunk[-1].id


def _live_flags_in_chunks():
    return _in_chunks(sa.select(Flag).where(Flag.archived.is_(False)))


def cleanup(now: datetime | None = None) -> list[tuple[Flag, Lifecycle]]:
    """Live flags that are potentially stale or ready to archive, the latter first, oldest first."""
    now = now or utcnow()
    out: list[tuple[Flag, Lifecycle]] = []
    for chunk in _live_flags_in_chunks():
        stages = compute(chunk, now)
        out += [(f, stages[f.id]) for f in chunk if stages[f.id].stage in ("ready_to_archive", "potentially_stale")]
    order = {"ready_to_archive": 0, "potentially_stale": 1}
    return sorted(out, key=lambda pair: (order[pair[1].stage], pair[0].created_at, pair[0].id))


def counts(now: datetime | None = None) -> dict[str, int]:
    """How many live flags are in each stage."""
    now = now or utcnow()
    totals = dict.fromkeys(STAGES, 0)
    for chunk in _live_flags_in_chunks():
        for item in compute(chunk, now).values():
            totals[item.stage] += 1
    return totals


# ---------------------------------------------------------------- evaluations of one flag

def evaluations(flag: Flag, *, days: int = 30, now: datetime | None = None) -> dict:
    """Per environment: first/last evaluation and daily counts of the last ``days`` UTC days."""
    now = now or utcnow()
    since = (now - timedelta(days=days - 1)).date()
    environments = {e.id: e.key for e in db.session.scalars(sa.select(Environment).order_by(Environment.id))}
    out = {key: {"first_evaluated_at": None, "last_evaluated_at": None, "days": []} for key in environments.values()}
    for row in db.session.scalars(sa.select(FlagUsage).where(FlagUsage.flag == flag.key)):
        if row.environment_id in environments:
            entry = out[environments[row.environment_id]]
            entry["first_evaluated_at"], entry["last_evaluated_at"] = row.first_evaluated_at, row.last_evaluated_at
    rows = db.session.execute(
        sa.select(FlagEvaluation.environment_id, FlagEvaluation.day, FlagEvaluation.variation,
                  sa.func.sum(FlagEvaluation.count))
        .where(FlagEvaluation.flag == flag.key, FlagEvaluation.day >= since)
        .group_by(FlagEvaluation.environment_id, FlagEvaluation.day, FlagEvaluation.variation)
        .order_by(FlagEvaluation.day)).all()
    by_day: dict[tuple[str, object], dict] = {}
    for env_id, day, variation, count in rows:
        if env_id not in environments:
            continue
        key = (environments[env_id], day)
        if key not in by_day:
            by_day[key] = {"day": day.isoformat(), "count": 0, "variations": {}}
            out[environments[env_id]]["days"].append(by_day[key])
        by_day[key]["count"] += int(count)
        by_day[key]["variations"][variation or ""] = int(count)
    return {"flag": flag.key, "days": days, "environments": out}


# ---------------------------------------------------------------- flag.stale, by the worker

def announce_stale(now: datetime | None = None) -> int:
    """Announce ``flag.stale`` for each live flag that became potentially stale (once per entry).

    A flag that stops being potentially stale (made permanent, given a
    type without lifetime, archived) loses its notice, so entering the
    stage again announces again. One transaction; the number announced."""
    now = now or utcnow()
    temporary = {t: lifetime for t, lifetime in LIFETIMES.items() if lifetime is not None}
    stale_now = sa.or_(*(sa.and_(Flag.type == t, Flag.created_at <= now - lifetime) for t, lifetime in temporary.items()))
    candidates = list(db.session.scalars(
        sa.select(Flag).where(Flag.archived.is_(False), Flag.temporary.is_(True), stale_now,
                              ~sa.exists().where(FlagStaleNotice.flag_id == Flag.id)).order_by(Flag.id)))
    # Notices of flags no longer potentially stale are withdrawn (re-armed).
    db.session.execute(sa.delete(FlagStaleNotice).where(FlagStaleNotice.flag_id.in_(
        sa.select(Flag.id).where(sa.or_(Flag.archived.is_(True), Flag.temporary.is_(False), ~stale_now)))))
    stages = compute(candidates, now) if candidates else {}
    for flag in candidates:
        db.session.add(FlagStaleNotice(flag_id=flag.id, announced_at=now))
        item = stages[flag.id]
        announce("flag.stale", {
            "flag": {"key": flag.key, "name": flag.name, "type": flag.type, "temporary": flag.temporary,
                     "owner": flag.owner, "created_at": flag.created_at.isoformat(), "version": flag.version},
            "stage": item.stage, "reason": item.conditions["potentially_stale"],
            "last_evaluated_at": item.last_evaluated_at.isoformat() if item.last_evaluated_at else None,
        })
    unit_of_work.commit()
    if candidates:
        log.info("flags announced stale", extra={"fields": {"count": len(candidates)}})
    return len(candidates)
