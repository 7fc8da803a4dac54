"""Form helpers shared by every console page.

* ``unflatten(form)``: fields named by JSON path (``rules.0.conditions.1.op``)
  become the nested document the API takes; numeric parts are list indices.
* ``load(schema, data)``: the API's marshmallow schema validates the
  document (same rules as the API); errors come back as a ``ValidationFailed``
  whose details are JSON paths, like the domain's own.
* ``FieldErrors``: ``details`` of a ``ValidationFailed`` (``{"rules.0.id": [..]}``),
  looked up by form field name; a field owns its path and everything below
  it (``rules.0.conditions.1.values`` shows ``...values.0`` too); paths no
  field claimed are listed in the form's summary.
* ``attempt(fn, ...)``: run one domain call; a ``DomainError`` is rolled back
  and returned (the page re-renders with it), anything else propagates.
* ``version()``: the version a form was rendered from (hidden ``version``
  field), passed as ``if_match`` so a stale edit is refused, never applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import marshmallow as ma
from flask import request

from ..domain.errors import DomainError, PreconditionFailed, ValidationFailed
from ..extensions import db

_INDEX = re.compile(r"^\d{1,4}$")


def unflatten(pairs, prefix: str = ""):
    """{"a.0.b": "x"} -> {"a": [{"b": "x"}]}; only keys under ``prefix`` (without it)."""
    root: dict = {}
    for key, value in pairs:
        if prefix:
            if not key.startswith(prefix + "."):
                continue
            key = key[len(prefix) + 1:]
        parts = key.split(".")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = value
    return _lists(root)


def _lists(node):
    if not isinstance(node, dict):
        return node
    if node and all(_INDEX.match(k) for k in node):
        return [_lists(node[k]) for k in sorted(node, key=int)]
    return {k: _lists(v) for k, v in node.items()}


def form_items():
    """(name, value) pairs of the posted form, the last value of each name (a checkbox
    follows its hidden "false" field, so a checked box wins)."""
    return [(key, request.form.getlist(key)[-1]) for key in request.form.keys()]


def checked(name: str) -> bool:
    """A checkbox rendered by the ``checkbox`` macro (hidden "false", then the box)."""
    return "true" in request.form.getlist(name)


def lines(text: str | None) -> list[str]:
    """A textarea's non-empty lines (commas also separate)."""
    return [part.strip() for line in (text or "").splitlines() for part in line.split(",") if part.strip()]


def flatten_messages(messages, path: str = "") -> dict[str, list[str]]:
    flat: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, inner in messages.items():
            for p, m in flatten_messages(inner, f"{path}.{key}" if path else str(key)).items():
                flat.setdefault(p, []).extend(m)
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        flat.setdefault(path or "_body", []).extend(messages)
    else:
        flat.setdefault(path or "_body", []).append(str(messages))
    return flat


def load(schema: ma.Schema, data: dict) -> dict:
    """Validate ``data`` with an API schema; ValidationFailed with JSON-path details."""
    try:
        return schema.load(data)
    except ma.ValidationError as exc:
        raise ValidationFailed("The form has errors.", flatten_messages(exc.messages)) from None


@dataclass
class FieldErrors:
    details: dict = field(default_factory=dict)
    claimed: set = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.details)

    def get(self, name: str, exact: bool = False) -> list[str]:
        """Messages for field ``name`` (and, unless ``exact``, the paths under it)."""
        found = []
        for path, messages in self.details.items():
            if path == name or (not exact and path.startswith(name + ".")):
                found += [f"{path[len(name) + 1:]}: {m}" if path != name else m for m in messages]
                self.claimed.add(path)
        return found

    def summary(self) -> list[tuple[str, list[str]]]:
        """Every error, as (path, messages), for the form's error summary."""
        return sorted(self.details.items())

    def unclaimed(self) -> list[tuple[str, list[str]]]:
        return [(p, m) for p, m in sorted(self.details.items()) if p not in self.claimed]


@dataclass
class Outcome:
    value: object = None
    error: DomainError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def conflict(self) -> bool:
        return isinstance(self.error, PreconditionFailed)

    @property
    def errors(self) -> FieldErrors:
        return FieldErrors(dict(self.error.details) if self.error is not None else {})

    @property
    def status(self) -> int:
        """The HTTP status a page re-rendered with this outcome answers (as the API would)."""
        if self.error is None:
            return 200
        return STATUS.get(self.error.code, 400)

    def without_prefix(self, prefix: str) -> FieldErrors:
        """Field errors with ``prefix.`` dropped from their paths: a domain call that nests the
        form's document (``targeting.rules.0.id``) reports at the form's own field names."""
        return FieldErrors(strip_prefix(self.error.details if self.error is not None else {}, prefix))


# Status of a domain error on a console page: the API's (service/errors.py).
STATUS = {"validation_error": 400, "not_found": 404, "forbidden": 403, "conflict": 409,
          "precondition_failed": 409, "change_request_required": 409}


def strip_prefix(details: dict, prefix: str) -> dict:
    out: dict = {}
    for path, messages in (details or {}).items():
        if path.startswith(prefix + "."):
            path = path[len(prefix) + 1:]
        out.setdefault(path, []).extend(messages if isinstance(messages, list) else [messages])
    return out


def attempt(fn, *args, **kwargs) -> Outcome:
    try:
        return Outcome(fn(*args, **kwargs))
    except DomainError as exc:
        db.session.rollback()
        return Outcome(None, exc)


def when(name: str = "at") -> str:
    """A time typed in a form, in UTC unless it names an offset (``2026-12-01T09:00``);
    returned as text for the API schema to parse (and to report at the field)."""
    return (request.form.get(name) or "").strip()


def version(name: str = "version") -> int:
    """The version the form was rendered from; a form without one is refused (400)."""
    raw = request.form.get(name, "")
    if not raw.isdigit():
        raise ValidationFailed("The form does not say which version it edits; reload the page.",
                               {name: ["Missing or not a number."]})
    return int(raw)


def number(text: str | None, *, integer: bool = False):
    """A form number, or the text itself when it is not one (the schema then reports it)."""
    text = (text or "").strip()
    if text == "":
        return None
    try:
        return int(text) if integer else float(text)
    except ValueError:
        return text
