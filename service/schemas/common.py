import marshmallow as ma

KEY_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"
KEY_MESSAGE = "Must match ^[a-z0-9][a-z0-9._-]{{0,99}}$ (lower-case letters, digits, '.', '_', '-')."


def Key(**kwargs):
    return ma.fields.String(validate=ma.validate.Regexp(KEY_PATTERN, error=KEY_MESSAGE), **kwargs)


class StrictSchema(ma.Schema):
    class Meta:
        unknown = ma.RAISE


class PageQuerySchema(StrictSchema):
    limit = ma.fields.Integer(load_default=50, validate=ma.validate.Range(min=1, max=500))
    cursor = ma.fields.String(load_default=None)


def page_schema(item_schema, name: str):
    """A response envelope ``{items, next_cursor}`` for a list of ``item_schema``."""
    return ma.Schema.from_dict(
        {"items": ma.fields.List(ma.fields.Nested(item_schema), required=True),
         "next_cursor": ma.fields.String(allow_none=True, required=True)},
        name=name,
    )
