from datetime import UTC

import marshmallow as ma

from .common import BaseSchema, PageQuerySchema, page_schema


class AuditEntrySchema(BaseSchema):
    id = ma.fields.Integer()
    created_at = ma.fields.DateTime()
    actor = ma.fields.String()
    action = ma.fields.String()
    resource_type = ma.fields.String()
    resource_key = ma.fields.String()
    environment = ma.fields.String(allow_none=True)
    before = ma.fields.Raw(allow_none=True)
    after = ma.fields.Raw(allow_none=True)
    comment = ma.fields.String(allow_none=True)
    request_id = ma.fields.String(allow_none=True)


class AuditQuerySchema(PageQuerySchema):
    resource_type = ma.fields.String(load_default=None)
    resource_key = ma.fields.String(load_default=None, metadata={"description": "Key of the resource, e.g. a flag key."})
    actor = ma.fields.String(load_default=None)
    environment = ma.fields.String(load_default=None)
    since = ma.fields.AwareDateTime(load_default=None, default_timezone=UTC)
    until = ma.fields.AwareDateTime(load_default=None, default_timezone=UTC)


AuditPageSchema = page_schema(AuditEntrySchema, "AuditPage")
