"""The audit log with filters."""

from datetime import datetime

from flask import render_template, request

from ...domain import audit as domain
from ...domain.errors import ValidationFailed
from .. import bp, nav

nav.register("Audit log", "console.audit", order=80)
FILTERS = ("resource_type", "resource_key", "actor", "environment")
RESOURCE_TYPES = ("flag", "segment", "metric", "experiment", "environment", "sdk_key", "token", "change_request",
                  "schedule", "rollout")


def _date(name: str):
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed("Invalid date.", {name: ["Use YYYY-MM-DD or an ISO 8601 time."]}) from None
    if value.tzinfo is None:
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return value


@bp.get("/audit")
def audit():
    args = {f: (request.args.get(f) or "").strip() or None for f in FILTERS}
    page = domain.list_entries(**args, since=_date("since"), until=_date("until"), limit=50,
                               cursor=request.args.get("cursor") or None)
    query = {k: v for k, v in request.args.items() if k != "cursor" and v}
    return render_template("console/audit.html", title="Audit log", items=page.items, next_cursor=page.next_cursor,
                           args=args, query=query, types=RESOURCE_TYPES)
