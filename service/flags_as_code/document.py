"""Reading and writing the flags-as-code document (docs/flags-as-code.md).

Reading takes untrusted bytes (an HTTP body, a file from a pull request)
and refuses, before anything else looks at them:

* more than :data:`MAX_DOCUMENT_BYTES` bytes (HTTP bodies hit the smaller
  request limit first: 413);
* nesting deeper than :data:`MAX_DEPTH` or more than :data:`MAX_NODES`
  values, so a small body cannot make later stages walk a huge tree;
* YAML aliases (``*name``): ``safe_load`` expands them into shared objects,
  so a few hundred bytes of nested aliases ("billion laughs") would become a
  tree of billions of nodes for every later walk. No document needs them;
* duplicate mapping keys (JSON and YAML parsers silently keep the last one,
  which hides mistakes in reviewed configuration);
* anything that is not JSON data: YAML timestamps, binary, sets, non-string
  keys, NaN/Infinity, unpaired UTF-16 surrogates.

YAML is read with the YAML 1.2 core scalars only (``true``/``false``,
decimal numbers, ``null``): YAML 1.1's ``no``, ``on``, ``1:30`` or
``2024-01-01`` stay strings instead of turning into booleans, sexagesimal
integers or dates. Writing is deterministic: known objects in a fixed field
order, free-form JSON values with sorted keys, lists in stored order.
"""

import json
import math
import re

import yaml

from ..domain.errors import ValidationFailed

MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 500_000

FORMATS = ("yaml", "json")
MEDIA_TYPES = {"json": "application/json", "yaml": "application/yaml"}
YAML_MEDIA_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


def _refuse(message: str, path: str = "_body"):
    return ValidationFailed("The document cannot be read.", {path or "_body": [message]})


class MalformedDocument(ValidationFailed):
    """Not JSON or YAML at all, or nested too deeply: the API's 400 ``malformed_json`` (or ``_yaml``)."""

    def __init__(self, fmt: str, message: str):
        super().__init__(f"The request body is not valid {fmt.upper()}.", {"_body": [message]})
        self.code = f"malformed_{fmt}"


# ---------------------------------------------------------------- reading

class _Refused(Exception):
    def __init__(self, message: str, mark=None):
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        super().__init__(where + message)


class _Loader(yaml.SafeLoader):
    """SafeLoader without aliases, duplicate keys or YAML 1.1 scalar surprises."""

    yaml_implicit_resolvers: dict = {}

    def __init__(self, stream):
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _Refused("YAML aliases (*name) are not accepted; write the value out", self.peek_event().start_mark)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES} values", self.peek_event().start_mark)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused("mapping keys must be strings", key_node.start_mark)
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise _Refused(f"mapping key {key!r} must be a string", key_node.start_mark)
            if key in seen:
                raise _Refused(f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 core schema scalars, restricted to forms YAML 1.1 writers (PyYAML's
# dumper) also quote when they are strings, so every export reads back as written.
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"),
                              list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+][0-9]+)?$"),
                              list("-+0123456789."))
_Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"),
                              ["~", "n", "N", ""])


def _json_pairs(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise _Refused(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _json_constant(name):
    raise _Refused(f"{name} is not a JSON number")


def _join(path: str, part) -> str:
    return f"{path}.{part}" if path else str(part)


def check_tree(value, fmt: str = "json") -> None:
    """Refuse anything but JSON data within the depth and size limits (iterative: no recursion)."""
    stack = [(value, "", 1)]
    nodes = 0
    while stack:
        item, path, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise _refuse(f"more than {MAX_NODES} values")
        if depth > MAX_DEPTH:
            raise MalformedDocument(fmt, f"nested deeper than {MAX_DEPTH} levels (at {path})")
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise _refuse(f"key {key!r} must be a string", path)
                _check_text(key, _join(path, key))
                stack.append((inner, _join(path, key), depth + 1))
        elif isinstance(item, list):
            stack.extend((inner, _join(path, i), depth + 1) for i, inner in enumerate(item))
        elif isinstance(item, str):
            _check_text(item, path)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _refuse("numbers must be finite", path)
        elif item is not None and not isinstance(item, bool | int):
            raise _refuse(f"{type(item).__name__} values are not JSON data; quote the value", path)


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse("contains an unpaired UTF-16 surrogate", path) from None


def sniff_format(data: bytes | str) -> str:
    """``json`` when the text starts (after blanks) with ``{``, else ``yaml``."""
    head = data.lstrip()[:1]
    return "json" if head in (b"{", "{") else "yaml"


def parse(data: bytes | str, fmt: str | None = None) -> object:
    """The JSON data in ``data`` (JSON or YAML; guessed when ``fmt`` is None), or ValidationFailed."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise _refuse(f"larger than {MAX_DOCUMENT_BYTES} bytes")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _refuse(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    fmt = fmt or sniff_format(data)
    try:
        if fmt == "json":
            value = json.loads(data, object_pairs_hook=_json_pairs, parse_constant=_json_constant)
        else:
            value = yaml.load(data, Loader=_Loader)  # noqa: S506 - _Loader is a restricted SafeLoader
    except _Refused as exc:
        raise _refuse(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise MalformedDocument(fmt, f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except yaml.YAMLError as exc:
        raise MalformedDocument(fmt, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise MalformedDocument(fmt, f"nested deeper than {MAX_DEPTH} levels") from None
    check_tree(value, fmt)
    return value


# ---------------------------------------------------------------- writing

class _Dumper(yaml.SafeDumper):
    """Never writes anchors/aliases (the reader refuses them), even for shared objects."""

    def ignore_aliases(self, data):
        return True


def _str_presenter(dumper, text: str):
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str_presenter)


def dump(document: dict, fmt: str = "yaml") -> str:
    """The document as text, deterministically (same document, same bytes)."""
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=100)


# ---------------------------------------------------------------- canonical forms

def sorted_json(value):
    """A free-form JSON value with object keys sorted (recursively)."""
    if isinstance(value, dict):
        return {key: sorted_json(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [sorted_json(v) for v in value]
    return value


def canonical_condition(cond: dict) -> dict:
    out = {}
    if cond.get("attribute") is not None:
        out["attribute"] = cond["attribute"]
    out["op"] = cond.get("op")
    if "values" in cond:
        out["values"] = sorted_json(cond["values"])
    out["negate"] = bool(cond.get("negate", False))
    return out


def canonical_serve(serve: dict) -> dict:
    if not isinstance(serve, dict):
        return serve
    if serve.get("rollout") is not None:
        rollout = serve["rollout"]
        out = {"weights": [list(pair) for pair in rollout.get("weights") or []]}
        for field in ("bucket_by", "salt"):
            if rollout.get(field) is not None:
                out[field] = rollout[field]
        return {"rollout": out}
    if serve.get("experiment") is not None:
        return {"experiment": serve["experiment"]}
    return {"variation": serve.get("variation")}


def canonical_targeting(targeting: dict) -> dict:
    holdout = {"holdout": targeting["holdout"]} if targeting.get("holdout") is not None else {}
    return {
        "enabled": targeting.get("enabled"),
        "off_variation": targeting.get("off_variation"),
        **holdout,  # only when the flag joins a holdout (docs/holdouts.md)
        "prerequisites": [{"flag": p.get("flag"), "variation": p.get("variation")}
                          for p in targeting.get("prerequisites") or []],
        "targets": [{"variation": t.get("variation"), "values": list(t.get("values") or [])}
                    for t in targeting.get("targets") or []],
        "rules": [{"id": r.get("id"), "description": r.get("description") or "",
                   "conditions": [canonical_condition(c) for c in r.get("conditions") or []],
                   "serve": canonical_serve(r.get("serve"))}
                  for r in targeting.get("rules") or []],
        "fallthrough": canonical_serve(targeting.get("fallthrough")),
    }


def canonical_variations(variations: list) -> list:
    return [{"key": v["key"], "value": sorted_json(v.get("value")), "description": v.get("description") or ""}
            for v in variations]


def canonical_flag(flag: dict) -> dict:
    return {
        "key": flag["key"],
        "name": flag.get("name") or flag["key"],
        "description": flag.get("description") or "",
        "kind": flag["kind"],
        "type": flag.get("type") or "release",
        "variations": canonical_variations(flag["variations"]),
        "tags": list(flag.get("tags") or []),
        "owner": flag.get("owner"),
        "temporary": bool(flag.get("temporary", True)),
        "targeting": canonical_targeting(flag["targeting"]),
    }


def canonical_segment(segment: dict) -> dict:
    return {
        "key": segment["key"],
        "name": segment.get("name") or segment["key"],
        "description": segment.get("description") or "",
        "tags": list(segment.get("tags") or []),
        "included": list(segment.get("included") or []),
        "excluded": list(segment.get("excluded") or []),
        "rules": [[canonical_condition(c) for c in rule] for rule in segment.get("rules") or []],
    }


def _float(value):
    return None if value is None else float(value)


def canonical_metric(metric: dict) -> dict:
    return {
        "key": metric["key"],
        "name": metric.get("name") or metric["key"],
        "description": metric.get("description") or "",
        "event": metric["event"],
        "type": metric["type"],
        "denominator": metric.get("denominator"),
        "direction": metric.get("direction") or "increase",
        "window_hours": _float(metric.get("window_hours")),
        "winsorize": _float(metric.get("winsorize")),
        "tags": list(metric.get("tags") or []),
    }


def canonical_holdout(holdout: dict) -> dict:
    return {
        "key": holdout["key"],
        "name": holdout.get("name") or holdout["key"],
        "description": holdout.get("description") or "",
        "percent": float(holdout["percent"]),
        "unit": holdout.get("unit") or "id",
    }


def canonical_document(environment: str, flags, segments, metrics, holdouts=()) -> dict:
    """The document with its lists sorted by key and every object in canonical form.

    ``holdouts`` (of the document's environment) is written only when there are any."""
    document = {
        "version": 1,
        "environment": environment,
        "flags": sorted((canonical_flag(f) for f in flags), key=lambda f: f["key"]),
        "segments": sorted((canonical_segment(s) for s in segments), key=lambda s: s["key"]),
        "metrics": sorted((canonical_metric(m) for m in metrics), key=lambda m: m["key"]),
    }
    holdouts = sorted((canonical_holdout(h) for h in holdouts), key=lambda h: h["key"])
    if holdouts:
        document["holdouts"] = holdouts
    return document


def ruleset(document: dict) -> dict:
    """The SDK ruleset equivalent to a (valid) document, for the engine's ``compile_ruleset``.

    Lets a document be evaluated without a database: the importers' tests
    check translated flags this way against the source product's semantics.
    """
    return {
        "version": 1,
        "environment": document.get("environment"),
        "flags": {f["key"]: {"key": f["key"], "kind": f["kind"], "version": 1,
                             "variations": [{"key": v["key"], "value": v["value"]} for v in f["variations"]],
                             "targeting": f["targeting"]}
                  for f in document.get("flags") or []},
        "segments": {s["key"]: {"key": s["key"], "included": s.get("included") or [],
                                "excluded": s.get("excluded") or [], "rules": s.get("rules") or []}
                     for s in document.get("segments") or []},
        "experiments": {},
        "layers": {},
        "holdouts": {h["key"]: {"key": h["key"], "percent": h["percent"], "unit": h.get("unit") or "id"}
                     for h in document.get("holdouts") or []},
    }
