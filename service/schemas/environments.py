import marshmallow as ma

from .common import Key, StrictSchema, page_schema

MAX_APPROVALS = 20


class SdkKeySchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String()
    prefix = ma.fields.String(dump_only=True, metadata={"description": "First characters of the key, for recognising it."})
    created_by = ma.fields.String(dump_only=True, allow_none=True)
    created_at = ma.fields.DateTime(dump_only=True)
    last_used_at = ma.fields.DateTime(dump_only=True, allow_none=True)


class SdkKeyCreateSchema(StrictSchema):
    name = ma.fields.String(load_default="", validate=ma.validate.Length(max=200))


class SdkKeyCreatedSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    environment = ma.fields.String(required=True)
    key = ma.fields.String(required=True, metadata={"description": "The secret; shown only this once."})


class EnvironmentSchema(StrictSchema):
    key = Key(required=True)
    name = ma.fields.String(validate=ma.validate.Length(min=1, max=200))
    description = ma.fields.String(load_default="", validate=ma.validate.Length(max=2000))
    approvals_required = ma.fields.Integer(
        strict=True, validate=ma.validate.Range(min=0, max=MAX_APPROVALS),
        metadata={"description": "Approvals a change request needs here; 0 (default) = not protected."})
    protected = ma.fields.Boolean(metadata={
        "description": "true when approvals_required > 0; writing it is an alias (true = 1 approval)."})
    version = ma.fields.Integer(dump_only=True)
    ruleset_version = ma.fields.Integer(dump_only=True)
    created_at = ma.fields.DateTime(dump_only=True)
    updated_at = ma.fields.DateTime(dump_only=True)
    sdk_keys = ma.fields.Method("_active_sdk_keys", dump_only=True)

    def _active_sdk_keys(self, env):
        return SdkKeySchema(many=True).dump([k for k in env.sdk_keys if k.revoked_at is None])


class EnvironmentPatchSchema(StrictSchema):
    name = ma.fields.String(validate=ma.validate.Length(min=1, max=200))
    description = ma.fields.String(validate=ma.validate.Length(max=2000))
    approvals_required = ma.fields.Integer(strict=True, validate=ma.validate.Range(min=0, max=MAX_APPROVALS))
    protected = ma.fields.Boolean()


EnvironmentPageSchema = page_schema(EnvironmentSchema, "EnvironmentPage")
