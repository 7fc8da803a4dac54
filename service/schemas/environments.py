import marshmallow as ma

from ..domain import limits
from .common import BaseSchema, Key, StrictBoolean, StrictSchema, Text, page_schema

MAX_APPROVALS = 20


class SdkKeySchema(BaseSchema):
    id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String()
    prefix = ma.fields.String(dump_only=True, metadata={"description": "First characters of the key, for recognising it."})
    created_by = ma.fields.String(dump_only=True, allow_none=True)
    created_at = ma.fields.DateTime(dump_only=True)
    last_used_at = ma.fields.DateTime(dump_only=True, allow_none=True)


class SdkKeyCreateSchema(StrictSchema):
    name = Text(limits.NAME_CHARS, load_default="")


class SdkKeyCreatedSchema(BaseSchema):
    id = ma.fields.Integer(required=True)
    environment = ma.fields.String(required=True)
    key = ma.fields.String(required=True, metadata={"description": "The secret; shown only this once."})


class EnvironmentSchema(StrictSchema):
    key = Key(required=True)
    name = Text(limits.NAME_CHARS, min_chars=1)
    description = Text(limits.DESCRIPTION_CHARS, load_default="")
    approvals_required = ma.fields.Integer(
        strict=True, validate=ma.validate.Range(min=0, max=MAX_APPROVALS),
        metadata={"description": "Approvals a change request needs here; 0 (default) = not protected."})
    protected = StrictBoolean(metadata={
        "description": "true when approvals_required > 0; writing it is an alias (true = 1 approval)."})
    version = ma.fields.Integer(dump_only=True)
    ruleset_version = ma.fields.Integer(dump_only=True)
    created_at = ma.fields.DateTime(dump_only=True)
    updated_at = ma.fields.DateTime(dump_only=True)
    sdk_keys = ma.fields.Method("_active_sdk_keys", dump_only=True)

    def _active_sdk_keys(self, env):
        return SdkKeySchema(many=True).dump([k for k in env.sdk_keys if k.revoked_at is None])


class EnvironmentPatchSchema(StrictSchema):
    name = Text(limits.NAME_CHARS, min_chars=1)
    description = Text(limits.DESCRIPTION_CHARS)
    approvals_required = ma.fields.Integer(strict=True, validate=ma.validate.Range(min=0, max=MAX_APPROVALS))
    protected = StrictBoolean()


EnvironmentPageSchema = page_schema(EnvironmentSchema, "EnvironmentPage")
