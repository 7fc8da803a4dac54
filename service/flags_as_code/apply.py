"""Diff and apply of a document against the database (docs/flags-as-code.md).

:func:`apply` validates the document's shape, computes the diff (each flag,
segment and metric ``created``, ``changed`` with a field-level diff, or
``unchanged``) and then writes every change through the domain functions, so
each write has its usual validation, version, history and audit entry and
bumps the rulesets it changes. All writes happen in one transaction: any
problem rolls everything back and is reported as one 400 whose details name
the document path of every problem. A dry run performs the same writes,
so it finds the same problems, and then rolls them back.

Order of writes, so references resolve: metrics; segments; new flags; field
updates of existing flags (new variation keys are added before targeting
uses them); targeting, prerequisite flags before the flags that need them;
finally the removal of variation keys the document no longer has. Holdouts (of the
document's environment) are written with the segments, before any targeting
names them. What the document does not name is left alone (nothing is deleted
or archived).

In a protected environment (``approvals_required > 0``) each flag's targeting
change becomes a change request instead of a write (one per flag, or the
author's open one reused or refreshed: ``change_requests.propose_targeting``);
everything else is written as usual, and the result lists the requests.
"""

from dataclasses import dataclass, field

import marshmallow as ma
import sqlalchemy as sa

from ..domain import Actor, unit_of_work
from ..domain import change_requests as request_domain
from ..domain import environments as environment_domain
from ..domain import flags as flag_domain
from ..domain import holdouts as holdout_domain
from ..domain import metrics as metric_domain
from ..domain import segments as segment_domain
from ..domain.diff import json_diff
from ..domain.errors import Conflict, DomainError, NotFound, ValidationFailed
from ..domain.protection import ChangeRequestRequired
from ..extensions import db
from ..models import Environment, Flag, Holdout, Metric, Segment
from ..schemas.common import flatten_messages
from ..schemas.documents import DocumentSchema
from .document import (
    canonical_flag,
    canonical_holdout,
    canonical_metric,
    canonical_segment,
    canonical_targeting,
)
from .export import flag_entry, holdout_entry, metric_entry, segment_entry

SECTIONS = ("flags", "segments", "metrics", "holdouts")
FLAG_FIELDS = ("name", "description", "type", "tags", "owner", "temporary")
DEFAULT_COMMENT = "flags as code: apply"


@dataclass
class _Item:
    section: str
    index: int
    new: dict
    row: object = None
    current: dict | None = None
    changes: list = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.new["key"]

    @property
    def path(self) -> str:
        return f"{self.section}.{self.index}"

    @property
    def status(self) -> str:
        if self.row is None:
            return "created"
        return "changed" if self.changes else "unchanged"


# ---------------------------------------------------------------- reading the document

def load(raw) -> dict:
    """The document validated by its schema (defaults filled), or ValidationFailed naming each path."""
    if not isinstance(raw, dict):
        raise ValidationFailed("The document is invalid.", {"_body": ["The document must be a mapping (object)."]})
    try:
        document = DocumentSchema().load(raw)
    except ma.ValidationError as exc:
        raise ValidationFailed("The document is invalid.", flatten_messages(exc.messages)) from None
    errors: dict[str, list[str]] = {}
    for section in SECTIONS:
        seen: dict[str, int] = {}
        for i, item in enumerate(document[section]):
            first = seen.setdefault(item["key"], i)
            if first != i:
                errors[f"{section}.{i}.key"] = [f"Duplicate key {item['key']!r} (also {section}.{first})."]
    if errors:
        raise ValidationFailed("The document is invalid.", errors)
    return document


def _environment(key: str) -> Environment:
    try:
        return environment_domain.get(key)
    except NotFound:
        raise ValidationFailed("The document is invalid.", {"environment": [
            f"Unknown environment {key!r}; create it first (POST /api/v1/environments)."]}) from None


# ---------------------------------------------------------------- the diff

def _by_key(model, keys) -> dict:
    keys = list(keys)
    if not keys:
        return {}
    return {row.key: row for row in db.session.scalars(sa.select(model).where(model.key.in_(keys)))}


def _plan(document: dict, environment: Environment) -> tuple[dict[str, list[_Item]], dict, list]:
    errors: dict[str, list[str]] = {}
    warnings = []
    plan: dict[str, list[_Item]] = {}

    flags = _by_key(Flag, (f["key"] for f in document["flags"]))
    plan["flags"] = []
    for i, data in enumerate(document["flags"]):
        item = _Item("flags", i, canonical_flag(data), flags.get(data["key"]))
        if item.row is not None:
            item.current = flag_entry(item.row, environment)
            if item.row.kind != item.new["kind"]:
                errors[f"{item.path}.kind"] = [f"A flag's kind cannot change (it is {item.row.kind!r}); "
                                               "create a flag with another key instead."]
            item.changes = json_diff(item.current, item.new)
            if item.row.archived:
                item.changes.insert(0, {"path": "archived", "op": "replace", "before": True, "after": False})
        plan["flags"].append(item)

    for section, model, canonical, entry in (("segments", Segment, canonical_segment, segment_entry),
                                             ("metrics", Metric, canonical_metric, metric_entry)):
        rows = _by_key(model, (d["key"] for d in document[section]))
        plan[section] = []
        for i, data in enumerate(document[section]):
            item = _Item(section, i, canonical(data), rows.get(data["key"]))
            if item.row is not None:
                item.current = entry(item.row)
                item.changes = json_diff(item.current, item.new)
            plan[section].append(item)

    rows = _by_key(Holdout, (d["key"] for d in document["holdouts"]))
    plan["holdouts"] = []
    for i, data in enumerate(document["holdouts"]):
        item = _Item("holdouts", i, canonical_holdout(data), rows.get(data["key"]))
        if item.row is not None:
            if item.row.environment_id != environment.id:
                errors[f"{item.path}.key"] = [f"Holdout {item.key!r} belongs to another environment; holdout "
                                              "keys are unique over all environments."]
            item.current = holdout_entry(item.row)
            item.changes = json_diff(item.current, item.new)
        plan["holdouts"].append(item)
    return plan, errors, warnings


def _result(plan: dict[str, list[_Item]], environment: Environment, warnings: list, dry_run: bool,
            proposals: list[dict]) -> dict:
    result = {"dry_run": dry_run, "environment": environment.key,
              "summary": {"created": 0, "changed": 0, "unchanged": 0}}
    for section in SECTIONS:
        items = sorted(plan[section], key=lambda item: item.key)
        result[section] = [{"key": item.key, "status": item.status, "changes": item.changes} for item in items]
        for item in items:
            result["summary"][item.status] += 1
    result["warnings"] = sorted(warnings, key=lambda w: w["path"])
    if dry_run:  # the ids of requests a dry run would open were never committed
        proposals = [{**p, "id": None} if p["status"] == "opened" else p for p in proposals]
    result["change_requests"] = sorted(proposals, key=lambda p: p["flag"])
    return result


# ---------------------------------------------------------------- writing

def _write_targeting(actor: Actor, item: _Item, environment: Environment, proposals: list[dict]) -> None:
    """The ONE place where an apply writes a flag's targeting in the document's environment.

    In an environment that requires approvals the targeting is proposed in a
    change request instead (docs/flags-as-code.md, "Protected environments"):
    opened, or the author's active one for the flag reused (``pending``) or
    refreshed (``updated``); ``proposals`` collects them for the result.
    """
    targeting = item.new["targeting"]
    if environment.approvals_required > 0:
        request, status = request_domain.propose_targeting(actor, item.key, environment.key, targeting)
        proposals.append(_proposal(item, request, status))
        return
    flag_domain.put_targeting(actor, item.key, environment.key, targeting)


def _proposal(item: _Item, request, status: str) -> dict:
    return {"flag": item.key, "path": f"{item.path}.targeting", "id": request.id, "status": status,
            "state": request.state, "revision": request.revision}


def _stray_request_warning(item: _Item, mine: dict) -> dict | None:
    """The document leaves a protected environment's targeting as it is, but the author's own
    active request for the flag (``mine``: by flag id) would change it: say so (it is left alone)."""
    request = mine.get(item.row.id) if item.row is not None else None
    if request is None:
        return None
    return {"path": f"{item.path}.targeting", "message": (
        f"Your change request #{request.id} ({request.state}) proposes another targeting; the document keeps "
        "the live one. Cancel the request if it is no longer wanted.")}


def _add_errors(errors: dict, path: str, exc: DomainError) -> None:
    if isinstance(exc, Conflict) or not exc.details:
        errors.setdefault(path, []).append(exc.message)
        return
    for key, messages in exc.details.items():
        messages = messages if isinstance(messages, list) else [messages]
        if key in ("", "_body"):
            target = path
        elif key.startswith("environments."):  # another environment's targeting uses a variation
            target, messages = f"{path}.variations", [f"{key}: {m}" for m in messages]
        else:
            target = f"{path}.{key}"
        errors.setdefault(target, []).extend(str(m) for m in messages)


def _attempt(errors: dict, path: str, fn, *args, prefix: str | None = None, **kwargs):
    """``fn(...)``, or None with its problems recorded at ``path`` (``prefix.`` dropped from theirs)."""
    try:
        return fn(*args, **kwargs)
    except ChangeRequestRequired:  # the environment became protected meanwhile: refuse the whole apply
        raise
    except DomainError as exc:
        if prefix:
            exc.details = {key[len(prefix) + 1:] if key.startswith(prefix + ".") else key: messages
                           for key, messages in exc.details.items()}
        _add_errors(errors, path, exc)
        return None


def _prerequisites_first(items: list[_Item]) -> list[_Item]:
    """Items ordered so a flag's prerequisites (among ``items``) come before it; document order otherwise.

    A cycle keeps document order: the domain then reports it at the flag's path."""
    by_key = {item.key: item for item in items}
    needs = {item.key: {p["flag"] for p in item.new["targeting"]["prerequisites"] if p["flag"] in by_key}
             for item in items}
    ordered, done = [], set()
    progress = True
    while progress:
        progress = False
        for item in items:
            if item.key not in done and needs[item.key] <= done:
                ordered.append(item)
                done.add(item.key)
                progress = True
    return ordered + [item for item in items if item.key not in done]


def _write_metrics_or_segments(actor, errors, items: list[_Item], domain, fields) -> None:
    for item in items:
        data = dict(item.new)
        if item.status == "created":
            _attempt(errors, item.path, domain.create, actor, data)
        elif item.status == "changed":
            changes = {f: item.new[f] for f in fields if item.new[f] != item.current[f]}
            _attempt(errors, item.path, domain.update, actor, item.key, changes)


def _write(actor: Actor, plan: dict[str, list[_Item]], environment: Environment, errors: dict,
           warnings: list, proposals: list) -> None:
    protected = environment.approvals_required > 0
    mine = request_domain.active_targeting_requests(actor.name, environment) if protected else {}
    _write_metrics_or_segments(actor, errors, plan["metrics"], metric_domain, metric_domain.FIELDS)
    _write_metrics_or_segments(actor, errors, plan["segments"], segment_domain, segment_domain.FIELDS)
    for item in plan["holdouts"]:
        if any(p.startswith(item.path + ".") for p in errors):
            continue
        if item.status == "created":
            _attempt(errors, item.path, holdout_domain.create, actor, {**item.new, "environment": environment.key})
        elif item.status == "changed":
            changes = {f: item.new[f] for f in holdout_domain.FIELDS if item.new[f] != item.current[f]}
            _attempt(errors, item.path, holdout_domain.update, actor, item.key, changes)

    flags = [item for item in plan["flags"] if not any(p.startswith(item.path + ".") for p in errors)]
    targeting_writes: list[_Item] = []
    final_variations: dict[str, tuple[_Item, list]] = {}
    for item in flags:
        new = item.new
        if item.status == "created":
            fields = {f: new[f] for f in ("key", "name", "description", "kind", "variations") + FLAG_FIELDS}
            if _attempt(errors, item.path, flag_domain.create, actor, fields) is None:
                continue
            default = canonical_targeting(flag_domain.default_targeting(new["variations"]))
            if new["targeting"] != default:
                targeting_writes.append(item)
        elif item.status == "changed":
            changes = {f: new[f] for f in FLAG_FIELDS if new[f] != item.current[f]}
            if item.row.archived:
                changes["archived"] = False
            if new["variations"] != item.current["variations"]:
                keys = {v["key"] for v in new["variations"]}
                dropped = [v for v in item.current["variations"] if v["key"] not in keys]
                if dropped and new["kind"] != "boolean" and len(new["variations"]) >= 2:
                    # Keep the dropped keys until the new targeting no longer uses them.
                    # They go in the middle: environments never configured derive
                    # their targeting from the first and last keys, which must be
                    # new keys for the final update to validate.
                    first, *rest = new["variations"]
                    changes["variations"] = [first, *dropped, *rest]
                    final_variations[item.key] = (item, new["variations"])
                    if changes["variations"] == item.current["variations"]:
                        del changes["variations"]  # kept from an earlier apply (see below): nothing to write
                else:
                    changes["variations"] = new["variations"]
            if changes and _attempt(errors, item.path, flag_domain.update, actor, item.key, changes) is None:
                continue
            if new["targeting"] != item.current["targeting"]:
                targeting_writes.append(item)
        if item.row is not None and new["targeting"] == item.current["targeting"]:
            stray = _stray_request_warning(item, mine)
            if stray:
                warnings.append(stray)

    for item in _prerequisites_first(targeting_writes):
        _attempt(errors, f"{item.path}.targeting", _write_targeting, actor, item, environment, proposals,
                 prefix="targeting")
    proposed = {p["flag"]: p for p in proposals}
    for item, variations in final_variations.values():
        if protected and item.key in proposed:
            # The live targeting still uses the dropped keys until the request is applied.
            kept = [v["key"] for v in item.current["variations"] if v["key"] not in {x["key"] for x in variations}]
            warnings.append({"path": f"{item.path}.variations", "message": (
                f"Variation(s) {', '.join(map(repr, kept))} stay until the flag's change request is applied (the "
                "live targeting uses them); apply the document again then to remove them.")})
            continue
        _attempt(errors, item.path, flag_domain.update, actor, item.key, {"variations": variations})


def apply(actor: Actor, raw, *, dry_run: bool = False) -> dict:
    """Apply a document (the parsed JSON/YAML data) in one transaction; return the diff.

    Raises ValidationFailed (details keyed by document path) when anything in
    it cannot be written; nothing is changed then. In an environment that
    requires approvals, targeting changes open change requests (listed in the
    result's ``change_requests``) and the rest is written. ``dry_run`` writes
    and then rolls back, so it validates exactly like a real apply and lists
    the requests it would open.
    """
    document = load(raw)
    environment = _environment(document["environment"])
    actor = Actor(actor.name, actor.request_id, actor.comment or DEFAULT_COMMENT)
    proposals: list[dict] = []
    try:
        with unit_of_work.deferred() as work:
            plan, errors, warnings = _plan(document, environment)
            _write(actor, plan, environment, errors, warnings, proposals)
            if errors:
                raise ValidationFailed("The document cannot be applied; nothing was changed.", errors)
    except BaseException:
        db.session.rollback()
        raise
    if dry_run:
        db.session.rollback()
    elif work.pending:
        unit_of_work.commit()
    return _result(plan, environment, warnings, dry_run, proposals)
