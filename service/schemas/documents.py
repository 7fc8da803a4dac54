"""The flags-as-code document (docs/flags-as-code.md) and the export/import endpoints' shapes.

The document reuses the resource schemas (variations, targeting, segments,
metrics), so a document accepts exactly what the resource endpoints accept,
and refuses unknown fields with their path.
"""

import marshmallow as ma

# Flag types and their lifetimes: one home, service/domain/serving.py (docs/lifecycle.md).
from ..domain.serving import FLAG_TYPES
from ..flags_as_code.document import FORMATS
from .common import BaseSchema, Key, StrictSchema
from .flags import DiffEntrySchema, FlagSchema, TargetingSchema
from .holdouts import HoldoutSchema
from .metrics import MetricSchema
from .segments import SegmentSchema


class DocumentFlagSchema(FlagSchema):
    """A flag with its targeting in the document's environment (no version, archived or timestamps)."""

    type = ma.fields.String(load_default="release", validate=ma.validate.OneOf(FLAG_TYPES),
                            metadata={"description": "Expected lifetime: " + ", ".join(FLAG_TYPES)})
    targeting = ma.fields.Nested(TargetingSchema, required=True)


class DocumentHoldoutSchema(HoldoutSchema):
    """A holdout of the document's environment (no environment, version, usage or timestamps)."""

    class Meta(StrictSchema.Meta):
        exclude = ("environment", "flags", "experiments", "version", "created_at", "updated_at")


class DocumentSchema(StrictSchema):
    version = ma.fields.Integer(required=True, strict=True, validate=ma.validate.Equal(1, error="Must be 1."))
    environment = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=100))
    flags = ma.fields.List(ma.fields.Nested(DocumentFlagSchema), load_default=list)
    segments = ma.fields.List(ma.fields.Nested(SegmentSchema), load_default=list)
    metrics = ma.fields.List(ma.fields.Nested(MetricSchema), load_default=list)
    holdouts = ma.fields.List(ma.fields.Nested(DocumentHoldoutSchema), load_default=list, metadata={
        "description": "Holdouts of the document's environment (docs/holdouts.md)."})


class ExportQuerySchema(StrictSchema):
    environment = Key(required=True)
    format = ma.fields.String(load_default="yaml", validate=ma.validate.OneOf(FORMATS))


class ImportQuerySchema(StrictSchema):
    dry_run = ma.fields.Boolean(load_default=False, metadata={
        "description": "true: validate and return the diff, change nothing."})


class ResourceDiffSchema(BaseSchema):
    key = ma.fields.String()
    status = ma.fields.String(metadata={"description": "created, changed or unchanged"})
    changes = ma.fields.List(ma.fields.Nested(DiffEntrySchema))


class WarningSchema(BaseSchema):
    path = ma.fields.String()
    message = ma.fields.String()


class SummarySchema(BaseSchema):
    created = ma.fields.Integer()
    changed = ma.fields.Integer()
    unchanged = ma.fields.Integer()


class ProposalSchema(BaseSchema):
    flag = ma.fields.String()
    path = ma.fields.String(metadata={"description": "The document path of the proposed targeting."})
    id = ma.fields.Integer(allow_none=True, metadata={"description": "null for a request a dry run would open."})
    status = ma.fields.String(metadata={"description": "opened | updated (a new revision) | pending (as it was)"})
    state = ma.fields.String(metadata={"description": "The request's state (open, approved, scheduled)."})
    revision = ma.fields.Integer()


class ImportResultSchema(BaseSchema):
    dry_run = ma.fields.Boolean()
    environment = ma.fields.String()
    summary = ma.fields.Nested(SummarySchema)
    flags = ma.fields.List(ma.fields.Nested(ResourceDiffSchema))
    segments = ma.fields.List(ma.fields.Nested(ResourceDiffSchema))
    metrics = ma.fields.List(ma.fields.Nested(ResourceDiffSchema))
    holdouts = ma.fields.List(ma.fields.Nested(ResourceDiffSchema))
    warnings = ma.fields.List(ma.fields.Nested(WarningSchema))
    change_requests = ma.fields.List(ma.fields.Nested(ProposalSchema), metadata={
        "description": "In a protected environment: the change requests holding the targeting changes."})
