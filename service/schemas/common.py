from collections.abc import Mapping

import marshmallow as ma

from ..domain import limits

# \Z, not $: "$" also matches before a final newline, so "abc\n" would pass.
KEY_PATTERN = r"\A[a-z0-9][a-z0-9._-]{0,99}\Z"
KEY_MESSAGE = "Must match ^[a-z0-9][a-z0-9._-]{{0,99}}$ (lower-case letters, digits, '.', '_', '-')."


class BaseSchema(ma.Schema):
    """Every schema of the service: dicts are read by key only.

    marshmallow reads ``obj[name]`` and, when the key is absent, falls back to
    ``getattr(obj, name)``: for a dict without ``values`` that is the bound
    method ``dict.values``, and dumping it fails (a stored ``exists``
    condition has no ``values``). The same trap waits behind ``items``,
    ``keys``, ``get``, ``copy``, ``pop``, ``update``... An absent key is
    simply absent from the output, so a stored object reads back as written.
    """

    def get_attribute(self, obj, attr, default):
        if isinstance(obj, Mapping):
            return obj.get(attr, default)
        return super().get_attribute(obj, attr, default)


class StrictSchema(BaseSchema):
    class Meta:
        unknown = ma.RAISE


class StrictBoolean(ma.fields.Boolean):
    """A JSON boolean, nothing else: ``"yes"``, ``"true"``, ``1`` are errors, not booleans.

    (marshmallow's Boolean coerces such values; query strings, which are
    text, keep using it.)"""

    default_error_messages = {"invalid": "Must be true or false (a JSON boolean)."}

    def _deserialize(self, value, attr, data, **kwargs):
        if value is True or value is False:
            return value
        raise self.make_error("invalid")


def Key(**kwargs):
    return ma.fields.String(validate=ma.validate.Regexp(KEY_PATTERN, error=KEY_MESSAGE), **kwargs)


def Text(max_chars: int, *, min_chars: int = 0, **kwargs):
    """A string of at most ``max_chars`` characters (the limit is in the message)."""
    return ma.fields.String(validate=ma.validate.Length(
        min=min_chars, max=max_chars,
        error=f"Must be {min_chars} to {max_chars} characters." if min_chars else f"At most {max_chars} characters."),
        **kwargs)


def at_most(count: int, what: str):
    """A Length validator for lists: at most ``count`` items, naming the limit."""
    return ma.validate.Length(max=count, error=f"At most {count} {what} (see the limits in docs/operations.md).")


def Tags(**kwargs):
    return ma.fields.List(Text(limits.TAG_CHARS, min_chars=1), validate=at_most(limits.TAGS, "tags"), **kwargs)


class PageQuerySchema(StrictSchema):
    limit = ma.fields.Integer(load_default=50, validate=ma.validate.Range(min=1, max=limits.PAGE_SIZE))
    cursor = ma.fields.String(load_default=None)


def flatten_messages(messages, path: str = "") -> dict[str, list[str]]:
    """marshmallow's nested messages as ``{"rules.0.serve.variation": [...]}``: the JSON paths
    the domain's checks use in error details too (a schema-level ``_schema`` message belongs to
    the object it is in)."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, inner in messages.items():
            inner_path = path if key == "_schema" else (f"{path}.{key}" if path else str(key))
            for p, m in flatten_messages(inner, inner_path).items():
                flat.setdefault(p, []).extend(m)
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        flat.setdefault(path or "_body", []).extend(messages)
    else:
        flat.setdefault(path or "_body", []).append(str(messages))
    return flat


def page_schema(item_schema, name: str):
    """A response envelope ``{items, next_cursor}`` for a list of ``item_schema``."""
    return BaseSchema.from_dict(
        {"items": ma.fields.List(ma.fields.Nested(item_schema), required=True),
         "next_cursor": ma.fields.String(allow_none=True, required=True)},
        name=name,
    )
