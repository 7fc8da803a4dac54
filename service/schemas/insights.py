"""GET /api/v1/insights: the query and the KPIs (docs/lifecycle.md, "Insights")."""

from datetime import UTC, date, datetime, timedelta

import marshmallow as ma

from .common import BaseSchema, Key, StrictSchema


class Moment(ma.fields.Field):
    """A date (``2024-05-01``: that day's start, UTC) or an ISO 8601 datetime (naive means UTC)."""

    default_error_messages = {"invalid": "Must be a date (2024-05-01) or an ISO 8601 datetime (2024-05-01T12:00:00Z)."}

    def __init__(self, *, end: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.end = end

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or len(value) > 40:
            raise self.make_error("invalid")
        try:
            if len(value) == 10:
                day = date.fromisoformat(value)
                # A date as ``to`` includes that whole day.
                return datetime(day.year, day.month, day.day, tzinfo=UTC) + (timedelta(days=1) if self.end else
                                                                            timedelta(0))
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise self.make_error("invalid") from None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class InsightsQuerySchema(StrictSchema):
    start = Moment(data_key="from", load_default=None, metadata={"description": "Default: 90 days before to."})
    end = Moment(data_key="to", end=True, load_default=None,
                 metadata={"description": "Default: now. A date includes that whole day."})
    environment = Key(load_default="production")


class PointSchema(BaseSchema):
    month = ma.fields.String()
    value = ma.fields.Raw(allow_none=True)


class KpiSchema(BaseSchema):
    value = ma.fields.Raw(allow_none=True)
    series = ma.fields.List(ma.fields.Nested(PointSchema))


class OutcomesSchema(BaseSchema):
    ship = ma.fields.Nested(KpiSchema)
    rollback = ma.fields.Nested(KpiSchema)
    iterate = ma.fields.Nested(KpiSchema)


class ExperimentKpisSchema(BaseSchema):
    started = ma.fields.Nested(KpiSchema)
    concluded = ma.fields.Nested(KpiSchema)
    by_outcome = ma.fields.Nested(OutcomesSchema)
    win_rate = ma.fields.Nested(KpiSchema, metadata={"description": "ship / concluded"})
    median_days_to_decision = ma.fields.Nested(KpiSchema)


class RollbacksSchema(KpiSchema):
    breakdown = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())


class ReleaseKpisSchema(BaseSchema):
    flags_created = ma.fields.Nested(KpiSchema)
    changes_per_week = ma.fields.Nested(KpiSchema)
    median_days_to_full_rollout = ma.fields.Nested(KpiSchema)
    rollbacks = ma.fields.Nested(RollbacksSchema)


class ShareSchema(KpiSchema):
    releases = ma.fields.Integer()
    data_driven = ma.fields.Integer()


class DecisionKpisSchema(BaseSchema):
    data_driven_share = ma.fields.Nested(ShareSchema)


class HygieneKpisSchema(BaseSchema):
    potentially_stale = ma.fields.Nested(KpiSchema)
    ready_to_archive = ma.fields.Nested(KpiSchema)


class InsightsSchema(BaseSchema):
    environment = ma.fields.String()
    start = ma.fields.DateTime(data_key="from", attribute="from")
    end = ma.fields.DateTime(data_key="to", attribute="to")
    months = ma.fields.List(ma.fields.String())
    experiments = ma.fields.Nested(ExperimentKpisSchema)
    releases = ma.fields.Nested(ReleaseKpisSchema)
    decisions = ma.fields.Nested(DecisionKpisSchema)
    hygiene = ma.fields.Nested(HygieneKpisSchema)
