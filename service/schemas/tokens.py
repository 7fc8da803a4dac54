import marshmallow as ma

from ..domain import limits
from ..models import ROLES
from .common import BaseSchema, PageQuerySchema, StrictSchema, Text, page_schema


class TokenSchema(BaseSchema):
    id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String()
    role = ma.fields.String()
    prefix = ma.fields.String(dump_only=True)
    created_by = ma.fields.String(dump_only=True, allow_none=True)
    created_at = ma.fields.DateTime(dump_only=True)
    last_used_at = ma.fields.DateTime(dump_only=True, allow_none=True)
    revoked_at = ma.fields.DateTime(dump_only=True, allow_none=True)


class TokenCreateSchema(StrictSchema):
    name = Text(limits.NAME_CHARS, min_chars=1, required=True)
    role = ma.fields.String(required=True, validate=ma.validate.OneOf(ROLES))


class TokenCreatedSchema(BaseSchema):
    id = ma.fields.Integer(required=True)
    name = ma.fields.String(required=True)
    role = ma.fields.String(required=True)
    token = ma.fields.String(required=True, metadata={"description": "The secret; shown only this once."})


class TokenQuerySchema(PageQuerySchema):
    include_revoked = ma.fields.Boolean(load_default=False)


TokenPageSchema = page_schema(TokenSchema, "TokenPage")
